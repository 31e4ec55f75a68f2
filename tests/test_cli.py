"""The command line: outputs, files and exit statuses; never a traceback for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hessverify
from hessverify import registry
from hessverify.cli import main
from hessverify.engine.registry import Method

from .conftest import CASES_DIR

XOR = str(CASES_DIR / "xor-2-2-1-sigmoid.toml")


def test_params_prints_names_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", XOR]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == list(hessverify.load_case(XOR).param_names)
    assert lines[0] == "W1[0,0]" and lines[4] == "b1[0]" and lines[-1] == "b2[0]"


def test_verify_all_shipped_cases_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    assert main(["verify", str(CASES_DIR), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "0 failed" in text and "FAIL" not in text
    doc = json.loads(out.read_text())
    assert doc["summary"]["failed"] == 0
    assert {r["case"] for r in doc["results"]} == {p.stem for p in CASES_DIR.glob("*.toml")}


def test_hessian_writes_npy(tmp_path: Path) -> None:
    out = tmp_path / "H.npy"
    assert main(["hessian", XOR, "--method", "autograd", "--out", str(out)]) == 0
    H = np.load(out)
    assert H.shape == (9, 9) and H.dtype == np.float64
    np.testing.assert_allclose(H, hessverify.hessian(hessverify.load_case(XOR)), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("argv, message", [
    (["verify", "nope.toml"], "nope.toml: no such file"),
    (["hessian", XOR, "--method", "magic", "--out", "x.npy"], "unknown method 'magic'"),
    (["hessian", XOR, "--out", "x.txt"], "must end in .npy"),
    (["verify", "--method", "magic"], "unknown method 'magic'"),
    (["frobnicate"], "invalid choice"),
    (["hessian", XOR], "required: --out"),
])
def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hessverify: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_invalid_case_exits_2_and_names_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(XOR).read_text().replace('"sigmoid" }, { units = 1', '"tahn" }, { units = 1'))
    assert main(["verify", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: [network.layers[0].activation] unknown activation 'tahn'" in err


def _kink_case(tmp_path: Path) -> str:
    """relu-3-5-2 with pattern 0 all zeros and b1[0] = 0: unit 0 of layer 1 exactly at its kink."""
    from dataclasses import replace

    case = hessverify.load_case(CASES_DIR / "relu-3-5-2.toml")
    theta = case.params.copy()
    theta[case.architecture.param_index("b1[0]")] = 0.0
    x = case.inputs.copy()
    x[0] = 0.0
    path = tmp_path / "kink.toml"
    path.write_text(replace(case, params=theta, inputs=x, id="kink").to_toml())
    return str(path)


def test_a_kink_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", _kink_case(tmp_path)]) == 3
    assert "NOT DIFFERENTIABLE" in capsys.readouterr().out


def test_overflow_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = Path(CASES_DIR / "single-neuron-tanh.toml").read_text().replace("values = [0.8, -0.1]", "values = [1e308, 1e308]")
    text = text.replace("[2.0]", "[1e10]")
    (tmp_path / "big.toml").write_text(text)
    assert main(["verify", str(tmp_path / "big.toml")]) == 4
    assert "OVERFLOW" in capsys.readouterr().out


def test_a_discrepancy_exits_1_and_names_the_entry(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from hessverify.methods import backprop

    def off_by_a_little(problem: hessverify.Problem) -> np.ndarray:
        H = backprop.hessian(problem)
        H[-1, -1] *= 1 + 1e-7  # b2[0] x b2[0]
        return H

    monkeypatch.setitem(registry.METHODS, "planted",
                        Method("planted", off_by_a_little, "method", "matrix", "a planted bug"))
    code = main(["verify", XOR, "--method", "planted", "--reference", "autograd"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL b2[0] x b2[0]" in out and "1 entries over the bound" in out


def test_console_script_runs_as_a_module() -> None:
    """No traceback reaches the user: run the real entry point in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "hessverify", "verify", "/nonexistent/case.toml"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "no such file" in proc.stderr


def test_help_lists_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "exit status" in capsys.readouterr().out


