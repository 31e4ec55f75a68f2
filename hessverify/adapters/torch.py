"""PyTorch adapter: a problem as PyTorch objects, and checking curvature code written in PyTorch.

Installed with ``pip install 'hessverify[torch]'`` (``torch==2.13.0``) and
imported only when used: ``import hessverify`` never imports PyTorch, and
``hessverify.adapters.torch`` is loaded on first access.

* :func:`loss`: ``E`` as a function of the flat parameter tensor in the
  public order (``problem.param_names``: ``W1[0,0], ..., b1[0], W2[0,0], ...``,
  see docs/cases.md);
* :func:`to_module`: an ``nn.Module`` holding, for each layer, the PyTorch module
  its kind is exactly (``nn.Linear`` for a dense layer, ``nn.Conv1d``,
  ``nn.LayerNorm``, ``nn.MultiheadAttention``, ...: the table of
  :mod:`hessverify.adapters.torch_table`), ``layers.0.weight`` (``W1``, shape
  ``(units, fan_in)``, the same row-major layout as the public one),
  ``layers.0.bias`` (``b1``), ...; its ``param_map`` attribute maps each public
  tensor name to the module's parameter name (``{"W1": "layers.0.weight",
  "b1": "layers.0.bias", "Win2": "layers.1.in_proj_weight", ...}``), and
  ``module.parameters()`` comes in the public order, so
  ``torch.cat([p.reshape(-1) for p in module.parameters()])`` is the flat vector;
  it takes the inputs in the network's input shape, ``(N, *input_shape)``;
* :func:`loss_fn`: ``E`` from the outputs (flattened per pattern) and targets, with the reduction;
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
* :func:`check_diagonal`: matrix-free, hold a user's Hessian diagonal or trace
  to exact entries and Hutchinson block traces with confidence intervals
  (:mod:`hessverify.adapters.torch_diag`);
* :func:`cases`: Hypothesis problems (:func:`hessverify.checking.strategies.problems`)
  converted to :class:`TorchCase`.

The network is PyTorch's own modules (called through ``torch.func.functional_call``
at the flat parameters), sharing nothing with hessverify's NumPy forward pass;
the activations and losses stay accurate where PyTorch's built-ins do not:
``softplus`` branches on the sign (``F.softplus`` returns its input above 20,
off by ``e^-a``) and gelu is ``a/2 erfc(-a / sqrt 2)`` (``F.gelu``'s
``1 + erf`` cancels in the left tail); an attention layer runs under
``sdpa_kernel(SDPBackend.MATH)`` (the fused CPU kernel has no double backward).
The table, written once for the adapter, the conformance rows and the PyTorch
reference, is :mod:`hessverify.adapters.torch_table`.

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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import torch as _torch  # the PyTorch package (absolute import), not this module
except ImportError as exc:  # one line that says what to install
    raise ImportError("hessverify.adapters.torch needs PyTorch: pip install 'hessverify[torch]' (torch==2.13.0)") from exc

from hessverify.adapters import torch_table as _table
from hessverify.adapters.torch_check import ModuleCheckResult, check_module
from hessverify.adapters.torch_diag import check_diagonal
from hessverify.adapters.torch_hvp import HvpCheckResult, check_hvp
from hessverify.adapters.torch_import import import_module
from hessverify.checking.check import DEFAULT_AGAINST, RETURNS, CheckResult, check
from hessverify.checking.sandbox import DEFAULT_ISOLATION, DEFAULT_TIMEOUT
from hessverify.errors import FunctionUnderTestError, UsageError
from hessverify.model.losses import get_loss
from hessverify.model.problem import Problem

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "RETURNS",
    "TorchCase",
    "cases",
    "ModuleCheckResult",
    "HvpCheckResult",
    "check_diagonal",
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

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {n: a.accurate for n, a in _table.ACTIVATIONS.items()}
"""Every activation of the case schema, in PyTorch operations (docs/cases.md; the accurate column of the table)."""

LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {n: l.per_pattern for n, l in _table.LOSSES.items()}
"""Per-pattern error ``e(y, t) -> (N,)`` of every loss of the case schema."""


def _dtype(dtype: Any) -> Any:
    if dtype not in (_torch.float64, _torch.float32, _torch.float16, _torch.bfloat16):
        raise UsageError(f"dtype={dtype!r}: choose torch.float64, torch.float32, torch.float16 or torch.bfloat16")
    return dtype


def loss_fn(problem: Problem) -> Callable[[Tensor, Tensor], Tensor]:
    """``E(outputs, targets)``: the problem's loss summed (``sum``) or averaged (``mean``) over patterns (over
    patterns and outputs for ``mse`` and ``huber``, as ``nn.MSELoss`` and ``nn.HuberLoss`` average)."""
    _table.require(problem)
    per_pattern, options = _table.LOSSES[str(problem.loss)].per_pattern, dict(problem.loss_options)
    mean, per_output = problem.reduction == "mean", get_loss(problem.loss).mean_over_outputs

    def E(outputs: Tensor, targets: Tensor) -> Tensor:
        y = outputs.reshape(outputs.shape[0], -1)  # the outputs flattened per pattern
        e = per_pattern(y, targets, **options)
        return e.sum() / (y.shape[0] * (y.shape[1] if per_output else 1)) if mean else e.sum()

    return E


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
    y, _ = _table.outputs(problem, dtype)
    t = _torch.as_tensor(problem.targets, dtype=dtype)
    reduce = loss_fn(problem)

    def E(theta: Tensor) -> Tensor:
        return reduce(y(theta), t)

    return E


def to_module(problem: Problem, *, dtype: Any = _torch.float64) -> _torch.nn.Module:
    """The problem's network as an ``nn.Module`` at the problem's parameters.

    One PyTorch module a layer, ``layers.{l-1}`` (:data:`hessverify.adapters.torch_table.LAYERS`): for a
    dense layer ``layers.{l-1}.weight`` (public ``W{l}``, shape ``(units, fan_in)``) and
    ``layers.{l-1}.bias`` (public ``b{l}``; absent for a layer without bias); for the other kinds the
    module's own parameters (``nn.MultiheadAttention``'s ``in_proj_weight``, ``in_proj_bias``,
    ``out_proj.weight``, ``out_proj.bias`` are ``Win``, ``bin``, ``Wout``, ``bout``), all in the public
    order.  ``module.param_map`` maps each public tensor name to the module's parameter name.  It takes
    ``(N, *input_shape)`` inputs (:attr:`TorchCase.inputs`).

    Examples
    --------
    >>> import hessverify
    >>> net = to_module(hessverify.load_case("cases/nobias-2-3-2-tanh-sigmoid.toml"))
    >>> net.param_map
    {'W1': 'layers.0.weight', 'W2': 'layers.1.weight', 'b2': 'layers.1.bias'}
    """
    return _table.Network(problem, _dtype(dtype))


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
        ``(N, *input_shape)`` (``(N, inputs)`` for a dense network; token ids as integers for an
        embedding network) and ``(N, outputs)`` tensors.
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
    return TorchCase(problem, to_module(problem, dtype=dtype), _table.inputs_tensor(problem, dtype),
                     _torch.as_tensor(problem.targets, dtype=dtype), loss_fn(problem), loss(problem, dtype=dtype),
                     _torch.as_tensor(problem.params, dtype=dtype))


def cases(*, dtype: Any = _torch.float64, **kwargs: Any) -> Any:
    """A Hypothesis strategy of :class:`TorchCase`: :func:`hessverify.checking.strategies.problems` (same keywords) mapped."""
    from hessverify.checking.strategies import problems

    return problems(**_table.within({"kinds": False, **kwargs})).map(lambda p: to_case(p, dtype=dtype))


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
    isolation: str = DEFAULT_ISOLATION,
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
    max_examples, seed, timeout, isolation:
        As in :func:`hessverify.checking.check`: ``fn`` runs in a child
        process by default (spawned, PyTorch imported there, where forking
        is not safe; see :mod:`hessverify.checking.sandbox`).

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
    if not isinstance(returns, str) or returns not in RETURNS:
        raise UsageError(f"returns={returns!r}: choose one of {', '.join(RETURNS)}")
    dtype = _dtype(dtype)
    if not callable(fn):
        raise UsageError(f"fn: {type(fn).__name__!r} is not callable; pass the function under test")
    under_test = _UnderTest(fn, dtype)

    if precision is None:  # judged at the format it computes in, however the tensors reach NumPy
        precision = str(dtype).replace("torch.", "")
    return check(under_test, problems, against=against, returns=returns,  # type: ignore[arg-type]
                 max_examples=max_examples, seed=seed, timeout=timeout, precision=precision, isolation=isolation)


class _UnderTest:
    """``fn`` of a :class:`TorchCase` as a function of a problem, its tensors handed back as NumPy.

    A class, not a closure, so that it can be sent to a spawned child process
    (:mod:`hessverify.checking.sandbox`); ``__wrapped__`` lets a fault be
    reported in the user's own frames.
    """

    def __init__(self, fn: Callable[..., Any], dtype: Any) -> None:
        self.fn, self.dtype = fn, dtype
        self.__wrapped__ = fn

    def __call__(self, problem: Problem, *vectors: Any) -> Any:
        case = to_case(problem, dtype=self.dtype)
        args = [_torch.as_tensor(v, dtype=self.dtype) for v in vectors]
        out = self.fn(case, *args)
        if out is not None and not isinstance(out, (Tensor, list, tuple, np.ndarray)):
            raise FunctionUnderTestError(f"fn returned a {type(out).__name__}, expected a torch.Tensor", problem=problem)
        return _to_numpy(out, problem)

