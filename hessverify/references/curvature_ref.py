"""Independent references for the curvature approximations, in autograd.numpy.

Each approximation in :mod:`hessverify.methods` is held here to its own
definition, computed a second way that shares nothing with it but the
problem's data:

* :func:`gauss_newton`: ``J^T H_loss J`` with ``J = autograd.jacobian`` of the
  network outputs and ``H_loss = autograd.hessian`` of the reduced loss in
  the outputs (Schraudolph 2002, eq. 6);
* :func:`fisher`: ``s sum_n grad e_n grad e_n^T`` from ``autograd.jacobian``
  of the vector of per-pattern errors;
* :func:`becker_lecun`: the Becker-LeCun recursion evaluated literally,
  one pattern and one unit at a time in Python floats, with ``f'`` and ``f''``
  from ``autograd.elementwise_grad`` rather than the activation table.

The network is written again from the case schema, as in
:mod:`hessverify.references.autograd_ref`, whose activation and loss
functions (themselves written without :mod:`hessverify.model`) are reused.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import autograd
import autograd.numpy as anp
import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.model.problem import Problem
from hessverify.references.autograd_ref import _ACT, _delta, _loss, _scale, kinds_output_function

__all__ = ["becker_lecun", "fisher", "gauss_newton", "output_function"]


def _layers(problem: Problem) -> list[tuple[int, int, str, bool, tuple[int, ...]]]:
    """``(units, fan_in, activation, bias, sources)`` per layer; a layer reads its sources side by side (0: x)."""
    arch = problem.architecture
    sizes = [arch.inputs] + [layer.units for layer in arch.layers]
    out = []
    for i, layer in enumerate(arch.layers):
        sources = (i,) if layer.sources is None else tuple(layer.sources)
        out.append((layer.units, sum(sizes[j] for j in sources), layer.activation, layer.bias, sources))
    return out


def _unpack(problem: Problem, theta: Any) -> list[tuple[Any, Any]]:
    """``[(W_l, b_l or None)]`` from the flat vector, by the documented layout: W row-major, then b."""
    out = []
    pos = 0
    for units, fan_in, _, bias, _ in _layers(problem):
        w = anp.reshape(theta[pos:pos + units * fan_in], (units, fan_in))
        pos += units * fan_in
        b = None
        if bias:
            b = theta[pos:pos + units]
            pos += units
        out.append((w, b))
    return out


def output_function(problem: Problem) -> Callable[[Any], Any]:
    """``theta -> y``, the ``(N, K)`` network outputs, in autograd.numpy (any layer kinds; a batch-norm layer in
    training mode couples the patterns, and so every pattern's output is a function of the whole batch)."""
    if not problem.architecture.is_dense:
        return kinds_output_function(problem)
    x = np.array(problem.inputs, dtype=np.float64)
    layers = _layers(problem)

    def Y(theta: Any) -> Any:
        outs = [x]
        for (w, b), (_, _, act, _, sources) in zip(_unpack(problem, theta), layers, strict=True):
            a = anp.dot(anp.concatenate([outs[j] for j in sources], axis=1), w.T)
            if b is not None:
                a = a + b
            outs.append(_ACT[act](a))
        return outs[-1]

    return Y


def gauss_newton(problem: Problem) -> FloatArray:
    """``J^T H_loss J`` with both factors from autograd."""
    theta = np.array(problem.params, dtype=np.float64)
    t = np.array(problem.targets, dtype=np.float64)
    n, k = t.shape
    Y = output_function(problem)
    J = autograd.jacobian(lambda th: anp.reshape(Y(th), (-1,)))(theta)  # (N K, W)
    s = _scale(problem)
    with warnings.catch_warnings():  # the "output" loss is linear in y: autograd warns, rightly returns 0
        warnings.filterwarnings("ignore", "Output seems independent of input")
        H = autograd.hessian(lambda yf: s * _loss(str(problem.loss), anp.reshape(yf, (n, k)), t, _delta(problem)))(
            np.reshape(Y(theta), (-1,)))  # (N K, N K), block diagonal over patterns
    return np.asarray(J.T @ H @ J, dtype=np.float64)


def fisher(problem: Problem) -> FloatArray:
    """``s sum_n grad e_n grad e_n^T`` from autograd's Jacobian of the per-pattern errors."""
    theta = np.array(problem.params, dtype=np.float64)
    t = np.array(problem.targets, dtype=np.float64)
    Y = output_function(problem)

    def errors(th: Any) -> Any:
        y = Y(th)
        return anp.stack([_loss(str(problem.loss), y[i:i + 1], t[i:i + 1], _delta(problem)) for i in range(t.shape[0])])

    G = autograd.jacobian(errors)(theta)  # (N, W), row n = grad e_n
    return np.asarray(_scale(problem) * (G.T @ G), dtype=np.float64)


def becker_lecun(problem: Problem, *, with_f2: bool = True) -> FloatArray:
    """The Becker-LeCun diagonal, evaluated literally pattern by pattern and unit by unit.

    Every unit is a node of the graph: its ``g`` and its diagonal ``q`` collect,
    one weight at a time, from every unit it feeds (LeCun, Denker, Solla 1990, eq. 7-8).
    """
    theta = np.array(problem.params, dtype=np.float64)
    x = np.array(problem.inputs, dtype=np.float64)
    t = np.array(problem.targets, dtype=np.float64)
    layers = _layers(problem)
    params = [(np.asarray(w), None if b is None else np.asarray(b)) for w, b in _unpack(problem, theta)]
    s = _scale(problem)
    d1 = {act: autograd.elementwise_grad(_ACT[act]) for _, _, act, _, _ in layers}
    d2 = {act: autograd.elementwise_grad(autograd.elementwise_grad(_ACT[act])) for _, _, act, _, _ in layers}
    # the units a layer reads, in its input order: (source layer, unit) per column (0: the inputs)
    columns = [[(j, i) for j in sources for i in range(x.shape[1] if j == 0 else layers[j - 1][0])]
               for _, _, _, _, sources in layers]
    # a diagonal entry per parameter, as {(layer, unit, input or None for the bias): value}
    acc: dict[tuple[int, int, int | None], float] = {}
    for p in range(x.shape[0]):
        zs, as_ = [x[p]], []
        for (w, b), (_, _, act, _, sources) in zip(params, layers, strict=True):
            a = w @ np.concatenate([zs[j] for j in sources]) + (b if b is not None else 0.0)
            as_.append(a)
            zs.append(np.asarray(_ACT[act](a), dtype=np.float64))
        y = zs[-1]
        tp = t[p:p + 1]

        def e(yy: Any, tp: FloatArray = tp) -> Any:
            return s * _loss(str(problem.loss), anp.reshape(yy, (1, -1)), tp, _delta(problem))

        with warnings.catch_warnings():  # the "output" loss is linear in y: autograd warns, rightly returns 0
            warnings.filterwarnings("ignore", "Output seems independent of input")
            g_out, h_out = autograd.grad(e)(y), autograd.hessian(e)(y)
        # dE/dz and the diagonal d2E/dz^2 of every unit, collected from the units it feeds
        g = {(len(layers), i): float(v) for i, v in enumerate(g_out)}
        qz = {(len(layers), i): float(h_out[i, i]) for i in range(len(y))}
        for l in range(len(layers) - 1, -1, -1):
            units, fan_in, act, _, _ = layers[l]
            w, b = params[l]
            a = as_[l]
            with warnings.catch_warnings():  # f'' of identity and relu is constant: autograd warns, returns 0
                warnings.filterwarnings("ignore", "Output seems independent of input")
                f1 = np.asarray(d1[act](a), dtype=np.float64)
                f2 = np.asarray(d2[act](a), dtype=np.float64)
            xin = np.concatenate([zs[j] for j in layers[l][4]])
            for k in range(units):
                gk, qzk = g.get((l + 1, k), 0.0), qz.get((l + 1, k), 0.0)  # 0: a unit that feeds nothing
                q = f1[k] ** 2 * qzk + (f2[k] * gk if with_f2 else 0.0)
                for j in range(fan_in):
                    key = (l, k, j)
                    acc[key] = acc.get(key, 0.0) + q * xin[j] ** 2
                    src = columns[l][j]
                    g[src] = g.get(src, 0.0) + gk * f1[k] * w[k, j]
                    qz[src] = qz.get(src, 0.0) + w[k, j] ** 2 * q
                if b is not None:
                    acc[(l, k, None)] = acc.get((l, k, None), 0.0) + q
    out = []
    for l, (units, fan_in, _, bias, _) in enumerate(layers):
        out += [acc[(l, k, j)] for k in range(units) for j in range(fan_in)]
        if bias:
            out += [acc[(l, k, None)] for k in range(units)]
    return np.array(out, dtype=np.float64)