@pytest.mark.parametrize("where, message", [
    ("{tmp}", "is a directory"),
    ("{tmp}/missing/out.json", "does not exist"),
])
def test_bad_json_path_is_a_usage_error_before_any_work(where: str, message: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", XOR, "--json", where.format(tmp=tmp_path)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "case(s)" not in captured.out  # nothing was verified


def test_summary_counts_approximations_apart(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["verify", XOR, "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "r.json").read_text())
    n_approx = doc["summary"]["approximations"]
    assert n_approx > 0
    assert f"{doc['summary']['comparisons']} comparison(s)" in out and f"{n_approx} approximation record(s)" in out
    assert doc["summary"]["comparisons"] + n_approx == len(doc["results"])


def test_derive_at_a_kink_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["derive", _kink_case(tmp_path), "--entry", "W1[0,0]", "W2[0,0]"]) == 3
    assert "not twice differentiable" in capsys.readouterr().err


# -- what verify prints -------------------------------------------------------------

def test_verify_prints_one_line_per_case_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", XOR, str(CASES_DIR / "linear-3-2-2.toml")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("margin = |error| / bound")
    case_lines = [x for x in lines if x.startswith(("xor-2-2-1-sigmoid", "linear-3-2-2"))]
    assert len(case_lines) == 2
    assert all(" passed " in x and " failed " in x and "worst margin" in x and " x " in x for x in case_lines)
    # the approximation note once, not once per approximation record
    assert out.count("reported, never a failure") == 1


def test_verify_verbose_prints_the_full_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", XOR, "--verbose"]) == 0
    out = capsys.readouterr().out
    rows = [x for x in out.splitlines() if x.startswith("xor-2-2-1-sigmoid")]
    assert len(rows) > 10 and any(" backprop " in r and " autograd " in r for r in rows)
    assert out.count("reported, never a failure") == 1


def test_an_approximation_named_as_a_reference_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", XOR, "--reference", "gauss_newton"]) == 2
    err = capsys.readouterr().err
    assert "gauss_newton cannot be a reference" in err and "approximation" in err


def test_fd_named_as_a_method_is_held_to_its_own_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(CASES_DIR), "--method", "fd", "--reference", "autograd"]) == 0
    assert "0 failed" in capsys.readouterr().out


def test_verify_says_when_it_leaves_symbolic_out(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from hessverify.symbolic import reference

    monkeypatch.setattr(reference, "MAX_COST", 0.01)  # seconds: every case is then too costly
    assert main(["verify", XOR]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "symbolic: skipped" in x)
    cost = reference.estimated_cost(hessverify.load_case(XOR))
    assert f"estimated cost {cost:.3g} above the limit 0.01" in line and "name it to force it" in line


def test_a_failure_at_an_exact_zero_says_so(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from hessverify.methods import backprop

    linear = str(CASES_DIR / "linear-3-2-2.toml")
    i, j = 8, 10  # an entry that is exactly 0 for this linear network
    assert backprop.hessian(hessverify.load_case(linear))[i, j] == 0.0

    def nonzero_where_zero(problem: hessverify.Problem) -> np.ndarray:
        H = backprop.hessian(problem)
        H[i, j] = H[j, i] = 1e-20
        return H

    monkeypatch.setitem(registry.METHODS, "planted",
                        Method("planted", nonzero_where_zero, "method", "matrix", "a planted bug"))
    assert main(["verify", linear, "--method", "planted", "--reference", "autograd"]) == 1
    out = capsys.readouterr().out
    assert "reference is exactly 0" in out and "e+2" not in out


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hessverify {version('hessverify')}"
    assert hessverify.__version__ == version("hessverify")


@pytest.mark.parametrize("argv", [["-q", "params", XOR], ["params", XOR, "--quiet"], ["--quiet", "params", XOR, "-q"]])
def test_quiet_is_accepted_before_or_after_the_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0 and capsys.readouterr().out.startswith("W1[0,0]")


def test_a_long_case_id_keeps_the_table_in_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every case line puts its counts in the same column, however long the ids (here 48 characters)."""
    long_id = "a-case-whose-identifier-is-longer-than-the-column"
    text = (CASES_DIR / "linear-3-2-2.toml").read_text()
    (tmp_path / "long.toml").write_text(text.replace('id = "linear-3-2-2"', f'id = "{long_id}"'))
    assert main(["verify", XOR, str(tmp_path / "long.toml"), "--method", "backprop", "--reference", "autograd"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(x for x in lines if x.startswith("case "))
    rows = [x for x in lines if x.startswith(("xor-2-2-1-sigmoid ", long_id + " "))]
    assert len(rows) == 2
    assert {x.index(" passed") for x in rows} == {len(header.split("comparisons")[0]) + 3}


def test_verify_of_the_shipped_layer_kinds_passes(capsys: pytest.CaptureFixture[str]) -> None:
    """`make report` verifies every shipped case; the layer kinds' among them (each component's cost asks the
    layers' sizes, which a conv or norm layer gives by its output shape, not by ``units``)."""
    kinds = [str(p) for p in sorted(CASES_DIR.glob("*.toml"))
             if not hessverify.load_case(p).architecture.is_dense]
    assert len(kinds) >= 8
    assert main(["verify", *kinds]) == 0
    assert f"{len(kinds)} case(s)" in capsys.readouterr().out
