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
:func:`hessverify.model.kernel.backward_second_order`.

Both factors are symmetric (``Q_{l,kk'} = Q_{l,k'k}``, ``x_j x_j' = x_j' x_j``),
so only the sums for unit pairs ``k <= k'`` and input pairs ``j <= j'`` are
formed, in one product of size ``u(u+1)/2 x N x d(d+1)/2``, a quarter of
the full block's work; every entry of the block is then read from them
by one gather.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hessverify._typing import FloatArray, IntArray
from hessverify.forms import BlockDiagonalHessian
from hessverify.model.kernel import backward_second_order, quantities
from hessverify.model.layout import input_with_bias
from hessverify.model.problem import Problem
from hessverify.model.well_posed import ensure_well_posed

__all__ = ["blocks", "embed"]


def _pair_table(n: int) -> tuple[tuple[IntArray, IntArray], IntArray]:
    """The pairs ``a <= b`` of ``range(n)`` and, for every ``(a, b)``, the index of its unordered pair."""
    iu = np.triu_indices(n)
    table = np.empty((n, n), dtype=np.intp)
    table[iu] = np.arange(iu[0].size)
    table[iu[1], iu[0]] = np.arange(iu[0].size)
    return iu, table


@lru_cache(maxsize=4)
def _gather_index(units: int, fan_in: int, bias: bool) -> IntArray:
    """For each entry of a layer's block in the public order, its place in the symmetric sums.

    Cached per layer shape, because computing it costs as much as the gather
    itself; the cache is small (four shapes) and the indices are int32 when
    they fit, half the size of the float64 block they index.
    """
    d = fan_in + (1 if bias else 0)
    r = np.arange(units * fan_in)
    k = np.concatenate([r // fan_in, np.arange(units) if bias else np.empty(0, np.intp)])
    j = np.concatenate([r % fan_in, np.full(units, fan_in) if bias else np.empty(0, np.intp)])
    (_, pk), (_, pj) = _pair_table(units), _pair_table(d)
    n_j = d * (d + 1) // 2
    dtype = np.int32 if pk.size * n_j < 2**31 else np.intp
    index = (pk.astype(dtype)[k[:, None], k[None, :]] * dtype(n_j)) + pj.astype(dtype)[j[:, None], j[None, :]]
    index.setflags(write=False)
    return index


def blocks(problem: Problem) -> list[FloatArray]:
    """The exact diagonal blocks, one ``(size_l, size_l)`` array per layer, public order within each."""
    fp = ensure_well_posed(problem)
    arch = problem.architecture
    q = quantities(fp)
    _, curv = backward_second_order(arch, q)
    out = []
    for blk in arch.blocks:
        x = input_with_bias(arch, q.z, blk.layer)
        (ka, kb), _ = _pair_table(blk.units)
        (ja, jb), _ = _pair_table(x.shape[1])
        # S[(k<=k'), (j<=j')] = sum_n Q[n,k,k'] x[n,j] x[n,j']: one product
        S = curv[blk.layer][:, ka, kb].T @ (x[:, ja] * x[:, jb])
        out.append(S.ravel()[_gather_index(blk.units, blk.fan_in, blk.bias)])
    return out


def embed(problem: Problem, parts: list[FloatArray]) -> FloatArray:
    """The ``(W, W)`` matrix with ``parts`` on its diagonal and zeros elsewhere."""
    return BlockDiagonalHessian(parts).dense(problem.architecture)
