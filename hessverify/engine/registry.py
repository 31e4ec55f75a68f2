"""The registry: every way of computing a Hessian, under one call shape.

Each entry is ``fn(problem) -> result``.  Adding a method is adding a module
under :mod:`hessverify.methods` (or :mod:`hessverify.references`) and one
line to :data:`METHODS`.

``role`` says how ``hessverify verify`` uses an entry:

* ``"method"``: an exact method under test, compared with every reference;
* ``"reference"``: an independent reference the methods are held to;
* ``"approximation"``: a curvature approximation, reported as approximation
  error against the exact Hessian, never as a failure.

A reference with ``default=False`` (``certified``, which needs an optional
extra) runs only when named, and is never listed as skipped.

``form`` says what ``fn`` returns, as a type of :mod:`hessverify.engine.forms`:
:class:`~hessverify.forms.FullHessian` (``(W, W)``),
:class:`~hessverify.forms.DiagonalHessian` (``(W,)``) or
:class:`~hessverify.forms.BlockDiagonalHessian` (a list of per-layer square
blocks).  ``kind`` is the form's old name (``"matrix"``, ``"vector"``,
``"blocks"``), kept for the callers that still switch on it; a ``Method``
may still be built with that string in place of the form.

Loading is lazy: an entry names its function by module and attribute and
imports it on the first call, so ``import hessverify`` loads neither SymPy
(the symbolic reference) nor autograd.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from hessverify.base.typing import FloatArray
from hessverify.engine.forms import BlockDiagonalHessian, DiagonalHessian, FullHessian, HessianForm, form_named
from hessverify.errors import UsageError
from hessverify.model.problem import Problem

__all__ = ["METHODS", "Lazy", "Method", "get_method", "methods_with_role"]

Role = Literal["method", "reference", "approximation"]


@dataclass(frozen=True)
class Lazy:
    """A function named by module and attribute, imported on its first call."""

    module: str
    attr: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{self.module}.{self.attr}"


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[[Problem], Any]
    role: Role
    form: type[HessianForm]  # or its old name, "matrix" / "vector" / "blocks"
    summary: str
    # An estimate of the entrywise error, when the method knows its own (fd).
    with_error: Callable[[Problem], tuple[FloatArray, FloatArray]] | None = None
    # Whether verify uses this reference on a problem by default (too costly otherwise).
    applies: Callable[[Problem], bool] | None = None
    # Why it is left out where ``applies`` says no (one line), if it says more than the default.
    left_out: Callable[[Problem], str] | None = None
    # Whether verify uses this reference without being named (False: only when asked for, and never said skipped).
    default: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.form, str):
            object.__setattr__(self, "form", form_named(self.form))

    @property
    def kind(self) -> str:
        """The form's old name: ``"matrix"``, ``"vector"`` or ``"blocks"``."""
        return self.form.kind

    def result(self, problem: Problem) -> HessianForm:
        """``fn(problem)`` wrapped in its form."""
        return self.form(self.fn(problem))


_M, _R, _S = "hessverify.methods.", "hessverify.references.", "hessverify.symbolic.reference"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("backprop", Lazy(_M + "backprop", "hessian"), "method", FullHessian,
               "exact Hessian by second-order backpropagation (Bishop 1992)"),
        Method("rop", Lazy(_M + "rop", "hessian"), "method", FullHessian,
               "H e_i for every i by Pearlmutter's R-operator, in chunks of directions (Pearlmutter 1994)"),
        Method("pairwise", Lazy(_M + "pairwise", "hessian"), "method", FullHessian,
               "entry by entry, a second-order backward pass per source unit (Rojas 1996, sec. 8.4.3)"),
        Method("block_diagonal", Lazy(_M + "block_diagonal", "blocks"), "method", BlockDiagonalHessian,
               "exact per-layer diagonal blocks, propagated backwards (Dangel et al. 2020, HBP)"),
        Method("diagonal", Lazy(_M + "diagonal", "diagonal"), "method", DiagonalHessian,
               "exact Hessian diagonal without the full matrix (Bishop 1992, m = m' terms)"),
        Method("becker_lecun", Lazy(_M + "becker_lecun", "diagonal"), "approximation", DiagonalHessian,
               "diagonal approximation with the f'' term (Becker & LeCun 1988)"),
        Method("gauss_newton", Lazy(_M + "gauss_newton", "hessian"), "approximation", FullHessian,
               "generalised Gauss-Newton J^T H_loss J (Schraudolph 2002)"),
        Method("fisher", Lazy(_M + "fisher", "hessian"), "approximation", FullHessian,
               "empirical Fisher s sum_n grad e_n grad e_n^T, s the reduction's factor (Kunstner et al. 2019)"),
        Method("autograd", Lazy(_R + "autograd_ref", "hessian"), "reference", FullHessian,
               "autograd.hessian of an independent autograd.numpy implementation"),
        Method("fd", Lazy(_R + "finite_differences", "hessian"), "reference", FullHessian,
               "central differences of the gradient, with an error estimate",
               with_error=Lazy(_R + "finite_differences", "hessian_with_error")),
        Method("complex_step", Lazy(_R + "complex_step", "hessian"), "reference", FullHessian,
               "complex step applied to the gradient: no subtraction; truncation estimated from a second step",
               with_error=Lazy(_R + "complex_step", "hessian_with_error")),
        Method("richardson", Lazy(_R + "richardson", "hessian"), "reference", FullHessian,
               "Richardson-extrapolated central differences of the gradient, with an error estimate",
               with_error=Lazy(_R + "richardson", "hessian_with_error")),
        Method("symbolic", Lazy(_S, "hessian"), "reference", FullHessian,
               "closed form (SymPy) at 50 digits, its sums exact, or exact rationals; the truth for small cases",
               with_error=Lazy(_S, "hessian_with_error"), applies=Lazy(_S, "small_enough"),
               left_out=Lazy(_S, "left_out")),
        Method("certified", Lazy(_R + "certified", "hessian"), "reference", FullHessian,
               "closed form in ball arithmetic (python-flint's arb): every entry enclosed, its radius proven; "
               "when named", with_error=Lazy(_R + "certified", "hessian_with_error"), default=False),
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
