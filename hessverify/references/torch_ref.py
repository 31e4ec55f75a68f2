"""``torch.func.hessian`` of an independent PyTorch implementation of E (optional).

PyTorch is not a dependency of hessverify: this module is imported only by
the false-alarm measurement (:mod:`hessverify.trust.false_alarms`) and the
benchmarks, where it is an implementation from outside the package.  Like
the autograd reference it reads only names and sizes from the problem and
builds the network from PyTorch's own functions, in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hessverify._typing import FloatArray
from hessverify.model.problem import Problem

__all__ = ["available", "hessian"]


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def hessian(problem: Problem) -> FloatArray:
    import torch
    import torch.nn.functional as F

    def softplus(a: Any) -> Any:
        # Not F.softplus: above its threshold (20) it returns a itself, off by e^-a.  Not
        # torch.logaddexp either: its double backward gives NaN.  This is exact and stable.
        return torch.relu(a) + torch.log1p(torch.exp(-torch.abs(a)))

    acts: dict[str, Any] = {
        "identity": lambda a: a, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softplus": softplus,
        "sin": torch.sin, "gelu": lambda a: F.gelu(a, approximate="none"), "silu": F.silu, "relu": torch.relu,
    }
    x = torch.tensor(problem.inputs, dtype=torch.float64)
    t = torch.tensor(problem.targets, dtype=torch.float64)
    spec = [(layer.units, layer.activation, layer.bias) for layer in problem.architecture.layers]
    sizes = [problem.architecture.inputs] + [u for u, _, _ in spec]
    scale = 1.0 / x.shape[0] if problem.reduction == "mean" else 1.0

    def E(theta: Any) -> Any:
        h, pos = x, 0
        for (units, act, bias), fan_in in zip(spec, sizes[:-1]):
            w = theta[pos:pos + units * fan_in].reshape(units, fan_in)
            pos += units * fan_in
            a = h @ w.T
            if bias:
                a = a + theta[pos:pos + units]
                pos += units
            h = acts[act](a)
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
