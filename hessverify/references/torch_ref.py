"""``torch.func.hessian`` of an independent PyTorch implementation of E (optional).

PyTorch is not a dependency of hessverify: this module is imported only by
the false-alarm measurement (:mod:`hessverify.apps.trust.false_alarms`) and the
benchmarks, where it is an implementation from outside the package.  Like
the autograd reference it reads only names and sizes from the problem and
builds the network from PyTorch's own functions, in float64.

Two functions are written here rather than taken from PyTorch, and why:

* gelu.  PyTorch's exact ``F.gelu`` computes ``x/2 (1 + erf(x/sqrt 2))``,
  which cancels in the left tail: in float64 it is exactly 0 for
  ``x <= -8.37`` and loses relative accuracy from about -5, and so do its
  derivatives.  ``x/2 erfc(-x/sqrt 2)`` is the same function with no
  cancellation.  :func:`hessian` uses that form; ``builtin_gelu=True``
  keeps ``F.gelu``, to show its fault (``cases/outside/``).
* softplus.  ``F.softplus`` returns its input above a threshold of 20 (off
  by ``e^-a``) and ``torch.logaddexp`` has a NaN double backward.  Written as
  ``relu(a) + log1p(exp(-|a|))``, at exactly ``a = 0`` PyTorch takes
  ``relu'(0) = 0`` and ``sgn(0) = 0``, so the derivatives come out 0 instead
  of 1/2 and 1/4.  So it branches on the sign, and each branch is fed an
  argument clamped to its own side: the branch not taken sees 0, never an
  input that would make its value or derivatives inf or NaN (``where``
  multiplies the unused branch's gradient by 0, and ``0 * inf`` is NaN).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.model.problem import Problem

__all__ = ["available", "hessian", "softplus", "stable_gelu"]


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def softplus(a: Any) -> Any:
    """``log(1 + e^a)``: ``a + log1p(e^-a)`` for ``a > 0``, ``log1p(e^a)`` otherwise, each on its own side."""
    import torch

    positive = a > 0
    up = torch.where(positive, a, torch.zeros_like(a))  # the a > 0 branch sees 0 elsewhere
    down = torch.where(positive, torch.zeros_like(a), a)  # and the other branch 0 where a > 0
    return torch.where(positive, up + torch.log1p(torch.exp(-up)), torch.log1p(torch.exp(down)))


def stable_gelu(a: Any) -> Any:
    """``a Phi(a) = a/2 erfc(-a / sqrt 2)``: no cancellation in the left tail (unlike ``1 + erf``)."""
    import torch

    return 0.5 * a * torch.special.erfc(-a / math.sqrt(2.0))


def hessian(problem: Problem, *, builtin_gelu: bool = False) -> FloatArray:
    """The Hessian by ``torch.func.hessian``; ``builtin_gelu`` uses PyTorch's own ``F.gelu`` instead."""
    import torch
    import torch.nn.functional as F

    gelu = (lambda a: F.gelu(a, approximate="none")) if builtin_gelu else stable_gelu
    acts: dict[str, Any] = {
        "identity": lambda a: a, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softplus": softplus,
        "sin": torch.sin, "gelu": gelu, "silu": F.silu, "relu": torch.relu,
    }
    x = torch.tensor(problem.inputs, dtype=torch.float64)
    t = torch.tensor(problem.targets, dtype=torch.float64)
    # (units, activation, bias, sources): a layer reads its sources' outputs side by side (0: the inputs)
    spec = [(layer.units, layer.activation, layer.bias, (i,) if layer.sources is None else tuple(layer.sources))
            for i, layer in enumerate(problem.architecture.layers)]
    scale = 1.0 / x.shape[0] if problem.reduction == "mean" else 1.0

    def E(theta: Any) -> Any:
        outs, pos = [x], 0
        for units, act, bias, sources in spec:
            inp = torch.cat([outs[j] for j in sources], dim=1)
            w = theta[pos:pos + units * inp.shape[1]].reshape(units, inp.shape[1])
            pos += units * inp.shape[1]
            a = inp @ w.T
            if bias:
                a = a + theta[pos:pos + units]
                pos += units
            outs.append(acts[act](a))
        h = outs[-1]
        if problem.loss == "sse":
            e = 0.5 * ((h - t) ** 2).sum()
        elif problem.loss == "cross_entropy":
            e = -(t * torch.log_softmax(h, dim=1)).sum()
        elif problem.loss == "binary_cross_entropy":
            e = (softplus(h) - t * h).sum()
        else:
            e = h.sum()
        return scale * e

    theta = torch.tensor(problem.params, dtype=torch.float64)
    return np.asarray(torch.func.hessian(E)(theta).detach().numpy(), dtype=np.float64)
