"""The assembly kernel of second-order backpropagation, shared by ``backprop`` and the rounding model.

Everything here works on plain per-layer arrays (:class:`Quantities`), so the
same code assembles the Hessian from the values of a forward pass
(:mod:`hessverify.methods.backprop`) and a bound from their magnitudes
(:mod:`hessverify.engine.bounds`): the rounding model sits below the methods it
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

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from hessverify.base.typing import FloatArray, IntArray
from hessverify.model.forward import ForwardPass, dE_dz, deltas_from
from hessverify.model.layout import input_with_bias
from hessverify.model.network import Architecture, ParamBlock

__all__ = [
    "Curvatures", "Quantities", "backward_second_order", "second_order", "diagonal_block", "forward_jacobians", "symmetric_sums",
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


class Curvatures:
    r"""``M[(i, j)] = d2E/da_i da_j^T`` per pattern, ``(N, units_i, units_j)``, for any two layers, on demand.

    ``a_i`` here is perturbed additively after it is computed, everything it
    feeds following, so ``M`` is the second derivative of ``E`` with respect
    to all the net inputs taken as independent variables (Bishop 1992, sec. 3,
    the ``b`` quantities of a general feed-forward topology).  With ``g_i = dE/dz_i``
    and ``W_{c,i}`` the columns of ``W_c`` that read ``z_i``:

    .. math::

       M_{ij} = \mathrm{diag}(f'_i) \sum_{c \ni i} W_{c,i}^T M_{cj} \quad (i < j),\qquad
       M_{ii} = \sum_{c \ni i} M_{ic} W_{c,i}\, \mathrm{diag}(f'_i) + \mathrm{diag}(g_i \odot f''_i)
                + [i = L]\, \mathrm{diag}(f'_L)\, H_y\, \mathrm{diag}(f'_L)

    the sums over the layers ``c`` that read ``z_i`` (every path from ``i``
    to the output).  For a chain ``M_{ii}`` is the familiar
    ``diag(f') W^T Q_{i+1} W diag(f') + diag(g f'')`` and only the diagonal
    ones are computed when only they are asked for (:func:`backward_second_order`).
    ``M_{ji}`` is the transpose of ``M_{ij}``; only ``i <= j`` are kept.
    """

    def __init__(self, arch: Architecture, q: Quantities, delta: list[FloatArray]) -> None:
        self.arch, self.q, self.delta = arch, q, delta
        self._m: dict[tuple[int, int], FloatArray] = {}

    def _w(self, c: int, i: int) -> FloatArray:
        return self.q.weights[c][:, self.arch.source_slice(c, i)]

    def __getitem__(self, pair: tuple[int, int]) -> FloatArray:
        i, j = pair
        if i > j:
            return np.swapaxes(self[(j, i)], 1, 2)
        if pair not in self._m:
            self._m[pair] = self._compute(i, j)
        return self._m[pair]

    def _compute(self, i: int, j: int) -> FloatArray:
        arch, q = self.arch, self.q
        f1 = q.df[i]
        n, u = f1.shape
        if i < j:
            total = None
            for c in arch.children(i):
                part = np.swapaxes(self._w(c, i), 0, 1) @ self[(c, j)]
                total = part if total is None else total + part
            if total is None:  # i feeds nothing: E does not depend on a_i
                return np.zeros((n, u, q.df[j].shape[1]), dtype=np.result_type(f1, q.g_y))
            return f1[:, :, None] * total
        if i == arch.output_layer:
            Q = f1[:, :, None] * q.h_y * f1[:, None, :]
        else:
            Q = np.zeros((n, u, u), dtype=np.result_type(f1, q.g_y))
            for c in arch.children(i):
                Q += (self[(i, c)] @ self._w(c, i)) * f1[:, None, :]
        g_z = dE_dz(arch, i, self.delta, q.weights, q.g_y)
        Q[:, np.arange(u), np.arange(u)] += g_z * q.d2f[i]
        return Q


def backward_second_order(arch: Architecture, q: Quantities) -> tuple[list[FloatArray], list[FloatArray]]:
    r"""``delta_l`` and ``Q_l = M_{ll}`` for every layer (lists indexed by layer, entry 0 unused).

    .. math::

       Q_L = \mathrm{diag}(f'_L)\, H_y\, \mathrm{diag}(f'_L) + \mathrm{diag}(g_y \odot f''_L),\qquad
       Q_l = \mathrm{diag}(f'_l)\, W_c^T Q_c W_c\, \mathrm{diag}(f'_l)
             + \mathrm{diag}\big((W_c^T \delta_c) \odot f''_l\big)

    with ``c`` the layer that ``l`` feeds, in a chain (Bishop 1992, eq. 16-18);
    in a graph ``Q_l`` sums over every pair of layers that read ``z_l``
    (:class:`Curvatures`).
    """
    delta, curv = second_order(arch, q)
    empty = np.empty((0,))
    return delta, [empty] + [curv[(l, l)] for l in range(1, arch.depth + 1)]


def second_order(arch: Architecture, q: Quantities) -> tuple[list[FloatArray], Curvatures]:
    """``delta_l`` for every layer and the :class:`Curvatures` ``M`` (computed as they are asked for)."""
    delta = deltas_from(arch, q.df, q.weights, q.g_y)
    return delta, Curvatures(arch, q, delta)


def forward_jacobians(arch: Architecture, q: Quantities) -> dict[tuple[int, int], FloatArray]:
    """``B[(l, m)] = da_l/da_m`` per pattern, ``(N, units_l, units_m)``, for ``l = m`` and every ``l`` above ``m``.

    ``B_{m,m} = I`` and ``B_{l,m} = sum_p W_{l,p} diag(f'_p) B_{p,m}`` over the
    layers ``p`` feeding ``l`` that are ``m`` or depend on it, ``W_{l,p}`` the
    columns of ``W_l`` that read ``z_p`` (Bishop 1992, eq. 13, summed over
    paths as in a general topology).
    """
    n = q.z[0].shape[0]
    jac: dict[tuple[int, int], FloatArray] = {}
    for m in arch.bottom_up:
        units = q.df[m].shape[1]
        jac[(m, m)] = np.broadcast_to(np.eye(units), (n, units, units))
        for l in arch.above(m):
            total = None
            for p in arch.parents(l):
                if (p, m) not in jac:  # p is neither m nor above it
                    continue
                w = q.weights[l][:, arch.source_slice(l, p)]
                if p == m:  # W_{l,m} diag(f'_m) I: a scaling of the columns, not a product
                    part = w[None, :, :] * q.df[m][:, None, :]
                else:
                    part = w @ (q.df[p][:, :, None] * jac[(p, m)])
                total = part if total is None else total + part
            jac[(l, m)] = total
    return jac


# -- a diagonal layer block from its symmetric factors ------------------------------------------


def _pair_table(n: int) -> tuple[tuple[IntArray, IntArray], IntArray]:
    """The pairs ``a <= b`` of ``range(n)`` and, for every ``(a, b)``, the index of its unordered pair."""
    iu = np.triu_indices(n)
    table = np.empty((n, n), dtype=np.intp)
    table[iu] = np.arange(iu[0].size)
    table[iu[1], iu[0]] = np.arange(iu[0].size)
    return iu, table


def symmetric_sums(Q: FloatArray, x: FloatArray) -> FloatArray:
    """``G[k, k', j, j'] = sum_n Q[n,k,k'] x[n,j] x[n,j']`` from a quarter of the products.

    Both factors are symmetric (``Q_{kk'} = Q_{k'k}``, ``x_j x_j' = x_j' x_j``),
    so only the sums for unit pairs ``k <= k'`` and input pairs ``j <= j'`` are
    formed, in one product of size ``u(u+1)/2 x N x d(d+1)/2``: a quarter of the
    ``u^2 x N x d^2`` of the full block.  Every entry of ``G`` is then read from
    them, first along the input pairs (a gather within each row), then along
    the unit pairs (whole rows), so ``G`` is exactly symmetric under
    ``(k, j) <-> (k', j')``.
    """
    units, d = Q.shape[1], x.shape[1]
    (ka, kb), pk = _pair_table(units)
    (ja, jb), pj = _pair_table(d)
    S = Q[:, ka, kb].T @ (x[:, ja] * x[:, jb])  # S[(k<=k'), (j<=j')]
    return np.take(np.take(S, pj, axis=1), pk, axis=0)  # (u, u, d, d); np.take: several times faster than [ ]


def diagonal_block(Q: FloatArray, x: FloatArray, blk: ParamBlock) -> FloatArray:
    """The Hessian block of one layer, ``sum_n Q_n kron x_n x_n^T``, ``(size, size)`` in the public order.

    Dangel, Harmeling, Hennig (2020), eq. 7-9 (all terms kept); the sums by
    :func:`symmetric_sums`.
    """
    out = np.empty((blk.size, blk.size), dtype=np.result_type(Q, x))
    local = replace(blk, offset=0)
    _put_pair(out, local, local, symmetric_sums(Q, x), first=True)
    return out


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

    Only the upper layer-pair blocks are computed; the lower ones are copied
    from them in cache-sized tiles.  A diagonal block ``m = m'`` is
    :func:`symmetric_sums`: its factors are symmetric, so a quarter of the
    products.  For ``m < m'`` the main term is one product
    ``(u u') x N x (d d')`` and the bilinear term one product
    ``(u' d) x N x (f' u)`` (module text; ``(u' d) x N x u`` when ``m`` feeds
    ``m'``, where ``B`` is the identity); both are written straight into
    strided views of ``H`` in the public layout, without intermediate
    copies.  The cost is about ``N (W^2 - sum_l s_l^2 / 2)`` flops for layer
    sizes ``s_l``, against ``2 N W^2`` for the naive assembly.

    Every term is a sum over patterns, so the patterns are taken in chunks
    (:func:`pattern_chunks`) whose per-pattern quantities (Jacobians ``B``,
    curvatures ``Q``, the factors of one layer pair) need about as much
    memory as ``H``: peak memory stays a small multiple of ``H`` whatever
    ``N`` is, and is one chunk for the benchmark sizes.

    The blocks are independent tasks; for large problems they run on one
    thread per core that BLAS may use (:func:`_runner`).
    """
    n = q.z[0].shape[0]
    W = arch.n_params
    H = np.empty((W, W), dtype=np.result_type(q.z[0], q.g_y, 1.0))
    with _runner(n * W * W) as run:
        for i, rows in enumerate(pattern_chunks(arch, n)):
            _accumulate(H, arch, q if rows == slice(0, n) else _subset(q, rows), i == 0, run)
        run([lambda bm=bm: _mirror(H, bm) for bm in arch.blocks])
    return H


def _mirror(H: FloatArray, bm: ParamBlock) -> None:
    """The lower off-diagonal blocks in the columns of ``bm``, from the upper ones, in cache-sized tiles.

    (A block's rows: layers in bottom-up order, so the blocks to its right lie above it.)
    """
    W = H.shape[0]
    r0, r1 = bm.offset, bm.offset + bm.size
    for i in range(r0, r1, MIRROR_TILE):
        i1 = min(r1, i + MIRROR_TILE)
        for j in range(r1, W, MIRROR_TILE):
            j1 = min(W, j + MIRROR_TILE)
            H[j:j1, i:i1] = H[i:i1, j:j1].T


# -- running the blocks on all cores ----------------------------------------------------------------

_Runner = Callable[[list[Callable[[], None]]], None]

PARALLEL_MIN_WORK = 2.0**26
"""``N W^2`` above which the blocks run on a pool of threads (below, the pool costs more than it saves)."""


def _blas_threads() -> int:
    """The threads BLAS may use now (``OPENBLAS_NUM_THREADS``, ``threadpool_limits``), at most one per core.

    The pool takes as many, so a limit set for BLAS (a benchmark's ``--threads 1``)
    holds for the assembly too.
    """
    from threadpoolctl import threadpool_info  # here: it costs 35 ms to import, and only large problems ask

    limits = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
    return max(1, min([os.cpu_count() or 1, *limits]))


@contextmanager
def _runner(work: float) -> Iterator[_Runner]:
    """Run lists of independent tasks: inline, or on one thread per core with single-threaded BLAS.

    Every task is a block of ``H`` (products, gathers, strided copies); NumPy
    releases the GIL in all of them, so threads run them side by side.  BLAS
    is held to one thread meanwhile (threadpoolctl), and the pool has as many
    threads as BLAS was allowed: OpenBLAS's own workers
    spin-wait after each product and would take the cores from the copies
    between products, which measured twice as slow on two shared cores.
    """
    workers = 1 if work < PARALLEL_MIN_WORK else _blas_threads()
    if workers == 1:
        yield lambda tasks: [task() for task in tasks] and None
        return
    from threadpoolctl import threadpool_limits


    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        def run(tasks: list[Callable[[], None]]) -> None:
            for future in [pool.submit(task) for task in tasks]:
                future.result()  # re-raises a task's exception here

        yield run



def _put(dest: FloatArray, value: FloatArray, first: bool) -> None:
    """The first chunk of patterns writes, the later ones add."""
    if first:
        dest[...] = value
    else:
        dest += value


def _put_pair(H: FloatArray, bm: ParamBlock, bmp: ParamBlock, G: FloatArray, first: bool
              ) -> tuple[FloatArray, FloatArray | None]:
    """Write (or add) ``G[k, k', j, j']`` (the input column ``j = fan_in`` is the bias) into the block of ``H``
    with rows ``bm`` and columns ``bmp``, in the public order; return the views of its weight-weight and
    bias-weight parts (``None`` without a bias), which the bilinear term adds to."""
    u, f, up, fp_ = bm.units, bm.fan_in, bmp.units, bmp.fan_in
    ww = _view(H, bm.w_slice, bmp.w_slice, (u, f, up, fp_))
    _put(ww, G[:, :, :f, :fp_].transpose(0, 2, 1, 3), first)
    if bmp.bias:
        _put(_view(H, bm.w_slice, bmp.b_slice, (u, f, up)), G[:, :, :f, fp_].transpose(0, 2, 1), first)
    bw = None
    if bm.bias:
        bw = _view(H, bm.b_slice, bmp.w_slice, (u, up, fp_))
        _put(bw, G[:, :, f, :fp_], first)
        if bmp.bias:
            _put(H[bm.b_slice, bmp.b_slice], G[:, :, f, fp_], first)
    return ww, bw


def _accumulate(H: FloatArray, arch: Architecture, q: Quantities, first: bool, run: _Runner) -> None:
    """Write (``first``) or add the upper layer-pair blocks of ``H`` for the patterns in ``q``.

    Each block is one task; the tasks write disjoint parts of ``H``.  Every
    pair of layers ``m <= m'`` has a block: in a graph two layers that do not
    depend on each other still meet where a later layer reads both.
    """
    delta, curv = second_order(arch, q)
    for m in arch.bottom_up:  # every M_{m m'} now, in this thread: the tasks only read them
        for mp in arch.bottom_up[arch.bottom_up.index(m):]:
            curv[(m, mp)]
    jac = forward_jacobians(arch, q)
    inputs = {l: input_with_bias(arch, q.z, l) for l in arch.bottom_up}

    def diagonal(m: int) -> None:
        # the diagonal block: main term only, from its symmetric factors (a quarter of the products)
        _put_pair(H, arch.block(m), arch.block(m), symmetric_sums(curv[(m, m)], inputs[m]), first)

    def pair(m: int, mp: int) -> None:
        _pair_block(H, arch, q, m, mp, delta, curv, jac, inputs, first)

    order = arch.bottom_up
    tasks = [(arch.block(m).size * arch.block(mp).size * (1 if m == mp else 4),
              (lambda m=m: diagonal(m)) if m == mp else (lambda m=m, mp=mp: pair(m, mp)))
             for i, m in enumerate(order) for mp in order[i:]]
    run([task for _, task in sorted(tasks, key=lambda t: -t[0])])  # the largest first, to balance the workers


def _pair_block(H: FloatArray, arch: Architecture, q: Quantities, m: int, mp: int, delta: list[FloatArray],
                curv: Curvatures, jac: dict[tuple[int, int], FloatArray], inputs: dict[int, FloatArray],
                first: bool) -> None:
    r"""The block of layers ``m`` below ``m'``: main term and bilinear term.

    For weights ``W_m[k, j]`` (input ``x_m[j]``) and ``W_m'[k', j']``:

    .. math::

       H = \sum_n M_{m m', k k'}\, x_{m,j}\, x_{m',j'}
           + \sum_n \delta_{m',k'}\, f'_{s,i}\, (B_{s,m})_{i k}\, x_{m,j}

    the second term for every source ``s`` of ``m'`` that is ``m`` or depends
    on it, ``x_{m',j'} = z_{s,i}`` (``W_m'`` multiplies ``z_s``, which itself
    depends on ``W_m``; Bishop 1992, eq. 22, summed over the sources).
    """
    n = q.z[0].shape[0]
    bm, zm, bmp, zmp = arch.block(m), inputs[m], arch.block(mp), inputs[mp]
    u, f, dm = bm.units, bm.fan_in, zm.shape[1]
    up, dmp = bmp.units, zmp.shape[1]
    # main term: sum_n M[n,k,k'] z[n,j] z'[n,j'], G[k, k', j, j'], one product
    # whose result is moved into H in one strided copy (cheaper than writing column strips of H)
    zz = (zm[:, :, None] * zmp[:, None, :]).reshape(n, dm * dmp)
    G = (curv[(m, mp)].reshape(n, u * up).T @ zz).reshape(u, up, dm, dmp)
    ww, bw = _put_pair(H, bm, bmp, G, first)
    sources = [s for s in arch.parents(mp) if (s, m) in jac]
    if not sources:  # m' does not depend on W_m: no bilinear term
        return
    x = (delta[mp][:, :, None] * zm[:, None, :]).reshape(n, up * dm)
    for s in sources:
        cols = arch.source_slice(mp, s)
        if s == m:
            # B_{m,m} = I: only i = k is left, r[k', j, k] = sum_n delta'[n,k'] z[n,j] f'_m[n,k]
            r = (x.T @ q.df[m]).reshape(up, dm, u)
            diag = np.arange(u)
            ww[diag, :, :, cols.start + diag] += r[:, :f].transpose(2, 1, 0)
            if bw is not None:
                bw[diag, :, cols.start + diag] += r[:, f].T
        else:
            us = cols.stop - cols.start
            y = (q.df[s][:, :, None] * jac[(s, m)]).reshape(n, us * u)
            r = (x.T @ y).reshape(up, dm, us, u)
            ww[:, :, :, cols] += r[:, :f].transpose(3, 1, 0, 2)
            if bw is not None:
                bw[:, :, cols] += r[:, f].transpose(2, 0, 1)
