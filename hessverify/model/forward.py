"""Forward pass and first-order backpropagation, vectorised over patterns.

Notation of the lecture: for layer ``l`` the net input is
``a_l = x_l W_l^T + b_l`` and the output is ``z_l = f_l(a_l)``, with ``x_l``
the outputs of the layers feeding ``l`` side by side and ``z_0 = x``.  Patterns are rows, so ``a_l`` has
shape ``(N, units_l)``.  The backward pass carries ``delta_l = dE/da_l``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.model.activations import get_activation
from hessverify.model.build import graph_values
from hessverify.model.losses import loss_of
from hessverify.model.network import Architecture, layer_input
from hessverify.model.problem import Problem

__all__ = [
    "ForwardPass", "backward_deltas", "dE_dz", "deltas_from", "error", "forward", "gradient", "gradient_from",
    "gradient_batch_points", "gradients",
]


@dataclass
class ForwardPass:
    """Everything the backward passes need, per layer (index 0 is the input)."""

    a: list[FloatArray]  # a[l] = net input of layer l; a[0] unused (None-like empty)
    z: list[FloatArray]  # z[0] = x, z[l] = f_l(a_l)
    df: list[FloatArray]  # f_l'(a_l); df[0] unused
    d2f: list[FloatArray]  # f_l''(a_l); d2f[0] unused
    weights: list[FloatArray]  # weights[l] = W_l; weights[0] unused
    y: FloatArray  # network output z_L
    g_y: FloatArray  # dE/dy per pattern, already scaled by the reduction
    h_y: FloatArray  # d2E/dy dy^T per pattern, (N, K, K), already scaled


def forward(problem: Problem, params: FloatArray | None = None, *, derivatives: bool = True) -> ForwardPass:
    """Run the network on every pattern and evaluate the loss derivatives at the output."""
    theta = problem.params if params is None else params
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked and reported by ensure_well_posed
        return _forward(problem, theta, derivatives)


def _forward(problem: Problem, theta: FloatArray, derivatives: bool) -> ForwardPass:
    arch = problem.architecture
    empty = np.empty((0,))
    depth = arch.depth
    a: list[FloatArray] = [empty] * (depth + 1)
    z: list[FloatArray] = [np.asarray(problem.inputs, dtype=np.float64)] + [empty] * depth
    df: list[FloatArray] = [empty] * (depth + 1)
    d2f: list[FloatArray] = [empty] * (depth + 1)
    weights: list[FloatArray] = [empty] * (depth + 1)
    params = dict(zip(arch.bottom_up, arch.unpack(theta), strict=True))  # unpack lists the layers bottom up
    for l in arch.bottom_up:
        w, b = params[l]
        act = get_activation(arch.layer(l).activation)
        a[l] = layer_input(z, l, arch) @ w.T + b
        z[l] = act.f(a[l])
        weights[l] = w
        if derivatives:
            df[l] = act.df(a[l])
            d2f[l] = act.d2f(a[l])
    y = z[arch.output_layer]
    loss = loss_of(problem)
    if derivatives:
        g_y = problem.scale * loss.grad(y, problem.targets)
        h_y = problem.scale * loss.hess(y, problem.targets)
    else:
        g_y = h_y = empty
    return ForwardPass(a, z, df, d2f, weights, y, g_y, h_y)


def error(problem: Problem, params: FloatArray | None = None) -> float:
    """The error ``E`` at ``params`` (default: the problem's own point)."""
    if not problem.architecture.is_dense:
        return float(graph_values(problem, params).error)
    fp = forward(problem, params, derivatives=False)
    per_pattern = loss_of(problem).value(fp.y, problem.targets)
    return float(problem.scale * np.sum(per_pattern))


def backward_deltas(arch: Architecture, fp: ForwardPass) -> list[FloatArray]:
    """``delta[l] = dE/da_l`` for every layer, by the first-order backward pass (entry 0 unused)."""
    return deltas_from(arch, fp.df, fp.weights, fp.g_y)


def deltas_from(arch: Architecture, df: list[FloatArray], weights: list[FloatArray], g_y: FloatArray
                ) -> list[FloatArray]:
    """The first-order backward pass on plain arrays: ``delta_l = f'_l * sum_c W_{c,l}^T delta_c``.

    ``W_{c,l}`` are the columns of ``W_c`` that read ``z_l``, and the sum runs over
    the layers ``c`` that ``l`` feeds (Bishop 1992, sec. 2: in a general
    feed-forward graph a unit's ``delta`` collects from every unit it feeds);
    the output layer starts from ``dE/dy``.  A layer that feeds nothing and is
    not the output has ``delta = 0``.
    """
    delta: list[FloatArray] = [np.empty((0,))] * (arch.depth + 1)
    for l in arch.top_down:
        delta[l] = dE_dz(arch, l, delta, weights, g_y) * df[l]
    return delta


def dE_dz(arch: Architecture, l: int, delta: list[FloatArray], weights: list[FloatArray],
          g_y: FloatArray) -> FloatArray:
    """``dE/dz_l``: ``g_y`` at the output, else ``sum_c delta_c W_{c,l}`` over the layers ``c`` that read ``z_l``."""
    if l == arch.output_layer:
        return g_y
    total = None
    for c in arch.children(l):  # [..., cols]: a leading axis of points (gradients) passes through
        part = delta[c] @ weights[c][..., arch.source_slice(c, l)]
        total = part if total is None else total + part
    if total is None:  # a layer that feeds nothing: E does not depend on it
        return np.zeros((*g_y.shape[:-1], arch.layer(l).units), dtype=g_y.dtype)
    return total


def gradient_from(arch: Architecture, z: list[FloatArray], df: list[FloatArray], weights: list[FloatArray],
                  g_y: FloatArray) -> FloatArray:
    """The gradient in the public order from per-layer arrays: ``dE/dW_l = delta_l^T x_l``, ``dE/db_l = sum_n delta_l``.

    ``x_l`` is the layer's input (its sources side by side).  Written on plain
    arrays so that the rounding model (:mod:`hessverify.engine.bounds`) runs the same
    pass on the magnitudes of the same quantities.  Every array may carry leading axes (:func:`gradients`: one
    per point), which the result keeps.
    """
    delta = deltas_from(arch, df, weights, g_y)
    parts: list[FloatArray] = []
    for l in arch.bottom_up:
        lead = delta[l].shape[:-2]
        parts.append((np.swapaxes(delta[l], -1, -2) @ layer_input(z, l, arch)).reshape(*lead, -1))
        if arch.block(l).bias:
            parts.append(delta[l].sum(axis=-2))
    return np.concatenate(parts, axis=-1)


def gradient(problem: Problem, params: FloatArray | None = None) -> FloatArray:
    """The gradient of ``E`` in the public order, by backpropagation (over the graph of primitives for a network
    of other layer kinds than dense)."""
    if not problem.architecture.is_dense:
        values = graph_values(problem, params)
        return values.graph.gradient(values)
    fp = forward(problem, problem.params if params is None else params)
    return gradient_from(problem.architecture, fp.z, fp.df, fp.weights, fp.g_y)


GRADIENTS_BATCH_FLOATS = 2**20
"""Most floats (8 MiB) the per-layer arrays of one batch of :func:`gradients` may take: a few hundred points of a
small network, one of a large one."""


def gradients(problem: Problem, thetas: FloatArray) -> FloatArray:
    """The gradient at every row of ``thetas`` ``(B, W)``, as rows ``(B, W)``: :func:`gradient`, batched.

    What a difference quotient of the gradient needs: ``2 W`` gradients at
    nearby points.  A dense network runs the same forward and backward pass
    on all of them at once, every per-layer product a stack of the products
    :func:`gradient` forms one point at a time (the same shapes, so the same
    sums), in batches of at most :data:`GRADIENTS_BATCH_FLOATS` floats.  Other
    layer kinds take the points one at a time.
    """
    thetas = np.asarray(thetas)
    arch = problem.architecture
    if not arch.is_dense:
        return np.stack([gradient(problem, t) for t in thetas]) if len(thetas) else np.empty((0, arch.n_params))
    step = gradient_batch_points(problem)
    out = np.empty(thetas.shape, dtype=np.result_type(thetas, np.asarray(problem.inputs), 1.0))
    with np.errstate(over="ignore", invalid="ignore"):  # as in forward: the caller judges what overflowed
        for a in range(0, len(thetas), step):
            out[a:a + step] = _batched_gradient(problem, thetas[a:a + step])
    return out


def gradient_batch_points(problem: Problem) -> int:
    """Points per batch of :func:`gradients` on a dense network: as many as fit :data:`GRADIENTS_BATCH_FLOATS`."""
    arch = problem.architecture
    n = np.asarray(problem.inputs).shape[0]
    # a, z, f'(a), delta and a product per layer, the inputs of a layer of several sources, the gradient
    per_point = n * (5 * sum(blk.units for blk in arch.blocks) + sum(blk.fan_in for blk in arch.blocks)) \
        + 2 * arch.n_params
    return max(1, GRADIENTS_BATCH_FLOATS // max(per_point, 1))


def _batched_gradient(problem: Problem, thetas: FloatArray) -> FloatArray:
    """:func:`forward` with a leading axis of parameter vectors on every array, then :func:`gradient_from`."""
    arch = problem.architecture
    B = thetas.shape[0]
    x = np.asarray(problem.inputs, dtype=np.float64)
    # a real copy per point, not a broadcast view: a layer that reads the input beside another layer would
    # concatenate them into a strided array, whose products take another BLAS kernel than gradient()'s
    z: list[FloatArray] = [np.ascontiguousarray(np.broadcast_to(x, (B, *x.shape)))] + [np.empty((0,))] * arch.depth
    df: list[FloatArray] = [np.empty((0,))] * (arch.depth + 1)
    weights: list[FloatArray] = [np.empty((0,))] * (arch.depth + 1)
    for blk in arch.blocks:  # bottom up, as unpack lists them
        l = blk.layer
        w = thetas[:, blk.w_slice].reshape(B, blk.units, blk.fan_in)
        act = get_activation(arch.layer(l).activation)
        a = layer_input(z, l, arch) @ w.transpose(0, 2, 1)
        if blk.bias:
            a = a + thetas[:, None, blk.b_slice]
        z[l] = act.f(a)
        df[l] = act.df(a)
        weights[l] = w
    y = z[arch.output_layer]
    t = np.asarray(problem.targets)
    flat_y = y.reshape(-1, y.shape[-1])  # the losses take (patterns, outputs)
    flat_t = np.broadcast_to(t, (B, *t.shape)).reshape(flat_y.shape)
    g_y = (problem.scale * loss_of(problem).grad(flat_y, flat_t)).reshape(y.shape)
    return gradient_from(arch, z, df, weights, g_y)
