"""The registry: every way of computing a Hessian, under one call shape.

Each entry is ``fn(problem) -> result``.  Adding a method is adding a module
under :mod:`hessverify.methods` (or :mod:`hessverify.references`) and one
line to :data:`METHODS`.

``role`` says how ``hessverify verify`` uses an entry:

* ``"method"``: an exact method under test, compared with every reference;
* ``"reference"``: an independent reference the methods are held to;
* ``"approximation"``: a curvature approximation, reported as approximation
  error against the exact Hessian, never as a failure.

``kind`` says what ``fn`` returns: ``"matrix"`` (``(W, W)``), ``"vector"``
(a diagonal, ``(W,)``) or ``"blocks"`` (a list of per-layer square blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from hessverify._typing import FloatArray
from hessverify.errors import UsageError
from hessverify.methods import backprop
from hessverify.problem import Problem
from hessverify.references import autograd_ref, complex_step, finite_differences, richardson
from hessverify.symbolic import reference as symbolic_reference

__all__ = ["METHODS", "Method", "get_method", "methods_with_role"]

Role = Literal["method", "reference", "approximation"]
Kind = Literal["matrix", "vector", "blocks"]


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[[Problem], Any]
    role: Role
    kind: Kind
    summary: str
    # An estimate of the entrywise error, when the method knows its own (fd).
    with_error: Callable[[Problem], tuple[FloatArray, FloatArray]] | None = None
    # Whether verify uses this reference on a problem by default (too costly otherwise).
    applies: Callable[[Problem], bool] | None = None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("backprop", backprop.hessian, "method", "matrix",
               "exact Hessian by second-order backpropagation (Bishop 1992)"),
        Method("autograd", autograd_ref.hessian, "reference", "matrix",
               "autograd.hessian of an independent autograd.numpy implementation"),
        Method("fd", finite_differences.hessian, "reference", "matrix",
               "central differences of the gradient, with an error estimate",
               with_error=finite_differences.hessian_with_error),
        Method("complex_step", complex_step.hessian, "reference", "matrix",
               "complex step applied to the gradient: each column to rounding accuracy, no subtraction"),
        Method("richardson", richardson.hessian, "reference", "matrix",
               "Richardson-extrapolated central differences of the gradient, with an error estimate",
               with_error=richardson.hessian_with_error),
        Method("symbolic", symbolic_reference.hessian, "reference", "matrix",
               "closed form (SymPy) in 50-digit mpmath, or exact rationals; the truth for small cases",
               with_error=symbolic_reference.hessian_with_error, applies=symbolic_reference.small_enough),
    )
}
"""Every method and reference, keyed by name."""


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UsageError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def methods_with_role(role: Role) -> list[Method]:
    return [m for m in METHODS.values() if m.role == role]
