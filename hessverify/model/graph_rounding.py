r"""The rounding model of a network of any layer kinds: magnitudes, inherited errors and ``M``, over its graph.

The same analysis as for the dense network (:mod:`hessverify.model.rounding`,
:mod:`hessverify.engine.bounds`; Higham 2002, sec. 3.1), written once against
the primitives (:mod:`hessverify.model.ops`) instead of per layer kind:

* :func:`node_errors`: every node's computed value is within ``gamma_k e`` of
  its exact value, ``e`` propagated forward: a primitive's own rounding (the
  magnitudes of the terms it sums: ``|x_1| |x_2|`` contracted for a
  contraction, ``|x_1| + |x_2|`` for a sum, the activation table's ``terms``
  for a function) plus the errors of its inputs carried by the magnitudes of
  its derivatives, plus a Taylor remainder for a nonlinear one;
* :func:`magnitude_hessian`: the Hessian's assembly (second-order
  backpropagation over the graph, :func:`hessverify.model.assembly.hessian_by_blocks`)
  run on magnitudes: every node value by ``|v|``, every derivative factor of a
  primitive (``f'``, ``f''``, the softmax, the loss derivatives) by its magnitude,
  each subtraction of a rule by an addition.  All rules are then sums of
  products of non-negative numbers, so the result is, per entry, the sum of
  the magnitudes of the terms of every expansion of it, whatever order a
  method sums them in; with every input shifted to ``v + gamma e`` and the
  directional derivative along ``e`` added (a complex step, as
  :func:`hessverify.engine.bounds._propagated` does), ``M`` also covers what
  the inputs inherited;
* :func:`graph_chain_length`: ``k``, three times the longest chain of
  roundings along any path of the graph (forward, reverse and the R-operator's
  reverse pass), plus the sum over patterns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.model.graph import Graph, Values
from hessverify.model.ops import Add, Einsum, Gather, Loss, Mul, Op, Scale, Softmax, Sum, Unary

__all__ = ["graph_chain_length", "magnitude_gradient", "magnitude_hessian", "node_errors"]

ACTIVATION_ULPS = 8
LOSS_ULPS = 8
Arr = Any


# -- k ---------------------------------------------------------------------------------------------------


def _einsum_cost(op: Einsum, shapes: Sequence[tuple[int, ...]], n: int) -> int:
    ins, out = op.spec.split("->")
    sizes: dict[str, int] = {"n": n}
    for letters, shape in zip(ins.split(","), shapes):
        sizes.update(zip(letters.replace("n", ""), shape))
    summed = [c for c in set(ins.replace(",", "")) if c not in out]
    forward = int(np.prod([sizes[c] for c in summed], dtype=np.int64))
    back = max(int(np.prod([sizes[c] for c in out if c not in letters], dtype=np.int64)) for letters in ins.split(","))
    return max(forward, back) + 1


def _cost(graph: Graph, i: int, n: int) -> int:
    """Roundings one node adds to a chain through it (forward, or a reverse pass's sums through it)."""
    node = graph.nodes[i]
    op = node.op
    shapes = [graph.nodes[j].shape for j in node.inputs]
    if isinstance(op, Einsum):
        return _einsum_cost(op, shapes, n)
    if isinstance(op, Sum):
        count = int(np.prod([shapes[0][a] for a in op.axes], dtype=np.int64)) * (n if op.over_patterns else 1)
        return count + 1
    if isinstance(op, (Add, Mul)):  # the reverse pass sums over what was broadcast
        out = int(np.prod(node.shape, dtype=np.int64)) * (n if node.batched else 1)
        return 1 + max(out // max(1, int(np.prod(s, dtype=np.int64)) * (n if graph.nodes[j].batched else 1))
                       for s, j in zip(shapes, node.inputs))
    if isinstance(op, Gather):
        index = op.index if op.rows is None else op.rows
        counts = np.bincount(np.asarray(index).reshape(-1)) if np.size(index) else np.zeros(1, dtype=int)
        return int(counts.max()) if counts.size else 0
    if isinstance(op, Scale):
        return 1
    if isinstance(op, Unary):
        return ACTIVATION_ULPS
    if isinstance(op, Softmax):
        return node.shape[-1] + ACTIVATION_ULPS + 4
    if isinstance(op, Loss):
        return LOSS_ULPS + int(graph.nodes[node.inputs[0]].shape[-1])
    return 0


def graph_chain_length(graph: Graph, n: int) -> int:
    """``k``: three times the costliest path of roundings (module text), plus the patterns' sum and the loss."""
    longest = [0] * len(graph.nodes)
    for i, node in enumerate(graph.nodes):
        if node.op is not None:
            longest[i] = _cost(graph, i, n) + max((longest[j] for j in node.inputs), default=0)
    return 3 * max(longest) + n + LOSS_ULPS + 2


# -- the forward errors ---------------------------------------------------------------------------------


def _abs(x: Arr) -> Arr:
    return np.abs(x) if x is not None else None


def node_errors(graph: Graph, values: Values, gamma: float) -> tuple[list[Arr], list[Arr]]:
    """``(|v_i|, e_i)`` for every node: its magnitude, and a bound on its computed value's error in units of gamma."""
    mags = [_abs(v) for v in values.v]
    errs: list[Arr] = [None if v is None else np.zeros(np.shape(v)) for v in values.v]
    for i, node in enumerate(graph.nodes):
        op = node.op
        if op is None:
            continue
        xs = [mags[j] for j in node.inputs]
        es = [errs[j] for j in node.inputs]
        errs[i] = _forward_error(op, xs, es, values, node, gamma, mags[i])
    return mags, errs


def _forward_error(op: Op, xs: list[Arr], es: list[Arr], values: Values, node: Any, gamma: float, y: Arr) -> Arr:
    if isinstance(op, Einsum):
        terms = op.forward(xs[0], xs[1])
        return terms + op.forward(es[0], xs[1]) + op.forward(xs[0], es[1]) + gamma * op.forward(es[0], es[1])
    if isinstance(op, Add):
        return op.forward(xs[0], xs[1]) + op.forward(es[0], es[1])
    if isinstance(op, Mul):
        return (op.forward(xs[0], xs[1]) + op.forward(es[0], xs[1]) + op.forward(xs[0], es[1])
                + gamma * op.forward(es[0], es[1]))
    if isinstance(op, Scale):
        return abs(op.c) * (xs[0] + es[0])
    if isinstance(op, Gather):
        return op.forward(*es)
    if isinstance(op, Sum):
        return op.forward(xs[0] + es[0])
    if isinstance(op, Unary):
        x = values[node.inputs[0]]
        f_terms = op.terms(x)[0] if op.terms is not None else np.abs(op.f(x))
        return f_terms + np.abs(op.df(x)) * es[0] + _remainder(op, x, es[0], gamma)
    if isinstance(op, Softmax):
        ye = (y * es[0]).sum(axis=-1, keepdims=True)
        return y + y * (es[0] + ye)
    if isinstance(op, Loss):
        return np.zeros(np.shape(y))  # the per-pattern errors are not used: the loss derivatives are
    raise TypeError(f"no rounding rule for {type(op).__name__}")  # pragma: no cover


def _remainder(op: Unary, x: Arr, e: Arr, gamma: float) -> Arr:
    """``L gamma e^2``: the second-order Taylor term of an input error ``gamma e``, in units of gamma."""
    bound = op.deriv_max if op.deriv_max is not None else (2.0 * np.abs(op.d3f(x)) if op.d3f is not None else 0.0)
    return bound * gamma * e * e


def _factor_errors(op: Unary, x: Arr, e: Arr, gamma: float) -> tuple[Arr, Arr, Arr, Arr]:
    """``|f'|, e_{f'}, |f''|, e_{f''}`` at ``x`` with input error ``gamma e`` (units of gamma)."""
    terms = op.terms(x) if op.terms is not None else (np.abs(op.f(x)), np.abs(op.df(x)), np.abs(op.d2f(x)))
    d3 = np.abs(op.d3f(x)) if op.d3f is not None else 0.0 * x
    rem = _remainder(op, x, e, gamma)
    d1, d2 = np.abs(op.df(x)), np.abs(op.d2f(x))
    return d1, terms[1] + d2 * e + rem, d2, terms[2] + d3 * e + rem


# -- the magnitude assembly ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _UnaryMag(Unary):
    """``f'`` and ``f''`` frozen at their (shifted, complex-stepped) magnitudes: the rules are then linear."""

    F1: Arr = field(default=None, repr=False)
    F2: Arr = field(default=None, repr=False)

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Arr]) -> Arr:
        return None if dxs[0] is None else self.F1 * dxs[0]

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Arr]:
        return [self.F1 * gy]

    def second(self, xs: Sequence[Arr], y: Arr, gy: Arr, dxs: Sequence[Arr]) -> list[Arr]:
        return [None if dxs[0] is None else gy * self.F2 * dxs[0]]


