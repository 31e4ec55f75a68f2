"""Elementwise functions that work on real and on complex arrays.

The complex-step reference (:mod:`hessverify.references.complex_step`)
evaluates the gradient at ``theta + i h e_j``, so everything on the way from
the parameters to the gradient must be an analytic function that accepts a
complex argument.  SciPy's ``expit`` and NumPy's ``logaddexp`` do not; these
do, and on real input they are as accurate as those.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit as _expit_real

from hessverify.base.typing import FloatArray

__all__ = ["expit", "softplus", "positive"]


def expit(a: FloatArray) -> FloatArray:
    """The logistic sigmoid ``1 / (1 + e^-a)``."""
    if np.iscomplexobj(a):
        # 1 / (1 + e^-a) on the right half-plane, e^a / (1 + e^a) on the left:
        # the same analytic function, no overflow, relative accuracy in both tails
        pos = a.real >= 0
        e = np.exp(np.where(pos, -a, a))
        return np.where(pos, 1.0 / (1.0 + e), e / (1.0 + e))
    return _expit_real(a)


def softplus(a: FloatArray) -> FloatArray:
    """``log(1 + e^a)`` without overflow: ``max(a, 0) + log1p(e^-|a|)`` on each side."""
    if np.iscomplexobj(a):
        pos = a.real > 0
        with np.errstate(over="ignore"):
            return np.where(pos, a + np.log1p(np.exp(-np.where(pos, a, 0))), np.log1p(np.exp(np.where(pos, 0, a))))
    return np.logaddexp(0.0, a)


def positive(a: FloatArray) -> FloatArray:
    """``a > 0`` as 0/1, by the real part (the side of a kink a complex step stays on)."""
    return (np.real(a) > 0).astype(np.float64)
