"""``fisher``: the empirical Fisher matrix.

Kunstner, Hennig, Balles (2019). Limitations of the empirical Fisher
approximation for natural gradient descent. NeurIPS, eq. 3 (for the sum):

.. math::

   F = s \\sum_n \\nabla e_n\\, \\nabla e_n^T,

with ``e_n`` the error of pattern ``n`` and ``s`` the reduction's factor,
the same one in front of ``E = s sum_n e_n`` and of the Hessian
``H = s sum_n grad^2 e_n``: ``s = 1`` for ``sum`` and ``s = 1/N`` for
``mean``.  So for ``mean`` the Fisher is the *mean* of the per-pattern
outer products, ``(1/N) sum_n grad e_n grad e_n^T``, on the same scale as
the mean Hessian it approximates; it is not the ``1/N^2`` one gets by
squaring the per-pattern gradients of the mean loss (``g_n = grad e_n / N``):
in those terms ``F = N sum_n g_n g_n^T``.

Per-pattern gradients come from the first-order backward pass, as
``delta_{l,n,k} x_{n,j}`` (no loop over patterns).
"""

from __future__ import annotations

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.components import Component, Cost, Role
from hessverify.engine.forms import FullHessian
from hessverify.engine.point import Point, as_problem, checked
from hessverify.model import assembly
from hessverify.model.forward import backward_deltas
from hessverify.model.layout import input_with_bias, public_positions
from hessverify.model.losses import loss_of
from hessverify.model.problem import Problem

__all__ = ["hessian", "per_pattern_gradients"]


def per_pattern_gradients(problem: Problem | Point) -> FloatArray:
    """``(N, W)``: row ``n`` is ``s grad e_n``, the pattern's share of the gradient of ``E``."""
    problem, fp = checked(problem)
    if not problem.architecture.is_dense:  # other layer kinds: g_n = J_n^T grad e_n, J through the graph
        J = assembly.output_jacobian(fp.graph, fp)  # (W, N, K)
        g_y = loss_of(problem).grad(fp.output, problem.targets)
        return problem.scale * np.einsum("ink,nk->ni", J, g_y)
    arch = problem.architecture
    delta = backward_deltas(arch, fp)  # already carries the factor s through g_y
    n = problem.n_patterns
    out = np.empty((n, arch.n_params))
    for blk in arch.blocks:
        x = input_with_bias(arch, fp.z, blk.layer)
        out[:, blk.offset + public_positions(blk)] = (delta[blk.layer][:, :, None] * x[:, None, :]).reshape(n, -1)
    return out


def hessian(problem: Problem | Point) -> FloatArray:
    """The empirical Fisher :math:`s \\sum_n \\nabla e_n \\nabla e_n^T`, ``(W, W)``."""
    problem = as_problem(problem)
    G = per_pattern_gradients(problem)  # rows s grad e_n
    return (G.T @ G) / problem.scale  # s^2 sum grad grad^T / s = s sum grad grad^T


COMPONENT = Component(
    "fisher", hessian, Role.APPROXIMATION, FullHessian,
    "empirical Fisher s sum_n grad e_n grad e_n^T, s the reduction's factor (Kunstner et al. 2019)",
    cost=Cost(memory=(1.5, 3.0), seconds=(3e-10, 1e-6)),
    rank=80,
)
