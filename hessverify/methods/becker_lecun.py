"""``becker_lecun``: the Becker & LeCun (1988) diagonal approximation.

Becker, S. and LeCun, Y. (1988). Improving the convergence of
back-propagation learning with second order methods. Proc. 1988
Connectionist Models Summer School, 29-37; the same recursion is eq. 7-8
of LeCun, Denker, Solla (1990), "Optimal Brain Damage", NIPS 2.

Second derivatives are backpropagated as if every Hessian with respect to
a layer's outputs were diagonal:

.. math::

   \\tilde q_{L,k} = f'_{L,k}{}^2\\, (H_y)_{kk} + f''_{L,k}\\, g_{L,k}, \\qquad
   \\tilde q_{l,k} = f'_{l,k}{}^2 \\sum_{c, i} W_{c,ik}^2\\, \\tilde q_{c,i} + f''_{l,k}\\, g_{l,k},

   \\widetilde{\\partial^2 E / \\partial W_l[k,j]^2} = \\sum_n \\tilde q_{l,k}\\, x_{l,j}^2,
   \\qquad \\widetilde{\\partial^2 E / \\partial b_l[k]^2} = \\sum_n \\tilde q_{l,k},

with ``g_l = dE/dz_l`` the exact first-order backward quantity, the sum over
every unit ``i`` of every layer ``c`` that reads ``z_l`` (``W_{c,ik}`` the weight
from unit ``k`` of ``l``; in a chain ``c`` is the next layer: LeCun et al. 1990
state it for any feed-forward graph of units).

Variant: the registry entry keeps the ``f'' g`` term (``with_f2=True``), as
in Becker & LeCun (1988) and Optimal Brain Damage eq. 7.  Dropping it
(``with_f2=False``) gives the "Levenberg-Marquardt" variant of LeCun et al.,
"Efficient BackProp" (1998, sec. 9.1), which equals the diagonal of the
Gauss-Newton recursion with the off-diagonal terms dropped.
"""

from __future__ import annotations

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.components import Component, Cost, Role
from hessverify.engine.forms import DiagonalHessian
from hessverify.engine.point import Point, checked
from hessverify.model.layout import input_with_bias, layer_vector
from hessverify.model.problem import Problem

__all__ = ["diagonal"]


def diagonal(problem: Problem | Point, *, with_f2: bool = True) -> FloatArray:
    """The Becker-LeCun approximate Hessian diagonal, ``(W,)`` in the public order."""
    problem, fp = checked(problem)
    if not problem.architecture.is_dense:  # other layer kinds: the same pass over their graph
        D = fp.graph.diag_back(fp)
        return np.concatenate([np.reshape(D[p.node], -1) if D[p.node] is not None else np.zeros(p.size)
                               for p in fp.graph.params])
    arch = problem.architecture
    n = problem.n_patterns
    g = {arch.output_layer: fp.g_y}  # dE/dz_l, exact
    qz = {arch.output_layer: np.diagonal(fp.h_y, axis1=1, axis2=2)}  # off-diagonal loss curvature dropped
    parts: dict[int, FloatArray] = {}
    for l in arch.top_down:
        f1 = fp.df[l]
        if l not in g:  # a layer that feeds nothing: E does not depend on it
            g[l] = qz[l] = np.zeros((n, arch.layer(l).units))
        qa = f1 * f1 * qz[l]
        if with_f2:
            qa = qa + fp.d2f[l] * g[l]
        x = input_with_bias(arch, fp.z, l)
        parts[l] = layer_vector(arch.block(l), qa.T @ (x * x))
        for p in arch.parents(l):  # every layer l reads: the sums run over all units a unit feeds
            if p:  # not the network input
                w = fp.weights[l][:, arch.source_slice(l, p)]
                dq = qa @ (w * w)  # sum_i W_ik^2 q_i: the cross terms i != i' dropped
                dg = (g[l] * f1) @ w
                qz[p] = qz[p] + dq if p in qz else dq
                g[p] = g[p] + dg if p in g else dg
    return np.concatenate([parts[l] for l in arch.bottom_up])


COMPONENT = Component(
    "becker_lecun", diagonal, Role.APPROXIMATION, DiagonalHessian,
    "diagonal approximation with the f'' term (Becker & LeCun 1988)",
    cost=Cost(memory=(0.2, 1.5), seconds=(1e-10, 1e-7), per_layer=5e-4, passes="layer"),
    rank=60,
)
