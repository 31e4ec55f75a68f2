"""Forward pass and first-order backpropagation, vectorised over patterns.

Notation of the lecture: for layer ``l`` the net input is
``a_l = z_{l-1} W_l^T + b_l`` and the output is ``z_l = f_l(a_l)``, with
``z_0 = x``.  Patterns are rows, so ``a_l`` has shape ``(N, units_l)``.
The backward pass carries ``delta_l = dE/da_l``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hessverify._typing import FloatArray
from hessverify.errors import NotDifferentiableError, OverflowReport
from hessverify.model.activations import get_activation
from hessverify.model.losses import get_loss
from hessverify.model.network import layer_input
from hessverify.model.problem import Problem

__all__ = ["ForwardPass", "error", "forward", "gradient", "check_point"]


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
    empty = np.empty((0,))
    a: list[FloatArray] = [empty]
    z: list[FloatArray] = [np.asarray(problem.inputs, dtype=np.float64)]
    df: list[FloatArray] = [empty]
    d2f: list[FloatArray] = [empty]
    weights: list[FloatArray] = [empty]
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked and reported by check_point
        return _forward(problem, theta, derivatives, a, z, df, d2f, weights)


def _forward(problem: Problem, theta: FloatArray, derivatives: bool, a: list[FloatArray], z: list[FloatArray],
             df: list[FloatArray], d2f: list[FloatArray], weights: list[FloatArray]) -> ForwardPass:
    arch = problem.architecture
    empty = np.empty((0,))
    for index, ((w, b), layer) in enumerate(zip(arch.unpack(theta), arch.layers), start=1):
        act = get_activation(layer.activation)
        a_l = layer_input(z, index) @ w.T + b
        a.append(a_l)
        z.append(act.f(a_l))
        weights.append(w)
        if derivatives:
            df.append(act.df(a_l))
            d2f.append(act.d2f(a_l))
    y = z[-1]
    loss = get_loss(problem.loss)
    if derivatives:
        g_y = problem.scale * loss.grad(y, problem.targets)
        h_y = problem.scale * loss.hess(y, problem.targets)
    else:
        g_y = h_y = empty
    return ForwardPass(a, z, df, d2f, weights, y, g_y, h_y)


def check_point(problem: Problem, fp: ForwardPass | None = None) -> ForwardPass:
    """Raise if the Hessian does not exist here or the values overflowed.

    A relu unit whose net input is exactly at the kink makes ``E`` not twice
    differentiable (not even once); that is reported, never compared.
    """
    if not np.all(np.isfinite(problem.params)):
        raise OverflowReport("the parameters contain NaN or inf")
    fp = forward(problem) if fp is None else fp
    # How far each net input may be from its computed value (hessverify.bounds):
    # within that of a kink, float64 cannot say which side the point is on.
    from hessverify.bounds import chain_length, gamma, net_input_errors

    g = gamma(chain_length(problem))
    for index in range(1, problem.architecture.depth + 1):
        a_l = fp.a[index]
        if not np.all(np.isfinite(a_l)) or not np.all(np.isfinite(fp.z[index])):
            raise OverflowReport(
                f"overflow in layer {index}: net inputs or outputs are not finite "
                f"(largest |a| = {np.nanmax(np.abs(a_l)):.3g})"
            )
    errors = None
    for index, layer in enumerate(problem.architecture.layers, start=1):
        act = get_activation(layer.activation)
        a_l = fp.a[index]
        for kink in act.kinks:
            exact = np.argwhere(a_l == kink)
            if exact.size:
                n, unit = exact[0]
                raise NotDifferentiableError(
                    f"not twice differentiable at this point: {layer.activation} unit {unit} of layer "
                    f"{index} has net input exactly {kink:g} for pattern {n} "
                    f"({len(exact)} such unit-pattern pair(s))"
                )
            errors = net_input_errors(problem, fp) if errors is None else errors
            tol = g * errors[index]
            near = np.argwhere(np.abs(a_l - kink) <= tol)
            if near.size:
                n, unit = near[0]
                raise NotDifferentiableError(
                    f"not twice differentiable at this point, as far as float64 can tell: {layer.activation} "
                    f"unit {unit} of layer {index} has net input {a_l[n, unit]:.3g} for pattern {n}, "
                    f"within its rounding error ({tol[n, unit]:.2g}) of the kink at {kink:g}"
                )
    for name, arr in (("loss gradient", fp.g_y), ("loss Hessian", fp.h_y)):
        if arr.size and not np.all(np.isfinite(arr)):
            raise OverflowReport(f"overflow at the output: the {name} is not finite")
    return fp


def error(problem: Problem, params: FloatArray | None = None) -> float:
    """The error ``E`` at ``params`` (default: the problem's own point)."""
    fp = forward(problem, params, derivatives=False)
    per_pattern = get_loss(problem.loss).value(fp.y, problem.targets)
    return float(problem.scale * np.sum(per_pattern))


def backward_deltas(fp: ForwardPass) -> list[FloatArray]:
    """``delta[l] = dE/da_l`` for every layer, by the first-order backward pass."""
    depth = len(fp.a) - 1
    delta: list[FloatArray] = [np.empty((0,))] * (depth + 1)
    delta[depth] = fp.g_y * fp.df[depth]
    for index in range(depth - 1, 0, -1):
        delta[index] = (delta[index + 1] @ fp.weights[index + 1]) * fp.df[index]
    return delta


def gradient(problem: Problem, params: FloatArray | None = None) -> FloatArray:
    """The gradient of ``E`` in the public order, by backpropagation."""
    theta = problem.params if params is None else params
    fp = forward(problem, theta)
    delta = backward_deltas(fp)
    parts = []
    for blk in problem.architecture.blocks:
        d = delta[blk.layer]
        parts.append((d.T @ layer_input(fp.z, blk.layer)).reshape(-1))
        if blk.bias:
            parts.append(d.sum(axis=0))
    return np.concatenate(parts)
