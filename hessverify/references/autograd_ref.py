"""``autograd``: ``autograd.hessian`` of an independent implementation of E.

This module writes the network, the activations, the losses and the
unpacking of the flat parameter vector again, in ``autograd.numpy``, from the
definitions in the case schema and not by calling anything in
:mod:`hessverify.model`.  A bug in the shared forward pass therefore cannot
cancel itself out of a comparison between ``backprop`` and ``autograd``.
Only the *names* of things (activation and loss strings, the architecture's
sizes) are read from the problem.

Maclaurin, Duvenaud, Adams (2015). Autograd: effortless gradients in numpy.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from hessverify.base.lazy import lazy
from hessverify.base.typing import FloatArray
from hessverify.engine.components import BoundKind, Component, Cost, Role, Tolerance
from hessverify.engine.forms import FullHessian
from hessverify.engine.point import Point, as_problem
from hessverify.model.problem import Problem

# imported on first use (the registry reads this module).  Not autograd.scipy: importing any part of
# it runs its package's __init__, which imports scipy.stats (0.7 s) for the two functions written below.
autograd = lazy("autograd")
anp = lazy("autograd.numpy")


@lru_cache(maxsize=1)
def _erf() -> Callable[[Any], Any]:
    """``erf`` as an autograd primitive: SciPy's values, derivative ``2 / sqrt(pi) exp(-x^2)`` in autograd.numpy.

    The derivative is written with differentiable operations, so autograd
    differentiates it again for the Hessian.
    """
    from autograd.extend import defvjp, primitive
    from scipy.special import erf as scipy_erf

    f = primitive(scipy_erf)
    defvjp(f, lambda ans, x: lambda g: g * (2.0 / np.sqrt(np.pi)) * anp.exp(-(x**2)))
    return f


def erf(x: Any) -> Any:
    return _erf()(x)


def logsumexp(x: Any, axis: int) -> Any:
    """``log sum_i exp(x_i)`` along ``axis`` (kept), shifted by the maximum, which is held constant.

    The shift cancels in exact arithmetic, so it is taken from the values
    (``getval``) and not differentiated: the derivatives are those of the
    definition.
    """
    from autograd.tracer import getval

    m = np.max(getval(x), axis=axis, keepdims=True)
    return m + anp.log(anp.sum(anp.exp(x - m), axis=axis, keepdims=True))

__all__ = ["error_function", "hessian", "gradient"]


def _sigmoid(a: Any) -> Any:
    return 0.5 * (anp.tanh(0.5 * a) + 1.0)


def _softplus(a: Any) -> Any:
    return anp.logaddexp(0.0, a)


_ACT: dict[str, Callable[[Any], Any]] = {
    "identity": lambda a: a,
    "sigmoid": _sigmoid,
    "tanh": lambda a: anp.tanh(a),
    "softplus": _softplus,
    "sin": lambda a: anp.sin(a),
    "gelu": lambda a: 0.5 * a * (1.0 + erf(a / anp.sqrt(2.0))),
    "silu": lambda a: a * _sigmoid(a),
    "relu": lambda a: anp.maximum(a, 0.0),
}


def _loss(name: str, y: Any, t: FloatArray, delta: float = 1.0) -> Any:
    """Per-pattern error summed over patterns (the reduction is applied outside)."""
    if name == "mse":  # nn.MSELoss: squared residuals, no 1/2
        return anp.sum((y - t) ** 2)
    if name == "huber":  # nn.HuberLoss(delta): quadratic inside |r| <= delta, linear outside
        r = y - t
        quadratic = anp.abs(r) <= delta
        return anp.sum(anp.where(quadratic, 0.5 * r**2, delta * (anp.abs(r) - 0.5 * delta)))
    if name == "sse":
        return 0.5 * anp.sum((y - t) ** 2)
    if name == "cross_entropy":
        return -anp.sum(t * (y - logsumexp(y, axis=1)))
    if name == "binary_cross_entropy":
        return anp.sum(_softplus(y) - t * y)
    if name == "output":
        return anp.sum(y)
    raise KeyError(f"autograd reference has no loss {name!r}")


def _scale(problem: Problem) -> float:
    """The reduction's factor, written out: the mean is over patterns, or over every output for mse and huber
    (PyTorch's element-wise means)."""
    if problem.reduction != "mean":
        return 1.0
    n, k = np.shape(problem.targets)
    return 1.0 / (n * k) if problem.loss in ("mse", "huber") else 1.0 / n


def _delta(problem: Problem) -> float:
    return float(dict(problem.loss_options).get("delta", 1.0))


def _graph(problem: Problem) -> list[tuple[int, str, bool, tuple[int, ...]]]:
    """``(units, activation, bias, sources)`` per layer, read from the case's layers (``from``; default: the previous)."""
    return [(layer.units, layer.activation, layer.bias, (i,) if layer.sources is None else tuple(layer.sources))
            for i, layer in enumerate(problem.architecture.layers)]


def error_function(problem: Problem) -> Callable[[Any], Any]:
    """``E(theta)`` for this problem's network, data and loss, in autograd.numpy.

    A layer's input is the outputs of its sources (``outs[0]`` the inputs)
    side by side, in the listed order; ``W`` row-major, then ``b``.
    """
    if not problem.architecture.is_dense:
        return _kinds_error_function(problem)
    graph = _graph(problem)
    x = np.array(problem.inputs, dtype=np.float64)
    t = np.array(problem.targets, dtype=np.float64)
    scale = _scale(problem)
    loss = problem.loss
    delta = _delta(problem)

    def E(theta: Any) -> Any:
        outs = [x]
        pos = 0
        for units, act, bias, sources in graph:
            h = outs[sources[0]] if len(sources) == 1 else anp.concatenate([outs[j] for j in sources], axis=1)
            fan_in = sum(outs[j].shape[1] for j in sources)
            w = anp.reshape(theta[pos:pos + units * fan_in], (units, fan_in))
            pos += units * fan_in
            a = anp.dot(h, w.T)
            if bias:
                a = a + theta[pos:pos + units]
                pos += units
            outs.append(_ACT[act](a))
        return scale * _loss(loss, outs[-1], t, delta)

    return E


def kinds_output_function(problem: Problem) -> Callable[[Any], Any]:
    """``theta -> y``, the ``(N, K)`` outputs of a network of any layer kinds: each layer's array form
    (``LayerKind.xp``, written apart from the primitives the methods differentiate) in autograd.numpy, its
    activation from the table above."""
    arch = problem.architecture
    n = problem.n_patterns
    x = np.array(problem.inputs, dtype=np.float64).reshape((n,) + arch.shape)
    spans = [[(t.offset, t.size, t.shape) for t in arch.layer_tensors(l)] for l in range(1, arch.depth + 1)]

    def Y(theta: Any) -> Any:
        outs = [x]
        for index, (layer, tensors) in enumerate(zip(arch.layers, spans), start=1):
            sources = (index - 1,) if layer.sources is None else layer.sources
            ps = [anp.reshape(theta[offset:offset + size], shape) for offset, size, shape in tensors]
            y = layer.kind_def.xp(anp, layer.opts, [outs[j] for j in sources], ps)
            outs.append(_ACT[layer.activation](y))
        return anp.reshape(outs[-1], (n, -1))

    return Y


def _kinds_error_function(problem: Problem) -> Callable[[Any], Any]:
    """``E(theta)`` of a network of any layer kinds (:func:`kinds_output_function`)."""
    t = np.array(problem.targets, dtype=np.float64)
    scale = _scale(problem)
    delta = _delta(problem)
    Y = kinds_output_function(problem)

    def E(theta: Any) -> Any:
        return scale * _loss(str(problem.loss), Y(theta), t, delta)

    return E


def _quietly(op: Callable[[Callable[[Any], Any]], Callable[[Any], Any]], problem: Problem) -> FloatArray:
    # Overflow in a saturated unit (cosh -> inf, so 1/cosh^2 -> 0) is correct here, and
    # "output seems independent of input" is correct for a zero Hessian: neither is news.
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        warnings.simplefilter("ignore")
        return np.asarray(op(error_function(problem))(np.array(problem.params, dtype=np.float64)), dtype=np.float64)


def gradient(problem: Problem | Point) -> FloatArray:
    return _quietly(autograd.grad, as_problem(problem))


def hessian(problem: Problem | Point) -> FloatArray:
    """``autograd.hessian`` (a jacobian of a jacobian) of the independent E."""
    return _quietly(autograd.hessian, as_problem(problem))


COMPONENT = Component(
    "autograd", hessian, Role.REFERENCE, FullHessian,
    "autograd.hessian of an independent autograd.numpy implementation",
    tolerance=Tolerance(BoundKind.ROUNDING,
                        "both exact in float64: each within gamma_k * M of the truth, so they differ by at most "
                        "2 gamma_k M entrywise (M: magnitudes of the terms summed; hessverify.engine.bounds)"),
    cost=Cost(memory=(2.5, 2.0), seconds=(3e-9, 6e-3), per_layer=2.5e-3, passes="column"),
    rank=110,
)
