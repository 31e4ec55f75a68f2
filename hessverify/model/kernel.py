"""The assembly kernel of second-order backpropagation, shared by ``backprop`` and the rounding model.

Everything here works on plain per-layer arrays (:class:`Quantities`), so the
same code assembles the Hessian from the values of a forward pass
(:mod:`hessverify.methods.backprop`) and a bound from their magnitudes
(:mod:`hessverify.engine.bounds`): the rounding model sits below the methods it
judges and borrows nothing from them.

* :func:`sweep`: one pass from the output layer down that gives, layer by
  layer, the row of curvatures ``M_{l,v} = d2E/da_l da_v`` (Bishop 1992,
  eq. 16-18 and sec. 3: the backward "b" quantities) and of Jacobians
  ``dz_v/da_l`` (eq. 13, the "g" quantities, accumulated from the top) for the
  layers ``v`` above, and forgets each row once no layer below reads it: depth
  costs time and the memory of the rows still needed, never recursion;
* :func:`backward_second_order`: ``delta_l = dE/da_l`` and ``Q_l = M_{ll}`` per pattern;
* :func:`hessian_from_quantities`: the layer-pair blocks (Bishop 1992, eq. 22),
  in the public order (the formula is in :mod:`hessverify.methods.backprop`);
* the gradient by the first-order backward pass is
  :func:`hessverify.model.forward.gradient_from`, which takes the same arrays.

Every pass asks the architecture for its topology (``children``, ``parents``,
``above``, ``top_down``); none computes ``l - 1``.  Every step only adds,
multiplies, gathers and copies, so on non-negative inputs the assembly is a
polynomial with non-negative coefficients, as the rounding model requires
(:func:`hessverify.engine.bounds._propagated`).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray, IntArray
from hessverify.model.forward import ForwardPass, dE_dz, deltas_from
from hessverify.model.layout import input_with_bias
from hessverify.model.network import Architecture, ParamBlock, layer_input

__all__ = [
    "Quantities", "Row", "Units", "backward_second_order", "diagonal_block", "hessian_from_quantities", "pair_layers",
    "pattern_chunks", "quantities", "release_working_arrays", "sweep", "symmetric_sums",
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


@dataclass(frozen=True)
class Row:
    r"""What the sweep knows of layer ``l`` once every layer above it is done (:func:`sweep`).

    Units are numbered in one list over all layers, bottom up (:class:`Units`);
    the row holds, per unit ``k`` of ``l`` and pattern ``n``:

    * ``M[k, n, v] = d2E/da_{l,k} da_v`` for the units ``v`` of the layers from
      ``l`` (its own first: ``M[:, :, :units]`` is ``Q_l = M_{ll}``) up to the
      top of the row's window;
    * ``J[k, n, v] = dz_v/da_{l,k}`` for the units of every layer above ``l``,
      and one more column that is 0 (``None`` unless asked for).
    """

    layer: int
    units: int
    M: FloatArray
    J: FloatArray | None
    f1: FloatArray  # f'_l(a_l), (N, units): dz_l/da_l, the diagonal J leaves out

    @property
    def Q(self) -> FloatArray:
        """``Q_l = d2E/da_l da_l^T`` per pattern, ``(N, units, units)`` (a view)."""
        return self.M[:, :, :self.units].transpose(1, 0, 2)


@dataclass(frozen=True)
class Units:
    """Where each layer's units sit in one list over all layers, bottom up, and the layers' positions in it."""

    order: tuple[int, ...]
    pos: dict[int, int]
    start: dict[int, int]
    count: dict[int, int]
    total: int

    @classmethod
    def of(cls, arch: Architecture) -> Units:
        count = {l: arch.layer(l).units for l in arch.bottom_up}
        start: dict[int, int] = {}
        total = 0
        for l in arch.bottom_up:
            start[l] = total
            total += count[l]
        return cls(arch.bottom_up, {l: p for p, l in enumerate(arch.bottom_up)}, start, count, total)

    def end(self, layer: int) -> int:
        """One past the last unit of ``layer``."""
        return self.start[layer] + self.count[layer]


def _last_readers(arch: Architecture, units: Units) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """The rows of ``M`` and of ``J`` to forget once the row of each layer is done (every reader done).

    Row ``i`` reads the ``M`` row of every layer ``j`` above it and at or below
    its highest child (``M_{cj}`` for ``j >= c``, ``M_{jc}^T`` for ``j < c``),
    and the ``J`` rows of its children.  The sweep goes top down, so a row is
    forgotten after its lowest reader; a row nobody reads, after itself.
    In a chain that is one row of each behind the sweep.
    """
    order, pos = units.order, units.pos
    reach = np.array([max((pos[c] for c in arch.children(l)), default=pos[l]) for l in order])
    lowest = np.searchsorted(np.maximum.accumulate(reach), np.arange(len(order)), side="left")
    drop_m: dict[int, list[int]] = {}
    for p, first in enumerate(lowest):
        drop_m.setdefault(order[first] if first < p else order[p], []).append(order[p])
    drop_j: dict[int, list[int]] = {}
    for l in order:
        readers = [p for p in arch.parents(l) if p != 0]
        drop_j.setdefault(min(readers, key=pos.__getitem__) if readers else l, []).append(l)
    return drop_m, drop_j


Take = Callable[[tuple[int, ...], Any], FloatArray]
"""Where a working array comes from: ``np.empty``, or :data:`_scratch`'s ``take``."""


def _w(arch: Architecture, q: Quantities, c: int, i: int) -> FloatArray:
    """``W_{c,i}``: the columns of ``W_c`` that read ``z_i``, ``(units_c, units_i)``."""
    return q.weights[c][:, arch.source_slice(c, i)]


def _window_end(arch: Architecture, units: Units, i: int, full: bool) -> int:
    """One past the last unit of row ``i``'s ``M``: every layer, or in a chain its own and its child's."""
    if full or not arch.is_chain:
        return units.total
    return units.end(max(arch.children(i), default=i))


