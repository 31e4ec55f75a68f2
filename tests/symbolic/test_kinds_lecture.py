"""``derive`` on a convolution's kernel and a LayerNorm's gain: the closed form against ``sympy.diff`` of the error."""

from __future__ import annotations

import random
from pathlib import Path

import mpmath
import numpy as np
import pytest
import sympy

from hessverify.errors import UsageError
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.symbolic import kinds
from hessverify.symbolic.kinds_lecture import latex_name, layer_entry
from hessverify.symbolic.lecture import derive

CONV = Architecture(6, (Layer(kind="conv1d", options={"channels": 2, "kernel": 2, "padding": 1}, activation="tanh"),
                        Layer(kind="flatten"), Layer(1)), input_shape=(2, 3))
NORM = Architecture(2, (Layer(2, "tanh"), Layer(kind="layer_norm"), Layer(1, "tanh")))


def problem(arch: Architecture, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    return Problem(arch, "sse", rng.standard_normal(arch.n_params) * 0.5, rng.standard_normal((2, arch.inputs)),
                   rng.standard_normal((2, 1)), id="lecture")


def _downstream(entry, outputs):  # type: ignore[no-untyped-def]
    """The error as a function of the layer's outputs (SymPy), walking the program from the error down to them."""
    defs = {n.symbol: n for n in entry.prog.tape.nodes}
    stop = set(outputs)
    memo = {}

    def walk(s):  # type: ignore[no-untyped-def]
        if s in stop or s not in defs:
            return s
        if s not in memo:
            memo[s] = defs[s].template.at([walk(a) for a in defs[s].args])
        return memo[s]

    return walk(entry.prog.error)


def _check(arch: Architecture, names: list[str]) -> None:
    entry = layer_entry(problem(arch), names)
    formula = entry.formula
    outputs = entry.outputs
    e = _downstream(entry, outputs)
    # delta and Q from sympy.diff of the error in the layer's outputs, then the outputs written out
    named = {}
    for i in range(len(outputs)):
        named[entry._output_symbol("delta", i)] = sympy.diff(e, outputs[i])
        for j in range(i, len(outputs)):
            named[entry._output_symbol("Q", i, j)] = sympy.diff(e, outputs[i], outputs[j])
    assert formula.free_symbols & set(named), "the formula reads the layer's delta or Q"
    closed = formula.xreplace(named)
    direct = entry.explicit()  # sympy.diff of the whole error written out
    full = {n.symbol: n for n in entry.prog.tape.nodes}

    def expand(expr):  # type: ignore[no-untyped-def]
        for _ in range(len(full) + 1):
            inner = expr.free_symbols & set(full)
            if not inner:
                return expr
            expr = expr.xreplace({s: full[s].definition for s in inner})
        return expr

    closed = expand(closed)
    symbols = sorted(closed.free_symbols | direct.free_symbols, key=str)
    f, g = (sympy.lambdify(symbols, expr, modules="mpmath") for expr in (closed, direct))
    rng = random.Random(1)
    with mpmath.workdps(30):
        for _ in range(3):
            point = [mpmath.mpf(rng.uniform(-1, 1)) for _ in symbols]
            a, b = f(*point), g(*point)
            assert abs(a - b) <= 1e-25 * (1 + abs(b)), (a, b)


@pytest.mark.parametrize("names", [["W1[0,0,1]", "W1[0,1,0]"], ["W1[1,1,1]", "b1[1]"], ["W1[1,0,0]"]])
def test_a_conv_kernel_entry_equals_sympy_diff_of_the_error(names: list[str]) -> None:
    _check(CONV, names)


@pytest.mark.parametrize("names", [["W2[0]", "W2[1]"], ["W2[1]", "W2[1]"], ["W2[1]"]])
def test_a_layer_norm_gain_entry_equals_sympy_diff_of_the_error(names: list[str]) -> None:
    _check(NORM, names)


def test_derive_latex_of_a_conv_kernel_entry_reads_like_the_layer() -> None:
    case = problem(CONV)
    text = derive(case, ["W1[0,0,1]", "W1[0,1,0]"], latex=True, digits=20)
    assert "\\frac{\\partial^{2} e}{\\partial W^{(1)}_{0,0,1}\\,\\partial W^{(1)}_{0,1,0}}" in text
    assert "Q^{(1)}_{(0,0),(0,1)}" in text and "x_{0,1}" in text
    assert "conv1d" in text and "nn.Conv1d" in text
    value = text.strip().splitlines()[-1]
    num, den, _ = kinds.hessian_high_precision(case, 20)
    i, j = (CONV.param_index(n) for n in ("W1[0,0,1]", "W1[0,1,0]"))
    with mpmath.workdps(20):
        assert mpmath.nstr(mpmath.mpf(num[i, j]) / den, 20) == value.strip()


def test_derive_latex_of_a_layer_norm_gain_names_the_normalised_input() -> None:
    text = derive(problem(NORM), ["W2[0]", "W2[1]"], latex=True, digits=20)
    assert "\\partial W^{(2)}_{0}\\,\\partial W^{(2)}_{1}" in text
    assert "\\sqrt{" in text  # the normalisation's root, among the definitions
    assert "10^{-5}" in text  # eps shown as the float it is, not as its 21-digit dyadic fraction


def test_entries_of_two_layers_and_batch_statistics_are_refused_in_one_line() -> None:
    with pytest.raises(UsageError, match="within one layer"):
        layer_entry(problem(NORM), ["W1[0,0]", "W2[0]"])
    bn = Architecture(2, (Layer(kind="batch_norm"), Layer(1)))
    with pytest.raises(UsageError, match="patterns meet"):
        layer_entry(problem(bn), ["W1[0]"])


def test_latex_names() -> None:
    assert latex_name("delta2[0,3]") == "\\delta^{(2)}_{0,3}"
    assert latex_name("h1.4") == "h^{(1.4)}"


def test_derive_latex_on_the_shipped_conv_and_layer_norm_cases(capsys: pytest.CaptureFixture[str]) -> None:
    from hessverify.cli import main

    root = Path(__file__).resolve().parents[2] / "cases"
    assert main(["derive", str(root / "conv1d-2x8-3-pool-2-tanh.toml"), "--entry", "W1[0,0,1]", "W1[0,1,0]",
                 "--latex", "--digits", "20"]) == 0
    out = capsys.readouterr().out
    assert "\\partial W^{(1)}_{0,0,1}\\,\\partial W^{(1)}_{0,1,0}" in out and "Q^{(1)}" in out
    assert main(["derive", str(root / "layernorm-mlp-3-4-2-ce.toml"), "--entry", "W2[1]", "--latex"]) == 0
    assert "\\delta^{(2)}_{1}" in capsys.readouterr().out
    assert main(["derive", str(root / "layernorm-mlp-3-4-2-ce.toml"), "--entry", "W1[0,0]", "W2[1]"]) == 2
    assert "within one layer" in capsys.readouterr().err
