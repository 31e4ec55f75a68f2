"""The PyTorch table: every activation, loss and layer kind of the case schema as PyTorch's parts, written once.

Three modules read it, and none writes PyTorch's side of the schema again:

* the adapter (:mod:`hessverify.adapters.torch`: ``to_module``, ``loss``, ``check_model``);
* the conformance rows (:mod:`hessverify.adapters.conformance`), which run PyTorch's *own* parts;
* the PyTorch reference (:mod:`hessverify.adapters.torch_ref`, the false-alarm study's outside implementation).

Columns:

* :data:`ACTIVATIONS`: per activation, the ``accurate`` form (the adapter's and the reference's: accurate in
  both tails, see below), PyTorch's ``builtin`` function (what conformance holds to account), its ``nn`` module
  class (for an ``nn.Sequential``; ``None`` where PyTorch has none) and whether BackPACK has a second-order
  module for it;
* :data:`LOSSES`: per loss, the per-pattern error ``e(y, t, **options)`` written in PyTorch operations (Huber's
  ``delta`` the one option), PyTorch's loss class with the reduction and options
  (``None``: none exists) and ``c`` in ``E = c L`` (the class's scale convention);
* :data:`LAYERS`: per layer kind, the ``nn.Module`` it is exactly, built from the kind's options and input
  shapes (:attr:`hessverify.model.layers.base.LayerKind.torch` says which), and how it is called;
* :class:`Network`: a problem's network of those modules, parameters in the public order;
  :func:`outputs`: the outputs as a function of the flat parameter vector (``torch.func.functional_call``).

Why two activation columns.  ``F.softplus`` returns its input above a threshold of 20 (off by ``e^-a``) and
``torch.logaddexp`` has a NaN double backward; PyTorch's exact ``F.gelu`` is ``a/2 (1 + erf(a/sqrt 2))``,
which cancels in the left tail (exactly 0 below -8.37 in float64).  The accurate column branches softplus on
the sign, each branch fed an argument clamped to its own side (``where`` multiplies the branch not taken by
0, and ``0 * inf`` is NaN), and writes gelu as ``a/2 erfc(-a/sqrt 2)``.

Why two attention calls.  ``nn.MultiheadAttention(..., need_weights=False)`` (what ``nn.TransformerEncoderLayer``
calls) runs ``F.scaled_dot_product_attention``, whose fused CPU kernel has a backward with no derivative and no
forward-mode rule; ``"math"`` (the default here) runs it under ``sdpa_kernel(SDPBackend.MATH)``, PyTorch's
composite of differentiable operations; ``"fused"`` lets PyTorch choose, as a user's code does.

BatchNorm.  ``train`` mode is ``track_running_stats=False``: the batch statistics, and no running buffers
updated in place (which ``torch.func`` transforms refuse); ``eval`` mode has the running statistics given
in the case and stays in ``.eval()`` whatever :meth:`Network.train` is asked.

Why the norms are written out.  PyTorch 2.13.0 differentiates ``F.layer_norm`` and ``F.batch_norm`` (batch
statistics) wrongly under ``torch.func``'s nested transforms: the forward-mode rules and ``vmap``'s batching
rule of their backward use the mean and inverse standard deviation saved by the forward kernel, which carry
no derivative, so ``torch.func.hessian`` of a network with a LayerNorm comes out wrong (docs/conformance.md).
The accurate column computes the same normalisation with PyTorch operations (``mean``, ``rsqrt``) and the
module's own weight and bias; ``to_module`` still holds ``nn.LayerNorm`` / ``nn.BatchNorm*d``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hessverify.adapters import rows
from hessverify.model.network import Architecture
from hessverify.model.problem import Problem

__all__ = ["ACTIVATIONS", "ATTENTION_CALLS", "LAYERS", "LOSSES", "Activation", "Add", "GainLinear", "LayerRow", "Loss",
           "Network",
           "inputs_tensor", "outputs", "softplus", "stable_gelu", "unflatten"]

Tensor = torch.Tensor
Shape = tuple[int, ...]


# -- activations ------------------------------------------------------------------------

def softplus(a: Tensor) -> Tensor:
    """``log(1 + e^a)``: ``a + log1p(e^-a)`` for ``a > 0``, ``log1p(e^a)`` otherwise, each on its own side."""
    positive = a > 0
    up = torch.where(positive, a, torch.zeros_like(a))  # the a > 0 branch sees 0 elsewhere
    down = torch.where(positive, torch.zeros_like(a), a)  # and the other branch 0 where a > 0
    return torch.where(positive, up + torch.log1p(torch.exp(-up)), torch.log1p(torch.exp(down)))


def stable_gelu(a: Tensor) -> Tensor:
    """``a Phi(a) = a/2 erfc(-a / sqrt 2)``: no cancellation in the left tail (unlike ``1 + erf``)."""
    return 0.5 * a * torch.special.erfc(-a / math.sqrt(2.0))


def _identity(a: Tensor) -> Tensor:
    return a


def _silu(a: Tensor) -> Tensor:
    return a * torch.sigmoid(a)


def _gelu(a: Tensor) -> Tensor:
    return F.gelu(a, approximate="none")


@dataclass(frozen=True)
class Activation:
    """One activation: the adapter's accurate form, PyTorch's builtin, its ``nn`` class and BackPACK's support."""

    name: str
    accurate: Callable[[Tensor], Tensor]
    builtin: Callable[[Tensor], Tensor]
    module: Callable[[], nn.Module] | None  # None: no nn module (sin), or nothing to add (identity)
    backpack: bool  # BackPACK has a second-order module for it (identity: nothing to extend)


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("identity", _identity, _identity, None, True),
    Activation("sigmoid", torch.sigmoid, torch.sigmoid, nn.Sigmoid, True),
    Activation("tanh", torch.tanh, torch.tanh, nn.Tanh, True),
    Activation("softplus", softplus, F.softplus, nn.Softplus, False),
    Activation("sin", torch.sin, torch.sin, None, False),
    Activation("gelu", stable_gelu, _gelu, nn.GELU, False),
    Activation("silu", _silu, F.silu, nn.SiLU, False),
    Activation("relu", torch.relu, F.relu, nn.ReLU, True),
)}
"""Every activation of the case schema (docs/cases.md), by name."""