def _m_above(arch: Architecture, units: Units, rows: dict[int, FloatArray], i: int, c: int, end: int
             ) -> FloatArray:
    """``M_{c v}`` for the units ``v`` above layer ``i`` up to ``end``, ``(units_c, N, .)``, from rows done.

    ``M_{cj}`` is in row ``c`` for ``j >= c`` and is ``M_{jc}^T``, in row ``j``,
    for the layers ``j`` between ``i`` and ``c`` (none in a chain).
    """
    u_c, start = units.count[c], units.start
    parts = [np.swapaxes(rows[j][:, :, start[c] - start[j]:start[c] - start[j] + u_c], 0, 2)
             for j in units.order[units.pos[i] + 1:units.pos[c]]]
    parts.append(rows[c][:, :, :end - start[c]])
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)


def _curvature_row(arch: Architecture, q: Quantities, delta: list[FloatArray], units: Units, i: int, end: int,
                   rows: dict[int, FloatArray], dtype: np.dtype, take: Take = np.empty) -> FloatArray:
    r"""Row ``i`` of ``M`` up to unit ``end`` (Bishop 1992, sec. 3, the ``b`` quantities of a general topology).

    With ``W_{c,i}`` the columns of ``W_c`` that read ``z_i`` and ``g_i = dE/dz_i``:

    .. math::

       M_{ij} = \mathrm{diag}(f'_i) \sum_{c \ni i} W_{c,i}^T M_{cj} \quad (j > i),\qquad
       M_{ii} = \sum_{c \ni i} M_{ic} W_{c,i}\, \mathrm{diag}(f'_i) + \mathrm{diag}(g_i \odot f''_i)
                + [i = L]\, \mathrm{diag}(f'_L)\, H_y\, \mathrm{diag}(f'_L)

    the sums over the layers ``c`` that read ``z_i``.  For a chain ``M_{ii}`` is
    ``diag(f') W^T Q_{i+1} W diag(f') + diag(g f'')``.  Units first, then
    patterns, so that every product is one 2-D matrix product.
    """
    f1 = q.df[i]
    n, u = f1.shape
    lo = units.start[i]
    M = take((u, n, end - lo), dtype)
    total = None
    for c in arch.children(i):
        w = _w(arch, q, c, i)
        above = _m_above(arch, units, rows, i, c, end).reshape(w.shape[0], -1)
        if total is None:  # read only here: from the store whoever took the row
            total = np.matmul(w.T, above, out=_scratch.take((u, above.shape[1]), dtype))
        else:
            total += w.T @ above
    if total is None:  # i feeds nothing: E does not depend on a_i through a later layer
        M[:, :, u:] = 0
    else:
        np.multiply(total.reshape(u, n, -1), f1.T[:, :, None], out=M[:, :, u:])
        _scratch.give(total)
    Q = M[:, :, :u]  # written in place: (u n, u) products straight into the row
    if i == arch.output_layer:
        np.multiply(f1.T[:, :, None] * q.h_y.transpose(1, 0, 2), f1[None, :, :], out=Q)
    else:
        for number, c in enumerate(arch.children(i)):
            cols = M[:, :, units.start[c] - lo:units.end(c) - lo].reshape(u * n, -1)
            if number == 0:
                np.matmul(cols, _w(arch, q, c, i), out=Q.reshape(u * n, u))
            else:
                Q += (cols @ _w(arch, q, c, i)).reshape(u, n, u)
        if not arch.children(i):
            Q[...] = 0
        Q *= f1[None, :, :]
    g_z = dE_dz(arch, i, delta, q.weights, q.g_y)
    diag = np.arange(u)
    Q[diag, :, diag] += (g_z * q.d2f[i]).T
    return M


def _jacobian_row(arch: Architecture, q: Quantities, units: Units, i: int, rows: dict[int, FloatArray],
                  dtype: np.dtype, take: Take = np.empty) -> FloatArray:
    r"""Row ``i`` of ``J``: ``dz_v/da_i`` for the units of every layer above ``i``, then a 0 column.

    :math:`dz_v/da_i = \sum_{c \ni i} (dz_v/da_c)\, W_{c,i}\, \mathrm{diag}(f'_i)`
    over the layers ``c`` that read ``z_i``, with ``dz_c/da_c = diag(f'_c)``
    (Bishop 1992, eq. 13, the forward ``g`` quantities ``B``, here
    accumulated from the top).  ``dz_i/da_i = diag(f'_i)`` itself is not
    stored: it is diagonal, and whoever needs it reads ``f'_i``.  A layer
    that does not depend on ``i`` stays exactly 0.
    """
    f1 = q.df[i]
    n, u = f1.shape
    lo = units.end(i)
    J = take((u, n, units.total - lo + 1), dtype)
    children = arch.children(i)  # bottom up: the first child's columns hold the others'
    J[:, :, :units.start[children[0]] - lo if children else None] = 0
    for number, c in enumerate(children):
        w = _w(arch, q, c, i)
        start, end = units.start[c] - lo, units.end(c) - lo
        above = (w.T @ rows[c].reshape(w.shape[0], -1)).reshape(u, n, -1)  # through the layers above c
        if number == 0:  # through z_c itself: diag(f'_c) W_{c,i}, written in place
            own = np.multiply(w.T[:, None, :], q.df[c][None, :, :], out=J[:, :, start:end])
            own *= f1.T[:, :, None]
            np.multiply(above, f1.T[:, :, None], out=J[:, :, end:])
        else:
            J[:, :, start:end] += (w.T[:, None, :] * q.df[c][None, :, :]) * f1.T[:, :, None]
            J[:, :, end:] += above * f1.T[:, :, None]
    return J


