"""``gauss_newton``: the generalised Gauss-Newton matrix.

Schraudolph, N. N. (2002). Fast curvature matrix-vector products for
second-order gradient descent. Neural Computation 14(7), 1723-1738, eq. 6:

.. math::

   G = \\sum_n J_n^T\\, H_{y,n}\\, J_n, \\qquad J_n = \\frac{\\partial y_n}{\\partial \\theta},

with ``H_{y,n}`` the Hessian of the (reduction-scaled) per-pattern error in
the network outputs.  It is the Hessian with every term that involves a
second derivative of the network function dropped, so it equals the
Hessian when the network is linear in ``theta`` or the loss gradient
``g_y`` vanishes, and it is positive semi-definite when the loss is convex
in ``y``.

The Jacobian is backpropagated for all ``K`` outputs at once:
``G_L = diag(f'_L)``, ``G_p = sum_l (G_l W_{l,p}) diag(f'_p)`` (over the layers ``l`` that
read ``z_p``, ``W_{l,p}`` the columns of ``W_l`` that do) gives
``dy/da_l`` per pattern, and ``dy/dW_l[k,j] = G_l[:, k] x_j``.
"""

from __future__ import annotations

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.components import Component, Cost, Role
from hessverify.engine.forms import FullHessian
from hessverify.engine.point import Point, checked
from hessverify.model import assembly
from hessverify.model.forward import ForwardPass
from hessverify.model.layout import input_with_bias, public_positions
from hessverify.model.losses import loss_of
from hessverify.model.network import Architecture
from hessverify.model.problem import Problem

__all__ = ["hessian", "output_jacobian"]


def output_jacobian(arch: Architecture, fp: ForwardPass) -> FloatArray:
    """``J[n, k, :] = dy_{n,k} / d theta``, ``(N, K, W)`` in the public order."""
    n, K = fp.y.shape
    J = np.empty((n, K, arch.n_params))
    top = np.zeros((n, K, K))
    top[:, np.arange(K), np.arange(K)] = fp.df[arch.output_layer]  # dy/da_L
    G = {arch.output_layer: top}  # dy/dz_p W ... : dy/da_l, collected from every layer that reads z_l
    for l in arch.top_down:
        blk = arch.block(l)
        if l not in G:  # a layer that feeds nothing: y does not depend on it
            G[l] = np.zeros((n, K, blk.units))
        x = input_with_bias(arch, fp.z, l)
        J[:, :, blk.offset + public_positions(blk)] = (G[l][:, :, :, None] * x[:, None, None, :]).reshape(n, K, -1)
        for p in arch.parents(l):
            if p:  # not the network input
                part = (G[l] @ fp.weights[l][:, arch.source_slice(l, p)]) * fp.df[p][:, None, :]
                G[p] = G[p] + part if p in G else part
    return J


def hessian(problem: Problem | Point) -> FloatArray:
    """The generalised Gauss-Newton matrix :math:`\\sum_n J_n^T H_{y,n} J_n`, ``(W, W)``."""
    problem, fp = checked(problem)
    if not problem.architecture.is_dense:  # other layer kinds: J from the directions forward through the graph
        J = assembly.output_jacobian(fp.graph, fp)  # (W, N, K)
        H_y = loss_of(problem).hess(fp.output, problem.targets)
        return problem.scale * np.einsum("ink,nkl,jnl->ij", J, H_y, J)
    arch = problem.architecture
    J = output_jacobian(arch, fp)
    HJ = fp.h_y @ J
    n, K, W = J.shape
    G = J.reshape(n * K, W).T @ HJ.reshape(n * K, W)
    return 0.5 * (G + G.T)  # symmetric in exact arithmetic; remove the rounding asymmetry


COMPONENT = Component(
    "gauss_newton", hessian, Role.APPROXIMATION, FullHessian,
    "generalised Gauss-Newton J^T H_loss J (Schraudolph 2002)",
    cost=Cost(memory=(2.5, 5.0), seconds=(5e-10, 1e-6)),
    rank=70,
)
