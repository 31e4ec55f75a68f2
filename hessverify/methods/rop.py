"""``rop``: Hessian-vector products by Pearlmutter's R-operator.

Pearlmutter, B. A. (1994). Fast exact multiplication by the Hessian.
Neural Computation 6(1), 147-160.  The operator
:math:`\\mathcal{R}_v\\{g(\\theta)\\} = \\frac{\\partial}{\\partial r} g(\\theta + r v)\\big|_{r=0}`
is applied to every line of the forward and the backward pass (sec. 4,
eq. 4.1-4.4 for the MLP); the R of the gradient is :math:`H v`.

Forward, with ``V_l``, ``v_l`` the parts of ``v`` that belong to ``W_l``, ``b_l``:

.. math::

   \\mathcal{R}a_l = \\mathcal{R}z_{l-1} W_l^T + z_{l-1} V_l^T + v_l, \\qquad
   \\mathcal{R}z_l = f'_l \\odot \\mathcal{R}a_l, \\qquad \\mathcal{R}z_0 = 0.

Backward, with ``g_l = dE/dz_l`` and ``delta_l = g_l * f'_l``:

.. math::

   \\mathcal{R}g_L = H_y\\, \\mathcal{R}z_L, \\qquad
   \\mathcal{R}\\delta_l = \\mathcal{R}g_l \\odot f'_l + g_l \\odot f''_l \\odot \\mathcal{R}a_l, \\qquad
   \\mathcal{R}g_{l-1} = \\mathcal{R}\\delta_l W_l + \\delta_l V_l,

   (H v)_{W_l} = \\mathcal{R}\\delta_l^T z_{l-1} + \\delta_l^T \\mathcal{R}z_{l-1}, \\qquad
   (H v)_{b_l} = \\textstyle\\sum_n \\mathcal{R}\\delta_l.

Every line is written for a stack of ``P`` directions at once (a leading
axis), so :func:`hessian` applies the operator to the columns of the
identity in chunks: a few large ``matmul`` s per layer, no loop over
weights.
"""

from __future__ import annotations

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.components import Component, Cost, Role
from hessverify.engine.forms import FullHessian
from hessverify.engine.point import Point, as_problem, checked
from hessverify.errors import UsageError
from hessverify.model import assembly
from hessverify.model.forward import ForwardPass
from hessverify.model.network import Architecture, layer_input
from hessverify.model.problem import Problem

__all__ = ["hessian", "hvp", "hvp_many"]

CHUNK_FLOATS = 2**22
"""Elements allowed in one ``(P, N, units)`` array of a chunk (32 MB): bounds peak memory."""


def hvp_many(arch: Architecture, fp: ForwardPass, V: FloatArray) -> FloatArray:
    """``(H V^T)^T``: the product of the Hessian with each row of ``V`` (``(P, W)`` -> ``(P, W)``).

    In a graph every ``R`` quantity of a layer's input is its sources' side by
    side, and ``R g_p`` sums over the layers that read ``z_p``.
    """
    P = V.shape[0]
    n = fp.z[0].shape[0]
    vw = {blk.layer: V[:, blk.w_slice].reshape(P, blk.units, blk.fan_in) for blk in arch.blocks}
    vb = {blk.layer: V[:, blk.b_slice] if blk.bias else None for blk in arch.blocks}
    # forward R pass: R a_l and R z_l, shape (P, N, units_l); R z_0 = 0: the inputs do not move
    Ra: dict[int, FloatArray] = {}
    Rz: dict[int, FloatArray] = {}

    def R_input(l: int) -> FloatArray | None:
        """``R x_l``: the sources' ``R z`` side by side (zeros for the inputs), or None if nothing moves."""
        parts = [np.zeros((P, n, arch.inputs)) if p == 0 else Rz[p] for p in arch.parents(l)]
        if all(p == 0 for p in arch.parents(l)):
            return None
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)

    for l in arch.bottom_up:
        ra = np.matmul(layer_input(fp.z, l, arch), np.swapaxes(vw[l], 1, 2))  # x_l V_l^T
        if vb[l] is not None:
            ra += vb[l][:, None, :]
        for p in arch.parents(l):
            if p:
                ra += Rz[p] @ fp.weights[l][:, arch.source_slice(l, p)].T
        Ra[l] = ra
        Rz[l] = fp.df[l] * ra
    # backward R pass: g_l = dE/dz_l and R g_l collect from every layer that reads z_l
    out = np.empty((P, arch.n_params))
    top = arch.output_layer
    g = {top: fp.g_y}
    Rg = {top: np.einsum("nkj,pnj->pnk", fp.h_y, Rz[top])}
    for l in arch.top_down:
        blk = arch.block(l)
        if l not in g:  # a layer that feeds nothing: E does not depend on it
            g[l] = np.zeros((n, blk.units))
            Rg[l] = np.zeros((P, n, blk.units))
        delta = g[l] * fp.df[l]
        Rdelta = Rg[l] * fp.df[l] + (g[l] * fp.d2f[l]) * Ra[l]
        rw = np.swapaxes(Rdelta, 1, 2) @ layer_input(fp.z, l, arch)
        prev = R_input(l)
        if prev is not None:
            rw += delta.T @ prev  # the input x_l itself moves with v
        out[:, blk.w_slice] = rw.reshape(P, -1)
        if blk.bias:
            out[:, blk.b_slice] = Rdelta.sum(axis=1)
        for p in arch.parents(l):
            if p:  # not the network input
                cols = arch.source_slice(l, p)
                rg = Rdelta @ fp.weights[l][:, cols] + delta @ vw[l][:, :, cols]
                gp = delta @ fp.weights[l][:, cols]
                Rg[p] = Rg[p] + rg if p in Rg else rg
                g[p] = g[p] + gp if p in g else gp
    return out


