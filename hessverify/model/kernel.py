"""The assembly kernel of second-order backpropagation, shared by ``backprop`` and the rounding model.

Everything here works on plain per-layer arrays (:class:`Quantities`), so the
same code assembles the Hessian from the values of a forward pass
(:mod:`hessverify.methods.backprop`) and a bound from their magnitudes
(:mod:`hessverify.bounds`): the rounding model sits below the methods it
judges and borrows nothing from them.

* :func:`backward_second_order`: ``delta_l = dE/da_l`` and ``Q_l = d2E/da_l da_l^T``
  per pattern (Bishop 1992, eq. 16-18: the backward "b" quantities);
* :func:`forward_jacobians`: ``B_{l,m} = da_l/da_m`` (Bishop 1992, eq. 13);
* :func:`hessian_from_quantities`: the layer-pair blocks (Bishop 1992, eq. 22),
  in the public order (the formula is in :mod:`hessverify.methods.backprop`);
* the gradient by the first-order backward pass is
  :func:`hessverify.model.forward.gradient_from`, which takes the same arrays.

Every pass asks the architecture for its topology (``parent``, ``above``,
``top_down``); none computes ``l - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hessverify._typing import FloatArray
from hessverify.model.forward import ForwardPass
from hessverify.model.layout import input_with_bias
from hessverify.model.network import Architecture

__all__ = [
    "Quantities", "backward_second_order", "forward_jacobians",
    "hessian_from_quantities", "pattern_chunks", "quantities",
]


@dataclass
class Quantities:
    """Per-layer arrays, each with patterns as the leading axis (index 0: input)."""

    z: list[FloatArray]  # z[0] = x, z[l] = layer outputs
    df: list[FloatArray]  # f'_l(a_l)
    d2f: list[FloatArray]  # f''_l(a_l)
    weights: list[FloatArray]  # W_l
    g_y: FloatArray  # dE/dy, (N, K), reduction applied
    h_y: FloatArray  # d2E/dy dy^T, (N, K, K), reduction applied


def quantities(fp: ForwardPass) -> Quantities:
    return Quantities(fp.z, fp.df, fp.d2f, fp.weights, fp.g_y, fp.h_y)


def backward_second_order(arch: Architecture, q: Quantities) -> tuple[list[FloatArray], list[FloatArray]]:
    """``delta_l`` and ``Q_l`` for every layer (lists indexed by layer, entry 0 unused).

    .. math::

       Q_L = \\mathrm{diag}(f'_L)\\, H_y\\, \\mathrm{diag}(f'_L) + \\mathrm{diag}(g_y \\odot f''_L),\\qquad
       Q_l = \\mathrm{diag}(f'_l)\\, W_c^T Q_c W_c\\, \\mathrm{diag}(f'_l)
             + \\mathrm{diag}\\big((W_c^T \\delta_c) \\odot f''_l\\big)

    with ``c`` the layer that ``l`` feeds (Bishop 1992, eq. 16-18).
    """
    empty = np.empty((0,))
    delta: list[FloatArray] = [empty] * (arch.depth + 1)
    curv: list[FloatArray] = [empty] * (arch.depth + 1)
    g_z = {arch.output_layer: q.g_y}  # dE/dz_l
    h_z = {arch.output_layer: q.h_y}  # d2E/dz_l dz_l^T through the layers above (the loss, at the top)
    for l in arch.top_down:
        f1, f2 = q.df[l], q.d2f[l]
        delta[l] = g_z[l] * f1
        Q = f1[:, :, None] * h_z[l] * f1[:, None, :]
        Q[:, np.arange(f1.shape[1]), np.arange(f1.shape[1])] += g_z[l] * f2
        curv[l] = Q
        p = arch.parent(l)
        if p:  # not the network input
            w = q.weights[l]
            g_z[p] = delta[l] @ w
            h_z[p] = w.T @ Q @ w
    return delta, curv


def forward_jacobians(arch: Architecture, q: Quantities) -> dict[tuple[int, int], FloatArray]:
    """``B[(l, m)] = da_l/da_m`` per pattern, ``(N, units_l, units_m)``, for ``l = m`` and every ``l`` above ``m``.

    ``B_{m,m} = I`` and ``B_{l,m} = W_l diag(f'_p) B_{p,m}`` with ``p`` the
    layer feeding ``l`` (Bishop 1992, eq. 13).
    """
    n = q.z[0].shape[0]
    jac: dict[tuple[int, int], FloatArray] = {}
    for m in arch.bottom_up:
        units = q.df[m].shape[1]
        jac[(m, m)] = np.broadcast_to(np.eye(units), (n, units, units))
        for l in arch.above(m):
            p = arch.parent(l)
            jac[(l, m)] = q.weights[l] @ (q.df[p][:, :, None] * jac[(p, m)])
    return jac


MIRROR_TILE = 256
"""Side of the tiles in which the lower triangle is copied from the upper one (cache-sized)."""


def _view(H: FloatArray, rows: slice, cols: slice, shape: tuple[int, ...]) -> FloatArray:
    """``H[rows, cols]`` reshaped without a copy, so that writing to it writes into ``H``."""
    v = H[rows, cols].reshape(shape)
    if v.size and not np.shares_memory(v, H):  # pragma: no cover - a reshape of a 2-D slice never copies
        raise AssertionError("reshape copied; the write would be lost")
    return v


PATTERN_CHUNK_MIN_FLOATS = 2**16
"""Least per-chunk budget, in floats, of the per-pattern quantities (see :func:`hessian_from_quantities`)."""


def _per_pattern_floats(arch: Architecture) -> int:
    """Floats that one pattern costs in the assembly: its Jacobians, its ``Q`` s and the largest pair's factors."""
    units = [layer.units for layer in arch.layers]
    d = [blk.fan_in + (1 if blk.bias else 0) for blk in arch.blocks]
    pairs = sum(units[m] * units[l] for m in range(len(units)) for l in range(m, len(units)))
    largest = max(units[m] * units[l] + d[m] * d[l] + units[l] * d[m] + d[l] * units[m]
                  for m in range(len(units)) for l in range(m, len(units)))
    return 2 * pairs + largest + sum(d)


def pattern_chunks(arch: Architecture, n: int) -> list[slice]:
    """Consecutive pattern ranges whose per-pattern quantities together take about as much as ``H`` itself."""
    budget = max(arch.n_params**2, PATTERN_CHUNK_MIN_FLOATS)
    step = max(1, budget // _per_pattern_floats(arch))
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def _subset(q: Quantities, rows: slice) -> Quantities:
    return Quantities([z[rows] for z in q.z], [f[rows] if f.ndim else f for f in q.df],
                      [f[rows] if f.ndim else f for f in q.d2f], q.weights, q.g_y[rows], q.h_y[rows])


def hessian_from_quantities(arch: Architecture, q: Quantities) -> FloatArray:
    """Assemble the full Hessian in the public order from propagated quantities.

    For each pair of layers ``m <= m'`` the main term is one product
    ``(u u') x N x (d d')`` and the bilinear term one product
    ``(u' d) x N x (f' u)`` (module text); both are written straight into
    strided views of ``H`` in the public layout, without intermediate
    copies.  The lower off-diagonal layer blocks are then copied from the
    upper ones in cache-sized tiles.

    Every term is a sum over patterns, so the patterns are taken in chunks
    (:func:`pattern_chunks`) whose per-pattern quantities (Jacobians ``B``,
    curvatures ``Q``, the factors of one layer pair) need about as much
    memory as ``H``: peak memory stays a small multiple of ``H`` whatever
    ``N`` is, and is one chunk for the benchmark sizes.
    """
    n = q.z[0].shape[0]
    W = arch.n_params
    H = np.empty((W, W), dtype=np.result_type(q.z[0], q.g_y, 1.0))
    for i, rows in enumerate(pattern_chunks(arch, n)):
        _accumulate(H, arch, q if rows == slice(0, n) else _subset(q, rows), first=i == 0)
    # the lower off-diagonal layer blocks, from the upper ones, in cache-sized tiles
    for bm in arch.blocks:  # (a block's rows: layers in bottom-up order, so those to the right lie above)
        r0, r1 = bm.offset, bm.offset + bm.size
        for i in range(r0, r1, MIRROR_TILE):
            i1 = min(r1, i + MIRROR_TILE)
            for j in range(r1, W, MIRROR_TILE):
                j1 = min(W, j + MIRROR_TILE)
                H[j:j1, i:i1] = H[i:i1, j:j1].T
        # Q_m and the products that form a diagonal layer block are symmetric only up to
        # rounding ((a b) c != (c b) a); the mean restores exact symmetry without adding error
        d = H[bm.slice, bm.slice]
        d[...] = 0.5 * (d + d.T)
    return H


def _put(dest: FloatArray, value: FloatArray, first: bool) -> None:
    """The first chunk of patterns writes, the later ones add."""
    if first:
        dest[...] = value
    else:
        dest += value


def _accumulate(H: FloatArray, arch: Architecture, q: Quantities, first: bool) -> None:
    """Write (``first``) or add the upper layer-pair blocks of ``H`` for the patterns in ``q``."""
    delta, curv = backward_second_order(arch, q)
    jac = forward_jacobians(arch, q)
    n = q.z[0].shape[0]
    inputs = {l: input_with_bias(arch, q.z, l) for l in arch.bottom_up}
    for m in arch.bottom_up:
        bm, zm = arch.block(m), inputs[m]
        u, f, dm = bm.units, bm.fan_in, zm.shape[1]
        for mp in (m, *arch.above(m)):
            bmp, zmp = arch.block(mp), inputs[mp]
            up, fp_, dmp = bmp.units, bmp.fan_in, zmp.shape[1]
            # main term: sum_n K[n,k,k'] z[n,j] z'[n,j'], K = B_{m',m}^T Q_{m'}; G[k, k', j, j']
            K = np.swapaxes(jac[(mp, m)], 1, 2) @ curv[mp]
            zz = (zm[:, :, None] * zmp[:, None, :]).reshape(n, dm * dmp)
            G = (K.reshape(n, u * up).T @ zz).reshape(u, up, dm, dmp)
            ww = _view(H, bm.w_slice, bmp.w_slice, (u, f, up, fp_))
            _put(ww, G[:, :, :f, :fp_].transpose(0, 2, 1, 3), first)
            if bmp.bias:
                _put(_view(H, bm.w_slice, bmp.b_slice, (u, f, up)), G[:, :, :f, fp_].transpose(0, 2, 1), first)
            if bm.bias:
                bw = _view(H, bm.b_slice, bmp.w_slice, (u, up, fp_))
                _put(bw, G[:, :, f, :fp_], first)
                if bmp.bias:
                    _put(H[bm.b_slice, bmp.b_slice], G[:, :, f, fp_], first)
            if mp != m:
                # bilinear term: sum_n delta'[n,k'] z[n,j] f'_p[n,j'] B_{p,m}[n,j',k], as r[k', j, j', k],
                # p the layer feeding m' (W_m' multiplies z_p, which itself depends on W_m)
                p = arch.parent(mp)
                x = (delta[mp][:, :, None] * zm[:, None, :]).reshape(n, up * dm)
                y = (q.df[p][:, :, None] * jac[(p, m)]).reshape(n, fp_ * u)
                r = (x.T @ y).reshape(up, dm, fp_, u)
                ww += r[:, :f].transpose(3, 1, 0, 2)
                if bm.bias:
                    bw += r[:, f].transpose(2, 0, 1)
