"""hessverify.apps.lab.claims and the campaign kind lab-claims: units, statistics, verdicts, the docs' tables.

The statistics are held to values worked out independently (the order-statistic
interval of the median from Conover's table, binomial sums by math.comb), the
saddles to autograd, the data sets to their definitions.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import autograd
import numpy as np
import pytest

from hessverify.apps.lab import claims
from hessverify.references import autograd_ref
from tests.conftest import ROOT

sklearn = pytest.importorskip("sklearn")


def test_the_median_interval_is_the_order_statistic_one() -> None:
    # Conover (1999), table A3: for n = 20 the 95 % interval of the median is (x_6, x_15)
    m, lo, hi, cov = claims.median_interval(list(range(1, 21)))
    assert (m, lo, hi) == (10.5, 6.0, 15.0)
    exact = 1 - 2 * sum(math.comb(20, i) for i in range(6)) / 2**20
    assert cov == pytest.approx(exact) and cov >= 0.95
    # a failed start is above every budget: it moves the median, not past the interval's lower end
    m, lo, hi, _ = claims.median_interval([1.0] * 9 + [math.inf] * 11)
    assert m == math.inf and lo == 1.0 and hi == math.inf


def test_the_ratio_interval_is_censoring_aware() -> None:
    a = ([2.0] * 20, [2.0] * 20)
    b = ([4.0] * 20, [4.0] * 20)
    r = claims.ratio_interval(a, b)
    assert r["estimate"] == [0.5, 0.5] and r["interval"] == [0.5, 0.5]
    # every start of a stopped at 100 without reaching the target: the ratio is at least 100 / 4
    r = claims.ratio_interval(([100.0] * 20, [math.inf] * 20), b)
    assert r["estimate"] == [25.0, math.inf] and r["interval"][0] == 25.0 and r["interval"][1] == math.inf


def test_data_sets_are_what_they_say() -> None:
    p = claims.dataset_problem("parity-7")
    assert p.n_patterns == 128 and p.n_params == 7 * 7 + 7 + 7 + 1
    for x, t in zip(p.inputs, p.targets[:, 0]):
        assert t == int(x.sum()) % 2
    iris = claims.dataset_problem("iris")
    assert iris.inputs.shape == (150, 4) and np.allclose(iris.inputs.mean(axis=0), 0, atol=1e-12)
    assert np.array_equal(iris.targets.sum(axis=1), np.ones(150))  # one class per pattern
    assert claims.dataset_problem("breast-cancer").targets.shape == (569, 1)


def test_units_are_decided_by_the_options() -> None:
    opts = claims.default_options()
    us = claims.units(opts)
    assert len({u.id for u in us}) == len(us) and opts["starts"] >= 20
    assert us == claims.units(json.loads(json.dumps(opts)))  # as they read back from a resume file
    p = claims.dataset_problem("wine")
    np.testing.assert_array_equal(claims.start_params(p, "wine", 3), claims.start_params(p, "wine", 3))
    assert not np.array_equal(claims.start_params(p, "wine", 3), claims.start_params(p, "wine", 4))


@pytest.mark.parametrize("name, saddle", [("iris", True), ("xor", False)])
def test_the_zero_point_is_stationary_and_a_saddle_where_the_study_says(name: str, saddle: bool) -> None:
    s = claims.zero_saddle(claims.dataset_problem(name))
    assert np.linalg.norm(autograd_ref.gradient(s)) < 1e-12
    ev = np.linalg.eigvalsh(autograd.hessian(autograd_ref.error_function(s))(s.params))
    assert (ev.min() < -1e-8 * np.abs(ev).max()) == saddle
    assert (name in claims.SADDLE_DATASETS) == saddle


def _records(ratio: float) -> list[dict]:
    """Hand-made records: the gain variant takes ``ratio`` of the plain one's epochs and seconds."""
    out = []
    for o, scale in (("gd", 1.0), ("bp-ag", ratio), ("lm", 0.01), ("momentum", 0.5), ("adam", 0.5)):
        for s in range(20):
            base = 1000.0 * (1 + s / 40)
            out.append({"experiment": "speed", "dataset": "xor", "optimizer": o, "seed": s, "n": 9, "success": True,
                        "epochs": base * scale, "evaluations": base * scale, "cpu_seconds": base * scale / 1000,
                        "accuracy": 1.0, "final_kappa": 10.0, "trace": []})
    return out


