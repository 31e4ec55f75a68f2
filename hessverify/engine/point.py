"""A problem at a precision, computed once: the point every method and reference reads.

Every method, reference and bound needs the same few things of a problem:
the forward pass with the activations' and the loss's derivatives, whether
the Hessian exists there (no unit or residual at a kink, nothing overflowing),
the magnitudes of the propagated quantities and their inherited errors, the
magnitude Hessian ``M`` and the rounding bound ``2 gamma_k M``.  A
:class:`Point` computes each of these the first time it is asked for and
keeps it, so a whole ``verify`` computes each once per problem and precision
(``benchmarks/run_counts.py`` counts them), the way a module's forward pass
saves what its backward pass needs.

:meth:`Point.of` returns the one point of a problem (per precision): it is
kept beside the problem for as long as the problem lives, and recomputed if
the problem's arrays were changed in place since (a fingerprint of the
parameters and data is checked on every lookup).

Examples
--------
>>> import hessverify
>>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
>>> p = Point.of(case)
>>> p is Point.of(case), p.forward is p.well_posed()
(True, True)
>>> bool((p.rounding() > 0).all()), p.at("float32").precision.name
(True, 'float32')
"""

from __future__ import annotations

import weakref
from functools import cached_property
from typing import Any

import numpy as np

from hessverify.base.precision import FLOAT64, Precision, get_precision
from hessverify.base.typing import FloatArray
from hessverify.engine import bounds as _bounds
from hessverify.errors import OverflowReport, UsageError
from hessverify.model import graph_rounding
from hessverify.model.build import graph_of, graph_values
from hessverify.model.forward import ForwardPass, forward, gradient_from
from hessverify.model.graph import Graph
from hessverify.model.graph_rounding import node_errors
from hessverify.model.kernel import Quantities
from hessverify.model.network import Architecture
from hessverify.model.problem import Problem
from hessverify.model.rounding import chain_length, values_and_errors
from hessverify.model.well_posed import ensure_well_posed

__all__ = ["Point", "as_point", "as_problem", "checked"]

_POINTS: weakref.WeakKeyDictionary[Problem, dict[str, Point]] = weakref.WeakKeyDictionary()


def _fingerprint(problem: Problem) -> int:
    """A hash of the numbers a point is computed from (parameters, inputs, targets)."""
    return hash((np.ascontiguousarray(problem.params).tobytes(), np.ascontiguousarray(problem.inputs).tobytes(),
                 np.ascontiguousarray(problem.targets).tobytes()))


