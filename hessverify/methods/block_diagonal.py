"""``block_diagonal``: the exact per-layer diagonal blocks of the Hessian (HBP).

Dangel, Harmeling, Hennig (2020). Modular block-diagonal curvature
approximations for feedforward architectures. AISTATS, PMLR 108 ("HBP"),
eq. 7-9: the Hessian with respect to a layer's net inputs is propagated
backwards,

.. math::

   Q_L = \\mathrm{diag}(f'_L) H_y \\mathrm{diag}(f'_L) + \\mathrm{diag}(g_L \\odot f''_L), \\qquad
   Q_l = \\mathrm{diag}(f'_l) W_{l+1}^T Q_{l+1} W_{l+1} \\mathrm{diag}(f'_l) + \\mathrm{diag}(g_l \\odot f''_l),

per pattern (all terms kept, so the blocks are exact, not the
approximations HBP also offers), and the block of layer ``l``'s weights,
with ``x = (z_{l-1}, 1)`` the layer input with the bias column, is

.. math::

   \\frac{\\partial^2 E}{\\partial W_l[k,j]\\, \\partial W_l[k',j']} = \\sum_n Q_{l,kk'}\\, x_j\\, x_{j'},

the sum over patterns of ``Q_l`` Kronecker ``x x^T``.  No entry outside the
blocks is computed.  The recursion is
:func:`hessverify.methods.backprop.backward_second_order`.
"""

from __future__ import annotations

import numpy as np

from hessverify._typing import FloatArray
from hessverify.methods._layout import layer_block, with_ones
from hessverify.methods.backprop import backward_second_order, quantities
from hessverify.model.forward import check_point
from hessverify.model.network import layer_input
from hessverify.problem import Problem

__all__ = ["blocks", "embed"]


def blocks(problem: Problem) -> list[FloatArray]:
    """The exact diagonal blocks, one ``(size_l, size_l)`` array per layer, public order within each."""
    fp = check_point(problem)
    arch = problem.architecture
    q = quantities(fp)
    _, curv = backward_second_order(q, arch.depth)
    out = []
    for blk in arch.blocks:
        x = with_ones(layer_input(q.z, blk.layer), blk.bias)
        n, d = x.shape
        u = blk.units
        # sum_n Q[n,k,k'] x[n,j] x[n,j']: one product (u u) x N x (d d)
        xx = (x[:, :, None] * x[:, None, :]).reshape(n, d * d)
        T = (curv[blk.layer].reshape(n, u * u).T @ xx).reshape(u, u, d, d).transpose(0, 2, 1, 3)
        out.append(layer_block(blk, T))
    return out


def embed(problem: Problem, parts: list[FloatArray]) -> FloatArray:
    """The ``(W, W)`` matrix with ``parts`` on its diagonal and zeros elsewhere."""
    W = problem.n_params
    M = np.zeros((W, W))
    for blk, b in zip(problem.architecture.blocks, parts, strict=True):
        M[blk.slice, blk.slice] = b
    return M