# -- losses -------------------------------------------------------------------------------

def _sse(y: Tensor, t: Tensor) -> Tensor:
    return 0.5 * ((y - t) ** 2).sum(-1)  # the 1/2 that nn.MSELoss does not have


def _cross_entropy(y: Tensor, t: Tensor) -> Tensor:
    return -(t * torch.log_softmax(y, dim=-1)).sum(-1)  # soft targets, need not sum to one


def _binary_cross_entropy(y: Tensor, t: Tensor) -> Tensor:
    return (softplus(y) - t * y).sum(-1)  # on logits: log(1 + e^y) - t y


def _output(y: Tensor, t: Tensor) -> Tensor:
    return y.sum(-1)


def _mse(y: Tensor, t: Tensor) -> Tensor:
    return ((y - t) ** 2).sum(-1)  # nn.MSELoss's terms: no 1/2 (the mean over N K is the problem's scale)


def _huber(y: Tensor, t: Tensor, delta: float = 1.0) -> Tensor:
    """``r^2/2`` inside ``|r| <= delta``, ``delta (|r| - delta/2)`` outside, summed per pattern (nn.HuberLoss)."""
    r = y - t
    inside = r.abs() <= delta
    return torch.where(inside, 0.5 * r * r, delta * (r.abs() - 0.5 * delta)).sum(-1)


def _sum_of_outputs(reduction: str) -> Callable[[Tensor, Tensor], Tensor]:
    def L(y: Tensor, _t: Tensor) -> Tensor:  # no loss class: the outputs summed (/ N for mean)
        return y.sum() / (y.shape[0] if reduction == "mean" else 1)

    return L


