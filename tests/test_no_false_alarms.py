"""The "Done when" problems of the no-false-alarms issue, end to end (CLI and check())."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hessverify
from hessverify.cli import main

THREE_PARAMS = """
id = "three-params-{act}"
[network]
inputs = 1
layers = [ {{ units = 1, activation = "identity", bias = false }},
           {{ units = 1, activation = "{act}", bias = false }},
           {{ units = 1, activation = "identity", bias = false }} ]
loss = "sse"
[data]
inputs = [[1.0]]
targets = [[0.0]]
[params]
values = [0.0, 1.0, 1.0]
"""

SATURATED_TANH = """
id = "tanh-input-scale-300"
[network]
inputs = 3
layers = [ { units = 4, activation = "tanh" }, { units = 2, activation = "identity" } ]
loss = "sse"
[data]
seed = 4
patterns = 8
input_scale = 300.0
[params]
seed = 4
scale = 0.5
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("act", ["gelu", "silu"])
def test_three_parameter_problem_with_exact_zero_entries_passes(act: str, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, act, THREE_PARAMS.format(act=act))
    assert main(["verify", path]) == 0
    assert "FAIL" not in capsys.readouterr().out
    problem = hessverify.load_case(path)
    # the complex step's truncation is there (its entries are not 0) and is covered, not hidden
    H = hessverify.hessian(problem, "complex_step")
    assert np.count_nonzero(H[0, 1:]) > 0 and np.all(hessverify.hessian(problem, "symbolic")[0, 1:] == 0.0)


@pytest.mark.parametrize("act", ["gelu", "silu"])
def test_check_with_a_correct_function_passes_on_the_three_parameter_problem(act: str) -> None:
    problem = hessverify.parse_case(THREE_PARAMS.format(act=act))
    result = hessverify.check(lambda p: hessverify.hessian(p, "autograd"), problem,
                              against=("autograd", "complex_step"))
    assert result.passed, result.summary()


def test_a_reference_that_cannot_serve_is_not_applicable_and_the_case_passes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", _write(tmp_path, "tanh300", SATURATED_TANH)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("complex_step:"))
    assert "not applicable" in line and "NaN or inf" in line and "net inputs up to" in line
    assert "1 reference(s) not applicable" in out and "0 failed" in out


def test_not_applicable_is_a_record_not_a_comparison() -> None:
    problem = hessverify.parse_case(SATURATED_TANH)
    results = hessverify.verify_problem(problem, references=["autograd", "complex_step"])
    na = [c for c in results if c.bound_kind == "not_applicable"]
    assert [c.reference for c in na] == ["complex_step"] and na[0].passed
    assert all(c.reference != "complex_step" for c in results if c.bound_kind != "not_applicable")
    assert all(c.passed for c in results)


def test_check_judges_by_the_references_that_can_serve() -> None:
    problem = hessverify.parse_case(SATURATED_TANH)
    result = hessverify.check(lambda p: hessverify.hessian(p, "backprop"), problem,
                              against=("autograd", "complex_step"))
    assert result.passed
    assert {c.reference: c.bound_kind for c in result.comparisons}["complex_step"] == "not_applicable"


HUGE_TARGET = """
id = "huge-target"
[network]
inputs = 1
layers = [ { units = 1, activation = "tanh" }, { units = 1, activation = "identity" } ]
loss = "sse"
[data]
inputs = [[0.5]]
targets = [[1e308]]
[params]
values = [0.3, 0.1, 0.7, 0.2]
"""


def test_a_huge_target_is_not_read_as_a_kink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", _write(tmp_path, "huge", HUGE_TARGET), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "kink" not in out
    assert "fd: not applicable" in out and "0 failed" in out