def sweep(arch: Architecture, q: Quantities, delta: list[FloatArray], *, full: bool = True,
          jacobians: bool = True, take: Take = np.empty, drop: Callable[[FloatArray], None] | None = None
          ) -> Iterator[Row]:
    """The :class:`Row` of every layer, top down, each computed from the rows above it without recursion.

    ``full``: ``M`` for every layer above (what the full Hessian needs);
    otherwise, in a chain, only for the layer's child (enough for every
    ``Q_l``).  ``jacobians``: ``J`` as well.  A row is forgotten as soon as
    the last row that reads it is done (:func:`_last_readers`), so a chain
    holds two rows of each kind whatever its depth; whoever keeps a yielded
    row keeps it alive.  ``take``: where the rows come from; ``drop``: told
    of every row the sweep forgets (whoever took it from :data:`_scratch`
    gives it back once nothing reads it).
    """
    units = Units.of(arch)
    drop_m, drop_j = _last_readers(arch, units)
    dtype = np.result_type(q.z[0], q.g_y, q.h_y, 1.0)
    m_rows: dict[int, FloatArray] = {}
    j_rows: dict[int, FloatArray] = {}
    for i in arch.top_down:
        M = m_rows[i] = _curvature_row(arch, q, delta, units, i, _window_end(arch, units, i, full), m_rows, dtype,
                                       take)
        J = j_rows[i] = _jacobian_row(arch, q, units, i, j_rows, dtype, take) if jacobians else None
        yield Row(i, units.count[i], M, J, q.df[i])
        for rows, forget in ((m_rows, drop_m), (j_rows, drop_j)):
            for j in forget.get(i, ()):
                if drop is None:
                    del rows[j]
                else:  # no name keeps the row alive here: the caller decides
                    drop(rows.pop(j))


def backward_second_order(arch: Architecture, q: Quantities) -> tuple[list[FloatArray], list[FloatArray]]:
    r"""``delta_l`` and ``Q_l = M_{ll}`` for every layer (lists indexed by layer, entry 0 unused).

    .. math::

       Q_L = \mathrm{diag}(f'_L)\, H_y\, \mathrm{diag}(f'_L) + \mathrm{diag}(g_y \odot f''_L),\qquad
       Q_l = \mathrm{diag}(f'_l)\, W_c^T Q_c W_c\, \mathrm{diag}(f'_l)
             + \mathrm{diag}\big((W_c^T \delta_c) \odot f''_l\big)

    with ``c`` the layer that ``l`` feeds, in a chain (Bishop 1992, eq. 16-18);
    in a graph ``Q_l`` sums over every pair of layers that read ``z_l``
    (:func:`sweep`).  Each ``Q_l`` is ``(N, units, units)``.
    """
    delta = deltas_from(arch, q.df, q.weights, q.g_y)
    Q: list[FloatArray] = [np.empty((0,))] * (arch.depth + 1)
    for row in sweep(arch, q, delta, full=False, jacobians=False):
        Q[row.layer] = np.ascontiguousarray(row.Q)  # a copy: the row itself is forgotten
    return delta, Q


# -- working arrays kept between calls -----------------------------------------------------------------

SCRATCH_KEEP_BYTES = 2**26
"""Most bytes of working arrays kept for the next call (:class:`_Scratch`)."""


def _root(a: np.ndarray) -> Any:
    """The object that owns the memory of ``a`` and every view of it."""
    while a.base is not None:
        a = a.base
    return a


class _Scratch:
    """Working arrays of the assembly, handed out and taken back, and kept for the next call.

    A fresh array of a few MiB costs a page fault per 4 KiB the first time it
    is written, and glibc gives the pages back when it is freed, so every call
    faulted its temporaries in again: about 4,500 faults a call at W = 2974,
    N = 256, against 530 with this store and 460 for one matmul of the same
    size (docs/methods.md, "the kernel's working arrays kept between calls").  An array given back
    serves the next request of at most its size and at least about half of
    it, in this call or the next; at most ``keep`` bytes are kept.
    Thread-safe: the tasks of the pool take and give at once.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.lock = threading.Lock()
        self.free: list[np.ndarray] = []
        self.lent: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()

    def take(self, shape: tuple[int, ...], dtype: Any) -> FloatArray:
        """An uninitialised array of this shape and dtype, from a kept one where one fits."""
        dtype = np.dtype(dtype)
        if dtype.hasobject:  # references, not numbers: never from raw bytes
            return np.empty(shape, dtype=dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        with self.lock:
            fits = [i for i, b in enumerate(self.free) if nbytes <= b.size <= 2 * nbytes + 2**16]
            buf = self.free.pop(min(fits, key=lambda i: self.free[i].size)) if fits else None
        if buf is None:
            buf = np.empty(max(nbytes, 1), dtype=np.uint8)
        with self.lock:
            self.lent[id(buf)] = buf
        return buf[:nbytes].view(dtype).reshape(shape)

    def give(self, *arrays: FloatArray) -> None:
        """Take back arrays from :meth:`take` (views of them too) that nothing reads any more.

        An array this store did not lend, or has been given back already, is ignored.
        """
        with self.lock:
            for a in arrays:
                root = _root(a)
                if self.lent.get(id(root)) is not root:
                    continue
                del self.lent[id(root)]
                if sum(b.size for b in self.free) + root.size <= self.keep:
                    self.free.append(root)

    def release(self) -> None:
        """Let every kept array go."""
        with self.lock:
            self.free = []

    @property
    def kept(self) -> int:
        """Bytes kept now."""
        with self.lock:
            return sum(b.size for b in self.free)


_scratch = _Scratch(SCRATCH_KEEP_BYTES)


def release_working_arrays() -> None:
    """Free the working arrays the kernel keeps between calls (at most :data:`SCRATCH_KEEP_BYTES`)."""
    _scratch.release()


# -- a diagonal layer block from its symmetric factors ------------------------------------------


@lru_cache(maxsize=64)
def _pair_table(n: int) -> tuple[tuple[IntArray, IntArray], IntArray]:
    """The pairs ``a <= b`` of ``range(n)`` and, for every ``(a, b)``, the index of its unordered pair (read-only).

    Cached: a deep network asks for the same few sizes once per layer.
    """
    iu = np.triu_indices(n)
    table = np.empty((n, n), dtype=np.intp)
    table[iu] = np.arange(iu[0].size)
    table[iu[1], iu[0]] = np.arange(iu[0].size)
    for a in (*iu, table):
        a.setflags(write=False)
    return iu, table


def _pair_sums(Q: FloatArray, x: FloatArray, take: Take = np.empty, work: list[FloatArray] | None = None
               ) -> FloatArray:
    """``S[(k<=k'), (j<=j')] = sum_n Q[n,k,k'] x[n,j] x[n,j']``: the distinct sums of a diagonal block, one product.

    ``take``: where ``S`` and the factors come from; the factors are put on ``work``.
    """
    n, u, d = Q.shape[0], Q.shape[1], x.shape[1]
    (ka, kb), _ = _pair_table(u)
    (ja, jb), _ = _pair_table(d)
    flat = take((n, u, u), Q.dtype)
    np.copyto(flat, Q)
    # the factors pattern-last, as Q[:, ka, kb] and x[:, ja] * x[:, jb] came out before: the same products,
    # summed by BLAS in the same order, so S is bit for bit what it was (x_j x_j' in that order: a complex
    # product need not commute in the last bit)
    qs = np.take(flat.reshape(n, u * u).T, ka * u + kb, axis=0, out=take((ka.size, n), Q.dtype), mode="clip")
    xa = np.take(x.T, ja, axis=0, out=take((ja.size, n), x.dtype), mode="clip")
    xx = np.take(x.T, jb, axis=0, out=take((ja.size, n), x.dtype), mode="clip")
    np.multiply(xa, xx, out=xx)
    S = np.matmul(qs, xx.T, out=take((ka.size, ja.size), np.result_type(Q, x)))
    if work is not None:
        work += [flat, qs, xa, xx]
    return S


def _expand(S: FloatArray, units: int, d: int, k0: int, k1: int) -> FloatArray:
    """``G[k, k', j, j']`` for the units ``k0 <= k < k1`` from the distinct sums ``S`` (:func:`_pair_sums`)."""
    _, pk = _pair_table(units)
    _, pj = _pair_table(d)
    rows = np.take(S, pk[k0:k1].reshape(-1), axis=0)  # np.take: several times faster than [ ]
    return np.take(rows, pj, axis=1).reshape(k1 - k0, units, d, d)


def symmetric_sums(Q: FloatArray, x: FloatArray) -> FloatArray:
    """``G[k, k', j, j'] = sum_n Q[n,k,k'] x[n,j] x[n,j']`` from a quarter of the products.

    Both factors are symmetric (``Q_{kk'} = Q_{k'k}``, ``x_j x_j' = x_j' x_j``),
    so only the sums for unit pairs ``k <= k'`` and input pairs ``j <= j'`` are
    formed, in one product of size ``u(u+1)/2 x N x d(d+1)/2``: a quarter of the
    ``u^2 x N x d^2`` of the full block.  Every entry of ``G`` is then read from
    them, first along the unit pairs (whole rows), then along the input pairs
    (a gather within each row), so ``G`` is exactly symmetric under
    ``(k, j) <-> (k', j')``.
    """
    units, d = Q.shape[1], x.shape[1]
    return _expand(_pair_sums(Q, x), units, d, 0, units)


def diagonal_block(Q: FloatArray, x: FloatArray, blk: ParamBlock) -> FloatArray:
    """The Hessian block of one layer, ``sum_n Q_n kron x_n x_n^T``, ``(size, size)`` in the public order.

    Dangel, Harmeling, Hennig (2020), eq. 7-9 (all terms kept); the sums by
    :func:`symmetric_sums`.
    """
    out = np.empty((blk.size, blk.size), dtype=np.result_type(Q, x))
    local = replace(blk, offset=0)
    _put_pair(out, local, local, symmetric_sums(Q, x), True)
    return out


BLOCK_FLOATS = 2**19
"""Entries of a block formed at a time (4 MiB): a few units' rows, still in cache when they are written."""

