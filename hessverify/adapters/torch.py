"""PyTorch adapter: a problem as PyTorch objects, and checking curvature code written in PyTorch.

Installed with ``pip install 'hessverify[torch]'`` (``torch==2.13.0``) and
imported only when used: ``import hessverify`` never imports PyTorch, and
``hessverify.adapters.torch`` is loaded on first access.

* :func:`loss`: ``E`` as a function of the flat parameter tensor in the
  public order (``problem.param_names``: ``W1[0,0], ..., b1[0], W2[0,0], ...``,
  see docs/cases.md);
* :func:`to_module`: an ``nn.Module`` whose parameters are one ``nn.Linear``
  per layer, ``layers.0.weight`` (``W1``, shape ``(units, fan_in)``, the same
  row-major layout as the public one), ``layers.0.bias`` (``b1``), ...; its
  ``param_map`` attribute maps each public tensor name to the module's
  parameter name (``{"W1": "layers.0.weight", "b1": "layers.0.bias", ...}``),
  and ``module.parameters()`` comes in the public order, so
  ``torch.cat([p.reshape(-1) for p in module.parameters()])`` is the flat vector;
* :func:`loss_fn`: ``E`` from the outputs and targets, with the reduction;
* :func:`to_case`: all of these for one problem, as a :class:`TorchCase`;
* :func:`check_model`: hold a user's PyTorch curvature code (full Hessian,
  Hessian-vector product, diagonal, layer blocks, Gauss-Newton matrix) to
  hessverify's references, on problems, case files or Hypothesis strategies,
  the way ``torch.autograd.gradgradcheck`` is called;
* :func:`import_module`: the user's own ``nn.Module`` and loss as a problem
  (:mod:`hessverify.adapters.torch_import`);
* :func:`check_module`: hold the user's curvature code for the user's own
  model to references (:mod:`hessverify.adapters.torch_check`): through the
  import where it imports, else by references from the model's own forward;
* :func:`check_hvp`: matrix-free, hold a user's ``H v`` to independent HVPs on
  random and per-layer probes (:mod:`hessverify.adapters.torch_hvp`);
* :func:`cases`: Hypothesis problems (:func:`hessverify.checking.strategies.problems`)
  converted to :class:`TorchCase`.

The functions are written in PyTorch's own operations, sharing nothing with
hessverify's NumPy forward pass, and they stay accurate where PyTorch's
built-ins do not: ``softplus`` branches on the sign (``F.softplus`` returns
its input above 20, off by ``e^-a``) and gelu is ``a/2 erfc(-a / sqrt 2)``
(``F.gelu``'s ``1 + erf`` cancels in the left tail); see
:mod:`hessverify.references.torch_ref`, whose two functions are used here.

Examples
--------
>>> import torch
>>> import hessverify
>>> import hessverify.adapters.torch as hvt
>>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
>>> H = torch.func.hessian(hvt.loss(case))(torch.tensor(case.params))
>>> H.shape
torch.Size([9, 9])
>>> hvt.to_module(case).param_map["W2"]
'layers.1.weight'
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import torch as _torch  # the PyTorch package (absolute import), not this module
except ImportError as exc:  # one line that says what to install
    raise ImportError("hessverify.adapters.torch needs PyTorch: pip install 'hessverify[torch]' (torch==2.13.0)") from exc

from hessverify.adapters.torch_check import ModuleCheckResult, check_module
from hessverify.adapters.torch_hvp import HvpCheckResult, check_hvp
from hessverify.adapters.torch_import import import_module
from hessverify.checking.check import DEFAULT_AGAINST, RETURNS, CheckResult, check
from hessverify.checking.sandbox import DEFAULT_TIMEOUT
from hessverify.errors import FunctionUnderTestError, UsageError
from hessverify.model.problem import Problem
from hessverify.references.torch_ref import softplus, stable_gelu

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "RETURNS",
    "TorchCase",
    "cases",
    "ModuleCheckResult",
    "HvpCheckResult",
    "check_hvp",
    "check_model",
    "check_module",
    "import_module",
    "loss",
    "loss_fn",
    "to_case",
    "to_module",
]

Tensor = _torch.Tensor


def _silu(a: Tensor) -> Tensor:
    return a * _torch.sigmoid(a)


def _identity(a: Tensor) -> Tensor:
    return a


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": _identity,
    "sigmoid": _torch.sigmoid,
    "tanh": _torch.tanh,
    "softplus": softplus,  # branch on the sign: accurate in both tails, finite double backward
    "sin": _torch.sin,
    "gelu": stable_gelu,  # a/2 erfc(-a/sqrt 2): no cancellation in the left tail
    "silu": _silu,
    "relu": _torch.relu,
}
"""Every activation of the case schema, in PyTorch operations (docs/cases.md)."""


def _sse(y: Tensor, t: Tensor) -> Tensor:
    return 0.5 * ((y - t) ** 2).sum(-1)  # the 1/2 that nn.MSELoss does not have


def _cross_entropy(y: Tensor, t: Tensor) -> Tensor:
    return -(t * _torch.log_softmax(y, dim=-1)).sum(-1)  # soft targets, need not sum to one


def _binary_cross_entropy(y: Tensor, t: Tensor) -> Tensor:
    return (softplus(y) - t * y).sum(-1)  # on logits: log(1 + e^y) - t y


def _output(y: Tensor, t: Tensor) -> Tensor:
    return y.sum(-1)


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "sse": _sse,
    "cross_entropy": _cross_entropy,
    "binary_cross_entropy": _binary_cross_entropy,
    "output": _output,
}
"""Per-pattern error ``e(y, t) -> (N,)`` of every loss of the case schema."""



def _dtype(dtype: Any) -> Any:
    if dtype not in (_torch.float64, _torch.float32, _torch.float16, _torch.bfloat16):
        raise UsageError(f"dtype={dtype!r}: choose torch.float64, torch.float32, torch.float16 or torch.bfloat16")
    return dtype


def loss_fn(problem: Problem) -> Callable[[Tensor, Tensor], Tensor]:
    """``E(outputs, targets)``: the problem's loss summed (``sum``) or averaged (``mean``) over patterns."""
    per_pattern = LOSSES[problem.loss]
    mean = problem.reduction == "mean"

    def E(outputs: Tensor, targets: Tensor) -> Tensor:
        e = per_pattern(outputs, targets)
        return e.mean() if mean else e.sum()

    return E