@pytest.mark.parametrize("ratio, verdict", [(0.3, "supported"), (1.0, "refuted")])
def test_the_gain_verdict_follows_the_interval(ratio: float, verdict: str) -> None:
    opts = claims.default_options() | {"datasets": ["xor"], "speed": ["gd", "bp-ag", "lm", "momentum", "adam"]}
    s = claims.summarise(_records(ratio), opts)
    assert s["verdicts"]["gain"]["verdict"] == verdict
    newton = s["verdicts"]["newton"]["rows"][0]
    assert newton["ratio"]["estimate"] == [100.0, 100.0] and newton["about_n"] == "no"  # 100 > 3 x 9
    assert {r["verdict"] for r in s["verdicts"]["momentum_adam"]["rows"]} == {"narrows"}
    text = claims.markdown(s, opts)
    assert "| xor | `gd` | `bp-ag` |" in text and f"**{verdict}**" in text


def test_a_unit_reaches_its_target_or_says_why_not() -> None:
    opts = claims.default_options(quick=True)
    r = claims.run_unit(opts, claims.Unit("speed", "xor", "lm", 1))
    assert r["success"] == (r["final_error"] <= claims.DATASETS["xor"].target_error) == (r["reason"] == "target")
    assert len(r["trace"]) == len(claims.trace_grid(opts["max_epochs_second"]))
    m = claims.run_unit(opts, claims.Unit("memory", "iris", "lm", 0, 5))
    assert m["peak_memory"] >= 8 * m["n"] ** 2  # at least the Hessian itself


def test_the_campaign_kind_runs_the_units_and_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    from hessverify.apps.campaign.kinds import plan_for
    from hessverify.cli import main

    plan = plan_for("lab-claims", argparse.Namespace(quick=True, starts=1, datasets="xor"))
    assert plan.size == len(claims.units(plan.options))
    first = plan.run_here([0])[0].extra["unit"]
    again = claims.run_unit(plan.options, claims.units(plan.options)[0])
    timed = ("seconds", "cpu_seconds")  # everything but the clocks is decided by the unit
    assert {k: v for k, v in first.items() if k not in timed} == {k: v for k, v in again.items() if k not in timed}
    for argv, said in ((["--starts", "0"], "--starts 0"), (["--datasets", "mnist"], "choose from xor")):
        assert main(["lab", "claims", "--quick", *argv]) == 2
        assert said in capsys.readouterr().err


def test_the_tiny_study_end_to_end_and_its_docs(tmp_path: Path) -> None:
    """What CI runs of the study: a tiny campaign, then the script that writes docs/lab.md's section from it."""
    pytest.importorskip("distributed")
    out = tmp_path / "claims.json"
    cmd = [sys.executable, "-m", "hessverify", "lab", "claims", "--quick", "--starts", "1", "--datasets", "xor",
           "--workers", "1", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())["campaign"]
    assert doc["complete"] and set(doc["summary"]["verdicts"]) == {"gain", "newton", "momentum_adam", "memory",
                                                                    "saddle"}
    page = tmp_path / "lab.md"
    page.write_text("# lab\n<!-- claims:begin -->\nold\n<!-- claims:end -->\nafter\n")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lab_claims_docs.py"), str(out), "--doc", str(page),
                           "--plots", str(tmp_path / "png")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "old" not in text and "### Claim: adaptive gain" in text and text.endswith("after\n")
    assert (tmp_path / "png" / "claims-xor.png").read_bytes()[:4] == b"\x89PNG"