PAIR_TASK_FLOATS = 2**19
"""Entries of a block of two wide layers in one task: large blocks are cut, so that the workers stay busy alike."""


def _diagonal_rows(H: FloatArray, bm: ParamBlock, Q: FloatArray, x: FloatArray, first: bool) -> None:
    """The upper triangle of one layer's diagonal block (:func:`symmetric_sums`), one unit's rows at a time.

    Only the unit pairs ``k <= k'`` are read from the distinct sums (every
    weight row's block with the weights of its own and later units, and with
    every bias); the lower triangle is copied afterwards with the rest of ``H``
    (:func:`_mirror_tasks`).  The values are the same sums either way.
    """
    u, d, f = bm.units, x.shape[1], bm.fan_in
    work: list[FloatArray] = []
    S = _pair_sums(Q, x, _scratch.take, work)
    (ka, _), pk = _pair_table(u)
    _, pj = _pair_table(d)
    starts = np.searchsorted(ka, np.arange(u + 1))  # the pairs (k, k' >= k) of unit k: starts[k] .. starts[k + 1]
    ww = _view(H, bm.w_slice, bm.w_slice, (u, f, u, f))
    inputs = pj[:f, :f]
    gathered = _scratch.take((u, f, f), S.dtype)
    for k in range(u):  # ww[k, j, k', j'] for k' >= k: one gather and one strided copy per unit
        G = np.take(S[starts[k]:starts[k + 1]], inputs, axis=1, out=gathered[:u - k], mode="clip")  # (k', j, j')
        _put(ww[k, :, k:, :], G.transpose(1, 0, 2), first)
    work += [S, gathered]
    if bm.bias:  # weights with biases (every unit pair: all of it is upper), biases with biases
        Sb = np.take(S, pj[:, f], axis=1)[pk]  # (k, k', j): the sum with x_j and the constant 1
        _put(_view(H, bm.w_slice, bm.b_slice, (u, f, u)), Sb[:, :, :f].transpose(0, 2, 1), first)
        _put(H[bm.b_slice, bm.b_slice], Sb[:, :, f], first)
    _scratch.give(*work)


MIRROR_TILE = 512
"""Side of the tiles in which the lower triangle is copied from the upper one (cache-sized)."""

PAIR_MIN_SIZE = 64
"""Least parameter count of a layer whose blocks with other such layers are formed pair by pair."""

PAIR_MAX_LAYERS = 32
"""Most layers whose blocks are formed pair by pair (the largest); the others' go row by row."""

BATCH_FLOATS = 2**20
"""Largest gathered factor of a row of narrow blocks, in floats (:func:`_narrow_blocks` takes columns in pieces)."""


def _view(H: FloatArray, rows: slice, cols: slice, shape: tuple[int, ...]) -> FloatArray:
    """``H[rows, cols]`` reshaped without a copy, so that writing to it writes into ``H``.

    (``copy=False`` raises rather than copy; ``np.shares_memory`` took 45 us a call, and held the GIL.)
    """
    return H[rows, cols].reshape(shape, copy=False)