@dataclass(frozen=True, eq=False)
class _SoftmaxMag(Softmax):
    """The softmax's rules with ``y`` frozen at its magnitude and every subtraction an addition."""

    Y: Arr = field(default=None, repr=False)

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Arr]) -> Arr:
        d = dxs[0]
        return None if d is None else self.Y * (d + self._dot(self.Y, d))

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Arr]:
        return [self.Y * (gy + self._dot(self.Y, gy))]

    def second(self, xs: Sequence[Arr], y: Arr, gy: Arr, dxs: Sequence[Arr]) -> list[Arr]:
        d = dxs[0]
        if d is None:
            return [None]
        ydot = self.Y * (d + self._dot(self.Y, d))
        return [ydot * gy + ydot * self._dot(self.Y, gy) + self.Y * self._dot(ydot, gy)]


@dataclass(frozen=True, eq=False)
class _LossMag(Loss):
    """The loss's derivatives frozen at their magnitudes."""

    G: Arr = field(default=None, repr=False)
    Hm: Arr = field(default=None, repr=False)

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Arr]:
        return [gy[:, :, None] * self.G[None]]

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Arr]) -> Arr:
        d = dxs[0]
        return None if d is None else np.einsum("nk,pnk->pn", self.G, d)

    def second(self, xs: Sequence[Arr], y: Arr, gy: Arr, dxs: Sequence[Arr]) -> list[Arr]:
        d = dxs[0]
        return [None] if d is None else [gy[:, :, None] * np.einsum("nkj,pnj->pnk", self.Hm, d)]


