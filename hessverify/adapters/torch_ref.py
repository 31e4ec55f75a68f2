"""``torch.func.hessian`` of the PyTorch model of a problem: an implementation from outside the package.

PyTorch is not a dependency of hessverify: this module is used by the false-alarm measurement
(:mod:`hessverify.apps.trust.false_alarms`) and the benchmarks, where it is an implementation written
apart from hessverify's own, and it imports PyTorch only when :func:`hessian` is called.  The network is
PyTorch's own modules and the loss PyTorch operations, from the one PyTorch table
(:mod:`hessverify.adapters.torch_table`, shared with the adapter and the conformance rows), in float64.

The table writes two functions rather than taking PyTorch's (its module text says why): softplus branches on
the sign, and gelu is ``a/2 erfc(-a/sqrt 2)``.  ``hessian(..., builtin_gelu=True)`` keeps PyTorch's own
``F.gelu`` instead, to show its fault (``cases/outside/``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.model.problem import Problem

__all__ = ["available", "hessian", "softplus", "stable_gelu", "writes"]


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def softplus(a: Any) -> Any:
    """The table's softplus (:func:`hessverify.adapters.torch_table.softplus`)."""
    from hessverify.adapters.torch_table import softplus as table_softplus

    return table_softplus(a)


def stable_gelu(a: Any) -> Any:
    """The table's gelu, ``a/2 erfc(-a / sqrt 2)`` (:func:`hessverify.adapters.torch_table.stable_gelu`)."""
    from hessverify.adapters.torch_table import stable_gelu as table_gelu

    return table_gelu(a)


def writes(problem: Problem) -> bool:
    """Whether PyTorch's table has a row for every activation, loss and layer kind of ``problem``
    (:mod:`hessverify.adapters.rows`: a new activation need not have one)."""
    from hessverify.adapters.torch_table import require
    from hessverify.errors import UnsupportedModel

    try:
        require(problem)
    except UnsupportedModel:
        return False
    return True


def hessian(problem: Problem, *, builtin_gelu: bool = False) -> FloatArray:
    """The Hessian by ``torch.func.hessian``; ``builtin_gelu`` uses PyTorch's own ``F.gelu`` instead.

    .. math:: E(\\theta) = s \\sum_n e(y_n(\\theta), t_n)
    """
    import torch

    from hessverify.adapters.torch_table import LOSSES, outputs

    y, _ = outputs(problem, torch.float64, builtin={"gelu"} if builtin_gelu else False)
    t = torch.as_tensor(problem.targets, dtype=torch.float64)
    per_pattern, scale, options = LOSSES[str(problem.loss)].per_pattern, problem.scale, dict(problem.loss_options)

    def E(theta: Any) -> Any:
        return scale * per_pattern(y(theta), t, **options).sum()

    theta = torch.tensor(problem.params, dtype=torch.float64)
    return np.asarray(torch.func.hessian(E)(theta).detach().numpy(), dtype=np.float64)
