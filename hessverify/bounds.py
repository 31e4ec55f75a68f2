"""Derived error bounds: the float64 rounding model.

Two exact methods compute the same sums of products in different orders, so
each differs from the true Hessian by rounding only.  Standard running error
analysis (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
sec. 3.1, eq. 3.4-3.5) bounds the error of a computed sum of products by

.. math::

   |\\hat s - s| \\le \\gamma_k \\sum_i |x_i|\\,|y_i|, \\qquad
   \\gamma_k = \\frac{k u}{1 - k u}, \\quad u = 2^{-53},

where the right-hand side is the sum of the *magnitudes of the terms*, not
of the result (the result can cancel to zero while the terms are large).

The magnitude Hessian ``M`` is the Hessian assembly of
:mod:`hessverify.methods.backprop` run on the absolute values of every
propagated quantity, with three corrections so that errors made *before*
the final sums are covered too:

* a net input computed as a sum carries an error of up to
  ``gamma * A`` with ``A = |W| |z| + |b|``; it moves ``f``, ``f'`` and ``f''``
  by at most ``sup|f'| A``, ``sup|f''| A`` and ``sup|f'''| A`` per unit of
  ``gamma`` (the ``df_max``, ``d2f_max`` and ``d3f_max`` columns of the
  activation table);
* the loss derivatives enter with the magnitudes of their own terms (the
  ``grad_mag`` and ``hess_mag`` columns of the loss table), plus what the
  outputs' own rounding error moves them by (the ``d2e_max`` and
  ``d3e_max`` columns times the outputs' magnitude);
* ``k``, the length of the longest chain of roundings, counts every sum of
  the forward pass, the backward pass and the final sum over patterns, plus a
  fixed allowance per layer for evaluating the activation functions (a few
  ulps each in libm).

Each of two exact methods is then within ``gamma_k M`` of the truth, so they
agree within ``2 gamma_k M`` entry by entry.  This is a worst-case bound:
typical rounding errors are smaller by a factor near ``sqrt(k)``, which is
why measured margins (error / bound) are far below 1.
"""

from __future__ import annotations

import numpy as np

from hessverify._typing import FloatArray
from hessverify.methods.backprop import Quantities, hessian_from_quantities
from hessverify.model.activations import get_activation
from hessverify.model.forward import forward
from hessverify.model.losses import get_loss
from hessverify.model.network import layer_input
from hessverify.problem import Problem

__all__ = ["UNIT_ROUNDOFF", "chain_length", "gamma", "magnitude_hessian", "magnitude_gradient", "rounding_bound"]

UNIT_ROUNDOFF = 2.0**-53
"""``u`` for float64 with round-to-nearest."""

ACTIVATION_ULPS = 8
"""Roundings allowed per activation evaluation (libm's exp, tanh, erf: <= 2 ulp each, plus the arithmetic around them)."""

LOSS_ULPS = 8
"""Roundings allowed for evaluating the loss derivatives at the output (softmax, logsumexp)."""


def gamma(k: int) -> float:
    """Higham's ``gamma_k = k u / (1 - k u)``."""
    ku = k * UNIT_ROUNDOFF
    if ku >= 1:
        raise ValueError(f"chain of {k} roundings is too long for float64 error bounds")
    return ku / (1.0 - ku)


def chain_length(problem: Problem) -> int:
    """``k``: the longest chain of roundings in any entry of the Hessian."""
    arch = problem.architecture
    k = LOSS_ULPS + problem.n_patterns + 2  # the final sum over patterns, the reduction
    for index, layer in enumerate(arch.layers, start=1):
        k += arch.fan_in(index) + 1  # forward dot product and bias
        k += layer.units + 2  # backward dot products (delta and Q)
        k += ACTIVATION_ULPS
    return k


def _magnitudes(problem: Problem) -> Quantities:
    fp = forward(problem)
    loss = get_loss(problem.loss)
    z = [np.abs(fp.z[0])]
    df: list[FloatArray] = [fp.df[0]]
    d2f: list[FloatArray] = [fp.d2f[0]]
    weights: list[FloatArray] = [fp.weights[0]]
    for index, ((w, b), layer) in enumerate(
        zip(problem.architecture.unpack(problem.params), problem.architecture.layers), start=1
    ):
        act = get_activation(layer.activation)
        amag = layer_input(z, index) @ np.abs(w).T + np.abs(b)  # magnitude of the net input's terms
        z.append(np.abs(fp.z[index]) + act.df_max * amag)
        df.append(np.abs(fp.df[index]) + act.d2f_max * amag)
        d2f.append(np.abs(fp.d2f[index]) + act.d3f_max * amag)
        weights.append(np.abs(w))
    y, t = fp.y, problem.targets
    g_mag = loss.grad_mag(y, t)
    h_mag = np.abs(loss.hess_mag(y, t))
    if loss.d2e_max is not None and loss.d3e_max is not None:
        # The outputs carry rounding error too (up to gamma * z[-1], the same allowance as any
        # layer's output), and it moves the loss derivatives evaluated at them.  Without this
        # a reference that evaluates the loss Hessian with cancellation (autograd's second
        # derivative of logaddexp, 1 - sigma(y) for large y) falls outside the bound.
        spread = np.sum(z[-1], axis=1)
        g_mag = g_mag + (loss.d2e_max(t) * spread)[:, None]
        h_mag = h_mag + (loss.d3e_max(t) * spread)[:, None, None]
    return Quantities(z, df, d2f, weights, problem.scale * g_mag, problem.scale * h_mag)


def magnitude_hessian(problem: Problem) -> FloatArray:
    """``M``: every Hessian entry's terms summed in absolute value (see module text)."""
    return hessian_from_quantities(problem.architecture, _magnitudes(problem))


def magnitude_gradient(problem: Problem) -> FloatArray:
    """The gradient's terms summed in absolute value, by the same rule."""
    q = _magnitudes(problem)
    arch = problem.architecture
    gz = q.g_y
    parts: list[FloatArray] = []
    for blk in reversed(arch.blocks):
        d = gz * q.df[blk.layer]
        piece = [(d.T @ layer_input(q.z, blk.layer)).reshape(-1)]
        if blk.bias:
            piece.append(d.sum(axis=0))
        parts = piece + parts
        gz = d @ q.weights[blk.layer]
    return np.concatenate(parts)


def rounding_bound(problem: Problem, methods: int = 2) -> FloatArray:
    """Entrywise bound on the difference of ``methods`` exact float64 results.

    Each method is within ``gamma_k M`` of the truth; two methods differ by at
    most ``2 gamma_k M``.  An absolute floor at the smallest normal number
    keeps the bound meaningful for entries that are exactly zero.
    """
    M = magnitude_hessian(problem)
    return methods * gamma(chain_length(problem)) * M + np.finfo(np.float64).tiny