class Point:
    """``problem`` at ``precision``: every shared quantity, computed on first use and kept (module text).

    Use :meth:`Point.of` rather than the constructor, so that everyone asking
    about the same problem shares one point.
    """

    def __init__(self, problem: Problem, precision: Precision | str = FLOAT64, *,
                 _float64: Point | None = None) -> None:
        if not isinstance(problem, Problem):
            raise UsageError(f"a point is made of a Problem, got {type(problem).__name__}")
        self.problem = problem
        self.precision = get_precision(precision)
        self._float64 = _float64  # the float64 point whose forward pass this one shares
        self._fingerprint = _fingerprint(problem)
        self._well_posed: ForwardPass | BaseException | None = None

    # -- finding the point of a problem ------------------------------------------------

    @classmethod
    def of(cls, problem: Problem | Point, precision: Precision | str | None = None) -> Point:
        """The shared point of ``problem`` at ``precision`` (default: float64, or the point's own)."""
        if isinstance(problem, Point):
            return problem if precision is None else problem.at(precision)
        if not isinstance(problem, Problem):
            raise UsageError(f"expected a Problem, got {type(problem).__name__}")
        precision = get_precision(FLOAT64 if precision is None else precision)
        table = _POINTS.setdefault(problem, {})
        point = table.get(precision.name)
        if point is None or point._fingerprint != _fingerprint(problem):  # changed in place: start again
            if point is not None:
                table.clear()
            base = None if precision is FLOAT64 else cls.of(problem)
            point = table[precision.name] = cls(problem, precision, _float64=base)
        return point

    def at(self, precision: Precision | str) -> Point:
        """The same problem judged in another precision (the forward pass is shared)."""
        return Point.of(self.problem, precision)

    @staticmethod
    def forget(problem: Problem) -> None:
        """Let go of everything computed for ``problem`` (its points, at every precision)."""
        _POINTS.pop(problem, None)

    def __repr__(self) -> str:
        return f"Point({self.problem!r}, {self.precision.name})"

    # -- the problem's values -------------------------------------------------------------

    @property
    def architecture(self) -> Architecture:
        return self.problem.architecture

    @property
    def is_dense(self) -> bool:
        """Whether the network is the classic dense one (its own kernel), or of other layer kinds (its graph)."""
        return self.problem.architecture.is_dense

    @cached_property
    def forward(self) -> Any:
        """The float64 forward pass (not yet checked): for a dense network with ``f'``, ``f''`` and the loss
        derivatives (:class:`~hessverify.model.forward.ForwardPass`); for any other, every node of its graph
        (:class:`~hessverify.model.graph.Values`)."""
        if self._float64 is not None:
            return self._float64.forward
        return forward(self.problem) if self.is_dense else graph_values(self.problem)

    @property
    def graph(self) -> Graph:
        """The network and its error as primitives (:mod:`hessverify.model.build`)."""
        return graph_of(self.problem)

    def well_posed(self) -> ForwardPass:
        """The forward pass, once the Hessian is known to exist and be finite here; raises as
        :func:`~hessverify.model.well_posed.ensure_well_posed` does (the verdict is kept, so asked again it
        raises the same error without computing anything)."""
        if self._float64 is not None:
            return self._float64.well_posed()
        if self._well_posed is None:
            try:
                self._well_posed = ensure_well_posed(self.problem, self.forward,
                                                     net_errors=lambda: self._float64_errors[2] if self.is_dense
                                                     else self._graph_errors(FLOAT64)[1])
            except Exception as exc:  # the typed errors (and any other): kept, raised again
                self._well_posed = exc
        if isinstance(self._well_posed, BaseException):
            raise self._well_posed
        return self._well_posed

    @cached_property
    def gradient(self) -> FloatArray:
        """``dE/dtheta`` at the point, by the first-order backward pass."""
        fp = self.forward
        if not self.is_dense:
            return self.graph.gradient(fp)
        return gradient_from(self.architecture, fp.z, fp.df, fp.weights, fp.g_y)

    def _graph_errors(self, precision: Precision) -> tuple[list[Any], list[Any]]:
        return node_errors(self.graph, self.forward, precision.gamma(self.chain_length))

    # -- the rounding model (hessverify.engine.bounds) ------------------------------------

    @cached_property
    def chain_length(self) -> int:
        """``k``: the longest chain of roundings in any entry of the Hessian."""
        return chain_length(self.problem)

    @cached_property
    def gamma(self) -> float:
        """``gamma_k`` in this precision."""
        return self.precision.gamma(self.chain_length)

    @cached_property
    def _float64_errors(self) -> tuple[Quantities, Quantities, list[FloatArray]]:
        return values_and_errors(self.problem, self.forward, FLOAT64)

    @cached_property
    def quantities(self) -> tuple[Quantities, Quantities, list[FloatArray]]:
        """``|q|`` of every propagated quantity, its error in units of gamma, and the net inputs' errors."""
        if self.precision is FLOAT64:
            return self._float64_errors
        return values_and_errors(self.problem, self.forward, self.precision)

    @cached_property
    def magnitude_hessian(self) -> FloatArray:
        """``M``: per Hessian entry, its terms in absolute value plus their inherited errors."""
        if not self.is_dense:
            return graph_rounding.magnitude_hessian(self.graph, self.forward, self.gamma)
        return _bounds.magnitude_hessian(self.problem, self.precision, quantities=self.quantities)

    @cached_property
    def magnitude_gradient(self) -> FloatArray:
        """The same for the gradient."""
        if not self.is_dense:
            return graph_rounding.magnitude_gradient(self.graph, self.forward, self.gamma)
        return _bounds.magnitude_gradient(self.problem, self.precision, quantities=self.quantities)

    def rounding(self, methods: int = 2) -> FloatArray:
        """How far ``methods`` exact results computed in this precision may differ: ``methods gamma_k M`` plus
        the underflow floor (:func:`hessverify.engine.bounds.rounding_bound`)."""
        with np.errstate(all="ignore"):  # terms past the float64 range: an infinite bound entry
            return methods * self.gamma * self.magnitude_hessian + self.precision.underflow_floor

    @cached_property
    def finite_rounding(self) -> FloatArray:
        """:meth:`rounding` for two methods, or :class:`~hessverify.errors.OverflowReport` where the Hessian's
        terms overflow (a NaN in the bound: then no comparison means anything)."""
        rounding = self.rounding(2)
        if np.any(np.isnan(rounding)):
            raise OverflowReport("overflow in the Hessian's terms: they are not finite in float64 at this point "
                                 "(the rounding bound is NaN)")
        return rounding


def as_point(value: Problem | Point, precision: Precision | str | None = None) -> Point:
    """The shared :class:`Point` of a problem, or the point itself: what a method or reference reads."""
    return Point.of(value, precision)


def as_problem(value: Problem | Point | Any) -> Problem:
    """The problem behind a point (or the problem itself)."""
    return value.problem if isinstance(value, Point) else value


def checked(value: Problem | Point) -> tuple[Problem, ForwardPass]:
    """The problem behind ``value`` and its forward pass, once the Hessian is known to exist there.

    Every method starts here: ``problem, fp = checked(problem)`` -- the check and the forward pass are the
    point's, computed once however many methods ask."""
    point = as_point(value)
    return point.problem, point.well_posed()
