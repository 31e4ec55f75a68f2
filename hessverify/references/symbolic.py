"""``symbolic``: the gold reference, the closed form derived by SymPy and evaluated at 50 digits or exactly.

The code is the symbolic package (it imports SymPy): for dense networks
:mod:`hessverify.symbolic.reference` (Bishop's block formula), for networks
of any other layer kinds :mod:`hessverify.symbolic.kinds` (each kind's array
form traced into a straight-line program, composed by the exact chain rule).
This module declares the component and hands it the point's magnitude
Hessian, so that the bound on its own evaluation error costs nothing more.
"""

from __future__ import annotations

from hessverify.base.typing import FloatArray
from hessverify.engine.budget import estimated_cost
from hessverify.engine.components import BoundKind, Component, Cost, Lazy, Role, Tolerance
from hessverify.engine.forms import FullHessian
from hessverify.engine.point import Point, as_point
from hessverify.model.problem import Problem

__all__ = ["COMPONENT", "hessian", "hessian_with_error"]

_REFERENCE = "hessverify.symbolic.reference"
_KINDS = "hessverify.symbolic.kinds"


def _module(point: Point) -> str:
    """The dense closed form for classic dense networks with a loss at its default settings; the program of the
    kinds' array forms for everything else (it takes any network, and a loss's settings such as Huber's delta)."""
    return _REFERENCE if point.is_dense and not point.problem.loss_options else _KINDS


def hessian_with_error(problem: Problem | Point) -> tuple[FloatArray, FloatArray]:
    """The closed form rounded to float64 and a bound on its distance from the true Hessian."""
    point = as_point(problem)
    point.well_posed()
    return Lazy(_module(point), "hessian_with_error")(point.problem, magnitude=point.magnitude_hessian)


def hessian(problem: Problem | Point) -> FloatArray:
    """The gold reference rounded to float64."""
    return hessian_with_error(problem)[0]


def _small_enough(problem: Problem | Point) -> bool:
    point = as_point(problem)
    return bool(Lazy(_module(point), "small_enough")(point.problem))


def _left_out(problem: Problem | Point) -> str:
    point = as_point(problem)
    return str(Lazy(_module(point), "left_out")(point.problem))


def _seconds(problem: Problem) -> float:
    """The dense closed form's cost model (:func:`~hessverify.engine.budget.estimated_cost`), or the other kinds'
    program counted exactly (:func:`hessverify.symbolic.kinds.estimated_seconds`)."""
    if problem.architecture.is_dense and not problem.loss_options:
        return estimated_cost(problem)
    return float(Lazy(_KINDS, "estimated_seconds")(problem))


COMPONENT = Component(
    "symbolic", hessian, Role.REFERENCE, FullHessian,
    "closed form (SymPy) at 50 digits, its sums over patterns exact, or exact rationals; the truth for small cases",
    with_error=hessian_with_error, applies=_small_enough, left_out=_left_out,
    tolerance=Tolerance(BoundKind.HIGH_PRECISION,
                        "the closed form at 50 digits (or exact rationals) is the truth to ~1e-30 of its entries, so an "
                        "exact float64 method is within gamma_k M of it (rounding_bound(methods=1)), plus the "
                        "reference's own rounding to float64 and its error: the sums' (per entry) and the 50-digit "
                        "evaluation's (k 10^-49 M)",
                        rounding_sides=0),
    # memory: float64 double-doubles and bounds, RSS growth measured 6.2 x 8 W^2 at W = 2641 (rounded up);
    # seconds: the calibrated model of hessverify.engine.budget.estimated_cost, or the kinds' program counted
    cost=Cost(memory=(12.0, 4.0), seconds_of=_seconds),
    rank=150,
)
