"""The kinds of campaign: each gives what its one-process command gives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hessverify.apps.trust.detection import kill_table
from hessverify.io.cases import parse_case
from tests.conftest import CASES_DIR

pytest.importorskip("distributed")

HESSVERIFY = [sys.executable, "-m", "hessverify"]

BUGGY = '''
import hessverify

def hessian(problem):
    """Right on small networks, 0.1 % off on the rest: the smallest failure has 7 parameters."""
    H = hessverify.hessian(problem)
    return H * 1.001 if problem.n_params > 6 else H

def right(problem):
    return hessverify.hessian(problem)
'''


def campaign(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HESSVERIFY, "campaign", *args], capture_output=True, text=True, timeout=600, cwd=cwd)


ALONE = """
import sys
from hessverify.apps.campaign.kinds import plan_for
from hessverify.cli import _build_parser
from hessverify.io.files import strict_json

args = _build_parser().parse_args(["campaign", *sys.argv[1:]])
units = plan_for(args.kind, args).run_here()
print(strict_json([[o.index, o.id, [c.to_dict() for c in o.records], o.not_compared, o.extra] for o in units]))
"""


def one_process(*argv: str, cwd: Path | None = None) -> list[Any]:
    """The campaign's units run one after the other in one fresh process (:meth:`Plan.run_here`)."""
    r = subprocess.run([sys.executable, "-c", ALONE, *argv], capture_output=True, text=True, timeout=600, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def units_of(doc: dict[str, Any]) -> list[Any]:
    """The campaign file's units in the same shape: index, id, records, not-compared records, what else it keeps."""
    out, at, skip_at = [], 0, 0
    for u in doc["campaign"]["units"]:
        n, m = u["records"], u["not_compared"]
        extra = {k: v for k, v in u.items() if k not in ("index", "id", "records", "not_compared")}
        out.append([u["index"], u["id"], doc["results"][at:at + n], doc["not_compared"][skip_at:skip_at + m], extra])
        at, skip_at = at + n, skip_at + m
    return out


def test_detection_gives_the_one_process_kill_table(tmp_path: Path) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    for name in ("xor-2-2-1-sigmoid", "softmax-4-5-3-cross-entropy", "bce-saturated-output-1-1"):
        shutil.copy(CASES_DIR / f"{name}.toml", cases)
    # the cases only: a bug's sweep is a Hypothesis unit like a sweep's seed (below), and 21 of them take minutes
    args = ["detection", "--cases", str(cases)]
    r = campaign(*args, "--workers", "2", "--json", str(tmp_path / "d.json"))
    assert r.returncode == 1, r.stderr  # three chain cases: the skip-connection bugs survive them
    table = kill_table(cases)
    assert f"kill rate on the shipped cases: {sum(bool(k) for k in table.values())}/{len(table)}" in r.stdout
    assert units_of(json.loads((tmp_path / "d.json").read_text())) == one_process(*args)
    doc = json.loads((tmp_path / "d.json").read_text())
    assert [u["id"] for u in doc["campaign"]["units"][:3]] == sorted(p.stem for p in cases.glob("*.toml"))
    # a failed comparison is a bug caught: the file's records on the cases are the kill table's
    assert {(c["case"], c["method"]) for c in doc["results"] if not c["passed"]
            and c["case"] in {p.stem for p in cases.glob("*.toml")}} == \
        {(case, bug) for bug, killers in kill_table(cases).items() for case in killers}


def test_a_sweep_is_independent_seeds_merged_and_led_by_the_smallest_failure(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(BUGGY)
    r = campaign("sweep", "--method-under-test", "mine.py:hessian", "--examples", "10", "--seeds", "2", "--seed", "7",
                 "--workers", "2", "--json", str(tmp_path / "s.json"), "--report", str(tmp_path / "rep"), cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    units = doc["campaign"]["units"]
    assert [u["seed"] for u in units] == [7, 8]
    # each seed is its own Hypothesis run with its own shrinking, the same whichever worker ran it after which
    assert units_of(doc) == one_process("sweep", "--method-under-test", "mine.py:hessian", "--examples", "10",
                                        "--seeds", "2", "--seed", "7", cwd=tmp_path)
    assert all(not u["passed"] for u in units)
    found = [parse_case(u["problem_toml"]) for u in units]
    smallest = min(found, key=lambda p: (p.n_params, p.n_patterns))
    printed = parse_case("\n".join(line for line in r.stdout.splitlines() if not line.startswith("#")))
    assert (printed.n_params, printed.n_patterns) == (smallest.n_params, smallest.n_patterns) and printed.n_params > 6
    report = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert report["leading"] and report["leading"][0] == f"seed-{units[[p.to_toml() for p in found].index(smallest.to_toml())]['seed']}"


def test_a_right_function_passes_every_seed(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(BUGGY)
    r = campaign("sweep", "--method-under-test", "mine:right", "--examples", "5", "--seeds", "2", "--seed", "0",
                 "--workers", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "agrees with the references on 10 random problem(s) over 2 seed(s) (0 to 1)" in r.stdout


def test_a_sweep_of_a_missing_function_is_one_line(tmp_path: Path) -> None:
    r = campaign("sweep", "--method-under-test", "nowhere.py:f", "--workers", "1", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no such file" in r.stderr


def test_conformance_gives_the_one_process_rows(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    args = ["conformance", "--library", "torch.func", "--examples", "3", "--seeds", "2", "--seed", "4", "--networks", "dense"]
    r = campaign(*args, "--workers", "2", "--json", str(tmp_path / "c.json"), "--report", str(tmp_path / "rep"))
    # 1: torch.func.jvp(grad) raises on some problems (docs/conformance.md), a finding, not a fault of the campaign
    assert r.returncode in (0, 1) and "| torch.func |" in r.stdout, r.stdout + r.stderr
    units = one_process(*args)
    assert units_of(json.loads((tmp_path / "c.json").read_text())) == units
    # the usual report: results.json with the conformance table's rows, report.md and report.html
    report = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert (tmp_path / "rep" / "report.html").is_file() and (tmp_path / "rep" / "report.md").is_file()
    rows = report["conformance"]["rows"]
    # two seeds of each routine, merged: problems added, the worst margin of both
    assert [row["tried"] for row in rows] == [a[4]["row"]["tried"] + b[4]["row"]["tried"]
                                             for a, b in zip(units[::2], units[1::2])]
    assert [row["worst_margin"] for row in rows] == [max(a[4]["row"]["worst_margin"], b[4]["row"]["worst_margin"])
                                                    for a, b in zip(units[::2], units[1::2])]
