"""``complex_step``: each Hessian column from the gradient at a complex point.

For a real-analytic gradient ``g``,

.. math::

   g(\\theta + i h e_j) = g(\\theta) + i h\\, H e_j - \\frac{h^2}{2} \\partial_j^2 g
                          - i \\frac{h^3}{6} \\partial_j^3 g + \\dots

so ``Im g(theta + i h e_j) / h = H e_j + O(h^2)`` with no subtraction at all
(Squire & Trapp 1998, "Using complex variables to estimate derivatives of
real functions", SIAM Review 40(1); applied to the gradient as in Martins,
Sturdza & Alonso 2003).  With ``h = 1e-30`` the truncation term is far
below one ulp, and each column is accurate to the rounding of the gradient
computation itself: the method is exact to rounding, like ``autograd``, and
is held to the same rounding-model bound.

It needs the gradient code to accept complex parameters, which
:func:`hessverify.model.forward.gradient` does (see
:mod:`hessverify.model._special`).  A relu unit is followed on the side of
its kink that the real part is on, which is right away from the kink.
"""

from __future__ import annotations

import numpy as np

from hessverify._typing import FloatArray
from hessverify.model.forward import gradient
from hessverify.model.problem import Problem
from hessverify.model.well_posed import ensure_well_posed

__all__ = ["STEP", "hessian"]

STEP = 1e-30
"""The imaginary step: ``h^2 |g'''| / 6`` is below ``1e-60``, far under an ulp."""


def hessian(problem: Problem) -> FloatArray:
    """The Hessian column by column from ``Im g(theta + i h e_j) / h``, symmetrised."""
    ensure_well_posed(problem)
    theta = np.asarray(problem.params, dtype=np.float64)
    n = theta.size
    H = np.empty((n, n))
    for j in range(n):
        t = theta.astype(np.complex128)
        t[j] += 1j * STEP
        H[:, j] = gradient(problem, t).imag / STEP
    return 0.5 * (H + H.T)