def _shift(v: Arr, e: Arr, gamma: float, h: float) -> Arr:
    return (v + gamma * e) + 1j * h * e


def _magnitude_graph(graph: Graph, values: Values, gamma: float) -> tuple[Graph, Values]:
    """The graph with every primitive's rules on magnitudes, and its values ``|v| + gamma e`` complex-stepped along ``e``."""
    from hessverify.model.losses import get_loss

    h = gamma * 2.0**-20
    mags, errs = node_errors(graph, values, gamma)
    nodes = []
    for i, node in enumerate(graph.nodes):
        op = node.op
        if isinstance(op, Scale):
            op = replace(op, c=abs(op.c))
        elif isinstance(op, Unary):
            x = values[node.inputs[0]]
            d1, e1, d2, e2 = _factor_errors(op, x, errs[node.inputs[0]], gamma)
            op = _UnaryMag(op.batched, op.name, op.f, op.df, op.d2f, F1=_shift(d1, e1, gamma, h),
                           F2=_shift(d2, e2, gamma, h))
        elif isinstance(op, Softmax):
            op = _SoftmaxMag(op.batched, Y=_shift(mags[i], errs[i], gamma, h))
        elif isinstance(op, Loss):
            y, t = values[node.inputs[0]], op.targets
            row = get_loss(op.name, **dict(op.options))
            e_y = errs[node.inputs[0]]
            h_terms = np.abs(row.hess_mag(y, t))
            e_g = row.grad_mag(y, t) + np.einsum("nij,nj->ni", h_terms, e_y)
            e_h = h_terms * (1.0 + row.hess_slope * np.max(e_y, axis=1))[:, None, None]
            op = _LossMag(op.batched, op.name, op.targets, op.options, G=_shift(np.abs(row.grad(y, t)), e_g, gamma, h),
                          Hm=_shift(np.abs(row.hess(y, t)), e_h, gamma, h))
        nodes.append(replace(node, op=op))
    shifted = [None if m is None else _shift(m, e, gamma, h) for m, e in zip(mags, errs)]
    mgraph = replace(graph, nodes=nodes)
    return mgraph, Values(mgraph, shifted)


def _read(out: Arr, gamma: float) -> FloatArray:
    h = gamma * 2.0**-20
    with np.errstate(over="ignore", invalid="ignore"):
        return np.maximum(out.real + out.imag / h, 0.0)


def magnitude_hessian(graph: Graph, values: Values, gamma: float) -> FloatArray:
    """``M`` for a graph (module text): per Hessian entry, its terms in magnitude plus their inherited errors."""
    from hessverify.model.assembly import hessian_by_blocks

    mgraph, mvalues = _magnitude_graph(graph, values, gamma)
    with np.errstate(over="ignore", invalid="ignore"):
        return _read(hessian_by_blocks(mgraph, mvalues), gamma)


def magnitude_gradient(graph: Graph, values: Values, gamma: float) -> FloatArray:
    """The same for the gradient."""
    mgraph, mvalues = _magnitude_graph(graph, values, gamma)
    with np.errstate(over="ignore", invalid="ignore"):
        return _read(mgraph.gradient(mvalues), gamma)