def pair_layers(arch: Architecture) -> frozenset[int]:
    """The layers whose blocks with each other are formed pair by pair (:func:`_pair_block`).

    Layers of at least :data:`PAIR_MIN_SIZE` parameters, the
    :data:`PAIR_MAX_LAYERS` largest: there a block is a few large products and
    the Python around it costs nothing.  Every other block is formed a row of
    layers at a time (:func:`_narrow_blocks`), so the number of Python steps
    grows with the depth, not with its square.
    """
    big = sorted((blk.size, blk.layer) for blk in arch.blocks if blk.size >= PAIR_MIN_SIZE)
    return frozenset(layer for _, layer in big[-PAIR_MAX_LAYERS:])


# -- memory: patterns in chunks, rows in flushes -------------------------------------------------------

PATTERN_CHUNK_MIN_FLOATS = 2**16
"""Least per-chunk budget, in floats, of the per-pattern quantities (see :func:`hessian_from_quantities`)."""


HELD_SHARE = 4
"""The rows a chunk's waiting tasks hold may take ``1 / HELD_SHARE`` of the chunk's budget; then the tasks run."""


def _budget(arch: Architecture) -> int:
    """Floats the per-pattern quantities of one chunk may take: about as much as ``H`` itself."""
    return max(arch.n_params**2, PATTERN_CHUNK_MIN_FLOATS)


def _per_pattern_floats(arch: Architecture) -> int:
    """Floats that one pattern costs in the assembly, at the sweep's peak.

    The rows of ``M`` and ``J`` alive at once (:func:`_last_readers`: two of
    each in a chain), the inputs, the per-parameter factors of the narrow
    blocks and the factors of the largest pair of wide layers.
    """
    units = Units.of(arch)
    drop_m, drop_j = _last_readers(arch, units)
    size_m, size_j = {}, {}
    live = peak = 0
    for i in arch.top_down:
        u = units.count[i]
        size_m[i] = u * (units.total - units.start[i])
        size_j[i] = u * (units.total - units.end(i) + 1)
        live += size_m[i] + size_j[i]
        peak = max(peak, live)
        live -= sum(size_m[j] for j in drop_m.get(i, ())) + sum(size_j[j] for j in drop_j.get(i, ()))
    d = {blk.layer: blk.fan_in + (1 if blk.bias else 0) for blk in arch.blocks}
    wide = sorted(pair_layers(arch))
    largest = max((arch.layer(m).units * arch.layer(l).units + d[m] * d[l] + arch.layer(l).units * d[m]
                   + d[l] * arch.layer(m).units for m in wide for l in wide if m <= l), default=0)
    narrow = 2 * arch.n_params if len(wide) < arch.depth else 0
    return peak + largest + narrow + sum(d.values())


