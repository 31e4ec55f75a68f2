"""``richardson``: Richardson-extrapolated central differences, with an error estimate.

From the central differences ``D(h)`` of the gradient (see
:mod:`hessverify.references.finite_differences`), whose error is
``c2 h^2 + c4 h^4 + ...``, one Richardson step cancels the ``h^2`` term:

.. math::

   R(h) = \\frac{4 D(h) - D(2h)}{3} = H e_j + O(h^4)

(Richardson 1911; Nocedal & Wright, *Numerical Optimization*, 2nd ed.,
sec. 8.1).  The step balancing an ``h^4`` truncation against the ``u / h``
rounding is ``h ~ u^{1/5}`` times the parameter's scale.

Error estimate, per entry, the sum of

* truncation: ``R(2h) - R(h) ~ 15 c4 h^4``, so ``|R(h) - R(2h)| / 15`` where
  the ``h^4`` term rules; but the ``h^6`` and later terms of a steep network
  (weights of 60 into softplus and gelu) made that 8 times too small on a
  problem of the special-value property test, so the estimate is the whole
  difference of successive extrapolations, ``|R(h) - R(2h)|``, as
  numdifftools takes it;
* rounding: ``R(h)`` adds ``4/3`` of one difference quotient and ``1/3`` of
  another with twice the step, each rounded to ``gamma_k (G / s + M)`` (``G``
  the magnitudes of the gradient's terms, ``M`` of the Hessian's, ``s`` the
  step: see :mod:`hessverify.references.finite_differences`), so
  ``gamma_k (1.5 G / h + 2 M)``;
* the asymmetry ``|R - R^T| / 2``.

Where the steps are too wide for the ``h^2, h^4`` expansion to hold (a
product of weights of 40 through three identity layers into a softmax: the
special-value property test found richardson 16 % off with an estimate of
2 %), the differences give that away: ``D(2h) - D(4h)`` should be 4 to 16
times ``D(h) - D(2h)`` (:data:`ASYMPTOTIC_RATIO`, with room), and
``R(h) - R(2h)`` must be far smaller than ``D(h) - D(2h)``
(:data:`EXTRAPOLATION_GAIN`); where either fails, though the differences
stand above rounding noise, the entry is not trusted, as at a kink (a gelu
network with weights of 20 to 60 had ratio 5.5 but extrapolation that only
halved the differences, and an estimate 8 times too small).

It is checked against numdifftools' adaptive Richardson scheme in
``tests/references/test_richardson.py``.  Steps that cross a relu kink are
not trusted, as for ``fd``.
"""

from __future__ import annotations

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.bounds import UNIT_ROUNDOFF
from hessverify.engine.components import BoundKind, Component, Cost, Role, Tolerance
from hessverify.engine.forms import FullHessian
from hessverify.engine.point import Point, as_point
from hessverify.model.problem import Problem
from hessverify.references.finite_differences import (
    FD_SAFETY,
    central_differences,
    difference_seconds,
    error_estimate,
    exact_steps,
    kink_columns,
)

__all__ = ["ASYMPTOTIC_RATIO", "EXTRAPOLATION_GAIN", "hessian", "hessian_with_error", "steps"]

ASYMPTOTIC_RATIO = (3.0, 20.0)
"""Where ``(D(2h) - D(4h)) / (D(h) - D(2h))`` must lie for the estimate to hold (4 for an ``h^2``
term, 16 for an ``h^4`` one, and some room)."""

EXTRAPOLATION_GAIN = 0.1
"""Largest ``|R(h) - R(2h)| / |D(h) - D(2h)|`` where the estimate holds: ``20 (c4 / c2) h^2``, some 1e-4 at
these steps; near 1 the extrapolation has not helped and the steps are too wide for the expansion."""


def steps(theta: FloatArray) -> FloatArray:
    """``u^(1/5) max(|theta|, 1)``, exactly representable (and so are 2h and 4h, powers of two apart)."""
    return exact_steps(theta, UNIT_ROUNDOFF**0.2)


def hessian_with_error(problem: Problem | Point) -> tuple[FloatArray, FloatArray]:
    """The symmetrised extrapolated Hessian and its entrywise error estimate."""
    point = as_point(problem)
    point.well_posed()
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing step: reported as not applicable
        return _with_error(point)


def _with_error(point: Point) -> tuple[FloatArray, FloatArray]:
    problem = point.problem
    theta = np.asarray(problem.params, dtype=np.float64)
    h = steps(theta)
    D1, D2, D4 = central_differences(problem, theta, h, (1.0, 2.0, 4.0))
    R1 = (4.0 * D1 - D2) / 3.0
    R2 = (4.0 * D2 - D4) / 3.0
    truncation = np.abs(R1 - R2)  # not / 15: the h^4 term need not rule (module text)
    rounding = point.gamma * (1.5 * point.magnitude_gradient[:, None] / h[None, :] + 2.0 * point.magnitude_hessian)
    # the widest step, 4h, is what may reach a kink
    est = error_estimate(R1, truncation, rounding, kink_columns(problem, theta, 2.0 * h))
    # Outside the asymptotic range the estimate means nothing: there D(2h) - D(4h) is not 4 to 16
    # times D(h) - D(2h) (c2 h^2 + c4 h^4 terms), though both stand well above rounding noise
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (D2 - D4) / (D1 - D2)
    signal = np.abs(D1 - D2) > 4.0 * rounding
    off = signal & ~((ratio >= ASYMPTOTIC_RATIO[0]) & (ratio <= ASYMPTOTIC_RATIO[1]))
    # and extrapolating must shrink the differences: R(h) - R(2h) ~ 20 (c4 / c2) h^2 (D(h) - D(2h))
    off |= signal & (np.abs(R1 - R2) > EXTRAPOLATION_GAIN * np.abs(D1 - D2))
    est[off | off.T] = np.inf
    return (R1 + R1.T) / 2.0, est


def hessian(problem: Problem | Point) -> FloatArray:
    return hessian_with_error(problem)[0]


COMPONENT = Component(
    "richardson", hessian, Role.REFERENCE, FullHessian,
    "Richardson-extrapolated central differences of the gradient, with an error estimate",
    with_error=hessian_with_error,
    tolerance=Tolerance(BoundKind.FD_ESTIMATE,
                        f"Richardson-extrapolated central differences: {FD_SAFETY:g} x (|R(h) - R(2h)| "
                        "+ gamma_k (1.5 G / h + 2 M) + asymmetry), plus gamma_k M for the exact side",
                        rounding_sides=0, safety=FD_SAFETY),
    # fixed: the batches of points and their gradients (finite_differences.central_differences), 3 x 8 MiB
    cost=Cost(memory=(11.5, 3.5), fixed_bytes=3.2e7,
              seconds_of=lambda problem: difference_seconds(problem, 3, 1.6e-8, 4e-4, 1.2e-4, 2e-3)),
    rank=140,
)
