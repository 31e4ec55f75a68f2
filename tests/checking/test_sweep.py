"""Tests of ``hessverify sweep`` (hessverify.sweep): exit statuses, the printed case, usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hessverify import parse_case
from hessverify.cli import main

GOOD = """
from hessverify.methods.backprop import hessian

def off_by_a_little(problem):
    print("debugging output that must not end up in the case file")
    H = hessian(problem)
    H[-1, -1] += 1e-6  # the last parameter's diagonal entry
    return H

not_a_function = 3
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "my_hessians.py"
    path.write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    # a dotted import of my_hessians must not leak into other tests
    monkeypatch.delitem(sys.modules, "my_hessians", raising=False)
    return path


def test_nothing_found_exits_0(user_module: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--method-under-test", f"{user_module}:hessian", "--examples", "10", "--seed", "1",
                 "--against", "autograd"]) == 0
    assert "agrees with autograd on 10 random problem(s) (seed 1)" in capsys.readouterr().out


def test_a_discrepancy_exits_1_and_prints_a_minimal_case(user_module: Path, capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    report = tmp_path / "sweep.json"
    status = main(["sweep", "--method-under-test", "my_hessians:off_by_a_little", "--examples", "20", "--seed", "2",
                   "--json", str(report)])
    out, err = capsys.readouterr()
    assert status == 1, err
    case = parse_case(out)  # the whole of stdout is a valid case file (comments included)
    assert (case.n_params, case.n_patterns) == (1, 1) and case.id.startswith("sweep-off-by-a-little-")
    assert "DISAGREES" in err and "W1[0,0] x W1[0,0]" in err
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["seed"] == 2 and parse_case(data["problem_toml"]).n_params == 1


@pytest.mark.parametrize(("spec", "message"), [
    ("my_hessians", "write MODULE:FUNCTION"),
    ("my_hessians:nope", "my_hessians has no 'nope'; it defines hessian, off_by_a_little"),
    ("my_hessians:not_a_function", "not_a_function is not callable"),
    ("missing_module:f", "no module named 'missing_module'"),
    ("missing.py:f", "no such file 'missing.py'"),
    ("broken.py:f", "importing broken.py failed: SyntaxError"),
])
def test_bad_usage_exits_2_with_one_line(user_module: Path, capsys: pytest.CaptureFixture[str], spec: str,
                                        message: str) -> None:
    (user_module.parent / "broken.py").write_text("def f(:\n")
    assert main(["sweep", "--method-under-test", spec, "--examples", "5"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_usage_from_the_command_line_has_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "raises.py").write_text("raise RuntimeError('boom at import')\n")
    result = subprocess.run([sys.executable, "-m", "hessverify", "sweep", "--method-under-test", "raises.py:f"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == ("hessverify: error: --method-under-test 'raises.py:f': importing raises.py "
                                     "failed: RuntimeError: boom at import")


def test_report_leads_with_the_minimal_failing_problem(user_module: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    code = main(["sweep", "--method-under-test", f"{user_module}:off_by_a_little", "--examples", "20", "--seed", "0",
                 "--report", str(out), "--against", "autograd"])
    assert code == 1
    md = (out / "report.md").read_text()
    first_row = next(line for line in md.splitlines() if line.startswith("| sweep-"))
    assert "(minimal failing)" in first_row and "FAIL" in first_row
    doc = json.loads((out / "results.json").read_text())
    assert doc["leading"] and any(not r["passed"] for r in doc["results"])
    assert (out / "report.html").stat().st_size > 0
    from hessverify import METHODS

    assert "off_by_a_little" not in METHODS  # registered only while the report is written


def test_report_has_a_row_for_every_name_compared_and_the_case_file(user_module: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The header cites "against backprop": backprop, an exact method, is a row of the table too; the minimal
    problem is written as a case file beside the report."""
    out = tmp_path / "rep"
    code = main(["sweep", "--method-under-test", f"{user_module}:off_by_a_little", "--examples", "20", "--seed", "0",
                 "--report", str(out), "--against", "backprop", "--against", "autograd"])
    assert code == 1
    err = capsys.readouterr().err
    md = (out / "report.md").read_text()
    section = md.split("(minimal failing)", 2)[-1]
    assert "| off_by_a_little | backprop | **FAIL**" in section and "| off_by_a_little | autograd | **FAIL**" in section
    (case,) = (out / "cases").iterdir()
    assert case.name.startswith("sweep-off-by-a-little") and str(case) in err
    assert parse_case(case.read_text()).id == case.stem
    assert "where (against backprop): by block" in err


def test_report_needs_matrices_or_diagonals(user_module: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sweep", "--method-under-test", f"{user_module}:off_by_a_little", "--returns", "hvp",
                 "--report", str(tmp_path / "rep")])
    assert code == 2
    assert "--report: a report needs matrices or diagonals" in capsys.readouterr().err


def test_the_same_seed_gives_the_same_minimal_problem_with_or_without_a_report(
        user_module: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from hessverify.errors import EXIT_DISCREPANCY

    bug = ("from hessverify.methods.backprop import hessian as exact\n"
           "def cross_wrong(problem):\n"
           "    H = exact(problem)\n"
           "    if problem.n_params > 1:\n"
           "        H[0, -1] += 1e-6\n"
           "        H[-1, 0] += 1e-6\n"
           "    return H\n")
    (user_module.parent / "cross.py").write_text(bug)
    found = []
    for extra in ([], ["--report", str(tmp_path / "report")]):
        status = main(["sweep", "--method-under-test", "cross.py:cross_wrong", "--examples", "60", "--seed", "7",
                       "--against", "autograd", *extra])
        assert status == EXIT_DISCREPANCY
        out = capsys.readouterr().out
        found.append("\n".join(x for x in out.splitlines() if not x.startswith("#")))
    assert found[0] == found[1] and parse_case(found[0]).n_params > 1


CHAIN_ONLY = """
from hessverify.methods.backprop import hessian

def chains(problem):
    if not problem.architecture.is_chain:
        raise NotImplementedError("this code knows no skip connections")
    return hessian(problem)
"""


def test_chains_only_draws_no_graph_and_graphs_are_drawn_by_default(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "chain_code.py"
    path.write_text(CHAIN_ONLY)
    args = ["sweep", "--method-under-test", f"{path}:chains", "--examples", "40", "--seed", "2",
            "--against", "autograd"]
    assert main([*args, "--chains-only"]) == 0
    assert "agrees with autograd on 40 random problem(s)" in capsys.readouterr().out
    assert main(args) == 5  # by default the sweep reaches a graph, which this function refuses
    assert "this code knows no skip connections" in capsys.readouterr().err
