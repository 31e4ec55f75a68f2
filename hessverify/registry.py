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
from hessverify.methods import backprop, becker_lecun, block_diagonal, diagonal, fisher, gauss_newton, pairwise, rop
from hessverify.model.problem import Problem
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
        Method("rop", rop.hessian, "method", "matrix",
               "H e_i for every i by Pearlmutter's R-operator, in chunks of directions (Pearlmutter 1994)"),
        Method("pairwise", pairwise.hessian, "method", "matrix",
               "entry by entry, a second-order backward pass per source unit (Rojas 1996, sec. 8.4.3)"),
        Method("block_diagonal", block_diagonal.blocks, "method", "blocks",
               "exact per-layer diagonal blocks, propagated backwards (Dangel et al. 2020, HBP)"),
        Method("diagonal", diagonal.diagonal, "method", "vector",
               "exact Hessian diagonal without the full matrix (Bishop 1992, m = m' terms)"),
        Method("becker_lecun", becker_lecun.diagonal, "approximation", "vector",
               "diagonal approximation with the f'' term (Becker & LeCun 1988)"),
        Method("gauss_newton", gauss_newton.hessian, "approximation", "matrix",
               "generalised Gauss-Newton J^T H_loss J (Schraudolph 2002)"),
        Method("fisher", fisher.hessian, "approximation", "matrix",
               "empirical Fisher s sum_n grad e_n grad e_n^T, s the reduction's factor (Kunstner et al. 2019)"),
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
