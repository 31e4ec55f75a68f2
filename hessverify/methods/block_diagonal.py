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
by gathers (:func:`hessverify.model.kernel.symmetric_sums`, which
``backprop`` uses for its diagonal blocks too).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.components import Component, Cost, Role
from hessverify.engine.forms import BlockDiagonalHessian
from hessverify.engine.point import Point, checked
from hessverify.model import assembly
from hessverify.model.kernel import backward_second_order, diagonal_block, quantities
from hessverify.model.layout import input_with_bias
from hessverify.model.problem import Problem

__all__ = ["blocks", "embed"]


def blocks(problem: Problem | Point) -> list[FloatArray]:
    """The exact diagonal blocks, one ``(size_l, size_l)`` array per layer, public order within each."""
    problem, fp = checked(problem)
    if not problem.architecture.is_dense:  # other layer kinds: each layer's block over their graph
        return graph_blocks(problem, fp)
    arch = problem.architecture
    q = quantities(fp)
    _, curv = backward_second_order(arch, q)
    return [diagonal_block(curv[blk.layer], input_with_bias(arch, q.z, blk.layer), blk) for blk in arch.blocks]


def graph_blocks(problem: Problem, values: Any) -> list[FloatArray]:
    """One block per layer (an empty one for a layer without parameters) from the graph's diagonal blocks."""
    found = {layer: block for (layer, _, _), block in zip(assembly.layer_spans(values.graph),
                                                          assembly.diagonal_blocks(values.graph, values))}
    return [found.get(blk.layer, np.zeros((0, 0))) for blk in problem.architecture.blocks]


def embed(problem: Problem, parts: list[FloatArray]) -> FloatArray:
    """The ``(W, W)`` matrix with ``parts`` on its diagonal and zeros elsewhere."""
    return BlockDiagonalHessian(parts).dense(problem.architecture)


COMPONENT = Component(
    "block_diagonal", blocks, Role.METHOD, BlockDiagonalHessian,
    "exact per-layer diagonal blocks, propagated backwards (Dangel et al. 2020, HBP)",
    cost=Cost(memory=(1.7, 5.0), seconds=(5e-10, 1e-6), per_layer=1e-3, passes="layer"),
    rank=40,
)