def _as_direction(problem: Problem, v: object) -> FloatArray:
    arr = np.asarray(v, dtype=np.float64)
    W = problem.n_params
    if arr.ndim != 1 or arr.shape[0] != W:
        raise UsageError(
            f"v has shape {arr.shape} but the case {problem.id!r} has {W} parameters: "
            f"pass a vector of length {W} in the public order (see 'hessverify params')"
        )
    if not np.all(np.isfinite(arr)):
        raise UsageError("v contains NaN or inf; a direction must be finite")
    return arr


def hvp(problem: Problem | Point, v: FloatArray) -> FloatArray:
    """The exact Hessian-vector product :math:`H v` in one forward and one backward pass.

    Parameters
    ----------
    problem:
        The case.
    v:
        A direction, ``(W,)`` in the public parameter order.

    Raises
    ------
    UsageError
        When ``v`` does not have one entry per parameter, or is not finite.

    Examples
    --------
    >>> import numpy as np, hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> v = np.ones(case.n_params)
    >>> bool(np.allclose(hessverify.hvp(case, v), hessverify.hessian(case) @ v, rtol=1e-12, atol=1e-15))
    True
    """
    problem = as_problem(problem)
    arr = _as_direction(problem, v)
    problem, fp = checked(problem)
    if not problem.architecture.is_dense:  # other layer kinds: the R-operator over their graph
        return fp.graph.hvp(fp, arr[None, :])[0]
    return hvp_many(problem.architecture, fp, arr[None, :])[0]


STORED_FLOATS = 2**24
"""Elements of all the ``R a_l`` and ``R z_l`` of a chunk together (128 MB): a deep network keeps two per layer."""


def chunk_size(problem: Problem) -> int:
    """Directions per chunk: one ``(P, N, units)`` array under :data:`CHUNK_FLOATS`, all of them under
    :data:`STORED_FLOATS`."""
    arch = problem.architecture
    sizes = [int(np.prod(shape)) for shape in arch.shapes[1:]]  # a layer's outputs per pattern (dense: its units)
    widest = max([arch.inputs] + sizes)
    stored = 2 * sum(sizes)
    return int(max(1, min(problem.n_params, CHUNK_FLOATS // (problem.n_patterns * widest),
                          STORED_FLOATS // (problem.n_patterns * stored))))


def hessian(problem: Problem | Point) -> FloatArray:
    """The full Hessian as :math:`H e_i` for every unit vector, by the R-operator in chunks.

    Pearlmutter (1994), sec. 4.  Row ``i`` of the result is
    :math:`\\mathcal{R}_{e_i}\\{\\nabla E\\}`; the Hessian is symmetric, so
    rows and columns agree up to rounding.
    """
    problem, fp = checked(problem)
    if not problem.architecture.is_dense:
        return assembly.hessian_by_rows(fp.graph, fp)
    arch = problem.architecture
    W = arch.n_params
    H = np.empty((W, W))
    step = chunk_size(problem)
    for start in range(0, W, step):
        stop = min(W, start + step)
        E = np.zeros((stop - start, W))
        E[np.arange(stop - start), np.arange(start, stop)] = 1.0
        H[start:stop] = hvp_many(arch, fp, E)
    return H


COMPONENT = Component(
    "rop", hessian, Role.METHOD, FullHessian,
    "H e_i for every i by Pearlmutter's R-operator, in chunks of directions (Pearlmutter 1994)",
    cost=Cost(memory=(3.0, 8.0), seconds=(7e-9, 1e-6), fixed_bytes=7 * 8 * CHUNK_FLOATS, per_layer=1.5e-3,
              passes="chunk"),
    rank=20,
)
