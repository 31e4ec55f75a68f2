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

* truncation: ``R(2h) - R(h) ~ 15 c4 h^4``, so ``|R(h) - R(2h)| / 15``;
* rounding: ``R(h)`` adds ``4/3`` of one difference quotient and ``1/3`` of
  another with twice the step, so ``1.5 gamma_k G / h`` (``G`` the
  magnitudes of the gradient's terms);
* the asymmetry ``|R - R^T| / 2``.

It is checked against numdifftools' adaptive Richardson scheme in
``tests/references/test_richardson.py``.  Steps that cross a relu kink are
not trusted, as for ``fd``.
"""

from __future__ import annotations

import numpy as np

from hessverify._typing import FloatArray
from hessverify.bounds import UNIT_ROUNDOFF, chain_length, gamma, magnitude_gradient
from hessverify.model.problem import Problem
from hessverify.model.well_posed import ensure_well_posed
from hessverify.references.finite_differences import central_differences, error_estimate, exact_steps, kink_columns

__all__ = ["hessian", "hessian_with_error", "steps"]


def steps(theta: FloatArray) -> FloatArray:
    """``u^(1/5) max(|theta|, 1)``, exactly representable (and so are 2h and 4h, powers of two apart)."""
    return exact_steps(theta, UNIT_ROUNDOFF**0.2)


def hessian_with_error(problem: Problem) -> tuple[FloatArray, FloatArray]:
    """The symmetrised extrapolated Hessian and its entrywise error estimate."""
    ensure_well_posed(problem)
    theta = np.asarray(problem.params, dtype=np.float64)
    h = steps(theta)
    D1, D2, D4 = central_differences(problem, theta, h, (1.0, 2.0, 4.0))
    R1 = (4.0 * D1 - D2) / 3.0
    R2 = (4.0 * D2 - D4) / 3.0
    truncation = np.abs(R1 - R2) / 15.0
    rounding = 1.5 * gamma(chain_length(problem)) * magnitude_gradient(problem)[:, None] / h[None, :]
    # the widest step, 4h, is what may reach a kink
    est = error_estimate(R1, truncation, rounding, kink_columns(problem, theta, 2.0 * h))
    return (R1 + R1.T) / 2.0, est


def hessian(problem: Problem) -> FloatArray:
    return hessian_with_error(problem)[0]
