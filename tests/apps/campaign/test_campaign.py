"""``hessverify campaign``: the same records whoever runs the units, nothing lost, bad input in one line.

The campaigns here are tens of problems; the 600-problem comparison and the
speed-up are ``benchmarks/campaign_speedup.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hessverify.apps.campaign import Plan, check_scheduler_address, load_resume
from hessverify.apps.campaign.kinds import plan_for
from hessverify.errors import UsageError
from hessverify.io.files import strict_json

HESSVERIFY = [sys.executable, "-m", "hessverify"]
SEED = 3


def false_alarms(problems: int, seed: int = SEED) -> Plan:
    return plan_for("false-alarms", argparse.Namespace(problems=problems, seed=seed, special_share=0.5,
                                                       no_torch=True, save=None))


def by_unit(doc: dict[str, Any]) -> dict[int, list[list[Any]]]:
    """Each unit's records and not-compared records, as the file holds them, by index."""
    out, at, skip_at = {}, 0, 0
    for u in doc["campaign"]["units"]:
        n, m = u["records"], u["not_compared"]
        out[u["index"]] = [doc["results"][at:at + n], doc["not_compared"][skip_at:skip_at + m]]
        at, skip_at = at + n, skip_at + m
    assert at == len(doc["results"]) and skip_at == len(doc["not_compared"])
    return out


def one_process(plan: Plan) -> dict[int, list[list[Any]]]:
    """The same units run here, one after the other, written as the campaign writes them."""
    return {o.index: json.loads(strict_json(([c.to_dict() for c in o.records], o.not_compared)))
            for o in plan.run_here()}


def campaign(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HESSVERIFY, "campaign", *args], capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess[str], status: int, words: str) -> None:
    assert r.returncode == status, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("hessverify: error: ") and words in r.stderr, r.stderr


# -- without Dask -----------------------------------------------------------------------------------------


