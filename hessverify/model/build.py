"""A problem as a graph of primitives: each layer's kind builds its maths, then its activation, then the loss.

:func:`build_graph` walks the layers bottom up; a layer's input nodes are the
outputs of its sources (the data leaf for ``0``), its parameter tensors become
leaves in the public order (:attr:`hessverify.model.network.Architecture.tensors`),
and the error is ``E = s sum_n e(y_n, t_n)`` with ``y_n`` the last layer's
output flattened per pattern.  The graph depends on the data (an embedding's
token ids, the loss's targets, the number of patterns a batch statistic
averages over), so it is built per problem and kept with its
:class:`~hessverify.engine.point.Point`.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from hessverify.model.graph import Builder, Graph, Values
from hessverify.model.problem import Problem

__all__ = ["build_graph", "graph_of", "graph_values"]


def build_graph(problem: Problem) -> Graph:
    """The problem's network and error as primitives (module text)."""
    arch = problem.architecture
    b = Builder()
    b.patterns = problem.n_patterns
    data = b.data(arch.shape)
    outs = [data]
    ids = np.asarray(problem.inputs).reshape((problem.n_patterns,) + arch.shape)
    for index, layer in enumerate(arch.layers, start=1):
        b.layer = index
        srcs = arch.parents(index)
        params = [b.param(t.name, t.shape) for t in arch.layer_tensors(index)]
        kind = layer.kind_def
        node = kind.build(b, layer.opts, [outs[s] for s in srcs], params, [arch.shapes[s] for s in srcs],
                          ids if kind.reads_ids else None)
        outs.append(b.activation(node, layer.activation))
    b.layer = arch.depth
    y = b.reshape(outs[-1], (arch.outputs,))
    e = b.loss(y, str(problem.loss), problem.targets, problem.loss_options)
    E = b.total(e, problem.scale)
    graph = Graph(b.nodes, b.params, data, y, E, b.offset)
    if graph.n_params != arch.n_params:  # pragma: no cover - the kinds' tensors and the architecture's agree
        raise AssertionError(f"the graph has {graph.n_params} parameters, the architecture {arch.n_params}")
    return graph


_GRAPHS: weakref.WeakKeyDictionary[Problem, tuple[int, Graph]] = weakref.WeakKeyDictionary()


def _data_print(problem: Problem) -> int:
    return hash((np.ascontiguousarray(problem.inputs).tobytes(), np.ascontiguousarray(problem.targets).tobytes(),
                 str(problem.loss), str(problem.reduction)))


def graph_of(problem: Problem) -> Graph:
    """The problem's graph, built once and kept beside the problem (rebuilt if its data changed in place)."""
    key = _data_print(problem)
    kept = _GRAPHS.get(problem)
    if kept is None or kept[0] != key:
        kept = (key, build_graph(problem))
        _GRAPHS[problem] = kept
    return kept[1]


def graph_values(problem: Problem, params: Any = None) -> Values:
    """Every node's value at ``params`` (default: the problem's point)."""
    graph = graph_of(problem)
    theta = problem.params if params is None else params
    shape = (problem.n_patterns,) + problem.architecture.shape
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked and reported by ensure_well_posed
        return graph.forward(theta, np.asarray(problem.inputs).reshape(shape))
