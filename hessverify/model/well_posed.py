"""Whether the Hessian exists at a problem's point: the one well-posedness check.

Every method, reference and command asks :func:`ensure_well_posed` before it
computes anything.  It raises

* :class:`~hessverify.errors.OverflowReport` when the parameters, a layer's
  values or the loss derivatives are not finite;
* :class:`~hessverify.errors.NotDifferentiableError` when a unit sits at a
  kink of its activation (relu at 0), or so close to it that float64 cannot
  say which side it is on (within the rounding error of its net input,
  :func:`hessverify.model.rounding.net_input_errors`): ``E`` is not twice
  differentiable there, so there is nothing to compare.

The kinks themselves are listed in one place, the activation table's
``kinks`` column, and read here by :func:`kinked_net_inputs`, which every
other kink test (finite-difference steps that cross one, strategies that keep
clear of them, the symbolic reference's own values) goes through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from hessverify.base.precision import FLOAT64
from hessverify.base.typing import FloatArray
from hessverify.errors import NotDifferentiableError, OverflowReport
from hessverify.model.activations import ACTIVATIONS, get_activation
from hessverify.model.build import graph_values
from hessverify.model.forward import ForwardPass, forward
from hessverify.model.graph import Graph, Values
from hessverify.model.graph_rounding import graph_chain_length, node_errors
from hessverify.model.losses import loss_of
from hessverify.model.network import Architecture
from hessverify.model.ops import Unary
from hessverify.model.problem import Problem
from hessverify.model.rounding import chain_length, net_input_errors

__all__ = ["check_point", "ensure_well_posed", "graph_kinks", "kinked_net_inputs", "kinked_values", "near_kink"]


def kinked_net_inputs(arch: Architecture, net_inputs: Sequence[Any] | Mapping[int, Any]
                      ) -> Iterator[tuple[int, float, FloatArray]]:
    """``(layer, kink, a_l)`` for every kink of every layer whose activation has kinks.

    ``net_inputs[l]`` is layer ``l``'s ``(N, units)`` net input (index 0 unused).

    Examples
    --------
    >>> from hessverify.model.network import Layer
    >>> arch = Architecture(1, (Layer(2, "relu"), Layer(1, "tanh")))
    >>> [(l, k) for l, k, _ in kinked_net_inputs(arch, [None, np.zeros((1, 2)), np.zeros((1, 1))])]
    [(1, 0.0)]
    """
    for l in arch.bottom_up:
        for kink in get_activation(arch.layer(l).activation).kinks:
            yield l, kink, net_inputs[l]


def near_kink(problem: Problem, margin: float, fp: ForwardPass | None = None) -> bool:
    """Whether some net input of ``problem`` lies within ``margin`` of a kink (strictly: ``|a - kink| < margin``),
    or a residual within ``margin`` of the loss's kink."""
    if not problem.architecture.is_dense or loss_of(problem).kinks is not None:
        return any(np.any(np.abs(d) < margin) for d in kinked_values(problem))
    fp = forward(problem, derivatives=False) if fp is None else fp
    return any(np.any(np.abs(a - kink) < margin) for _, kink, a in kinked_net_inputs(problem.architecture, fp.a))