def test_import_hessverify_loads_no_dask() -> None:
    code = ("import sys, hessverify, hessverify.campaign, hessverify.campaign.kinds; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_without_dask_the_command_says_so_in_one_line(tmp_path: Path) -> None:
    # a Python where importing distributed fails, as it does when the extra is not installed
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nsys.modules['distributed'] = None\nsys.modules['dask'] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([*HESSVERIFY, "campaign", "false-alarms", "--problems", "3"], capture_output=True, text=True,
                       env=env, timeout=120)
    one_line_error(r, 2, "pip install 'hessverify[distributed]'")


def test_scheduler_addresses() -> None:
    assert check_scheduler_address("tcp://127.0.0.1:8786") == "tcp://127.0.0.1:8786"
    assert check_scheduler_address("tls://scheduler.example.org:8786")
    for bad in ("127.0.0.1:8786", "tcp://127.0.0.1", "tcp://:8786", "http://x:1", "tcp://x:0", "tcp://x:99999",
                "tcp://x:port", "tcp://x:8786/path", ""):
        with pytest.raises(UsageError, match="tcp://HOST:PORT"):
            check_scheduler_address(bad)


def test_a_failing_cluster_is_one_line_naming_the_file_to_resume_from(tmp_path: Path) -> None:
    from hessverify.apps.campaign import ClusterError, _next_batch

    class Lost:
        def next_batch(self, block: bool) -> list[Any]:
            raise RuntimeError("scheduler connection lost\nsecond line")

    with pytest.raises(ClusterError) as e:
        _next_batch(Lost(), tmp_path / "c.json")
    assert str(e.value) == (f"the Dask cluster failed: RuntimeError: scheduler connection lost; the units done are in "
                            f"{tmp_path / 'c.json'}, go on with --resume {tmp_path / 'c.json'}")

    class Refused:
        def next_batch(self, block: bool) -> list[Any]:
            raise UsageError("torch is not installed here")

    with pytest.raises(UsageError, match="torch is not installed here"):  # hessverify's own errors pass as they are
        _next_batch(Refused(), None)


def test_a_resume_file_must_be_this_campaigns(tmp_path: Path) -> None:
    plan = false_alarms(4)
    with pytest.raises(UsageError, match="cannot be read"):
        load_resume(tmp_path / "missing.json", plan)
    with pytest.raises(UsageError, match="cannot be read"):
        load_resume(tmp_path, plan)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(UsageError, match="is not the results.json of a hessverify campaign"):
        load_resume(tmp_path / "x.json", plan)
    (tmp_path / "x.json").write_text(json.dumps({"results": [], "not_compared": []}))
    with pytest.raises(UsageError, match="is not the results.json of a hessverify campaign"):
        load_resume(tmp_path / "x.json", plan)
    theirs = {"results": [], "not_compared": [],
              "campaign": {"kind": "false-alarms", "options": {**plan.options, "seed": SEED + 1}, "units": []}}
    (tmp_path / "x.json").write_text(json.dumps(theirs))
    with pytest.raises(UsageError, match=f"different campaign .*--seed {SEED + 1} there, {SEED} here"):
        load_resume(tmp_path / "x.json", plan)
    theirs["campaign"]["kind"] = "detection"
    (tmp_path / "x.json").write_text(json.dumps(theirs))
    with pytest.raises(UsageError, match="holds a detection campaign"):
        load_resume(tmp_path / "x.json", plan)
    theirs["campaign"] = {"kind": "false-alarms", "options": plan.options,
                          "units": [{"index": 9, "id": "random-9", "records": 0, "not_compared": 0}]}
    (tmp_path / "x.json").write_text(json.dumps(theirs))
    with pytest.raises(UsageError, match="past the 4 problems asked for"):
        load_resume(tmp_path / "x.json", plan)


@pytest.mark.parametrize("args, status, words", [
    (["frobnicate"], 2, "invalid choice"),
    (["false-alarms", "--workers", "0"], 2, "--workers 0: give at least 1"),
    (["false-alarms", "--workers", "-3"], 2, "--workers -3: give at least 1"),
    (["false-alarms", "--scheduler", "localhost"], 2, "tcp://HOST:PORT"),
    (["false-alarms", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], 2, "not allowed with"),
    (["false-alarms", "--problems", "-1"], 2, "--problems -1"),
    (["false-alarms", "--special-share", "2"], 2, "--special-share 2.0"),
    (["false-alarms", "--batch", "0"], 2, "--batch 0"),
    (["false-alarms", "--json", "out.txt"], 2, "must end in .json"),
    (["false-alarms", "--resume", "/nonexistent/r.json"], 2, "--resume /nonexistent/r.json: cannot be read"),
    (["false-alarms", "--problems", "100000", "--max-time", "1"], 2, "more than the --max-time"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], status: int, words: str) -> None:
    pytest.importorskip("distributed")
    one_line_error(campaign(*args, *(["--no-torch"] if args[0] == "false-alarms" else [])), status, words)


def test_an_unreachable_scheduler_is_one_line() -> None:
    pytest.importorskip("distributed")
    r = campaign("false-alarms", "--problems", "3", "--no-torch", "--scheduler", "tcp://127.0.0.1:9")
    one_line_error(r, 2, "--scheduler tcp://127.0.0.1:9: cannot reach a Dask scheduler there")


# -- the same records, whoever runs them ---------------------------------------------------------------------


def test_two_local_workers_give_the_one_process_records(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "two.json"
    r = campaign("false-alarms", "--problems", "24", "--seed", str(SEED), "--no-torch", "--workers", "2",
                 "--batch", "5", "--json", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    camp = doc["campaign"]
    assert camp["complete"] and camp["done"] == 24 and [u["index"] for u in camp["units"]] == list(range(24))
    assert by_unit(doc) == one_process(false_alarms(24))
    assert doc["summary"]["failed"] == 0 and doc["summary"]["comparisons"] > 100
    assert "| backprop | 0 |" in r.stdout


def test_the_report_and_the_results_file_validate(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    jsonschema = pytest.importorskip("jsonschema")
    from hessverify.reports.schema import RESULTS_SCHEMA

    r = campaign("false-alarms", "--problems", "2", "--seed", "1", "--no-torch", "--workers", "1",
                 "--json", str(tmp_path / "c.json"), "--report", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    jsonschema.validate(json.loads((tmp_path / "c.json").read_text()), RESULTS_SCHEMA)
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {"results.json", "report.md", "report.html"}


def test_a_hand_started_cluster_gives_the_same_records_and_loses_nothing_when_a_worker_dies(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from .cluster import hand_started

    n = 60
    out = tmp_path / "killed.json"
    with hand_started(tmp_path, 2) as cluster:
        run = subprocess.Popen([*HESSVERIFY, "campaign", "false-alarms", "--problems", str(n), "--seed", str(SEED),
                                "--no-torch", "--scheduler", cluster.address, "--batch", "1", "--checkpoint", "0",
                                "--json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done_at_kill = _wait_for_progress(out, run)
        cluster.kill_worker(0)  # mid-run: its tasks are the other worker's now
        stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    assert done_at_kill < n, "the campaign ended before the worker was killed: nothing was tested"
    doc = json.loads(out.read_text())
    assert [u["index"] for u in doc["campaign"]["units"]] == list(range(n))  # each once, none lost
    assert by_unit(doc) == one_process(false_alarms(n))


def _wait_for_progress(path: Path, run: subprocess.Popen[str], at_least: int = 1) -> int:
    """How many units the campaign's checkpoint holds, once it holds ``at_least``."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert run.poll() is None, run.communicate()[1]
        try:
            done = json.loads(path.read_text())["campaign"]["done"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            done = 0
        if done >= at_least:
            return int(done)
        time.sleep(0.05)
    raise TimeoutError("the campaign wrote no checkpoint")


@pytest.mark.parametrize("signum, status, said", [(signal.SIGINT, 130, "interrupted"),
                                                   (signal.SIGTERM, 143, "terminated")])
def test_an_interrupted_campaign_resumes_without_repeating_or_losing_a_problem(
        tmp_path: Path, signum: int, status: int, said: str) -> None:
    pytest.importorskip("distributed")
    n = 40
    out = tmp_path / "partial.json"
    args = ["false-alarms", "--problems", str(n), "--seed", str(SEED), "--no-torch", "--workers", "2"]
    run = subprocess.Popen([*HESSVERIFY, "campaign", *args, "--batch", "1", "--checkpoint", "0", "--json", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_progress(out, run, 2)
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == status, stderr
    assert stderr.strip().splitlines()[-1] == f"hessverify: {said}" and "Traceback" not in stderr, stderr
    partial = json.loads(out.read_text())
    kept = [u["index"] for u in partial["campaign"]["units"]]
    assert not partial["campaign"]["complete"] and 0 < len(kept) < n, len(kept)
    r = campaign(*args, "--resume", str(out))
    assert r.returncode == 0, r.stderr
    assert f"{n - len(kept)} of {n} problems to run ({len(kept)} already in" in r.stderr
    doc = json.loads(out.read_text())
    assert [u["index"] for u in doc["campaign"]["units"]] == list(range(n))
    assert by_unit(doc) == one_process(false_alarms(n))
    # the units kept from before the interrupt are the very records that were written then
    assert {i: by_unit(doc)[i] for i in kept} == by_unit(partial)


def test_a_resume_file_from_another_seed_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "c.json"
    assert campaign("false-alarms", "--problems", "3", "--seed", "1", "--no-torch", "--workers", "1",
                    "--json", str(out)).returncode == 0
    before = out.read_bytes()
    r = campaign("false-alarms", "--problems", "3", "--seed", "2", "--no-torch", "--workers", "1", "--resume", str(out))
    one_line_error(r, 2, "--seed 1 there, 2 here")
    assert out.read_bytes() == before


# -- issue 24: a resume file is checked against itself ------------------------------------------------------------


def _resume_file(tmp_path: Path, plan: Plan, records: list[Any], options: Any = None) -> Path:
    doc = {"results": records, "not_compared": [],
           "campaign": {"kind": "false-alarms", "options": plan.options if options is None else options,
                        "units": [{"index": 0, "id": "random-0", "records": len(records), "not_compared": 0}]}}
    path = tmp_path / "resume.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_resume_file_whose_options_are_not_a_table_is_one_line_and_exit_2(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    path = _resume_file(tmp_path, false_alarms(2), [], options=["seed", 3])
    with pytest.raises(UsageError, match="is not the results.json of a hessverify campaign"):
        load_resume(path, false_alarms(2))
    r = campaign("false-alarms", "--problems", "2", "--seed", str(SEED), "--no-torch", "--workers", "1",
                 "--resume", str(path))
    one_line_error(r, 2, "is not the results.json of a hessverify campaign")


@pytest.mark.parametrize("change, words", [
    ({"passed": False, "failing_entries": 1, "max_abs_error": 0.0, "margin": 2.0}, "it fails (1 entries over the "
                                                                                  "bound) with an error of 0"),
    ({"max_abs_error": "1e-3"}, "max_abs_error is '1e-3', not a number"),
    ({"passed": "yes"}, "passed is 'yes'"),
    ({"passed": True, "margin": 5.0}, "it passes with a margin of 5.0"),
    ({"passed": False, "failing_entries": 2, "margin": 0.5}, "it fails with a margin of 0.5"),
    ({"passed": True, "failing_entries": 3}, "it passes with 3 entries over the bound"),
    ({"failing_entries": -1}, "failing_entries is -1"),
    ({"worst_entry": {"row": 3}}, "worst_entry.row is 3"),
    ({"bound_kind": "not_applicable", "passed": False, "failing_entries": 1}, "a not_applicable record cannot fail"),
])
def test_a_resumed_record_that_contradicts_itself_is_refused(tmp_path: Path, change: dict[str, Any],
                                                             words: str) -> None:
    plan = false_alarms(2)
    (unit,) = plan.run_here([0])
    good = json.loads(strict_json([c.to_dict() for c in unit.records]))
    assert load_resume(_resume_file(tmp_path, plan, good), plan)[0].id == unit.id  # as written: taken
    bad = [{**good[0], **change}, *good[1:]]
    with pytest.raises(UsageError, match=re.escape(f"result 0 (unit 0) contradicts itself: {words}")):
        load_resume(_resume_file(tmp_path, plan, bad), plan)
