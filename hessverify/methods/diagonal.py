"""``diagonal``: the exact Hessian diagonal, without forming the Hessian.

A diagonal entry has both weights in the same layer, so only the ``m = m'``
term of second-order backpropagation (Bishop 1992, eq. 22) contributes:

.. math::

   \\frac{\\partial^2 E}{\\partial W_l[k,j]^2} = \\sum_n Q_{l,kk}\\, x_j^2,
   \\qquad \\frac{\\partial^2 E}{\\partial b_l[k]^2} = \\sum_n Q_{l,kk},

with ``Q_l = d2E/da_l da_l^T`` from the exact backward recursion
(:func:`hessverify.model.kernel.backward_second_order`, Bishop 1992,
eq. 16-18) and ``x = z_{l-1}``.  Unlike the Becker-LeCun approximation the
recursion keeps the off-diagonal entries of every ``Q``; only the last
contraction is restricted to the diagonal.  Cost: the per-pattern ``Q_l``
(``N sum_l units_l^2 units_{l+1}``) plus ``N W``, never ``N W^2``.
"""

from __future__ import annotations

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.components import Component, Cost, Role
from hessverify.engine.forms import DiagonalHessian
from hessverify.engine.point import Point, checked
from hessverify.model import assembly
from hessverify.model.kernel import backward_second_order, quantities
from hessverify.model.layout import input_with_bias, layer_vector
from hessverify.model.problem import Problem

__all__ = ["diagonal"]


def diagonal(problem: Problem | Point) -> FloatArray:
    """The exact diagonal of the Hessian, ``(W,)`` in the public order."""
    problem, fp = checked(problem)
    if not problem.architecture.is_dense:  # other layer kinds: the diagonal of each layer's block
        return np.concatenate([np.diag(b) for b in assembly.diagonal_blocks(fp.graph, fp)])
    arch = problem.architecture
    q = quantities(fp)
    _, curv = backward_second_order(arch, q)
    parts = []
    for blk in arch.blocks:
        x = input_with_bias(arch, q.z, blk.layer)
        qkk = np.diagonal(curv[blk.layer], axis1=1, axis2=2)  # (N, units)
        parts.append(layer_vector(blk, qkk.T @ (x * x)))
    return np.concatenate(parts)


COMPONENT = Component(
    "diagonal", diagonal, Role.METHOD, DiagonalHessian,
    "exact Hessian diagonal without the full matrix (Bishop 1992, m = m' terms)",
    cost=Cost(memory=(0.5, 5.5), seconds=(3e-10, 1e-7), per_layer=1.5e-3, passes="layer"),
    rank=50,
)