def ensure_well_posed(problem: Problem, fp: ForwardPass | None = None, *,
                      net_errors: Callable[[], list[FloatArray]] | None = None) -> ForwardPass:
    """Raise unless the Hessian exists at the problem's point and every value is finite; return the forward pass.

    A relu unit whose net input is exactly at the kink makes ``E`` not twice
    differentiable (not even once); that is reported, never compared.
    ``fp`` is the forward pass at the point and ``net_errors`` gives the net
    inputs' rounding errors (:func:`~hessverify.model.rounding.net_input_errors`)
    when they are needed, if the caller has them already.

    Raises
    ------
    OverflowReport
        The parameters, some layer's net inputs or outputs, or the loss
        derivatives are not finite.
    NotDifferentiableError
        Some net input is at a kink, or within its float64 rounding error of one.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> ensure_well_posed(case).y.shape
    (4, 1)
    """
    if not np.all(np.isfinite(problem.params)):
        raise OverflowReport("the parameters contain NaN or inf")
    if not problem.architecture.is_dense:
        return _graph_well_posed(problem, fp, net_errors)  # type: ignore[arg-type]
    fp = forward(problem) if fp is None else fp
    arch = problem.architecture
    for l in arch.bottom_up:
        a_l = fp.a[l]
        if not np.all(np.isfinite(a_l)) or not np.all(np.isfinite(fp.z[l])):
            raise OverflowReport(
                f"overflow in layer {l}: net inputs or outputs are not finite "
                f"(largest |a| = {np.nanmax(np.abs(a_l)):.3g})"
            )
    # How far each net input may be from its computed value (hessverify.model.rounding):
    # within that of a kink, float64 cannot say which side the point is on.
    errors = None
    for l, kink, a_l in kinked_net_inputs(arch, fp.a):
        name = arch.layer(l).activation
        exact = np.argwhere(a_l == kink)
        if exact.size:
            n, unit = exact[0]
            raise NotDifferentiableError(
                f"not twice differentiable at this point: {name} unit {unit} of layer "
                f"{l} has net input exactly {kink:g} for pattern {n} "
                f"({len(exact)} such unit-pattern pair(s))"
            )
        if errors is None:
            errors = net_errors() if net_errors is not None else net_input_errors(problem, fp)
        tol = FLOAT64.gamma(chain_length(problem)) * errors[l]
        near = np.argwhere(np.abs(a_l - kink) <= tol)
        if near.size:
            n, unit = near[0]
            raise NotDifferentiableError(
                f"not twice differentiable at this point, as far as float64 can tell: {name} "
                f"unit {unit} of layer {l} has net input {a_l[n, unit]:.3g} for pattern {n}, "
                f"within its rounding error ({tol[n, unit]:.2g}) of the kink at {kink:g}"
            )
    for what, arr in (("loss gradient", fp.g_y), ("loss Hessian", fp.h_y)):
        if arr.size and not np.all(np.isfinite(arr)):
            raise OverflowReport(f"overflow at the output: the {what} is not finite")
    if loss_of(problem).kinks is not None:
        L = arch.output_layer

        def output_errors() -> FloatArray:  # the output's error: its net input's carried by f', and f's own rounding
            errs = net_errors() if net_errors is not None else net_input_errors(problem, fp)
            return np.abs(fp.df[L]) * errs[L] + np.abs(fp.y)

        _check_loss_kinks(problem, fp.y, output_errors, FLOAT64.gamma(chain_length(problem)))
    return fp


def _check_loss_kinks(problem: Problem, y: FloatArray, output_errors: Callable[[], FloatArray], gamma: float) -> None:
    """Raise :class:`~hessverify.errors.NotDifferentiableError` where a residual sits at the loss's kink (Huber's
    ``|y - t| = delta``), or within its rounding error of it."""
    row, t = loss_of(problem), problem.targets
    d = row.kinks(y, t)  # type: ignore[misc]
    exact = np.argwhere(d == 0)
    where = ", ".join(f"{k} = {v:g}" for k, v in row.options)
    if exact.size:
        n, k = exact[0]
        raise NotDifferentiableError(
            f"not twice differentiable at this point: the {row.name} loss ({where}) has its kink at output {k} of "
            f"pattern {n}, |y - t| = {abs(y[n, k] - t[n, k]):g} ({len(exact)} such output(s))")
    tol = gamma * (output_errors() + np.abs(y) + np.abs(t))
    near = np.argwhere(np.abs(d) <= tol)
    if near.size:
        n, k = near[0]
        raise NotDifferentiableError(
            f"not twice differentiable at this point, as far as float64 can tell: the {row.name} loss ({where}) "
            f"has |y - t| = {abs(y[n, k] - t[n, k]):.17g} at output {k} of pattern {n}, within its rounding error "
            f"({tol[n, k]:.2g}) of the kink")