def pattern_chunks(arch: Architecture, n: int) -> list[slice]:
    """Consecutive pattern ranges whose per-pattern quantities together take about as much as ``H`` itself."""
    step = max(1, _budget(arch) // _per_pattern_floats(arch))
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def _subset(q: Quantities, rows: slice) -> Quantities:
    return Quantities([z[rows] for z in q.z], [f[rows] if f.ndim else f for f in q.df],
                      [f[rows] if f.ndim else f for f in q.d2f], q.weights, q.g_y[rows], q.h_y[rows])


def hessian_from_quantities(arch: Architecture, q: Quantities) -> FloatArray:
    """Assemble the full Hessian in the public order from propagated quantities.

    One sweep from the output down (:func:`sweep`) gives each layer's row of
    curvatures ``M`` and Jacobians ``J``; each row's blocks of ``H`` are then
    formed from it, the upper ones only (the lower ones are copied from them
    in cache-sized tiles, :func:`_mirror_tasks`):

    * a diagonal block ``m = m'`` is :func:`symmetric_sums`: its factors are
      symmetric, so a quarter of the products;
    * between two wide layers (:func:`pair_layers`), ``m < m'``, the main
      term is one product ``(u u') x N x (d d')`` and the bilinear term one
      product ``(u' d) x N x (f' u)`` (``(u' d) x N x u`` when ``m`` feeds
      ``m'``), both written straight into strided views of ``H``
      (:func:`_pair_block`);
    * every other block of the row, all at once: main and bilinear term in
      one factor per unit, gathered over all their columns, and one product
      (:func:`_narrow_blocks`).

    The cost is about ``N (W^2 - sum_l s_l^2 / 2)`` flops for layer sizes
    ``s_l``, against ``2 N W^2`` for the naive assembly, and a number of
    Python steps that grows with the depth, not with its square.

    Every term is a sum over patterns, so the patterns are taken in chunks
    (:func:`pattern_chunks`) whose per-pattern quantities need about as much
    memory as ``H``; the blocks of the rows swept so far are formed whenever
    the rows they hold take a quarter of that.  Peak memory stays a small
    multiple of ``H`` whatever ``N`` or the depth.

    The blocks are independent tasks; for large problems they run on one
    thread per core that BLAS may use (:func:`_runner`).
    """
    n = q.z[0].shape[0]
    W = arch.n_params
    H = np.empty((W, W), dtype=np.result_type(q.z[0], q.g_y, 1.0))
    with _runner(n * W * W) as run:
        for i, rows in enumerate(pattern_chunks(arch, n)):
            _accumulate(H, arch, q if rows == slice(0, n) else _subset(q, rows), i == 0, run)
        run.submit(_mirror_tasks(H))
        run.wait()
    return H


def _mirror_tasks(H: FloatArray) -> list[Callable[[], None]]:
    """Tasks that copy the lower triangle of ``H`` from the upper one, a strip of cache-sized tiles each.

    Every block is written in the upper triangle (a block between two wide
    layers also in the lower one where its rows come after its columns,
    :func:`_pair_block`), so the whole lower triangle is copied in tiles: a
    transposed tile copy costs about half of writing the transposed entries
    one small block at a time.  A tile on the diagonal copies its own lower
    triangle.
    """
    W, T = H.shape[0], MIRROR_TILE
    lower = np.tril(np.ones((T, T), dtype=bool), -1)

    def strip(i0: int) -> None:
        i1 = min(W, i0 + T)
        tile = H[i0:i1, i0:i1]
        upper = _scratch.take(tile.shape, H.dtype)  # the tile's transpose, apart: it overlaps the tile
        np.copyto(upper, tile.T)
        np.copyto(tile, upper, where=lower[:i1 - i0, :i1 - i0])
        _scratch.give(upper)
        for j0 in range(i1, W, T):
            j1 = min(W, j0 + T)
            H[j0:j1, i0:i1] = H[i0:i1, j0:j1].T

    return [lambda i0=i0: strip(i0) for i0 in range(0, W, T)]


# -- running the blocks on all cores ----------------------------------------------------------------

PARALLEL_MIN_WORK = 2.0**26
"""``N W^2`` above which the blocks run on a pool of threads (below, the pool costs more than it saves)."""


@lru_cache(maxsize=1)
def _blas() -> Any:
    """NumPy's BLAS as threadpoolctl sees it, found once (a scan of the loaded libraries: about 2 ms)."""
    from threadpoolctl import ThreadpoolController  # here: it costs 35 ms to import, and only large problems ask

    return ThreadpoolController().select(user_api="blas")


def _blas_threads() -> int:
    """The threads BLAS may use now (``OPENBLAS_NUM_THREADS``, ``threadpool_limits``), at most one per core.

    The pool takes as many, so a limit set for BLAS (a benchmark's ``--threads 1``)
    holds for the assembly too.
    """
    limits = [info["num_threads"] for info in _blas().info()]
    return max(1, min([os.cpu_count() or 1, *limits]))


class _Inline:
    """Tasks run as they are handed in."""

    def submit(self, tasks: list[Callable[[], None]]) -> None:
        for task in tasks:
            task()

    def wait(self) -> None:
        pass


class _Threads:
    """Tasks start on the pool as they are handed in (while the sweep goes on); :meth:`wait` for all of them."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self.pending: list[Future[None]] = []

    def submit(self, tasks: list[Callable[[], None]]) -> None:
        self.pending += [self.pool.submit(task) for task in tasks]

    def wait(self) -> None:
        pending, self.pending = self.pending, []
        for future in pending:
            future.result()  # re-raises a task's exception here


_Runner = _Inline | _Threads


@contextmanager
def _runner(work: float) -> Iterator[_Runner]:
    """Run independent tasks: inline, or on one thread per core with single-threaded BLAS.

    Every task is a block of ``H`` (products, gathers, strided copies); NumPy
    releases the GIL in all of them, so threads run them side by side, and
    beside the sweep that hands them in.  BLAS is held to one thread
    meanwhile (threadpoolctl), and the pool has as many threads as BLAS was
    allowed: OpenBLAS's own workers spin-wait after each product and would
    take the cores from the copies between products, which measured twice as
    slow on two shared cores.
    """
    workers = 1 if work < PARALLEL_MIN_WORK else _blas_threads()
    if workers == 1:
        yield _Inline()
        return
    with _blas().limit(limits=1), ThreadPoolExecutor(workers) as pool:
        threads = _Threads(pool)
        try:
            yield threads
        finally:
            threads.wait()


def _put(dest: FloatArray, value: FloatArray, first: bool) -> None:
    """The first chunk of patterns writes, the later ones add."""
    if first:
        dest[...] = value
    else:
        dest += value


def _put_pair(H: FloatArray, bm: ParamBlock, bmp: ParamBlock, G: FloatArray, first: bool, k0: int = 0,
              mirror: bool = False) -> None:
    """Write (or add) ``G[k, k', j, j']`` into the block of ``H`` with rows ``bm`` and columns ``bmp``, public order.

    ``G`` holds the rows of the units ``k0 .. k0 + len(G)`` of ``bm`` (the
    input column ``j = fan_in`` is the bias).  ``mirror``: its transpose also
    goes into the block with rows ``bmp`` and columns ``bm``, while ``G`` is
    still in cache.
    """
    k1 = k0 + G.shape[0]
    f, up, fp_ = bm.fan_in, bmp.units, bmp.fan_in
    w_rows = slice(bm.offset + k0 * f, bm.offset + k1 * f)
    b_rows = slice(bm.offset + bm.w_size + k0, bm.offset + bm.w_size + k1)
    _put(_view(H, w_rows, bmp.w_slice, (k1 - k0, f, up, fp_)), G[:, :, :f, :fp_].transpose(0, 2, 1, 3), first)
    if bmp.bias:
        _put(_view(H, w_rows, bmp.b_slice, (k1 - k0, f, up)), G[:, :, :f, fp_].transpose(0, 2, 1), first)
    if bm.bias:
        _put(_view(H, b_rows, bmp.w_slice, (k1 - k0, up, fp_)), G[:, :, f, :fp_], first)
        if bmp.bias:
            _put(H[b_rows, bmp.b_slice], G[:, :, f, fp_], first)
    if not mirror:
        return
    _put(_view(H, bmp.w_slice, w_rows, (up, fp_, k1 - k0, f)), G[:, :, :f, :fp_].transpose(1, 3, 0, 2), first)
    if bmp.bias:
        _put(_view(H, bmp.b_slice, w_rows, (up, k1 - k0, f)), G[:, :, :f, fp_].transpose(1, 0, 2), first)
    if bm.bias:
        _put(_view(H, bmp.w_slice, b_rows, (up, fp_, k1 - k0)), G[:, :, f, :fp_].transpose(1, 2, 0), first)
        if bmp.bias:
            _put(H[bmp.b_slice, b_rows], G[:, :, f, fp_].T, first)


def _accumulate(H: FloatArray, arch: Architecture, q: Quantities, first: bool, run: _Runner) -> None:
    """Write (``first``) or add the upper layer-pair blocks of ``H`` for the patterns in ``q``.

    Each task writes a disjoint part of ``H``.  Every pair of layers ``m <= m'``
    has a block: in a graph two layers that do not depend on each other still
    meet where a later layer reads both.  A row's tasks start as soon as the
    row is swept; when the rows they hold take a quarter of the chunk's
    budget, the sweep waits for them and the rows are let go.
    """
    delta = deltas_from(arch, q.df, q.weights, q.g_y)
    wide = pair_layers(arch)
    units = Units.of(arch)
    cols = _Columns.of(arch, q, delta, units, wide) if len(wide) < arch.depth else None
    runs = _narrow_runs(arch, wide)
    held, cap = 0, max(_budget(arch) // HELD_SHARE, 1)
    done: list[FloatArray] = []  # working arrays that no task submitted later reads: given back after a wait
    for row in sweep(arch, q, delta, take=_scratch.take, drop=done.append):
        tasks = _row_tasks(H, arch, q, delta, units, wide, cols, runs, row, first, done)
        run.submit([task for _, task in sorted(tasks, key=lambda t: -t[0])])  # the largest first: balanced workers
        held += row.M.size + (row.J.size if row.J is not None else 0)
        if held > cap:  # let the rows go once their tasks are done
            run.wait()
            _scratch.give(*done)
            done.clear()
            held = 0
    run.wait()  # the next chunk of patterns adds to what this one wrote
    _scratch.give(*done)


def _row_tasks(H: FloatArray, arch: Architecture, q: Quantities, delta: list[FloatArray], units: Units,
               wide: frozenset[int], cols: _Columns | None, runs: list[tuple[int, int, int]], row: Row,
               first: bool, done: list[FloatArray]) -> list[tuple[float, Callable[[], None]]]:
    """The tasks, with their sizes, that form the upper blocks in the rows of layer ``row.layer``.

    The factors shared by a pair's tasks are working arrays of :data:`_scratch`, put on ``done``.
    """
    m = row.layer
    bm = arch.block(m)
    x = input_with_bias(arch, q.z, m)

    def diagonal() -> None:  # main term only, from its symmetric factors (a quarter of the products)
        _diagonal_rows(H, bm, row.Q, x, first)

    if m not in wide:  # a narrow row: every block right of the diagonal at once
        start = bm.offset + bm.size

        def narrow() -> None:
            diagonal()
            if cols is not None and start < arch.n_params:
                _narrow_blocks(H, bm, x, units, row, cols, start, arch.n_params, first)

        return [(float(bm.size) * (bm.size + 4 * (arch.n_params - start)), narrow)]
    out: list[tuple[float, Callable[[], None]]] = [(float(bm.size) ** 2, diagonal)]
    depends = {m, *arch.above(m)}
    for mp in units.order[units.pos[m] + 1:]:
        if mp in wide:
            xp = input_with_bias(arch, q.z, mp)
            n = x.shape[0]
            zz = _scratch.take((n, x.shape[1] * xp.shape[1]), np.result_type(x, xp))  # shared by the pieces
            np.multiply(x[:, :, None], xp[:, None, :], out=zz.reshape(n, x.shape[1], xp.shape[1]))
            bilinear = _scratch.take((n, delta[mp].shape[1] * x.shape[1]), np.result_type(delta[mp], x))
            np.multiply(delta[mp][:, :, None], x[:, None, :], out=bilinear.reshape(n, delta[mp].shape[1], -1))
            done += [zz, bilinear]
            step = max(1, PAIR_TASK_FLOATS // zz.shape[1] // arch.block(mp).units)
            for k0 in range(0, bm.units, step):
                k1 = min(bm.units, k0 + step)
                out.append((4.0 * (k1 - k0) * (bm.size // bm.units) * arch.block(mp).size,
                            lambda mp=mp, k0=k0, k1=k1, zz=zz, bilinear=bilinear: _pair_block(
                                H, arch, q, units, m, mp, row, zz, bilinear, depends, first, k0, k1)))
    for c0, c1, top in runs:
        if top > units.pos[m] and cols is not None:
            c0 = max(c0, bm.offset + bm.size)
            out.append((4.0 * bm.size * (c1 - c0),
                        lambda c0=c0, c1=c1: _narrow_blocks(H, bm, x, units, row, cols, c0, c1, first)))
    return out


def _pair_block(H: FloatArray, arch: Architecture, q: Quantities, units: Units, m: int, mp: int, row: Row,
                zz: FloatArray, x: FloatArray, depends: set[int], first: bool, k0: int, k1: int) -> None:
    r"""The rows of units ``k0 .. k1`` of layer ``m`` in the blocks with a wide layer ``m'`` above (upper triangle).

    For weights ``W_m[k, j]`` (input ``x_m[j]``) and ``W_m'[k', j']``:

    .. math::

       H = \sum_n M_{m m', k k'}\, x_{m,j}\, x_{m',j'}
           + \sum_n \delta_{m',k'}\, (\partial z_{s,i} / \partial a_{m,k})\, x_{m,j}

    the second term for every source ``s`` of ``m'`` that is ``m`` or depends
    on it, ``x_{m',j'} = z_{s,i}`` (``W_m'`` multiplies ``z_s``, which itself
    depends on ``W_m``; Bishop 1992, eq. 22, summed over the sources).
    ``M_{mm'}`` and ``dz_s/da_m`` are slices of the row of ``m``; ``zz`` is
    ``x_{m,j} x_{m',j'}`` and ``x`` is ``delta_{m',k'} x_{m,j}`` per pattern.  The
    main term is a product ``(u u') x N x (d d')``, taken a few units ``k``
    at a time; the bilinear term (a product ``(u' d) x N x u`` where ``m``
    feeds ``m'``, ``(u' d) x N x (u_s u)`` otherwise) is added to each piece,
    which is then written into ``H`` while in cache: the upper triangle, and the lower one only where ``m'`` comes first in ``H``.
    """
    n = zz.shape[0]
    bm, bmp = arch.block(m), arch.block(mp)
    up = bmp.units
    dm = zz.shape[1] // (bmp.fan_in + (1 if bmp.bias else 0))
    dmp = zz.shape[1] // dm
    lo = units.start[m]
    M = row.M[k0:k1, :, units.start[mp] - lo:units.end(mp) - lo]  # (k1 - k0, N, u')
    M2 = _scratch.take((k1 - k0, up, n), row.M.dtype)
    np.copyto(M2, M.transpose(0, 2, 1))
    M2 = M2.reshape(-1, n)
    bilinear = []
    for s in arch.parents(mp):
        if s not in depends:  # z_s does not depend on W_m: no bilinear term
            continue
        cols = arch.source_slice(mp, s)
        if s == m:  # dz_m/da_m = diag(f'_m): r[k', j, k] = sum_n delta'[n,k'] x[n,j] f'_m[n,k]
            bilinear.append((cols, True, (x.T @ row.f1[:, k0:k1]).reshape(up, dm, k1 - k0)))
        else:
            assert row.J is not None
            us, above = cols.stop - cols.start, units.end(m)
            y = row.J[k0:k1, :, units.start[s] - above:units.end(s) - above].transpose(1, 2, 0).reshape(n, -1)
            bilinear.append((cols, False, (x.T @ y).reshape(up, dm, us, k1 - k0)))
    step = max(1, BLOCK_FLOATS // (up * dm * dmp))
    out = _scratch.take((min(step, k1 - k0) * up, dm * dmp), np.result_type(M2, zz))
    for a in range(k0, k1, step):
        b = min(k1, a + step)
        G = np.matmul(M2[(a - k0) * up:(b - k0) * up], zz, out=out[:(b - a) * up]).reshape(b - a, up, dm, dmp)
        for cols, own, r in bilinear:
            if own:  # only j' = the column of unit k itself
                ks = np.arange(b - a)
                G[ks, :, :, cols.start + a + ks] += r[:, :, a - k0:b - k0].transpose(2, 0, 1)
            else:
                G[:, :, :, cols] += r[:, :, :, a - k0:b - k0].transpose(3, 0, 1, 2)
        _put_pair(H, bm, bmp, G, first, a, mirror=bmp.offset < bm.offset)
    _scratch.give(out, M2)


# -- the narrow blocks of a row, all at once ----------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    """Per parameter ``p = W_m'[k', j']`` (or ``b_m'[k']``) of the narrow layers: what its column of ``H`` needs.

    ``unit[p]``: the unit ``k'`` in the global list (:class:`Units`);
    ``source[p]``: the unit whose output ``x_{m',j'}`` is, or -1 (the
    network input, the bias); ``x[n, p] = x_{m',j'}`` (1 for a bias);
    ``delta[n, p] = delta_{m',k'}`` where ``source[p] >= 0``, else 0.
    Filled for every layer: a narrow row reads the columns of wide layers too.
    """

    unit: IntArray
    source: IntArray
    x: FloatArray
    delta: FloatArray

    @classmethod
    def of(cls, arch: Architecture, q: Quantities, delta: list[FloatArray], units: Units,
           wide: frozenset[int]) -> _Columns:
        W, n = arch.n_params, q.z[0].shape[0]
        unit = np.zeros(W, dtype=np.intp)
        source = np.full(W, -1, dtype=np.intp)
        x = np.zeros((n, W), dtype=np.result_type(q.z[0], q.g_y, 1.0))
        dl = np.zeros_like(x)
        for blk in arch.blocks:
            m, u, f = blk.layer, blk.units, blk.fan_in
            own = units.start[m] + np.arange(u)
            src = np.concatenate([np.full(arch.inputs, -1) if p == 0 else units.start[p] + np.arange(units.count[p])
                                  for p in arch.parents(m)])
            unit[blk.w_slice] = np.repeat(own, f)
            source[blk.w_slice] = np.tile(src, u)
            x[:, blk.w_slice] = np.tile(layer_input(q.z, m, arch), u)
            dl[:, blk.w_slice] = np.where(np.tile(src, u) >= 0, np.repeat(delta[m], f, axis=1), 0)
            if blk.bias:
                unit[blk.b_slice] = own
                x[:, blk.b_slice] = 1
        return cls(unit, source, x, dl)


def _narrow_runs(arch: Architecture, wide: frozenset[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of consecutive narrow layers: ``(first column, end column, position of the last layer)``."""
    runs: list[tuple[int, int, int]] = []
    for position, blk in enumerate(arch.blocks):
        if blk.layer in wide:
            continue
        if runs and runs[-1][1] == blk.offset:
            runs[-1] = (runs[-1][0], blk.offset + blk.size, position)
        else:
            runs.append((blk.offset, blk.offset + blk.size, position))
    return runs


def _narrow_blocks(H: FloatArray, bm: ParamBlock, x: FloatArray, units: Units, row: Row, cols: _Columns,
                   c0: int, c1: int, first: bool) -> None:
    r"""The blocks of layer ``m`` (rows) with the parameters ``c0 .. c1`` of the layers above it (columns).

    Per unit ``k`` of ``m`` one factor over all those columns ``p``, main and
    bilinear term together (the two terms of :func:`_pair_block`), then one
    product with the layer's inputs:

    .. math::

       R_k[n, p] = M_{m}[k, n, \mathrm{unit}_p]\, x[n, p]
                   + J_{m}[k, n, \mathrm{source}_p]\, \delta[n, p],\qquad
       H[(k, j), p] = \sum_n x_{m}[n, j]\, R_k[n, p]

    (a column that reads ``z_m`` itself takes ``f'_m``; a source below ``m``, or none, reads the 0 column
    of ``J``).  The
    columns are taken in pieces of at most :data:`BATCH_FLOATS` per factor.
    """
    assert row.J is not None
    n, f = x.shape[0], bm.fan_in
    lo, above = units.start[row.layer], units.end(row.layer)
    pad = row.J.shape[2] - 1
    step = max(1, BATCH_FLOATS // max(n, 1))
    for a in range(c0, c1, step):
        b = min(c1, a + step)
        unit = cols.unit[a:b] - lo
        source = cols.source[a:b] - above
        own = cols.source[a:b] - lo  # a column that reads z_m itself: dz_m/da_m = diag(f'_m)
        source = np.where((cols.source[a:b] < 0) | (source < 0), pad, source)
        for k in range(bm.units):
            R = np.take(row.M[k], unit, axis=1)
            R *= cols.x[:, a:b]
            R += np.take(row.J[k], source, axis=1) * cols.delta[:, a:b]
            reads_k = np.flatnonzero(own == k)
            if reads_k.size:
                R[:, reads_k] += row.f1[:, k, None] * cols.delta[:, a + reads_k]
            w_rows = slice(bm.offset + k * f, bm.offset + (k + 1) * f)
            if first:
                np.matmul(x[:, :f].T, R, out=H[w_rows, a:b])
            else:
                H[w_rows, a:b] += x[:, :f].T @ R
            if bm.bias:
                b_row = bm.offset + bm.w_size + k
                _put(H[b_row, a:b], R.sum(axis=0), first)
