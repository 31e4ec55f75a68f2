"""The NumPy columns of the activation table against sympy.diff of the SymPy column."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy

from hessverify.model.activations import ACTIVATIONS, get_activation

X = sympy.Symbol("x", real=True)
# many points, including far tails where naive formulas lose every digit
POINTS = np.concatenate([np.linspace(-8, 8, 161), [-40.0, -25.0, -12.5, 12.5, 25.0, 40.0]])


def _reference(expr: sympy.Expr, order: int) -> list[float]:
    """The order-th derivative at POINTS, with 300 digits (SymPy's forms cancel in the tails)."""
    d = sympy.diff(expr, X, order) if order else expr
    f = sympy.lambdify(X, d, modules="mpmath")
    with mpmath.workdps(300):
        return [float(f(mpmath.mpf(float(p)))) for p in POINTS]


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_numpy_column_matches_sympy_derivative(name: str, order: int) -> None:
    act = ACTIVATIONS[name]
    keep = np.abs(POINTS) > 1e-9 if act.kinks else np.ones(POINTS.size, bool)  # a kink has no derivative
    pts = POINTS[keep]
    ref = np.array(_reference(act.expr(X), order))[keep]
    nxt = np.array(_reference(act.expr(X), order + 1))[keep]
    got = (act.f, act.df, act.d2f, act.d3f)[order](pts)
    # A few ulps of the value, plus the function's own conditioning |a f^(k+1)(a)|:
    # libm's exp, tanh and erf are accurate to about an ulp of their argument's effect.
    allowed = 16 * np.finfo(float).eps * (np.abs(ref) + np.abs(pts) * np.abs(nxt)) + 1e-300
    bad = np.abs(got - ref) > allowed
    assert not bad.any(), (
        f"{name} order {order}: worst at a={pts[bad][0]}: numpy {got[bad][0]!r}, sympy {ref[bad][0]!r}"
    )


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_deriv_max_bounds_the_first_four_derivatives(name: str) -> None:
    """deriv_max feeds the rounding model's remainder term: it must be an upper bound."""
    act = ACTIVATIONS[name]
    grid = np.linspace(-12, 12, 1201)
    grid = grid[np.abs(grid) > 1e-9]
    for order in range(1, 5):
        f = sympy.lambdify(X, sympy.diff(act.expr(X), X, order), modules="mpmath")
        assert max(abs(float(f(mpmath.mpf(float(p))))) for p in grid) <= act.deriv_max, order


def test_only_relu_has_a_kink() -> None:
    assert {n for n, a in ACTIVATIONS.items() if a.kinks} == {"relu"}


def test_unknown_activation_names_the_choices() -> None:
    with pytest.raises(KeyError, match="unknown activation 'tahn'.*tanh"):
        get_activation("tahn")


def test_saturated_derivatives_keep_relative_accuracy() -> None:
    """sigma'(40) is about 4e-18: 1 - s would give exactly 0."""
    s = ACTIVATIONS["sigmoid"]
    assert s.df(np.array([40.0]))[0] == pytest.approx(float(mpmath.exp(-40) / (1 + mpmath.exp(-40)) ** 2), rel=1e-14)
    t = ACTIVATIONS["tanh"]
    assert t.df(np.array([20.0]))[0] == pytest.approx(float(mpmath.sech(20) ** 2), rel=1e-14)