def graph_kinks(graph: Graph, values: Values) -> Iterator[tuple[int, int, str, float, FloatArray]]:
    """``(node, layer, activation, kink, input)`` for every activation with a kink in a network's graph."""
    for i, node in enumerate(graph.nodes):
        op = node.op
        if isinstance(op, Unary) and op.name in ACTIVATIONS:
            for kink in get_activation(op.name).kinks:
                yield i, node.layer, op.name, kink, values[node.inputs[0]]


def kinked_values(problem: Problem, params: FloatArray | None = None) -> list[FloatArray]:
    """Every input of an activation with a kink, minus the kink, at ``params``: a step crosses a kink where
    one of them changes sign (:func:`hessverify.references.finite_differences.kink_columns`)."""
    arch = problem.architecture
    row = loss_of(problem)
    if arch.is_dense:
        fp = forward(problem, params, derivatives=False)
        out = [a - kink for _, kink, a in kinked_net_inputs(arch, fp.a)]
        y = fp.y
    else:
        values = graph_values(problem, params)
        out = [x - kink for _, _, _, kink, x in graph_kinks(values.graph, values)]
        y = values[values.graph.output]
    if row.kinks is not None:
        out.append(row.kinks(y, problem.targets))
    return out


def _graph_well_posed(problem: Problem, values: Values | None,
                      net_errors: Callable[[], Any] | None) -> Values:
    """:func:`ensure_well_posed` for a network of other layer kinds, on its graph's values."""
    values = graph_values(problem) if values is None else values
    graph = values.graph
    for i, node in enumerate(graph.nodes):
        v = values[i]
        if v is not None and not np.all(np.isfinite(v)):
            what = "the loss" if i >= graph.output else f"layer {node.layer} ({node.label})"
            raise OverflowReport(f"overflow in {what}: its values are not finite")
    errors = None
    for i, layer, name, kink, x in graph_kinks(graph, values):
        exact = np.argwhere(x == kink)
        if exact.size:
            where = exact[0]
            raise NotDifferentiableError(
                f"not twice differentiable at this point: the {name} of layer {layer} has input exactly {kink:g} "
                f"at pattern {where[0]}, position {tuple(int(w) for w in where[1:])} ({len(exact)} such entries)")
        if errors is None:
            errors = net_errors() if net_errors is not None else _node_errors(problem, values)
        tol = FLOAT64.gamma(graph_chain_length(graph, problem.n_patterns)) * errors[graph.nodes[i].inputs[0]]
        near = np.argwhere(np.abs(x - kink) <= tol)
        if near.size:
            where = tuple(near[0])
            raise NotDifferentiableError(
                f"not twice differentiable at this point, as far as float64 can tell: the {name} of layer {layer} "
                f"has input {x[where]:.3g} at pattern {where[0]}, within its rounding error ({tol[where]:.2g}) "
                f"of the kink at {kink:g}")
    y, loss = values[graph.output], loss_of(problem)
    for what, arr in (("loss gradient", loss.grad(y, problem.targets)), ("loss Hessian", loss.hess(y, problem.targets))):
        if arr.size and not np.all(np.isfinite(arr)):
            raise OverflowReport(f"overflow at the output: the {what} is not finite")
    if loss.kinks is not None:
        gamma = FLOAT64.gamma(graph_chain_length(graph, problem.n_patterns))
        _check_loss_kinks(problem, y, lambda: _node_errors(problem, values)[graph.output], gamma)
    return values


def _node_errors(problem: Problem, values: Values) -> list[FloatArray]:
    graph = values.graph
    return node_errors(graph, values, FLOAT64.gamma(graph_chain_length(graph, problem.n_patterns)))[1]


check_point = ensure_well_posed
"""The former name of :func:`ensure_well_posed`, kept for code written against it."""
