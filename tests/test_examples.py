"""The examples: ``hessverify sweep`` catches each buggy implementation and shrinks it to a tiny network."""

from __future__ import annotations

from pathlib import Path

import pytest

from hessverify import parse_case
from hessverify.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def sweep(target: str, examples: int, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["sweep", "--method-under-test", f"{EXAMPLES / target}", "--examples", str(examples), "--seed", "0", "--dense-only"])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(("target", "min_layers"), [
    # f'' only matters inside a curved unit: one unit can show it
    ("dropped_second_derivative.py:hessian_buggy", 1),
    # the wrong index is in the term only cross-layer blocks have: it needs two layers
    ("wrong_cross_layer_index.py:hessian_buggy", 2),
])
def test_sweep_catches_the_bug_and_shrinks_it(target: str, min_layers: int, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = sweep(target, 100, capsys)
    assert status == 1, err
    case = parse_case(out)
    arch = case.architecture
    # Tiny: one input, one pattern, at most two layers of one unit.  The exact network can
    # differ between runs with the same seed (Hypothesis's shrinker carries state within a
    # process), so the test holds the size, not the shape; examples/README.md records both.
    assert min_layers <= arch.depth <= 2 and all(layer.units == 1 for layer in arch.layers), arch.describe()
    assert arch.inputs == 1 and case.n_patterns == 1 and case.n_params <= 4, out


@pytest.mark.parametrize("target", ["dropped_second_derivative.py:hessian", "wrong_cross_layer_index.py:hessian"])
def test_the_correct_implementations_pass(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = sweep(target, 15, capsys)
    assert status == 0, err + out
    assert "agrees with backprop, autograd, fd on 15 random problem(s)" in out
