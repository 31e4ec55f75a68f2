r"""Curvature of a network of any layer kinds, assembled from the passes of its graph (:mod:`hessverify.model.graph`).

The methods under test call these for every network that is not the classic
dense one (which has second-order backpropagation's own kernel,
:mod:`hessverify.model.kernel`):

* :func:`hessian_by_blocks`: second-order backpropagation over the graph, one
  layer's parameters at a time: their directions go forward from that layer
  only, and the R-operator's reverse pass (Pearlmutter 1994) stops once it has
  passed that layer, so each block row is computed for the layers at or above
  it and mirrored (the Hessian is symmetric): about half the work of all rows;
* :func:`diagonal_blocks`: the same, keeping each layer's own block only;
* :func:`hessian_by_rows`: the R-operator on every unit vector, in chunks;
* :func:`hessian_forward_forward`: each entry as a second directional
  derivative, forward over forward (hyper-dual numbers): no reverse pass at all;
* :func:`output_jacobian`: ``dy_n/dtheta`` of every output, for Gauss-Newton and
  the empirical Fisher.

Directions are taken in chunks whose tangents stay within :data:`CHUNK_BYTES`;
the chunks of a large problem run side by side, with single-threaded BLAS
(:mod:`hessverify.model.pool`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.model.graph import Graph, Values
from hessverify.model.pool import run_tasks

__all__ = ["CHUNK_BYTES", "diagonal_blocks", "hessian_by_blocks", "hessian_by_rows", "hessian_forward_forward",
           "layer_spans", "output_jacobian"]

CHUNK_BYTES = 2**28
"""Bytes the tangents of one chunk of directions may take (every node's, three times over)."""


def _chunk(graph: Graph, values: Values) -> int:
    """Directions per chunk: the tangents of every node (and the R-pass's) within :data:`CHUNK_BYTES`."""
    per = 0
    for v in values.v:
        per += int(np.size(v)) if v is not None else 0
    return int(max(1, min(graph.n_params, CHUNK_BYTES // (3 * 16 * max(per, 1)))))


def _ranges(start: int, stop: int, step: int) -> Iterator[tuple[int, int]]:
    for a in range(start, stop, step):
        yield a, min(stop, a + step)


def layer_spans(graph: Graph) -> list[tuple[int, int, int]]:
    """``(layer, start, stop)``: each layer's parameters in the flat vector, bottom up (layers without any left out)."""
    spans: dict[int, list[int]] = {}
    for p in graph.params:
        lo, hi = spans.get(p.layer, [p.offset, p.offset])
        spans[p.layer] = [min(lo, p.offset), max(hi, p.offset + p.size)]
    return [(layer, lo, hi) for layer, (lo, hi) in sorted(spans.items())]


def _unit_rows(W: int, a: int, b: int) -> FloatArray:
    V = np.zeros((b - a, W))
    V[np.arange(b - a), np.arange(a, b)] = 1.0
    return V


def _work(graph: Graph, values: Values) -> float:
    """About the multiply-adds of a full Hessian by the R-operator, ``N W^2`` (what :func:`~hessverify.model.pool.run_tasks`
    weighs against its pool)."""
    y = values[graph.output]
    return float(np.shape(y)[0] if np.ndim(y) else 1) * float(graph.n_params) ** 2


def hessian_by_blocks(graph: Graph, values: Values) -> FloatArray:
    """The full Hessian, block row by block row, each computed for the layers at or above it and mirrored.

    Each chunk of a layer's directions fills its own rows ``H[a:b, lo:]``, so
    the chunks run side by side (:func:`~hessverify.model.pool.run_tasks`);
    the mirroring waits for all of them.
    """
    W = graph.n_params
    H = np.zeros((W, W), dtype=np.result_type(values.error, 1.0))
    g = graph.cotangents(values)
    step = _chunk(graph, values)
    spans = layer_spans(graph)
    tasks = []
    for layer, lo, hi in spans:
        first = graph.first_node(layer)
        graph.reached(first - 1)  # computed here, once, not by the tasks at the same time

        def rows(a: int, b: int, lo: int = lo, first: int = first) -> None:
            H[a:b, lo:] = graph.hvp(values, _unit_rows(W, a, b), stop=first - 1, grad=g, start=first)[:, lo:]

        tasks += [lambda a=a, b=b, rows=rows: rows(a, b) for a, b in _ranges(lo, hi, step)]
    run_tasks(tasks, _work(graph, values))
    for _, lo, hi in spans:
        block = H[lo:hi, lo:hi]
        block[...] = np.tril(block) + np.tril(block, -1).T  # the layer's own block: its lower triangle, mirrored
        H[lo:, lo:hi] = H[lo:hi, lo:].T
    return H


def diagonal_blocks(graph: Graph, values: Values) -> list[FloatArray]:
    """Each layer's diagonal block of the Hessian (``(size, size)``, public order within it), bottom up."""
    W = graph.n_params
    g = graph.cotangents(values)
    step = _chunk(graph, values)
    out = []
    tasks = []
    for layer, lo, hi in layer_spans(graph):
        first = graph.first_node(layer)
        graph.reached(first - 1)
        block = np.empty((hi - lo, hi - lo), dtype=np.result_type(values.error, 1.0))

        def rows(a: int, b: int, lo: int = lo, hi: int = hi, first: int = first, block: FloatArray = block) -> None:
            block[a - lo:b - lo] = graph.hvp(values, _unit_rows(W, a, b), stop=first - 1, grad=g, start=first)[:, lo:hi]

        tasks += [lambda a=a, b=b, rows=rows: rows(a, b) for a, b in _ranges(lo, hi, step)]
        out.append(block)
    sizes = sum((hi - lo) ** 2 for _, lo, hi in layer_spans(graph))
    run_tasks(tasks, _work(graph, values) * sizes / max(W * W, 1))
    return out


def hessian_by_rows(graph: Graph, values: Values) -> FloatArray:
    """``H e_i`` for every ``i`` by the R-operator, in chunks of directions (no symmetry used)."""
    W = graph.n_params
    H = np.empty((W, W), dtype=np.result_type(values.error, 1.0))
    g = graph.cotangents(values)
    graph.reached()

    def rows(a: int, b: int) -> None:
        H[a:b] = graph.hvp(values, _unit_rows(W, a, b), grad=g)

    run_tasks([lambda a=a, b=b: rows(a, b) for a, b in _ranges(0, W, _chunk(graph, values))], _work(graph, values))
    return H


def hessian_forward_forward(graph: Graph, values: Values) -> FloatArray:
    """Every entry ``d^2 E[e_i, e_j]`` (``j >= i``) as a second directional derivative, forward over forward."""
    W = graph.n_params
    H = np.empty((W, W), dtype=np.result_type(values.error, 1.0))
    eye = np.eye(W)
    step = _chunk(graph, values)
    for i in range(W):
        for a, b in _ranges(i, W, step):
            A = np.zeros((b - a, W))
            A[:, i] = 1.0
            H[i, a:b] = graph.second_directional(values, A, eye[a:b])
        H[i + 1:, i] = H[i, i + 1:]
    return H


def output_jacobian(graph: Graph, values: Values) -> FloatArray:
    """``J[i, n, k] = dy_{n,k} / dtheta_i``: the network's outputs moved along every unit direction, ``(W, N, K)``."""
    W = graph.n_params
    y = values[graph.output]
    J = np.empty((W,) + np.shape(y), dtype=np.result_type(y, 1.0))
    for a, b in _ranges(0, W, _chunk(graph, values)):
        dot = graph.tangents(values, _unit_rows(W, a, b))
        t = dot[graph.output]
        J[a:b] = 0.0 if t is None else t
    return J
