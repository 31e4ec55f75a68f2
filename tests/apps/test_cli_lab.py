"""hessverify lab and hessverify stationary: outputs, files and exit statuses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import hessverify
from hessverify.apps.lab import OPTIMIZERS
from hessverify.cli import main
from hessverify.references import autograd_ref
from tests.conftest import CASES_DIR

SOFT = str(CASES_DIR / "xor-2-2-1-sigmoid-soft.toml")
XOR = str(CASES_DIR / "xor-2-2-1-sigmoid.toml")
SADDLE = str(CASES_DIR / "saddle-2-3-1-tanh-zero.toml")
CURVE = str(CASES_DIR / "curve-1-2-1-sigmoid-gain.toml")


def test_lab_help_lists_every_optimizer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "--help"]) == 0
    out = capsys.readouterr().out
    for name in OPTIMIZERS:
        assert f"  {name} " in out
    for option in ("--optimizers", "--tol", "--max-iter", "--json", "--plot"):
        assert option in out


def test_lab_writes_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    js, png = tmp_path / "runs.json", tmp_path / "runs.png"
    rc = main(["lab", SOFT, "--optimizers", "gd-ls,lm,lbfgs-5", "--tol", "1e-9", "--max-iter", "500",
               "--json", str(js), "--plot", str(png)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "lm" in out and "lbfgs-5" in out
    doc = json.loads(js.read_text())
    case = hessverify.load_case(SOFT)
    assert doc["param_names"] == list(case.param_names) and doc["peak_memory_unit"] == "bytes"
    assert [r["optimizer"] for r in doc["runs"]] == ["gd-ls", "lm", "lbfgs-5"]
    for r in doc["runs"]:
        assert {"optimizer", "iterations", "converged", "final_error", "final_grad_norm", "final_params", "seconds",
                "peak_memory"} <= set(r)
        theta = np.array(r["final_params"])
        assert theta.shape == (case.n_params,)
        g = np.linalg.norm(autograd_ref.gradient(case.with_params(theta)))
        assert r["final_grad_norm"] == pytest.approx(g, rel=1e-6, abs=1e-13)
        assert r["converged"] == (g < 1e-9)
        assert isinstance(r["peak_memory"], int) and r["peak_memory"] >= 0
        assert len(r["log"]) == r["iterations"] + 1
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_lab_log_prints_every_iteration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", SOFT, "--optimizers", "newton", "--max-iter", "3", "--log"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("newton ") and " E " in x and "|g|" in x]
    # inertia in words: "-4 0x0 +5" read as hexadecimal
    assert len(lines) >= 2 and re.search(r"inertia \d+ negative, \d+ zero, \d+ positive", lines[1])


def test_lab_perturb_moves_the_start(tmp_path: Path) -> None:
    js = tmp_path / "r.json"
    assert main(["lab", SADDLE, "--optimizers", "gd", "--max-iter", "0", "--perturb", "0.01", "--json", str(js)]) == 0
    theta = np.array(json.loads(js.read_text())["runs"][0]["final_params"])
    assert np.linalg.norm(theta - hessverify.load_case(SADDLE).params) == pytest.approx(0.01)


@pytest.mark.parametrize("args, message", [
    (["--optimizers", "gd,nope"], "unknown optimizer 'nope'"),
    (["--optimizers", ","], "--optimizers: give at least one name"),
    (["--tol", "-1"], "--tol must be a number > 0"),
    (["--max-iter", "-2"], "--max-iter must be >= 0"),
    (["--json", "/nonexistent-dir/x.json"], "does not exist"),
    (["--plot", "out.pdf"], "/out.pdf: the file must end in .png"),  # named as resolved at the start: absolute
])
def test_lab_bad_usage_is_one_line_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", XOR, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_stationary_writes_a_case_that_loads_back_to_the_point(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.toml"
    assert main(["stationary", XOR, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    m = re.search(r"^inertia: (\d+) negative, (\d+) zero, (\d+) positive$", text, re.M)
    assert m
    found = hessverify.load_case(out)
    assert found.id == "xor-2-2-1-sigmoid-stationary"
    assert np.linalg.norm(autograd_ref.gradient(found)) < 1e-12  # independently stationary
    H = hessverify.hessian(found, "autograd")
    ev = np.linalg.eigvalsh(H)
    tol = 1e-9 * np.abs(ev).max()
    neg, zero, pos = (int(np.sum(ev < -tol)), int(np.sum(np.abs(ev) <= tol)), int(np.sum(ev > tol)))
    assert (neg, zero, pos) == tuple(int(v) for v in m.groups())
    kind = "saddle" if neg and pos else "degenerate" if zero else "minimum" if pos else "maximum"
    assert re.search(rf"^{kind}\b", text, re.M)
    # written with repr: the file holds exactly the point, and running again finds it at once
    assert main(["stationary", str(out), "--out", str(tmp_path / "again.toml")]) == 0
    assert "after 0 iteration(s)" in capsys.readouterr().out
    assert np.array_equal(hessverify.load_case(tmp_path / "again.toml").params, found.params)


def test_stationary_on_the_shipped_saddle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stationary", SADDLE, "--out", str(tmp_path / "s.toml"), "--id", "my-saddle"]) == 0
    text = capsys.readouterr().out
    assert "inertia: 3 negative, 6 zero, 4 positive" in text and "\nsaddle:" in text
    assert hessverify.load_case(tmp_path / "s.toml").id == "my-saddle"


def test_stationary_reports_the_gain_redundancy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On the shipped gain case: a minimum up to the redundancy, |H v_j| / (|H| |v_j|) per gain, 3 zeros forced."""
    js = tmp_path / "s.json"
    assert main(["stationary", CURVE, "--out", str(tmp_path / "s.toml"), "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert "inertia: 0 negative, 3 zero, 7 positive" in text
    assert "3 gain unit(s), v_j = (w_j, b_j, -c_j), force 3 zero eigenvalue(s)" in text
    ratios = re.findall(r"^  (c\d\[\d\]) +\|H v\|/\(\|H\| \|v\|\) = (\S+)$", text, re.M)
    assert [u for u, _ in ratios] == ["c1[0]", "c1[1]", "c2[0]"] and all(float(r) < 1e-12 for _, r in ratios)
    assert "across the redundancy (H on the 7 directions orthogonal to every v_j): 0 negative, 0 zero, 7 positive" in text
    assert re.search(r"^minimum up to the gain redundancy", text, re.M)
    doc = json.loads(js.read_text())
    assert doc["kind"] == "degenerate" and doc["kind_across"] == "minimum"
    red = doc["gain_redundancy"]
    assert red["forced_zeros"] == 3 and [u["gain"] for u in red["units"]] == ["c1[0]", "c1[1]", "c2[0]"]
    for u, (_, printed) in zip(red["units"], ratios):  # printed to two digits
        assert u["residual"] == pytest.approx(float(printed), rel=0.05)
    found = hessverify.load_case(tmp_path / "s.toml")
    assert doc["params"] == list(found.params) and doc["param_names"] == list(found.param_names)


def test_stationary_without_gains_has_no_redundancy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    js = tmp_path / "s.json"
    assert main(["stationary", SADDLE, "--out", str(tmp_path / "s.toml"), "--json", str(js)]) == 0
    assert "gain redundancy" not in capsys.readouterr().out
    doc = json.loads(js.read_text())
    assert doc["gain_redundancy"] is None and doc["kind_across"] is None and doc["kind"] == "saddle"


def test_stationary_not_found_exits_5_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.toml"
    assert main(["stationary", XOR, "--out", str(out), "--max-iter", "1"]) == 6
    err = capsys.readouterr().err
    assert err.startswith("hessverify: error: no stationary point found") and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--out", "x.npy"], "/x.npy: the file must end in .toml"),  # named as resolved at the start: absolute
    (["--out", "/nonexistent-dir/x.toml"], "does not exist"),
    (["--out", "x.toml", "--tol", "0"], "--tol must be a number > 0"),
    (["--out", "x.toml", "--id", "Bad Id"], "--id 'Bad Id'"),
    (["--out", "x.toml", "--json", "x.txt"], "/x.txt: the file must end in .json"),
    (["--out", "x.toml", "--json", "x.toml"], "--json and --out name the same file"),
])
def test_stationary_bad_usage(args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["stationary", XOR, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []
