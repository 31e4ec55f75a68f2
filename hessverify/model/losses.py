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
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import logsumexp, softmax

from hessverify.base.typing import FloatArray
from hessverify.model._special import expit, softplus

if TYPE_CHECKING:  # SymPy is imported by the functions of the SymPy column, when called: not on import
    import sympy

__all__ = ["LOSSES", "LOSS_OPTIONS", "REDUCTIONS", "TARGET_KINDS", "Loss", "get_loss", "huber", "loss_of", "valid_targets"]

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
    kinks:
        Where ``e`` is not twice differentiable, as a function of ``(y, t)``
        whose zeros are the kinks (``|y - t| - delta`` for Huber), or ``None``.
        The well-posedness check, finite differences and the strategies read it,
        as they read an activation's kinks.
    mean_over_outputs:
        Whether the ``mean`` reduction averages over every output of every
        pattern (PyTorch's ``MSELoss`` and ``HuberLoss``: ``1 / (N K)``) rather
        than over the patterns (``1 / N``).
    options:
        The loss's own settings (Huber's ``delta``), as sorted pairs.
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
    kinks: Callable[[FloatArray, FloatArray], FloatArray] | None = None
    mean_over_outputs: bool = False
    options: tuple[tuple[str, float], ...] = ()


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


# -- mse: nn.MSELoss's convention, (y - t)^2 summed (no 1/2), the mean over N K elements --------------


def _mse_value(y: FloatArray, t: FloatArray) -> FloatArray:
    r = y - t
    return np.sum(r * r, axis=1)


def _mse_grad(y: FloatArray, t: FloatArray) -> FloatArray:
    return 2.0 * (y - t)


def _mse_hess(y: FloatArray, t: FloatArray) -> FloatArray:
    return _diag(np.full_like(y, 2.0))


def _mse_grad_mag(y: FloatArray, t: FloatArray) -> FloatArray:
    return 2.0 * (np.abs(y) + np.abs(t))


def _mse_expr(y: Sequence[sympy.Expr], t: Sequence[sympy.Expr]) -> sympy.Expr:
    import sympy

    return sum(((yi - ti) ** 2 for yi, ti in zip(y, t)), sympy.S.Zero)


# -- huber: nn.HuberLoss(delta): r^2 / 2 inside |r| <= delta, delta (|r| - delta / 2) outside -----------


def huber(delta: float = 1.0) -> Loss:
    """The Huber loss with threshold ``delta`` (PyTorch's ``nn.HuberLoss(delta=delta)``), per output summed.

    Its second derivative jumps from 1 to 0 where ``|y - t| = delta``: there
    ``E`` is not twice differentiable (the ``kinks`` column says so).
    """
    if not (isinstance(delta, (int, float)) and not isinstance(delta, bool) and np.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be a positive number, got {delta!r}")
    d = float(delta)

    # each piece is analytic (the branch and the sign read the real part), so a complex step through the
    # gradient differentiates the piece it lies in, as it does a relu
    def value(y: FloatArray, t: FloatArray) -> FloatArray:
        r = y - t
        s = np.sign(np.real(r))
        return np.sum(np.where(np.abs(np.real(r)) <= d, 0.5 * r * r, d * (s * r - 0.5 * d)), axis=1)

    def grad(y: FloatArray, t: FloatArray) -> FloatArray:
        r = y - t
        return np.where(np.abs(np.real(r)) <= d, r, d * np.sign(np.real(r)))

    def hess(y: FloatArray, t: FloatArray) -> FloatArray:
        return _diag(np.where(np.abs(np.real(y - t)) <= d, 1.0, 0.0))

    # magnitudes of both pieces' terms: an implementation may evaluate both and mask one (np.where, torch.where,
    # autograd's where), so a term this piece lacks can still leave a rounding where the other was computed
    def grad_mag(y: FloatArray, t: FloatArray) -> FloatArray:
        return np.abs(y) + np.abs(t) + d

    def hess_mag(y: FloatArray, t: FloatArray) -> FloatArray:
        return _diag(np.ones_like(np.real(y)))

    def expr(y: Sequence[sympy.Expr], t: Sequence[sympy.Expr]) -> sympy.Expr:
        import sympy

        # written without Abs, so that every derivative is piecewise polynomial (no sign or DiracDelta)
        D = sympy.nsimplify(d)
        total = sympy.S.Zero
        for yi, ti in zip(y, t):
            r = yi - ti
            total += sympy.Piecewise((r**2 / 2, r**2 <= D**2), (D * (r - D / 2), r > 0), (D * (-r - D / 2), True))
        return total

    return Loss("huber", value, grad, hess, expr, grad_mag, hess_mag, 0.0, kinks=lambda y, t: np.abs(np.real(y - t)) - d,
                mean_over_outputs=True, options=(("delta", d),))


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
        Loss("mse", _mse_value, _mse_grad, _mse_hess, _mse_expr, _mse_grad_mag, _mse_hess, 0.0, mean_over_outputs=True),
        huber(1.0),
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


LOSS_OPTIONS: dict[str, Callable[..., Loss]] = {"huber": huber}
"""The losses that take settings, each with the factory of its row (``huber(delta=...)``)."""


def get_loss(name: str, **options: float) -> Loss:
    """Return the table row for ``name`` (with its settings, if it takes any); ``KeyError`` naming the choices."""
    try:
        row = LOSSES[str(name)]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None
    if not options:
        return row
    if str(name) not in LOSS_OPTIONS:
        raise KeyError(f"loss {name!r} takes no settings, got {', '.join(options)}")
    return LOSS_OPTIONS[str(name)](**options)


def loss_of(problem: Any) -> Loss:
    """The loss row of a problem, with its settings (``problem.loss_options``)."""
    return get_loss(problem.loss, **dict(getattr(problem, "loss_options", ())))