def _forward(problem: Problem, theta: Tensor, x: Tensor) -> Tensor:
    """The network's outputs with its parameters read from the flat vector in the public order."""
    arch = problem.architecture
    outs = [x]
    for blk, layer in zip(arch.blocks, arch.layers):
        h = _torch.cat([outs[j] for j in arch.parents(blk.layer)], dim=-1)  # the sources side by side
        w = theta[blk.w_slice].reshape(blk.units, blk.fan_in)
        a = h @ w.T
        if blk.bias:
            a = a + theta[blk.b_slice]
        outs.append(ACTIVATIONS[layer.activation](a))
    return outs[-1]


def loss(problem: Problem, *, dtype: Any = _torch.float64) -> Callable[[Tensor], Tensor]:
    """``E(theta)``: the error as a function of the flat parameter tensor in the public order.

    The data are fixed as tensors of ``dtype``; ``theta`` should have the same
    dtype and shape ``(problem.n_params,)``.

    .. math::

       E(\\theta) = s \\sum_n e(y_n(\\theta), t_n), \\qquad s = 1 \\text{ (sum) or } 1/N \\text{ (mean)}

    Examples
    --------
    >>> import torch, hessverify
    >>> case = hessverify.load_case("cases/linear-3-2-2.toml")
    >>> E = loss(case)
    >>> abs(E(torch.tensor(case.params)).item() - hessverify.error(case)) <= 1e-12 * abs(hessverify.error(case))
    True
    """
    dtype = _dtype(dtype)
    x = _torch.as_tensor(problem.inputs, dtype=dtype)
    t = _torch.as_tensor(problem.targets, dtype=dtype)
    reduce = loss_fn(problem)

    def E(theta: Tensor) -> Tensor:
        return reduce(_forward(problem, theta, x), t)

    return E


