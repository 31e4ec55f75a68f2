"""The loss table: per-pattern error, its gradient and Hessian in the outputs.

Each loss is one row of :data:`LOSSES` with NumPy columns (``value``,
``grad``, ``hess``), vectorised over patterns, beside a SymPy column
(``expr``) that builds the same per-pattern error from lists of symbols.
``tests/model/test_losses.py`` holds the NumPy columns against ``sympy.diff``
of the SymPy column.

Shapes: outputs ``y`` and targets ``t`` are ``(N, K)``; ``value`` returns
``(N,)``, ``grad`` returns ``(N, K)`` and ``hess`` returns ``(N, K, K)``.
The reduction over patterns (``sum`` or ``mean``) is applied by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import logsumexp, softmax

from hessverify.base.typing import FloatArray
from hessverify.model._special import expit, softplus

if TYPE_CHECKING:  # SymPy is imported by the functions of the SymPy column, when called: not on import
    import sympy

__all__ = ["LOSSES", "REDUCTIONS", "TARGET_KINDS", "Loss", "get_loss", "valid_targets"]

REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class Loss:
    """One row of the loss table.

    Attributes
    ----------
    name:
        The name used in case files (``loss = "sse"``).
    value, grad, hess:
        Per-pattern error :math:`e(y, t)`, :math:`\\partial e/\\partial y` and
        :math:`\\partial^2 e/\\partial y\\,\\partial y^T`.
    expr:
        ``expr(y, t)`` builds the per-pattern error in SymPy from two
        sequences of symbols (or numbers).
    grad_mag, hess_mag:
        The magnitudes of the terms summed in ``grad`` and ``hess`` (each
        term replaced by its absolute value), for the rounding model of
        :mod:`hessverify.engine.bounds`.
    hess_slope:
        A bound on ``|d hess / dy|`` as a multiple of ``hess_mag`` (0 where
        the Hessian does not depend on ``y``): it carries the forward error of
        ``y`` into the loss Hessian in the rounding model.
    convex:
        Whether ``e`` is convex in ``y`` (then the Gauss-Newton matrix is
        positive semi-definite).
    targets:
        What a valid target row is (:data:`TARGET_KINDS`): ``"real"``,
        ``"distribution"`` (non-negative, summing to 1), ``"unit"`` (each in
        [0, 1]) or ``"ignored"`` (the loss does not read them; zeros).  Every
        place that draws targets (case files, strategies, the false-alarm
        measurement) asks this column and :func:`valid_targets`.
    """

    name: str
    value: Callable[[FloatArray, FloatArray], FloatArray]
    grad: Callable[[FloatArray, FloatArray], FloatArray]
    hess: Callable[[FloatArray, FloatArray], FloatArray]
    expr: Callable[[Sequence[sympy.Expr], Sequence[sympy.Expr]], sympy.Expr]
    grad_mag: Callable[[FloatArray, FloatArray], FloatArray]
    hess_mag: Callable[[FloatArray, FloatArray], FloatArray]
    hess_slope: float = 0.0
    convex: bool = True
    targets: str = "real"


def _diag(d: FloatArray) -> FloatArray:
    """``(N, K)`` -> ``(N, K, K)`` with ``d`` on each diagonal."""
    out = np.zeros(d.shape + d.shape[-1:], dtype=d.dtype)
    k = d.shape[-1]
    out.reshape(d.shape[0], k * k)[:, :: k + 1] = d
    return out


def _abs_sum(y: FloatArray, t: FloatArray) -> FloatArray:
    return np.abs(y) + np.abs(t)


# Magnitudes of the terms, for the rounding model.  A correct implementation
# may compute softmax(y) as exp(y - logsumexp(y)) and sigma(y) as
# exp(y - softplus(y)): the subtraction carries an error of an ulp of |y|, so
# p and sigma are accurate only to u (1 + |y| + |logsumexp|) relative; and
# sigma (1 - sigma) is accurate only to an ulp of its terms.

def _p_terms(y: FloatArray) -> tuple[FloatArray, FloatArray]:
    p = softmax(y, axis=-1)
    lse = np.abs(logsumexp(y, axis=-1, keepdims=True))
    return p, p * (1.0 + np.abs(y) + lse)


def _ce_grad_mag(y: FloatArray, t: FloatArray) -> FloatArray:
    _, pt = _p_terms(y)
    return np.abs(np.sum(t, axis=-1, keepdims=True)) * pt + np.abs(t)


def _ce_hess_mag(y: FloatArray, t: FloatArray) -> FloatArray:
    p, pt = _p_terms(y)
    s = np.abs(np.sum(t, axis=-1))[:, None, None]
    return s * (_diag(pt) + pt[:, :, None] * p[:, None, :] + p[:, :, None] * pt[:, None, :])


def _sigma_terms(y: FloatArray) -> FloatArray:
    return expit(y) * (1.0 + np.abs(y) + softplus(y))


def _bce_grad_mag(y: FloatArray, t: FloatArray) -> FloatArray:
    return _sigma_terms(y) + np.abs(t)


def _bce_hess_mag(y: FloatArray, t: FloatArray) -> FloatArray:
    st = _sigma_terms(y)
    return _diag(st * (1.0 + st))  # sigma (1 - sigma)


# -- sse: e = 1/2 ||y - t||^2 ------------------------------------------------

def _sse_value(y: FloatArray, t: FloatArray) -> FloatArray:
    r = y - t
    return 0.5 * np.sum(r * r, axis=-1)


def _sse_grad(y: FloatArray, t: FloatArray) -> FloatArray:
    return y - t


def _sse_hess(y: FloatArray, t: FloatArray) -> FloatArray:
    n, k = y.shape
    return np.broadcast_to(np.eye(k), (n, k, k)).copy()


def _sse_expr(y: Sequence[sympy.Expr], t: Sequence[sympy.Expr]) -> sympy.Expr:
    import sympy

    return sympy.Rational(1, 2) * sum(((yi - ti) ** 2 for yi, ti in zip(y, t)), sympy.S.Zero)


# -- cross_entropy: e = -sum_k t_k log softmax(y)_k ----------------------------
# The targets need not sum to one, so with s = sum_k t_k:
#   grad = s p - t,   hess = s (diag(p) - p p^T).

def _ce_value(y: FloatArray, t: FloatArray) -> FloatArray:
    log_p = y - logsumexp(y, axis=-1, keepdims=True)
    return -np.sum(t * log_p, axis=-1)


def _ce_grad(y: FloatArray, t: FloatArray) -> FloatArray:
    p = softmax(y, axis=-1)
    return np.sum(t, axis=-1, keepdims=True) * p - t


def _ce_hess(y: FloatArray, t: FloatArray) -> FloatArray:
    p = softmax(y, axis=-1)
    s = np.sum(t, axis=-1)[:, None, None]
    return s * (_diag(p) - p[:, :, None] * p[:, None, :])


def _ce_expr(y: Sequence[sympy.Expr], t: Sequence[sympy.Expr]) -> sympy.Expr:
    import sympy

    log_z = sympy.log(sum((sympy.exp(yi) for yi in y), sympy.S.Zero))
    return -sum((ti * (yi - log_z) for yi, ti in zip(y, t)), sympy.S.Zero)


# -- binary_cross_entropy on logits: e = sum_k softplus(y_k) - t_k y_k ---------

def _bce_value(y: FloatArray, t: FloatArray) -> FloatArray:
    return np.sum(softplus(y) - t * y, axis=-1)


def _bce_grad(y: FloatArray, t: FloatArray) -> FloatArray:
    return expit(y) - t


def _bce_hess(y: FloatArray, t: FloatArray) -> FloatArray:
    # sigma(y) sigma(-y) keeps its relative accuracy where sigma saturates
    return _diag(expit(y) * expit(-y))


def _bce_expr(y: Sequence[sympy.Expr], t: Sequence[sympy.Expr]) -> sympy.Expr:
    import sympy

    return sum((sympy.log(1 + sympy.exp(yi)) - ti * yi for yi, ti in zip(y, t)), sympy.S.Zero)


# -- output: e = sum_k y_k, the network function itself (Rojas, ch. 7-8) -------

def _out_value(y: FloatArray, t: FloatArray) -> FloatArray:
    return np.sum(y, axis=-1)


def _out_grad(y: FloatArray, t: FloatArray) -> FloatArray:
    return np.ones_like(y)


def _out_hess(y: FloatArray, t: FloatArray) -> FloatArray:
    n, k = y.shape
    return np.zeros((n, k, k))


def _out_expr(y: Sequence[sympy.Expr], t: Sequence[sympy.Expr]) -> sympy.Expr:
    import sympy

    return sum(y, sympy.S.Zero)


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        #    name, value, gradient, Hessian, SymPy, |gradient terms|, |Hessian terms|
        Loss("sse", _sse_value, _sse_grad, _sse_hess, _sse_expr, _abs_sum, _sse_hess, 0.0),
        # d/dy of p_i (delta_ij - p_j) is at most twice its terms; sigma'' = sigma' (1 - 2 sigma)
        Loss("cross_entropy", _ce_value, _ce_grad, _ce_hess, _ce_expr, _ce_grad_mag, _ce_hess_mag, 2.0,
             targets="distribution"),
        Loss("binary_cross_entropy", _bce_value, _bce_grad, _bce_hess, _bce_expr,
             _bce_grad_mag, _bce_hess_mag, 1.0, targets="unit"),
        # linear in y: convex, and its Hessian in y is zero
        Loss("output", _out_value, _out_grad, _out_hess, _out_expr, _out_grad, _out_hess, 0.0, targets="ignored"),
    )
}
"""Every loss a case may name, keyed by that name."""


TARGET_KINDS = ("real", "distribution", "unit", "ignored")
"""What a loss accepts as a target row (the ``targets`` column of :data:`LOSSES`)."""


def valid_targets(loss: str, rows: FloatArray) -> FloatArray:
    """Draws made valid targets for ``loss``, ``(N, K)``: the one place that knows what each kind needs.

    ``"distribution"`` rows (non-negative draws) are divided by their sum, an
    all-zero row becoming the uniform distribution; ``"ignored"`` targets
    become zeros; ``"real"`` and ``"unit"`` draws (already in [0, 1]) are kept.

    Examples
    --------
    >>> valid_targets("cross_entropy", np.array([[1.0, 3.0], [0.0, 0.0]])).tolist()
    [[0.25, 0.75], [0.5, 0.5]]
    >>> valid_targets("output", np.array([[0.3]])).tolist()
    [[0.0]]
    """
    t = np.array(rows, dtype=np.float64)
    kind = get_loss(loss).targets
    if kind == "distribution":
        total = t.sum(axis=-1, keepdims=True)
        return np.where(total == 0.0, 1.0 / t.shape[-1], t / np.where(total == 0.0, 1.0, total))
    if kind == "ignored":
        return np.zeros_like(t)
    return t


def get_loss(name: str) -> Loss:
    """Return the table row for ``name``; raise ``KeyError`` naming the choices."""
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None
