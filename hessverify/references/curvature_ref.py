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

from hessverify._typing import FloatArray
from hessverify.model.problem import Problem
from hessverify.references.autograd_ref import _ACT, _loss

__all__ = ["becker_lecun", "fisher", "gauss_newton", "output_function"]


def _layers(problem: Problem) -> list[tuple[int, int, str, bool]]:
    arch = problem.architecture
    sizes = [arch.inputs] + [layer.units for layer in arch.layers]
    return [(layer.units, fan_in, layer.activation, layer.bias) for layer, fan_in in zip(arch.layers, sizes[:-1],
                                                                                          strict=True)]


def _unpack(problem: Problem, theta: Any) -> list[tuple[Any, Any]]:
    """``[(W_l, b_l or None)]`` from the flat vector, by the documented layout: W row-major, then b."""
    out = []
    pos = 0
    for units, fan_in, _, bias in _layers(problem):
        w = anp.reshape(theta[pos:pos + units * fan_in], (units, fan_in))
        pos += units * fan_in
        b = None
        if bias:
            b = theta[pos:pos + units]
            pos += units
        out.append((w, b))
    return out


def output_function(problem: Problem) -> Callable[[Any], Any]:
    """``theta -> y``, the ``(N, K)`` network outputs, in autograd.numpy."""
    x = np.array(problem.inputs, dtype=np.float64)
    acts = [act for _, _, act, _ in _layers(problem)]

    def Y(theta: Any) -> Any:
        h = x
        for (w, b), act in zip(_unpack(problem, theta), acts, strict=True):
            a = anp.dot(h, w.T)
            if b is not None:
                a = a + b
            h = _ACT[act](a)
        return h

    return Y


def _scale(problem: Problem) -> float:
    return 1.0 / problem.inputs.shape[0] if problem.reduction == "mean" else 1.0


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
        H = autograd.hessian(lambda yf: s * _loss(problem.loss, anp.reshape(yf, (n, k)), t))(
            np.reshape(Y(theta), (-1,)))  # (N K, N K), block diagonal over patterns
    return np.asarray(J.T @ H @ J, dtype=np.float64)


def fisher(problem: Problem) -> FloatArray:
    """``s sum_n grad e_n grad e_n^T`` from autograd's Jacobian of the per-pattern errors."""
    theta = np.array(problem.params, dtype=np.float64)
    t = np.array(problem.targets, dtype=np.float64)
    Y = output_function(problem)

    def errors(th: Any) -> Any:
        y = Y(th)
        return anp.stack([_loss(problem.loss, y[i:i + 1], t[i:i + 1]) for i in range(t.shape[0])])

    G = autograd.jacobian(errors)(theta)  # (N, W), row n = grad e_n
    return np.asarray(_scale(problem) * (G.T @ G), dtype=np.float64)


def becker_lecun(problem: Problem, *, with_f2: bool = True) -> FloatArray:
    """The Becker-LeCun diagonal, evaluated literally pattern by pattern and unit by unit."""
    theta = np.array(problem.params, dtype=np.float64)
    x = np.array(problem.inputs, dtype=np.float64)
    t = np.array(problem.targets, dtype=np.float64)
    layers = _layers(problem)
    params = [(np.asarray(w), None if b is None else np.asarray(b)) for w, b in _unpack(problem, theta)]
    s = _scale(problem)
    d1 = {act: autograd.elementwise_grad(_ACT[act]) for _, _, act, _ in layers}
    d2 = {act: autograd.elementwise_grad(autograd.elementwise_grad(_ACT[act])) for _, _, act, _ in layers}
    # a diagonal entry per parameter, as {(layer, unit, input or None for the bias): value}
    acc: dict[tuple[int, int, int | None], float] = {}
    for p in range(x.shape[0]):
        zs, as_ = [x[p]], []
        for (w, b), (_, _, act, _) in zip(params, layers, strict=True):
            a = w @ zs[-1] + (b if b is not None else 0.0)
            as_.append(a)
            zs.append(np.asarray(_ACT[act](a), dtype=np.float64))
        y = zs[-1]
        tp = t[p:p + 1]

        def e(yy: Any, tp: FloatArray = tp) -> Any:
            return s * _loss(problem.loss, anp.reshape(yy, (1, -1)), tp)

        with warnings.catch_warnings():  # the "output" loss is linear in y: autograd warns, rightly returns 0
            warnings.filterwarnings("ignore", "Output seems independent of input")
            g_out, h_out = autograd.grad(e)(y), autograd.hessian(e)(y)
        g = [float(v) for v in g_out]  # dE/dz_l, exact
        qz = [float(h_out[i, i]) for i in range(len(y))]  # d2E/dz_l^2, diagonal approximation
        for l in range(len(layers) - 1, -1, -1):
            units, fan_in, act, _ = layers[l]
            w, b = params[l]
            a = as_[l]
            with warnings.catch_warnings():  # f'' of identity and relu is constant: autograd warns, returns 0
                warnings.filterwarnings("ignore", "Output seems independent of input")
                f1 = np.asarray(d1[act](a), dtype=np.float64)
                f2 = np.asarray(d2[act](a), dtype=np.float64)
            qa = []
            for k in range(units):
                q = f1[k] ** 2 * qz[k] + (f2[k] * g[k] if with_f2 else 0.0)
                qa.append(q)
                for j in range(fan_in):
                    key = (l, k, j)
                    acc[key] = acc.get(key, 0.0) + q * zs[l][j] ** 2
                if b is not None:
                    acc[(l, k, None)] = acc.get((l, k, None), 0.0) + q
            g = [sum(g[k] * f1[k] * w[k, j] for k in range(units)) for j in range(fan_in)]
            qz = [sum(w[k, j] ** 2 * qa[k] for k in range(units)) for j in range(fan_in)]
    out = []
    for l, (units, fan_in, _, bias) in enumerate(layers):
        out += [acc[(l, k, j)] for k in range(units) for j in range(fan_in)]
        if bias:
            out += [acc[(l, k, None)] for k in range(units)]
    return np.array(out, dtype=np.float64)
