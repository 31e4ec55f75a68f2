"""``complex_step``: each Hessian column from the gradient at a complex point.

For a real-analytic gradient ``g``,

.. math::

   g(\\theta + i h e_j) = g(\\theta) + i h\\, H e_j - \\frac{h^2}{2} \\partial_j^2 g
                          - i \\frac{h^3}{6} \\partial_j^3 g + \\dots

so ``Im g(theta + i h e_j) / h = H e_j - h^2/6 d_j^3 g + O(h^4)`` with no
subtraction at all (Squire & Trapp 1998, "Using complex variables to
estimate derivatives of real functions", SIAM Review 40(1); applied to the
gradient as in Martins, Sturdza & Alonso 2003).

Error.  Rounding: there is no subtraction, so each column is accurate to the
rounding of the gradient computation itself, and the method is held to the
rounding model like ``autograd`` (``gamma_k M``).  Truncation: with
``h = 1e-30`` the term ``h^2/6 d_j^3 g`` is some 1e-60 of the entry's size,
far below an ulp, *except where the true entry is exactly 0*: there the
rounding bound is 0 too (no terms, nothing to round) while the complex step
returns the truncation itself (``-3e-61`` for a gelu network at
``W = [0, 1, 1]``).  So :func:`hessian_with_error` also takes the step
``2h`` and estimates the truncation as Richardson does, from
``D(2h) - D(h) = -(4 - 1) h^2/6 d_j^3 g + O(h^4)``:
``T = |D(h) - D(2h)| / 3``.  Doubling the step doubles every imaginary part
exactly wherever the ``h^2`` terms are below an ulp, so ``T`` is the
truncation and nothing else, to relative ``O(h^2)``.

Underflow: the imaginary parts are the real quantities scaled by ``h``, so
they leave the normal range 1e30 times sooner: a Hessian entry of 2e-289
has imaginary parts near 2e-319, subnormal, and loses relative accuracy
(0.13 % on a softplus network of the special-value run).  The rounding model
allows :data:`hessverify.engine.bounds.UNDERFLOW_FLOOR` for underflow of real
values; the same allowance in the scaled arithmetic is
``UNDERFLOW_FLOOR / h`` (about 2.4e-266), added to the estimate.

Where the complex arithmetic overflows (``tanh`` and ``cosh`` of a complex
net input beyond about 355: the real parts are fine, the complex formulas
are not), the result is NaN or inf: the complex step cannot serve at that
point, and ``hessverify verify`` says so instead of reporting a discrepancy.

It needs the gradient code to accept complex parameters, which
:func:`hessverify.model.forward.gradient` does (see
:mod:`hessverify.model._special`).  A relu unit is followed on the side of
its kink that the real part is on, which is right away from the kink.
"""

from __future__ import annotations

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.bounds import UNDERFLOW_FLOOR
from hessverify.engine.components import BoundKind, Component, Cost, Role, Tolerance
from hessverify.engine.forms import FullHessian
from hessverify.engine.point import Point, checked
from hessverify.model.forward import gradient
from hessverify.model.problem import Problem

__all__ = ["COMPLEX_STEP_SAFETY", "STEP", "hessian", "hessian_with_error"]

STEP = 1e-30
"""The imaginary step: the truncation ``h^2 |g'''| / 6`` is some 1e-60 of the entry's terms."""


def _columns(problem: Problem, theta: FloatArray, h: float) -> FloatArray:
    """``Im g(theta + i h e_j) / h`` for every ``j``, unsymmetrised."""
    n = theta.size
    D = np.empty((n, n))
    with np.errstate(over="ignore", invalid="ignore"):  # complex overflow: reported as not applicable
        for j in range(n):
            t = theta.astype(np.complex128)
            t[j] += 1j * h
            D[:, j] = gradient(problem, t).imag / h
    return D


def hessian_with_error(problem: Problem | Point) -> tuple[FloatArray, FloatArray]:
    """The symmetrised complex-step Hessian and an estimate of its truncation error.

    The estimate is ``|D(h) - D(2h)| / 3`` (module text), symmetrised by
    taking the larger of the two entries, plus the underflow allowance of the
    imaginary parts, ``UNDERFLOW_FLOOR / h``; rounding is not in it (the
    rounding model covers that).
    """
    problem, _ = checked(problem)
    theta = np.asarray(problem.params, dtype=np.float64)
    D1 = _columns(problem, theta, STEP)
    D2 = _columns(problem, theta, 2.0 * STEP)
    with np.errstate(over="ignore", invalid="ignore"):
        truncation = np.abs(D1 - D2) / 3.0
        return 0.5 * (D1 + D1.T), np.maximum(truncation, truncation.T) + UNDERFLOW_FLOOR / STEP


def hessian(problem: Problem | Point) -> FloatArray:
    """The Hessian column by column from ``Im g(theta + i h e_j) / h``, symmetrised."""
    problem, _ = checked(problem)
    D = _columns(problem, np.asarray(problem.params, dtype=np.float64), STEP)
    with np.errstate(over="ignore", invalid="ignore"):
        return 0.5 * (D + D.T)


COMPLEX_STEP_SAFETY = 2.0
"""Factor on the complex step's truncation estimate: the estimate is exact to relative ``h^2`` (1e-60),
but the two steps' imaginary parts are rounded, so it could come out low by a rounding; twice covers that."""

COMPONENT = Component(
    "complex_step", hessian, Role.REFERENCE, FullHessian,
    "complex step applied to the gradient: no subtraction; truncation estimated from a second step",
    with_error=hessian_with_error,
    tolerance=Tolerance(BoundKind.ROUNDING_TRUNCATION,
                        "no subtraction, so rounding as an exact method (gamma_k M), plus its truncation -h^2/6 d^3g: "
                        f"{COMPLEX_STEP_SAFETY:g} x |D(h) - D(2h)| / 3, from a second step; 2 gamma_k M + that against "
                        "an exact method", safety=COMPLEX_STEP_SAFETY),
    cost=Cost(memory=(2.5, 2.0), seconds=(3e-8, 2e-3)),  # complex128 (W, W): twice the float64 matrix
    rank=130,
)