class _Network(_torch.nn.Module):
    """One ``nn.Linear`` a layer and the case's activation after it."""

    def __init__(self, problem: Problem, dtype: Any) -> None:
        super().__init__()
        arch = problem.architecture
        self.activations = [layer.activation for layer in arch.layers]
        self.sources = [arch.parents(l) for l in arch.bottom_up]  # what each layer reads (0: the inputs)
        self.layers = _torch.nn.ModuleList(
            _torch.nn.Linear(blk.fan_in, blk.units, bias=blk.bias, dtype=dtype) for blk in arch.blocks)
        self.param_map: dict[str, str] = {}
        with _torch.no_grad():
            for i, (blk, linear) in enumerate(zip(arch.blocks, self.layers)):
                linear.weight.copy_(_torch.as_tensor(problem.params[blk.w_slice].reshape(blk.units, blk.fan_in)))
                self.param_map[f"W{blk.layer}"] = f"layers.{i}.weight"
                if blk.bias:
                    linear.bias.copy_(_torch.as_tensor(problem.params[blk.b_slice]))
                    self.param_map[f"b{blk.layer}"] = f"layers.{i}.bias"

    def forward(self, x: Tensor) -> Tensor:
        outs = [x]
        for linear, act, src in zip(self.layers, self.activations, self.sources):
            h = _torch.cat([outs[j] for j in src], dim=-1)  # skip connections: the sources side by side
            outs.append(ACTIVATIONS[act](linear(h)))
        return outs[-1]


def to_module(problem: Problem, *, dtype: Any = _torch.float64) -> _torch.nn.Module:
    """The problem's network as an ``nn.Module`` at the problem's parameters.

    Its parameters are ``layers.{l-1}.weight`` (public ``W{l}``, shape
    ``(units, fan_in)``) and ``layers.{l-1}.bias`` (public ``b{l}``; absent for
    a layer without bias), in the public order.  ``module.param_map`` maps
    each public tensor name to the module's parameter name.

    Examples
    --------
    >>> import hessverify
    >>> net = to_module(hessverify.load_case("cases/nobias-2-3-2-tanh-sigmoid.toml"))
    >>> net.param_map
    {'W1': 'layers.0.weight', 'W2': 'layers.1.weight', 'b2': 'layers.1.bias'}
    """
    return _Network(problem, _dtype(dtype))


@dataclass
class TorchCase:
    """One problem as PyTorch objects, what :func:`check_model` hands to the function under test.

    Attributes
    ----------
    problem:
        The :class:`~hessverify.problem.Problem` itself.
    module:
        :func:`to_module` (an ``nn.Module``; ``module.param_map`` names its parameters).
    inputs, targets:
        ``(N, inputs)`` and ``(N, outputs)`` tensors.
    loss_fn:
        :func:`loss_fn`: ``E = loss_fn(module(inputs), targets)``.
    loss:
        :func:`loss`: ``E(theta)`` of the flat parameter tensor.
    params:
        The flat parameter tensor in the public order (``param_names``).
    """

    problem: Problem
    module: _torch.nn.Module
    inputs: Tensor
    targets: Tensor
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    loss: Callable[[Tensor], Tensor]
    params: Tensor

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.problem.param_names

    @property
    def param_map(self) -> dict[str, str]:
        return dict(self.module.param_map)

    def E(self) -> Tensor:
        """The error at the module's current parameters."""
        return self.loss_fn(self.module(self.inputs), self.targets)


def to_case(problem: Problem, *, dtype: Any = _torch.float64) -> TorchCase:
    """Every PyTorch object of one problem (:class:`TorchCase`)."""
    dtype = _dtype(dtype)
    return TorchCase(problem, to_module(problem, dtype=dtype), _torch.as_tensor(problem.inputs, dtype=dtype),
                     _torch.as_tensor(problem.targets, dtype=dtype), loss_fn(problem), loss(problem, dtype=dtype),
                     _torch.as_tensor(problem.params, dtype=dtype))


