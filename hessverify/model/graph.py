r"""A network as a graph of primitives, and the passes every method is written against.

:func:`hessverify.model.build.build_graph` expands a network of any layer
kinds into a :class:`Graph` of the primitives of :mod:`hessverify.model.ops`:
leaves for the data and for each parameter tensor, then one node per primitive,
ending in the error ``E``.  The passes here know no layer kind; they ask each
node's primitive for its rules:

* :meth:`Graph.forward`: every node's value (:class:`Values`);
* :meth:`Graph.gradient`: the reverse pass from ``E``;
* :meth:`Graph.tangents`: the forward pass of ``P`` parameter directions;
* :meth:`Graph.hvp`: Pearlmutter's R-operator, the forward pass of the
  directions and a reverse pass carrying ``(g, Rg)`` (Pearlmutter 1994, sec. 3):
  :math:`\mathcal{R}g_x = J^T \mathcal{R}g_y + \sum_r g_{y,r} \nabla^2 y_r\, \mathcal{R}x`;
  ``stop`` ends the reverse pass early once the parameters asked for are done;
* :meth:`Graph.second_directional`: forward over forward, :math:`d^2E[a, b]`;
* :meth:`Graph.diag_back`: the Becker-LeCun backward pass of a diagonal.

Every pass walks the nodes in their order (the builder adds a node after its
inputs), iteratively: a graph of any depth costs no recursion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.model.ops import Op

__all__ = ["Graph", "Node", "Values"]

Arr = Any


@dataclass(frozen=True)
class Node:
    """One node: a leaf (``op`` is ``None``: the data, a parameter tensor, a constant) or a primitive of its inputs.

    ``shape`` is per node (no pattern axis); ``batched`` whether it has one.
    ``layer`` is the layer (1-based; 0 for the data, the error's nodes count as the
    last layer's) that made it.
    """

    op: Op | None
    inputs: tuple[int, ...]
    batched: bool
    shape: tuple[int, ...]
    layer: int
    label: str = ""
    value: Arr = field(default=None, repr=False, compare=False)  # a constant leaf's value


@dataclass(frozen=True)
class ParamTensor:
    """A parameter tensor: its leaf node, layer, short name (``W``, ``b``, ``Win``, ...), shape and place in ``theta``."""

    node: int
    layer: int
    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.size)


@dataclass
class Values:
    """Every node's value at one point (index: node id)."""

    graph: Graph
    v: list[Arr]

    def __getitem__(self, node: int) -> Arr:
        return self.v[node]

    @property
    def output(self) -> Arr:
        return self.v[self.graph.output]

    @property
    def error(self) -> Arr:
        return self.v[self.graph.error]


@dataclass
class Graph:
    """A network and its error as primitives (module text)."""

    nodes: list[Node]
    params: list[ParamTensor]
    data: int  # the leaf of the inputs (batched)
    output: int  # the network's output y, (N, K)
    error: int  # E, a scalar (unbatched, shape ())
    n_params: int = 0
    _reached: dict[int, list[bool]] = field(default_factory=dict, init=False, repr=False, compare=False)

    # -- the forward pass -----------------------------------------------------------------------

    def unpack(self, theta: Arr) -> list[Arr]:
        """The parameter tensors of the flat vector, in order."""
        return [theta[p.slice].reshape(p.shape) for p in self.params]

    def forward(self, theta: Arr, inputs: Arr, upto: int | None = None) -> Values:
        """Every node's value at ``theta`` (``upto``: stop after that node)."""
        v: list[Arr] = [None] * len(self.nodes)
        v[self.data] = inputs
        for p, t in zip(self.params, self.unpack(theta)):
            v[p.node] = t
        last = len(self.nodes) - 1 if upto is None else upto
        for i, node in enumerate(self.nodes[: last + 1]):
            if node.op is None:
                if v[i] is None:
                    v[i] = node.value
                continue
            v[i] = node.op.forward(*(v[j] for j in node.inputs))
        return Values(self, v)

    # -- the reverse pass -------------------------------------------------------------------------

    def _flat_params(self, cot: list[Arr], P: int, dtype: Any) -> Arr:
        out = np.zeros((P, self.n_params), dtype=dtype)
        for p in self.params:
            if cot[p.node] is not None:
                out[:, p.slice] = cot[p.node].reshape(P, -1)
        return out

    def gradient(self, values: Values) -> Arr:
        """``dE/dtheta``, ``(W,)``, by the reverse pass from ``E``."""
        cot: list[Arr] = [None] * len(self.nodes)
        cot[self.error] = np.ones((1,), dtype=np.result_type(values.error, 1.0))
        self._reverse(values, cot)
        return self._flat_params(cot, 1, cot[self.error].dtype)[0]

    def _reverse(self, values: Values, cot: list[Arr], stop: int = -1) -> None:
        for i in range(len(self.nodes) - 1, stop, -1):
            node, g = self.nodes[i], cot[i]
            if node.op is None or g is None:
                continue
            xs = [values[j] for j in node.inputs]
            for j, gj in zip(node.inputs, node.op.vjp(xs, values[i], g)):
                if gj is not None and self._differentiable(j):
                    cot[j] = gj if cot[j] is None else cot[j] + gj

    def reached(self, stop: int = -1) -> list[bool]:
        """Per node: whether a parameter leaf after node ``stop`` is it or one of its ancestors.

        The reverse pass of :meth:`hvp` with that ``stop`` carries cotangents
        into these nodes only: the others (the data, constants, everything
        computed from them and from the parameters before ``stop`` alone, as a
        convolution's patches of the layer below) feed no parameter it fills,
        so their cotangents are never computed (they would be discarded).
        """
        if stop not in self._reached:
            leaves = {p.node for p in self.params if p.node > stop}
            out = [False] * len(self.nodes)
            for i, node in enumerate(self.nodes):
                out[i] = i in leaves or (node.op is not None and any(out[j] for j in node.inputs))
            self._reached[stop] = out
        return self._reached[stop]

    def _differentiable(self, j: int) -> bool:
        """Whether cotangents are carried into node ``j`` (not into the data or a constant)."""
        node = self.nodes[j]
        return node.op is not None or any(p.node == j for p in self.params)

    # -- the forward pass of directions -----------------------------------------------------------

    def param_tangents(self, V: Arr) -> dict[int, Arr]:
        """``(P, W)`` directions as tangents of the parameter leaves (zero blocks left out)."""
        P = V.shape[0]
        out = {}
        for p in self.params:
            block = V[:, p.slice]
            if np.any(block):
                out[p.node] = block.reshape((P,) + p.shape)
        return out

    def tangents(self, values: Values, V: Arr, start: int = 0) -> list[Arr]:
        """The forward pass of ``P`` directions ``V`` (``(P, W)``): every node's tangent (``None``: zero)."""
        dot: list[Arr] = [None] * len(self.nodes)
        for node_id, t in self.param_tangents(V).items():
            dot[node_id] = t
        for i in range(start, len(self.nodes)):
            node = self.nodes[i]
            if node.op is None:
                continue
            ds = [dot[j] for j in node.inputs]
            if all(d is None for d in ds):
                continue
            dot[i] = _full(node.op.jvp([values[j] for j in node.inputs], values[i], ds), values[i])
        return dot

    # -- second order -------------------------------------------------------------------------------

    def hvp(self, values: Values, V: Arr, *, stop: int = -1, grad: list[Arr] | None = None, start: int = 0) -> Arr:
        """``(H V^T)^T`` for ``(P, W)`` directions by the R-operator (module text).

        ``stop``: the reverse pass ends above that node, and only the parameters
        at or after it are filled (the rest of each row is zero); ``grad``: the
        cotangents of the plain reverse pass, if already computed; ``start``:
        the first node the directions can move (none before it depends on them).
        """
        P = V.shape[0]
        dot = self.tangents(values, V, start)
        g = self.cotangents(values) if grad is None else grad
        reached = self.reached(stop)
        Rg: list[Arr] = [None] * len(self.nodes)
        for i in range(len(self.nodes) - 1, stop, -1):
            node, r = self.nodes[i], Rg[i]
            if node.op is None or not reached[i]:
                continue
            wanted = [reached[j] for j in node.inputs]
            if not any(wanted):
                continue
            every = all(wanted)
            xs = [values[j] for j in node.inputs]
            parts: list[Arr] = [None] * len(node.inputs)
            if r is not None:
                parts = list(node.op.vjp(xs, values[i], r) if every else node.op.vjp_wanted(xs, values[i], r, wanted))
            ds = [dot[j] for j in node.inputs]
            if g[i] is not None and any(d is not None for d in ds):
                gi = np.broadcast_to(g[i], (P,) + np.shape(g[i])[1:]) if np.shape(g[i])[0] == 1 else g[i]
                second = (node.op.second(xs, values[i], gi, ds) if every
                          else node.op.second_wanted(xs, values[i], gi, ds, wanted))
                for k, s in enumerate(second):
                    if s is not None:
                        parts[k] = s if parts[k] is None else parts[k] + s
            for j, part, w in zip(node.inputs, parts, wanted):
                if part is not None and w:
                    Rg[j] = part if Rg[j] is None else Rg[j] + part
        return self._flat_params(Rg, P, np.result_type(values.error, V))

    def cotangents(self, values: Values) -> list[Arr]:
        """Every node's ``dE/d(node)`` (``(1, ...)``: one cotangent), by the reverse pass."""
        cot: list[Arr] = [None] * len(self.nodes)
        cot[self.error] = np.ones((1,), dtype=np.result_type(values.error, 1.0))
        self._reverse(values, cot)
        return cot

    def second_directional(self, values: Values, A: Arr, B: Arr) -> Arr:
        """``d^2 E[a_p, b_p]`` for each pair of rows of ``(P, W)`` ``A`` and ``B``: forward over forward."""
        da = self.tangents(values, A)
        db = self.tangents(values, B)
        dd: list[Arr] = [None] * len(self.nodes)
        for i, node in enumerate(self.nodes):
            if node.op is None:
                continue
            xs = [values[j] for j in node.inputs]
            part = None
            lin = [dd[j] for j in node.inputs]
            if any(t is not None for t in lin):
                part = node.op.jvp(xs, values[i], lin)
            quad = node.op.second_forward(xs, values[i], [da[j] for j in node.inputs], [db[j] for j in node.inputs])
            if quad is not None:
                part = quad if part is None else part + quad
            dd[i] = None if part is None else _full(part, values[i])
        out = dd[self.error]
        return np.zeros(A.shape[0]) if out is None else out

    def diag_back(self, values: Values) -> list[Arr]:
        """The Becker-LeCun pass: every node's diagonal curvature, off-diagonal terms dropped (no direction axis)."""
        g = self.cotangents(values)
        D: list[Arr] = [None] * len(self.nodes)
        D[self.error] = np.zeros(())
        for i in range(len(self.nodes) - 1, -1, -1):
            node = self.nodes[i]
            if node.op is None or D[i] is None:
                continue
            xs = [values[j] for j in node.inputs]
            gi = np.zeros_like(values[i]) if g[i] is None else g[i][0]
            for j, d in zip(node.inputs, node.op.diag_back(xs, values[i], D[i], gi)):
                if d is not None and self._differentiable(j):
                    D[j] = d if D[j] is None else D[j] + d
        return D

    def first_node(self, layer: int) -> int:
        """The first node (in order) that belongs to ``layer``, its first parameter leaf: a reverse pass that
        stops before it has filled the parameters of that layer and those above."""
        return next(i for i, n in enumerate(self.nodes) if n.layer == layer)

    def param_nodes(self) -> Sequence[int]:
        return [p.node for p in self.params]


def _full(t: Arr, value: Arr) -> Arr:
    """A tangent broadcast to its node's full shape after the direction axis (a bias alone moving a sum gives
    ``(P, 1, ..., units)``)."""
    if t is None:
        return None
    shape = (t.shape[0],) + np.shape(value)
    return t if t.shape == shape else np.broadcast_to(t, shape)


class Builder:
    """Adds nodes to a graph in order, inferring each node's shape; what a layer kind builds its maths with.

    Every helper takes and returns node ids.  ``layer`` is the layer being built
    (set by :func:`hessverify.model.build.build_graph`).
    """

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.params: list[ParamTensor] = []
        self.offset = 0
        self.layer = 0

    # -- leaves --------------------------------------------------------------------------------

    def _node(self, op: Op | None, inputs: tuple[int, ...], batched: bool, shape: tuple[int, ...], label: str = "",
              value: Arr = None) -> int:
        self.nodes.append(Node(op, inputs, batched, tuple(int(s) for s in shape), self.layer, label, value))
        return len(self.nodes) - 1

    def data(self, shape: tuple[int, ...]) -> int:
        return self._node(None, (), True, shape, "x")

    def param(self, name: str, shape: tuple[int, ...]) -> int:
        """A parameter tensor of the current layer, next in the flat vector."""
        node = self._node(None, (), False, shape, f"{name}{self.layer}")
        self.params.append(ParamTensor(node, self.layer, name, tuple(shape), self.offset))
        self.offset += int(np.prod(shape, dtype=np.int64))
        return node

    def const(self, value: Arr, batched: bool = False) -> int:
        value = np.asarray(value)
        return self._node(None, (), batched, value.shape[1:] if batched else value.shape, "const", value)

    def shape(self, x: int) -> tuple[int, ...]:
        return self.nodes[x].shape

    def batched(self, x: int) -> bool:
        return self.nodes[x].batched

    # -- primitives ------------------------------------------------------------------------------

    def einsum(self, spec: str, x1: int, x2: int) -> int:
        """``einsum(spec, x1, x2)``, ``n`` marking the pattern axis of batched operands."""
        from hessverify.model.ops import Einsum

        ins, out = spec.split("->")
        a, b = ins.split(",")
        sizes: dict[str, int] = {}
        for letters, node in ((a, x1), (b, x2)):
            body = letters.replace("n", "")
            if len(body) != len(self.shape(node)):
                raise ValueError(f"einsum {spec}: operand {letters} has shape {self.shape(node)}")
            sizes.update(zip(body, self.shape(node)))
        batched = "n" in out
        shape = tuple(sizes[c] for c in out.replace("n", ""))
        return self._node(Einsum((self.batched(x1), self.batched(x2)), spec), (x1, x2), batched, shape, "einsum")

    def _broadcast(self, x1: int, x2: int) -> tuple[int, ...]:
        return tuple(np.broadcast_shapes(self.shape(x1), self.shape(x2)))

    def add(self, x1: int, x2: int) -> int:
        from hessverify.model.ops import Add

        op = Add((self.batched(x1), self.batched(x2)), (self.shape(x1), self.shape(x2)))
        return self._node(op, (x1, x2), op.out_batched, self._broadcast(x1, x2), "add")

    def mul(self, x1: int, x2: int) -> int:
        from hessverify.model.ops import Mul

        op = Mul((self.batched(x1), self.batched(x2)), (self.shape(x1), self.shape(x2)))
        return self._node(op, (x1, x2), op.out_batched, self._broadcast(x1, x2), "mul")

    def scale(self, x: int, c: float) -> int:
        from hessverify.model.ops import Scale

        return self._node(Scale((self.batched(x),), float(c)), (x,), self.batched(x), self.shape(x), f"*{c:g}")

    def unary(self, x: int, op: Op) -> int:
        return self._node(op, (x,), self.batched(x), self.shape(x), getattr(op, "name", "f"))

    def activation(self, x: int, name: str) -> int:
        """``f(x)`` for an activation of the table; the identity adds no node."""
        from hessverify.model.activations import get_activation
        from hessverify.model.ops import Unary

        if name == "identity":
            return x
        act = get_activation(name)
        return self.unary(x, Unary((self.batched(x),), name, act.f, act.df, act.d2f, act.d3f, act.terms, act.deriv_max))

    def sum(self, x: int, axes: tuple[int, ...], over_patterns: bool = False) -> int:
        from hessverify.model.ops import Sum

        shape = tuple(1 if i in axes else s for i, s in enumerate(self.shape(x)))
        op = Sum((self.batched(x),), tuple(axes), over_patterns)
        return self._node(op, (x,), op.out_batched, shape, "sum")

    def mean(self, x: int, axes: tuple[int, ...], over_patterns: bool = False, patterns: int = 1) -> int:
        count = int(np.prod([self.shape(x)[a] for a in axes], dtype=np.int64)) * (patterns if over_patterns else 1)
        return self.scale(self.sum(x, axes, over_patterns), 1.0 / count)

    def gather(self, xs: Sequence[int], index: FloatArray) -> int:
        """``y = (x_1, x_2, ...)[index]`` flattened per pattern side by side; ``-1`` gives 0."""
        from hessverify.model.ops import Gather

        sizes = tuple(int(np.prod(self.shape(x), dtype=np.int64)) for x in xs)
        index = np.asarray(index, dtype=np.intp)
        index = np.where(index < 0, sum(sizes), index)  # padding: past the inputs, read as 0
        op = Gather(tuple(self.batched(x) for x in xs), sizes, index)
        return self._node(op, tuple(xs), op.out_batched, index.shape, "gather")

    def rows(self, table: int, ids: FloatArray) -> int:
        """``y[n, ...] = table.flat[ids[n, ...]]``: entries of an unbatched tensor picked per pattern (an embedding)."""
        from hessverify.model.ops import Gather

        ids = np.asarray(ids, dtype=np.intp)
        op = Gather((False,), (int(np.prod(self.shape(table), dtype=np.int64)),), np.zeros(0, dtype=np.intp), ids)
        return self._node(op, (table,), True, ids.shape[1:], "rows")

    def reshape(self, x: int, shape: tuple[int, ...]) -> int:
        size = int(np.prod(self.shape(x), dtype=np.int64))
        if int(np.prod(shape, dtype=np.int64)) != size:
            raise ValueError(f"cannot reshape {self.shape(x)} to {shape}")
        if tuple(shape) == self.shape(x):
            return x
        return self.gather([x], np.arange(size).reshape(shape))

    def transpose(self, x: int, axes: tuple[int, ...]) -> int:
        idx = np.arange(int(np.prod(self.shape(x), dtype=np.int64))).reshape(self.shape(x))
        return self.gather([x], np.transpose(idx, axes))

    def softmax(self, x: int) -> int:
        from hessverify.model.ops import Softmax

        return self._node(Softmax((self.batched(x),)), (x,), self.batched(x), self.shape(x), "softmax")

    def loss(self, y: int, name: str, targets: Arr, options: tuple[tuple[str, float], ...] = ()) -> int:
        from hessverify.model.ops import Loss

        return self._node(Loss((True,), name, np.asarray(targets), options), (y,), True, (), f"loss:{name}")

    def total(self, e: int, scale: float) -> int:
        """``E = scale * sum_n e_n``: a scalar."""
        return self.scale(self.sum(e, (), over_patterns=True), scale)
