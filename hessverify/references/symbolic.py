"""``symbolic``: the gold reference, the closed form derived by SymPy and evaluated in 50 digits or exactly.

The code is the symbolic package (:mod:`hessverify.symbolic.reference`, which
imports SymPy); this module declares the component and hands it the point's
magnitude Hessian, so that the bound on its own evaluation error costs nothing
more.
"""

from __future__ import annotations

from hessverify.base.typing import FloatArray
from hessverify.engine.budget import SYMBOLIC_RATE, estimated_cost
from hessverify.engine.components import BoundKind, Component, Cost, Lazy, Role, Tolerance
from hessverify.engine.forms import FullHessian
from hessverify.engine.point import Point, as_point
from hessverify.errors import UsageError
from hessverify.model.problem import Problem

__all__ = ["COMPONENT", "hessian", "hessian_with_error"]

_REFERENCE = "hessverify.symbolic.reference"


def hessian_with_error(problem: Problem | Point) -> tuple[FloatArray, FloatArray]:
    """The closed form rounded to float64 and a bound on its distance from the true Hessian."""
    point = as_point(problem)
    point.well_posed()
    if not point.is_dense or point.problem.loss_options:
        raise UsageError(_left_out(point) + "; use autograd, complex_step, fd or richardson as the reference")
    return Lazy(_REFERENCE, "hessian_with_error")(point.problem, magnitude=point.magnitude_hessian)


def hessian(problem: Problem | Point) -> FloatArray:
    """The gold reference rounded to float64."""
    return hessian_with_error(problem)[0]


def _small_enough(problem: Problem | Point) -> bool:
    point = as_point(problem)
    return point.is_dense and not point.problem.loss_options and bool(Lazy(_REFERENCE, "small_enough")(point.problem))


def _left_out(problem: Problem | Point) -> str:
    point = as_point(problem)
    if point.problem.loss_options:
        return f"symbolic: its closed form takes the {point.problem.loss} loss with its default settings only"
    if not point.is_dense:
        kinds = sorted({layer.kind for layer in point.architecture.layers} - {"dense"})
        if any(layer.is_dense and layer.opts["gain"] for layer in point.architecture.layers):
            kinds.append("gains")
        return f"symbolic: its closed form covers dense layers without gains only, not {', '.join(kinds)}"
    return str(Lazy(_REFERENCE, "left_out")(point.problem))


COMPONENT = Component(
    "symbolic", hessian, Role.REFERENCE, FullHessian,
    "closed form (SymPy) in 50-digit mpmath, or exact rationals; the truth for small cases",
    with_error=hessian_with_error, applies=_small_enough, left_out=_left_out,
    tolerance=Tolerance(BoundKind.HIGH_PRECISION,
                        "the closed form in 50-digit mpmath (or exact rationals) is the truth to ~1e-48 M, so an exact "
                        "float64 method is within gamma_k M of it (rounding_bound(methods=1)), plus the reference's own "
                        "rounding to float64 (measured exactly) and its 50-digit evaluation error (k 10^-49 M)",
                        rounding_sides=0),
    cost=Cost(memory=(80.0, 4.0),  # mpmath numbers as Python objects, ~600 bytes an entry with the program
              seconds_of=lambda problem: estimated_cost(problem) / SYMBOLIC_RATE),
    rank=150,
)