@dataclass(frozen=True)
class Loss:
    """One loss: the per-pattern error written in PyTorch operations, PyTorch's class and ``c`` in ``E = c L``."""

    name: str
    per_pattern: Callable[..., Tensor]  # e(y, t, **loss options) -> (N,)
    criterion: Callable[..., Callable[[Tensor, Tensor], Tensor]]  # the library's L, given the reduction and options
    scale: Callable[[str, int], float]  # c(reduction, K) with E = c L
    convention: str
    has_class: bool = True  # False: no PyTorch class (criterion is the written sum)


LOSSES: dict[str, Loss] = {l.name: l for l in (
    Loss("sse", _sse, lambda r: nn.MSELoss(reduction=r), lambda r, k: 0.5 if r == "sum" else k / 2,
         "MSELoss: E = L/2 (sum), E = K L/2 (mean over N K)"),
    Loss("cross_entropy", _cross_entropy, lambda r: nn.CrossEntropyLoss(reduction=r), lambda r, k: 1.0,
         "CrossEntropyLoss (probability targets): E = L"),
    Loss("binary_cross_entropy", _binary_cross_entropy, lambda r: nn.BCEWithLogitsLoss(reduction=r),
         lambda r, k: 1.0 if r == "sum" else float(k), "BCEWithLogitsLoss: E = L (sum), E = K L (mean over N K)"),
    Loss("output", _output, _sum_of_outputs, lambda r, k: 1.0, "output: no class, y.sum() (/ N for mean): E = L",
         has_class=False),
    Loss("mse", _mse, lambda r: nn.MSELoss(reduction=r), lambda r, k: 1.0, "MSELoss: E = L"),
    Loss("huber", _huber, lambda r, delta=1.0: nn.HuberLoss(reduction=r, delta=delta), lambda r, k: 1.0,
         "HuberLoss(delta): E = L"),
)}
"""Every loss of the case schema, by name."""


# -- layer kinds ------------------------------------------------------------------------------