def cases(*, dtype: Any = _torch.float64, **kwargs: Any) -> Any:
    """A Hypothesis strategy of :class:`TorchCase`: :func:`hessverify.checking.strategies.problems` (same keywords) mapped."""
    from hessverify.checking.strategies import problems

    return problems(**{"kinds": False, **kwargs}).map(lambda p: to_case(p, dtype=dtype))


def _to_numpy(value: Any, problem: Problem) -> Any:
    """A tensor (or a list of them, for blocks) as NumPy; anything else is passed on for check() to judge."""
    if isinstance(value, Tensor):
        if value.is_complex():
            return value.detach().cpu().numpy()
        return value.detach().cpu().to(_torch.float64).numpy()
    if isinstance(value, (list, tuple)):
        return [_to_numpy(v, problem) for v in value]
    return value


def check_model(
    fn: Callable[..., Any],
    problems: Problem | Iterable[Problem] | Any,
    *,
    returns: str = "hessian",
    against: Sequence[str] = DEFAULT_AGAINST,
    dtype: Any = _torch.float64,
    max_examples: int = 100,
    seed: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    precision: Any = None,
) -> CheckResult:
    """Hold PyTorch curvature code to hessverify's references, as ``gradgradcheck`` is called.

    Parameters
    ----------
    fn:
        The code under test.  It receives a :class:`TorchCase` (module,
        inputs, targets, loss function, ``E(theta)``, flat parameters) and
        returns a tensor; by ``returns``:

        * ``"hessian"``: ``fn(case) -> (W, W)``, rows and columns in the public order;
        * ``"hvp"``: ``fn(case, v) -> (W,)``, ``H v`` for a tensor ``v`` of shape ``(W,)``;
        * ``"diagonal"``: ``fn(case) -> (W,)``;
        * ``"blocks"``: ``fn(case) -> [B_1, B_2, ...]``, the per-layer diagonal
          blocks (layer ``l``'s ``W`` then ``b``, as in the public order);
        * ``"ggn"``: ``fn(case) -> (W, W)``, the generalised Gauss-Newton
          matrix ``J^T H_loss J`` (with the reduction's ``1/N`` for ``mean``).
    problems:
        A :class:`~hessverify.problem.Problem`, an iterable of them, or a
        Hypothesis strategy (:func:`hessverify.checking.strategies.problems`); a
        failure on a strategy is shrunk to a minimal problem.
    against:
        References (default: backprop, autograd, fd; for ``"ggn"``:
        ``gauss_newton`` and its independent autograd reference).
    dtype:
        The tensors' dtype (float64 by default); the result is judged by
        that format's rounding (:func:`hessverify.checking.check.check_problem`).
    precision:
        Judge at this format instead (``"float32"``, ...; default: ``dtype``'s).
    max_examples, seed, timeout:
        As in :func:`hessverify.checking.check`.

    Returns
    -------
    CheckResult
        Truthy when everything passed; ``summary()`` names the worst entry
        by parameter names, both values and the bound.

    Examples
    --------
    >>> import torch, hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> check_model(lambda c: torch.func.hessian(c.loss)(c.params), case).passed
    True
    """
    if returns not in RETURNS:
        raise UsageError(f"returns={returns!r}: choose one of {', '.join(RETURNS)}")
    dtype = _dtype(dtype)

    @functools.wraps(fn)  # __wrapped__: a fault is reported in the user's own frames
    def under_test(problem: Problem, *vectors: Any) -> Any:
        case = to_case(problem, dtype=dtype)
        args = [_torch.as_tensor(v, dtype=dtype) for v in vectors]
        out = fn(case, *args)
        if out is not None and not isinstance(out, (Tensor, list, tuple, np.ndarray)):
            raise FunctionUnderTestError(f"fn returned a {type(out).__name__}, expected a torch.Tensor", problem=problem)
        return _to_numpy(out, problem)

    if precision is None:  # judged at the format it computes in, however the tensors reach NumPy
        precision = str(dtype).replace("torch.", "")
    return check(under_test, problems, against=against, returns=returns,  # type: ignore[arg-type]
                 max_examples=max_examples, seed=seed, timeout=timeout, precision=precision)

