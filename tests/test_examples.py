"""The examples: ``hessverify sweep`` catches each buggy implementation and shrinks it to a tiny network."""

from __future__ import annotations

from pathlib import Path

import pytest

from hessverify import parse_case
from hessverify.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def sweep(target: str, examples: int, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["sweep", "--method-under-test", f"{EXAMPLES / target}", "--examples", str(examples), "--seed", "0"])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(("target", "max_layers", "max_params"), [
    # f'' only matters inside a curved unit: one unit, one layer
    ("dropped_second_derivative.py:hessian_buggy", 1, 2),
    # the wrong index is in the term only cross-layer blocks have: two layers of one unit
    ("wrong_cross_layer_index.py:hessian_buggy", 2, 4),
])
def test_sweep_catches_the_bug_and_shrinks_it(target: str, max_layers: int, max_params: int,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = sweep(target, 100, capsys)
    assert status == 1, err
    case = parse_case(out)
    units = [layer.units for layer in case.architecture.layers]
    assert case.architecture.depth == max_layers and units == [1] * max_layers, case.architecture.describe()
    assert case.architecture.inputs == 1 and case.n_patterns == 1 and case.n_params <= max_params, out


@pytest.mark.parametrize("target", ["dropped_second_derivative.py:hessian", "wrong_cross_layer_index.py:hessian"])
def test_the_correct_implementations_pass(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = sweep(target, 15, capsys)
    assert status == 0, err + out
    assert "agrees with backprop, autograd, fd on 15 random problem(s)" in out