class Add(nn.Module):
    """``x_i + x_j``: the ``add`` kind (no parameters)."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b


class GainLinear(nn.Linear):
    """``nn.Linear`` with a gain per unit, ``c * (W x + b)`` (a dense layer with ``gain = true``; its parameters
    ``weight``, ``bias``, ``gain`` are ``W``, ``b``, ``c``).  PyTorch has no such module."""

    def __init__(self, fan_in: int, units: int, bias: bool, dtype: Any) -> None:
        super().__init__(fan_in, units, bias=bias, dtype=dtype)
        self.gain = nn.Parameter(torch.ones(units, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * self.gain


def _dense(o: dict[str, Any], shapes: Sequence[Shape], dtype: Any) -> nn.Module:
    if o.get("gain"):
        return GainLinear(sum(s[-1] for s in shapes), o["units"], o["bias"], dtype)
    return nn.Linear(sum(s[-1] for s in shapes), o["units"], bias=o["bias"], dtype=dtype)


def _conv(dims: int) -> Callable[[dict[str, Any], Sequence[Shape], Any], nn.Module]:
    def make(o: dict[str, Any], shapes: Sequence[Shape], dtype: Any) -> nn.Module:
        cls = nn.Conv1d if dims == 1 else nn.Conv2d
        return cls(shapes[0][0], o["channels"], o["kernel"], o["stride"], o["padding"], groups=o["groups"],
                   bias=o["bias"], dtype=dtype)

    return make


def _avg_pool(dims: int) -> Callable[[dict[str, Any], Sequence[Shape], Any], nn.Module]:
    def make(o: dict[str, Any], shapes: Sequence[Shape], dtype: Any) -> nn.Module:
        cls = nn.AvgPool1d if dims == 1 else nn.AvgPool2d
        return cls(o["kernel"], o["kernel"] if o["stride"] is None else o["stride"])

    return make


def _flatten(o: dict[str, Any], shapes: Sequence[Shape], dtype: Any) -> nn.Module:
    return nn.Flatten()


def _layer_norm(o: dict[str, Any], shapes: Sequence[Shape], dtype: Any) -> nn.Module:
    return nn.LayerNorm(shapes[0][-1], eps=o["eps"], elementwise_affine=o["affine"], dtype=dtype)


def _batch_norm(o: dict[str, Any], shapes: Sequence[Shape], dtype: Any) -> nn.Module:
    cls = nn.BatchNorm2d if len(shapes[0]) == 3 else nn.BatchNorm1d
    eval_mode = o["mode"] == "eval"
    module = cls(shapes[0][0], eps=o["eps"], affine=o["affine"], track_running_stats=eval_mode, dtype=dtype)
    if eval_mode:
        with torch.no_grad():
            if o["running_mean"] is not None:
                module.running_mean.copy_(torch.tensor(o["running_mean"], dtype=dtype))
            if o["running_var"] is not None:
                module.running_var.copy_(torch.tensor(o["running_var"], dtype=dtype))
        module.eval()
    return module


def _attention(o: dict[str, Any], shapes: Sequence[Shape], dtype: Any) -> nn.Module:
    return nn.MultiheadAttention(shapes[0][1], o["heads"], bias=o["bias"], batch_first=True, dtype=dtype)


def _embedding(o: dict[str, Any], shapes: Sequence[Shape], dtype: Any) -> nn.Module:
    return nn.Embedding(o["vocab"], o["dim"], dtype=dtype)


def _add(o: dict[str, Any], shapes: Sequence[Shape], dtype: Any) -> nn.Module:
    return Add()


def _normalised(x: Tensor, axes: tuple[int, ...], eps: float) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over ``axes``, the biased variance, written in PyTorch operations."""
    mu = x.mean(dim=axes, keepdim=True)
    xc = x - mu
    return xc * torch.rsqrt((xc * xc).mean(dim=axes, keepdim=True) + eps)


def _written_layer_norm(module: nn.Module, x: Tensor) -> Tensor:
    """``nn.LayerNorm`` written out with the module's own weight and bias (why: the module text)."""
    y = _normalised(x, (-1,), module.eps)
    return y * module.weight + module.bias if module.elementwise_affine else y


def _written_batch_norm(module: nn.Module, x: Tensor) -> Tensor:
    """``nn.BatchNorm1d/2d`` with batch statistics written out (eval mode: the module itself, an affine map)."""
    if module.track_running_stats:
        return module(x)
    per_channel = (1, -1) + (1,) * (x.dim() - 2)
    y = _normalised(x, (0,) + tuple(range(2, x.dim())), module.eps)
    return y * module.weight.reshape(per_channel) + module.bias.reshape(per_channel) if module.affine else y


@dataclass(frozen=True)
class LayerRow:
    """One layer kind as PyTorch: ``module(options, input shapes, dtype)``, the ``nn`` class it is exactly, and,
    where PyTorch's own module is not differentiated correctly by every composition, the same maths written
    out with the module's parameters (``accurate(module, x)``, the adapter's and the reference's column)."""

    kind: str
    module: Callable[[dict[str, Any], Sequence[Shape], Any], nn.Module]
    modules: tuple[str, ...]  # the nn class names, for the conformance rows and the docs
    accurate: Callable[[nn.Module, Tensor], Tensor] | None = None


LAYERS: dict[str, LayerRow] = {r.kind: r for r in (
    LayerRow("dense", _dense, ("Linear",)),
    LayerRow("conv1d", _conv(1), ("Conv1d",)),
    LayerRow("conv2d", _conv(2), ("Conv2d",)),
    LayerRow("avg_pool1d", _avg_pool(1), ("AvgPool1d",)),
    LayerRow("avg_pool2d", _avg_pool(2), ("AvgPool2d",)),
    LayerRow("flatten", _flatten, ("Flatten",)),
    LayerRow("layer_norm", _layer_norm, ("LayerNorm",), _written_layer_norm),
    LayerRow("batch_norm", _batch_norm, ("BatchNorm1d", "BatchNorm2d"), _written_batch_norm),
    LayerRow("add", _add, ()),
    LayerRow("attention", _attention, ("MultiheadAttention",)),
    LayerRow("embedding", _embedding, ("Embedding",)),
)}
"""Every layer kind of the case schema as the PyTorch module it is exactly, by kind."""

ATTENTION_CALLS: tuple[str, ...] = ("math", "fused", "weights")
"""How :class:`Network` calls ``nn.MultiheadAttention``: ``need_weights=False`` under
``sdpa_kernel(SDPBackend.MATH)`` (``"math"``, the default), ``need_weights=False`` with PyTorch's choice of
kernel (``"fused"``, what ``nn.TransformerEncoderLayer`` does), or the module's default call
``attn(x, x, x)`` (``"weights"``: ``need_weights=True``, the attention weights formed explicitly)."""


def _math_attention() -> contextlib.AbstractContextManager[Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def require(problem: Problem) -> None:
    """Refuse in one line (:class:`~hessverify.errors.UnsupportedModel`) a problem with an activation, loss or
    layer kind this table has no row for (:mod:`hessverify.adapters.rows`: the table is optional for them)."""
    rows.require(problem, "PyTorch", "hessverify/adapters/torch_table.py", activations=ACTIVATIONS, losses=LOSSES,
                 kinds=LAYERS)


def within(draw: dict[str, Any]) -> dict[str, Any]:
    """Keywords of :func:`hessverify.checking.strategies.problems` drawing only what this table has rows for
    (:func:`hessverify.adapters.rows.within`)."""
    return rows.within(draw, "PyTorch", "hessverify/adapters/torch_table.py", activations=ACTIVATIONS, losses=LOSSES)


class Network(nn.Module):
    """A problem's network of PyTorch modules (:data:`LAYERS`), at the problem's parameters.

    ``layers`` is an ``nn.ModuleList``, one module a layer (``layers.0.weight`` is ``W1``); ``parameters()``
    comes in the public order; ``param_map`` maps each public tensor label (``W1``, ``bin3``) to the
    module's parameter name.  ``forward(x)`` takes one pattern per row of ``x`` in the network's input shape,
    ``(N, *input_shape)`` (token ids as integers for an embedding network), and returns the last layer's
    output, ``(N, *output_shape)``.

    ``builtin``: PyTorch's own activation functions (:attr:`Activation.builtin`) and modules instead of the
    accurate columns, for all (``True``) or for the activations and kinds named; ``attention``: one of
    :data:`ATTENTION_CALLS`.
    """

    def __init__(self, problem: Problem | Architecture, dtype: Any = torch.float64, *,
                 builtin: bool | Collection[str] = False, attention: str = "math") -> None:
        super().__init__()
        arch = problem.architecture if isinstance(problem, Problem) else problem
        if isinstance(problem, Problem):
            require(problem)
        if attention not in ATTENTION_CALLS:
            raise ValueError(f"attention={attention!r}: choose one of {', '.join(ATTENTION_CALLS)}")
        self.architecture = arch
        self.kinds = [layer.kind for layer in arch.layers]
        self.activations = [layer.activation for layer in arch.layers]
        self.sources = [arch.parents(l) for l in arch.bottom_up]  # what each layer reads (0: the inputs)
        self.attention = attention
        own = set(ACTIVATIONS) | set(LAYERS) if builtin is True else set(builtin or ())
        self._act = [(ACTIVATIONS[a].builtin if a in own else ACTIVATIONS[a].accurate) for a in self.activations]
        self._written = [None if k in own else LAYERS[k].accurate for k in self.kinds]
        self.layers = nn.ModuleList(
            LAYERS[layer.kind].module(_options(layer), [arch.shapes[s] for s in src], dtype)
            for layer, src in zip(arch.layers, self.sources))
        self.param_map: dict[str, str] = {}
        names = [name for name, _ in self.named_parameters()]
        shapes = [tuple(p.shape) for p in self.parameters()]
        if shapes != [t.shape for t in arch.tensors]:  # pragma: no cover - the kinds declare PyTorch's tensors
            raise AssertionError(f"PyTorch's parameters {shapes} are not the schema's {[t.shape for t in arch.tensors]}")
        for tensor, name in zip(arch.tensors, names):
            self.param_map[tensor.label] = name
        if isinstance(problem, Problem):
            with torch.no_grad():
                for p, value in zip(self.parameters(), unflatten(arch, torch.as_tensor(problem.params, dtype=dtype))):
                    p.copy_(value)

    def train(self, mode: bool = True) -> Network:
        """As ``nn.Module.train``, but a BatchNorm in ``eval`` mode stays in eval mode (it is the case's)."""
        super().train(mode)
        for module in self.layers:
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                module.eval()
        return self

    def _call(self, i: int, module: nn.Module, xs: list[Tensor]) -> Tensor:
        kind = self.kinds[i]
        written = self._written[i]
        if written is not None:
            return written(module, xs[0])
        if kind == "dense":
            return module(xs[0] if len(xs) == 1 else torch.cat(xs, dim=-1))  # the sources side by side
        if kind == "add":
            return module(xs[0], xs[1])
        if kind == "embedding":
            return module(xs[0].long())
        if kind == "attention":
            if self.attention == "weights":
                return module(xs[0], xs[0], xs[0])[0]
            context = _math_attention() if self.attention == "math" else contextlib.nullcontext()
            with context:
                return module(xs[0], xs[0], xs[0], need_weights=False)[0]
        return module(xs[0])

    def forward(self, x: Tensor) -> Tensor:
        outs = [x]
        for i, (module, act, src) in enumerate(zip(self.layers, self._act, self.sources)):
            outs.append(act(self._call(i, module, [outs[j] for j in src])))
        return outs[-1]


def _options(layer: Any) -> dict[str, Any]:
    return layer.opts


def unflatten(arch: Architecture, theta: Tensor) -> Iterator[Tensor]:
    """The flat vector as the network's parameter tensors, in the public order (a view of each slice)."""
    for t in arch.tensors:
        yield theta[t.slice].reshape(t.shape)


def inputs_tensor(problem: Problem, dtype: Any = torch.float64) -> Tensor:
    """``problem.inputs`` as :class:`Network` takes them: ``(N, *input_shape)``, token ids as integers."""
    arch = problem.architecture
    x = np.asarray(problem.inputs).reshape((problem.n_patterns,) + arch.shape)
    if arch.layers[0].kind_def.reads_ids:
        return torch.as_tensor(np.round(x).astype(np.int64))
    return torch.as_tensor(x, dtype=dtype)


def outputs(problem: Problem, dtype: Any = torch.float64, *, builtin: bool | Collection[str] = False,
            attention: str = "math") -> tuple[Callable[[Tensor], Tensor], Network]:
    """``(y(theta), network)``: the outputs ``(N, K)``, flattened per pattern, at the flat parameters ``theta``.

    ``theta`` is a tensor of shape ``(W,)`` in the public order; the network's modules are called with those
    parameters by ``torch.func.functional_call``, so ``torch.func`` and ``torch.autograd`` transforms of ``y``
    differentiate PyTorch's own modules.
    """
    net = Network(problem, dtype, builtin=builtin, attention=attention)
    x = inputs_tensor(problem, dtype)
    names = list(net.param_map.values())
    arch = problem.architecture
    n = problem.n_patterns

    def y(theta: Tensor) -> Tensor:
        params = dict(zip(names, unflatten(arch, theta)))
        return torch.func.functional_call(net, params, (x,)).reshape(n, -1)

    return y, net
