"""A user's ``nn.Module`` and loss as a :class:`~hessverify.model.problem.Problem` of the case schema.

:func:`import_module` traces the module with ``torch.fx`` (``Sequential``
containers, a ``forward`` with residual adds and ``torch.nn.functional``
calls), runs the trace once on the given inputs to learn every value's shape
(``ShapeProp``), and maps each node to a layer kind of
:mod:`hessverify.model.layers`:

==========================================  ==========================================
PyTorch                                     layer kind
==========================================  ==========================================
``nn.Linear``, ``F.linear``                 ``dense``
``nn.Conv1d/2d``, ``F.conv1d/2d``           ``conv1d`` / ``conv2d`` (zero padding, dilation 1)
``nn.AvgPool1d/2d``, ``F.avg_pool1d/2d``    ``avg_pool1d`` / ``avg_pool2d`` (no padding)
``nn.Flatten``, ``torch.flatten(x, 1)``,    ``flatten``
``x.view(N, -1)``, ``x.reshape(N, -1)``
``nn.LayerNorm`` (last axis)                ``layer_norm``
``nn.BatchNorm1d/2d``                       ``batch_norm`` (``train``: batch statistics;
                                            ``eval``: the running ones)
``a + b`` (two traced values)               ``add``
``nn.MultiheadAttention(batch_first=True)`` ``attention`` (``attn(x, x, x)[0]``, no mask)
``nn.Embedding`` (first layer)              ``embedding``
``tanh``, ``sigmoid``, ``relu``, ``gelu``,  the activation of the layer before
``silu``, ``softplus``, ``sin``
``nn.Identity``, ``nn.Dropout`` (eval)      nothing
==========================================  ==========================================

and the loss (:func:`loss_spec`): ``nn.MSELoss`` (``mse``), ``nn.CrossEntropyLoss``
(``cross_entropy``: class indices become one-hot rows, label smoothing
``(1 - e) t + e / K``), ``nn.BCEWithLogitsLoss`` (``binary_cross_entropy``),
``nn.HuberLoss`` (``huber`` with its ``delta``), their functional forms, or a
function or lambda that calls one of them on ``(outputs, targets)``;
reductions ``mean`` and ``sum``.

The problem's parameters are the module's, in the order the layers are
traced, each layer's tensors in its module's ``.parameters()`` order: that is
``model.parameters()`` order whenever the modules are called in the order
they are defined.  Otherwise ``problem.meta["torch_index"][i]`` is the index,
in the flat ``model.parameters()`` vector, of the problem's parameter ``i``
(:func:`torch_index`).

Anything the schema lacks raises :class:`~hessverify.errors.UnsupportedModel`,
one line naming the op or module and where it is (the module's path, or the
line of ``forward``).
"""

from __future__ import annotations

import copy
import functools
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from hessverify.errors import UnsupportedModel
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem

__all__ = ["LossSpec", "import_module", "loss_spec", "torch_index"]

_ACT_MODULES: dict[type, str] = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU: "relu", nn.GELU: "gelu",
                                 nn.SiLU: "silu", nn.Softplus: "softplus"}
_ACT_FUNCTIONS: dict[Any, str] = {torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
                                  torch.relu: "relu", F.relu: "relu", F.gelu: "gelu", F.silu: "silu",
                                  F.softplus: "softplus", torch.sin: "sin"}
_ACT_METHODS = {"tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu", "sin": "sin"}
_ADDS = (operator.add, operator.iadd, torch.add)
_TORCH_DIR = str(Path(torch.__file__).parent)


# -- the loss -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossSpec:
    """A PyTorch loss as the schema's: name, reduction, settings, and how targets become ``(N, K)`` rows."""

    name: str
    reduction: str
    options: tuple[tuple[str, float], ...] = ()
    label_smoothing: float = 0.0
    ignore_index: int = -100
    torch_name: str = ""

    def targets(self, targets: torch.Tensor, outputs: torch.Size) -> np.ndarray:
        """The targets as the schema's float64 ``(N, K)`` rows (``K`` one pattern's outputs, flattened)."""
        N, K = outputs[0], int(np.prod(outputs[1:], dtype=np.int64))
        t = targets.detach().cpu()
        if self.name == "cross_entropy":
            if len(outputs) != 2:
                raise UnsupportedModel(f"{self.torch_name} on outputs of shape {tuple(outputs)}: only (N, classes) "
                                       "logits are supported")
            if not t.is_floating_point():  # class indices
                if t.shape != (N,):
                    raise UnsupportedModel(f"{self.torch_name}: class-index targets of shape {tuple(t.shape)}, "
                                           f"expected ({N},)")
                if bool((t == self.ignore_index).any()):
                    raise UnsupportedModel(f"{self.torch_name}: a target equals ignore_index={self.ignore_index}; "
                                           "the schema has no ignored patterns")
                t = F.one_hot(t.long(), K).to(torch.float64)
            e = self.label_smoothing
            rows = t.to(torch.float64).numpy().reshape(N, K)
            return (1.0 - e) * rows + e / K if e else rows
        if tuple(t.shape) != tuple(outputs):
            raise UnsupportedModel(f"{self.torch_name}: targets of shape {tuple(t.shape)} for outputs of shape "
                                   f"{tuple(outputs)}; give them the outputs' shape (no broadcasting)")
        if self.name == "binary_cross_entropy" and self.reduction == "mean" and K > 1:
            raise UnsupportedModel(f"{self.torch_name}(reduction='mean') averages over N*K = {N * K} values; the "
                                   "schema's binary cross-entropy averages over patterns: use reduction='sum' or "
                                   "one output")
        return t.to(torch.float64).numpy().reshape(N, K)


_LOSS_MODULES: dict[type, str] = {nn.MSELoss: "mse", nn.CrossEntropyLoss: "cross_entropy",
                                  nn.BCEWithLogitsLoss: "binary_cross_entropy", nn.HuberLoss: "huber"}
_LOSS_FUNCTIONS: dict[Any, str] = {F.mse_loss: "mse", F.cross_entropy: "cross_entropy",
                                   F.binary_cross_entropy_with_logits: "binary_cross_entropy", F.huber_loss: "huber"}
_LOSS_KEYWORDS = {"mse": ("reduction",), "cross_entropy": ("reduction", "label_smoothing", "ignore_index"),
                  "binary_cross_entropy": ("reduction",), "huber": ("reduction", "delta")}


def _spec(name: str, settings: dict[str, Any], torch_name: str) -> LossSpec:
    for key in ("weight", "pos_weight"):
        if settings.get(key) is not None:
            raise UnsupportedModel(f"{torch_name}({key}=...): weighted losses are not in the schema")
    reduction = settings.get("reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise UnsupportedModel(f"{torch_name}(reduction={reduction!r}): choose 'mean' or 'sum' (a scalar loss)")
    options = (("delta", float(settings.get("delta", 1.0))),) if name == "huber" else ()
    return LossSpec(name, reduction, options, float(settings.get("label_smoothing", 0.0) or 0.0),
                    int(settings.get("ignore_index", -100)), torch_name)


def loss_spec(loss_fn: Any) -> LossSpec:
    """The schema's loss for a PyTorch loss module, a functional loss, or a function calling one on ``(y, t)``.

    Examples
    --------
    >>> spec = loss_spec(nn.HuberLoss(delta=0.5, reduction="sum"))
    >>> spec.name, spec.reduction, spec.options
    ('huber', 'sum', (('delta', 0.5),))
    """
    if isinstance(loss_fn, nn.Module):
        name = _LOSS_MODULES.get(type(loss_fn))
        if name is None:
            raise UnsupportedModel(f"loss {type(loss_fn).__name__}: choose nn.MSELoss, nn.CrossEntropyLoss, "
                                   "nn.BCEWithLogitsLoss or nn.HuberLoss")
        settings = {k: getattr(loss_fn, k) for k in (*_LOSS_KEYWORDS[name], "weight", "pos_weight")
                    if hasattr(loss_fn, k)}
        return _spec(name, settings, type(loss_fn).__name__)
    if loss_fn in _LOSS_FUNCTIONS:
        return _spec(_LOSS_FUNCTIONS[loss_fn], {}, f"F.{loss_fn.__name__}")
    if not callable(loss_fn):
        raise UnsupportedModel(f"loss_fn: a {type(loss_fn).__name__} is not a loss; pass nn.MSELoss() or similar")
    return _traced_loss(loss_fn)


def _traced_loss(loss_fn: Callable[..., Any]) -> LossSpec:
    """A function ``(y, t) -> F.<loss>(y, t, ...)``: traced, it must be exactly one call of a known loss."""
    what = getattr(loss_fn, "__name__", type(loss_fn).__name__)
    try:
        graph = torch.fx.symbolic_trace(loss_fn).graph
    except Exception as exc:
        raise UnsupportedModel(f"loss_fn {what}: cannot be traced ({type(exc).__name__}: {exc})") from None
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    calls = [n for n in graph.nodes if n.op not in ("placeholder", "output")]
    out = next(n for n in graph.nodes if n.op == "output")
    if len(inputs) != 2 or len(calls) != 1 or out.args[0] is not calls[0]:
        raise UnsupportedModel(f"loss_fn {what}: expected one call of a loss on (outputs, targets), found "
                               f"{', '.join(_label(n) for n in calls) or 'none'}")
    call = calls[0]
    name = _LOSS_FUNCTIONS.get(call.target)
    module = None
    if call.op == "call_module":
        module = call.graph.owning_module.get_submodule(call.target)
        if type(module) in _LOSS_MODULES:
            name = _LOSS_MODULES[type(module)]
    if name is None or tuple(call.args[:2]) != tuple(inputs):
        raise UnsupportedModel(f"loss_fn {what}: {_label(call)} is not one of F.mse_loss, F.cross_entropy, "
                               "F.binary_cross_entropy_with_logits, F.huber_loss applied to (outputs, targets)")
    if module is not None:
        return loss_spec(module)
    settings = dict(call.kwargs)
    extra = call.args[2:]
    if extra:
        raise UnsupportedModel(f"loss_fn {what}: pass the loss's settings by keyword (reduction=...), not position")
    return _spec(name, settings, f"F.{call.target.__name__}")


# -- the network ------------------------------------------------------------------------------------------------


@dataclass
class _Spec:
    """A layer being built: its kind, options, sources, PyTorch parameters (in the kind's order) and activation."""

    kind: str
    sources: tuple[int, ...]
    where: str
    options: dict[str, Any] = field(default_factory=dict)
    params: list[torch.Tensor] = field(default_factory=list)
    activation: str = "identity"
    units: int | None = None
    bias: bool = True


def _label(node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return f"{node.target}"
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    if node.op == "call_method":
        return f".{node.target}()"
    return f"{node.op} {node.target}"


def _where(node: torch.fx.Node, module: nn.Module | None = None) -> str:
    """Where a node sits, for an error: the module's path and type, or the line of forward that made it."""
    if module is not None:
        return f"module {node.target!r} ({type(module).__name__})"
    trace = (node.stack_trace or "").strip().splitlines()
    line = next((t.strip() for t in reversed(trace) if t.strip().startswith("File") and _TORCH_DIR not in t), "")
    return f"node {node.name!r}" + (f" ({line})" if line else "")


def _no_custom_function(node: torch.fx.Node) -> None:
    """A custom ``torch.autograd.Function``: fx traces its forward, but its backward is the user's own
    derivative, which an import would silently replace: refuse, naming it."""
    trace = [t.strip() for t in (node.stack_trace or "").splitlines() if t.strip().startswith("File")]
    for k, line in enumerate(trace):
        if f"autograd{os.sep}function.py" in line and line.endswith("in apply") and k + 1 < len(trace):
            raise UnsupportedModel(f"a custom torch.autograd.Function ({trace[k + 1]}, called at {trace[k - 1]}"
                                   "): its backward is the model's own derivative, which the schema cannot hold; "
                                   "check_module judges it by references from its forward")


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, with stack traces (for the error messages) and the library's modules as leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True


class _Importer:
    """Walks the traced graph once, node by node, building the layers (module text)."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.gm = gm
        self.specs: list[_Spec] = []
        self.values: dict[torch.fx.Node, int] = {}  # node -> the layer whose output it is (0: the input)
        self.tuples: set[torch.fx.Node] = set()  # attention's (output, weights)
        self.input: torch.fx.Node | None = None

    # helpers ----------------------------------------------------------------------------------------------
    def shape(self, node: torch.fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()

    def source(self, node: Any, at: str) -> int:
        if not isinstance(node, torch.fx.Node) or node not in self.values or node in self.tuples:
            raise UnsupportedModel(f"{at}: reads {node!r}, which is not a traced value of the network "
                                   "(a constant, a buffer or an unsupported op)")
        return self.values[node]

    def layer(self, node: torch.fx.Node, spec: _Spec) -> None:
        self.specs.append(spec)
        self.values[node] = len(self.specs)

    def param(self, value: Any, at: str) -> torch.Tensor | None:
        if value is None:
            return None
        if isinstance(value, torch.fx.Node) and value.op == "get_attr":
            p = self.gm.get_parameter(value.target) if _is_param(self.gm, value.target) else None
            if p is not None:
                return p
        raise UnsupportedModel(f"{at}: a weight that is not a parameter of the model ({value!r})")

    # the walk -------------------------------------------------------------------------------------------
    def run(self) -> torch.fx.Node:
        out = None
        for node in self.gm.graph.nodes:
            _no_custom_function(node)
            if node.op == "placeholder":
                if self.input is not None:
                    raise UnsupportedModel(f"forward takes several inputs ({self.input.name}, {node.name}); "
                                           "the schema has one input tensor")
                self.input = node
                self.values[node] = 0
            elif node.op == "get_attr":
                continue  # read by the functional call that uses it
            elif node.op == "output":
                out = node.args[0]
            elif node.op == "call_module":
                self.module(node, self.gm.get_submodule(node.target))
            elif node.op in ("call_function", "call_method"):
                self.function(node)
        if not isinstance(out, torch.fx.Node) or out not in self.values or out in self.tuples:
            raise UnsupportedModel(f"forward returns {out!r}: return one tensor computed by the network")
        if self.values[out] == 0:
            raise UnsupportedModel("forward returns its input unchanged: there is no layer to check")
        if self.values[out] != len(self.specs):
            raise UnsupportedModel("forward returns an output that is not its last layer's (a branch computed after "
                                   "the output); remove the unused branch")
        return out

    def activation(self, node: torch.fx.Node, name: str, at: str) -> None:
        src = node.args[0] if node.args else node.kwargs.get("input")
        index = self.source(src, at)
        if index == 0:
            raise UnsupportedModel(f"{at}: {name} of the network's input; the schema applies activations after "
                                   "a layer")
        spec = self.specs[index - 1]
        if spec.activation != "identity" or spec.kind == "flatten":
            raise UnsupportedModel(f"{at}: {name} after {spec.activation if spec.kind != 'flatten' else 'a flatten'}"
                                   f" ({spec.where}); the schema has one activation after each layer")
        if len(src.users) != 1:
            raise UnsupportedModel(f"{at}: {name} of a value that is also used elsewhere "
                                   f"({', '.join(u.name for u in src.users if u is not node)}); the schema applies "
                                   "an activation to a layer's only output")
        spec.activation = name
        self.values[node] = index

    def passthrough(self, node: torch.fx.Node, at: str) -> None:
        self.values[node] = self.source(node.args[0], at)

    # modules --------------------------------------------------------------------------------------------
    def module(self, node: torch.fx.Node, m: nn.Module) -> None:
        at = _where(node, m)
        if type(m) in _ACT_MODULES:
            name = _ACT_MODULES[type(m)]
            if isinstance(m, nn.GELU) and m.approximate != "none":
                raise UnsupportedModel(f"{at}: GELU(approximate={m.approximate!r}); the schema's gelu is the exact one")
            if isinstance(m, nn.Softplus) and m.beta != 1:
                raise UnsupportedModel(f"{at}: Softplus(beta={m.beta}); the schema's softplus has beta 1")
            return self.activation(node, name, at)
        if isinstance(m, nn.Identity) or (isinstance(m, nn.Dropout) and (not m.training or m.p == 0)):
            return self.passthrough(node, at)
        if not isinstance(m, nn.MultiheadAttention) and (len(node.args) != 1 or node.kwargs):
            raise UnsupportedModel(f"{at}: called with {len(node.args)} arguments")
        handler = _MODULE_HANDLERS.get(type(m))
        if handler is None:
            raise UnsupportedModel(f"{at}: {type(m).__name__} is not a layer kind of the schema "
                                   "(dense, conv1d/2d, avg_pool1d/2d, flatten, layer_norm, batch_norm, add, "
                                   "attention, embedding)")
        handler(self, node, m, at)

    # functions and methods ------------------------------------------------------------------------------
    def function(self, node: torch.fx.Node) -> None:
        at = _where(node)
        t = node.target
        if node.op == "call_method":
            if t in _ACT_METHODS:
                return self.activation(node, _ACT_METHODS[t], at)
            if t in ("contiguous",):
                return self.passthrough(node, at)
            if t in ("view", "reshape", "flatten"):
                return self.reshape(node, at)
            if t == "size":
                return  # a number: read by a reshape
            if t == "add" and len(node.args) == 2:
                return self.add(node, at)
            raise UnsupportedModel(f"{at}: the method .{t}() is not in the schema")
        if t in _ACT_FUNCTIONS:
            if t is F.gelu and node.kwargs.get("approximate", "none") != "none":
                raise UnsupportedModel(f"{at}: F.gelu(approximate=...); the schema's gelu is the exact one")
            if t is F.softplus and (node.kwargs.get("beta", 1) != 1 or len(node.args) > 1):
                raise UnsupportedModel(f"{at}: F.softplus with beta other than 1")
            return self.activation(node, _ACT_FUNCTIONS[t], at)
        if t in _ADDS:
            return self.add(node, at)
        if t is getattr:
            return  # x.shape: a number, read by a reshape
        if t is torch.flatten:
            return self.reshape(node, at)
        if t is operator.getitem:
            src = node.args[0]
            if src in self.tuples and node.args[1] == 0:
                self.values[node] = self.values[src]
                return
            if not self.shape(node) and src not in self.values:
                return  # x.shape[0]: a number, read by a reshape
            if src in self.tuples:
                raise UnsupportedModel(f"{at}: the attention weights are used; the schema's attention returns "
                                       "its output only")
            raise UnsupportedModel(f"{at}: indexing a tensor is not in the schema")
        if t is F.dropout and (not node.kwargs.get("training", True) or node.kwargs.get("p", 0.5) == 0):
            return self.passthrough(node, at)
        handler = _FUNCTION_HANDLERS.get(t)
        if handler is None:
            raise UnsupportedModel(f"{at}: {_label(node)} is not in the schema")
        handler(self, node, at)

    def add(self, node: torch.fx.Node, at: str) -> None:
        if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
            raise UnsupportedModel(f"{at}: an add other than a + b")
        a, b = (self.source(x, at) for x in node.args)
        if a == b:
            raise UnsupportedModel(f"{at}: adds a value to itself (2 x); the schema's add takes two different "
                                   "outputs")
        self.layer(node, _Spec("add", (a, b), at))

    def reshape(self, node: torch.fx.Node, at: str) -> None:
        src = node.args[0]
        index = self.source(src, at)
        before, after = self.shape(src), self.shape(node)
        if after == before:
            return self.passthrough(node, at)
        if len(after) == 2 and after[0] == before[0] and len(before) > 2:
            if node.target in (torch.flatten, "flatten"):
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
                if start != 1 or end not in (-1, len(before) - 1):
                    raise UnsupportedModel(f"{at}: flatten(start_dim={start}, end_dim={end}); the schema flattens "
                                           "from axis 1 to the end")
            self.layer(node, _Spec("flatten", (index,), at))
            return
        raise UnsupportedModel(f"{at}: a reshape from {before} to {after}; the schema flattens (N, ...) to "
                               "(N, values) only")


def _is_param(gm: nn.Module, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False


# -- one handler per PyTorch layer --------------------------------------------------------------------------------


def _linear(imp: _Importer, node: torch.fx.Node, m: nn.Linear, at: str) -> None:
    params = [m.weight] + ([m.bias] if m.bias is not None else [])
    imp.layer(node, _Spec("dense", (imp.source(node.args[0], at),), at, params=params, units=m.out_features,
                          bias=m.bias is not None))


def _tuple(v: Any, dims: int) -> tuple[Any, ...]:
    """An int or a list (a kernel, a stride) as a tuple of ``dims``."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims


def _conv_options(at: str, kernel: tuple[int, ...], stride: Any, padding: Any, dilation: Any, groups: int,
                  channels: int, dims: int, mode: str = "zeros") -> dict[str, Any]:
    as_tuple = functools.partial(_tuple, dims=dims)
    if isinstance(padding, str) or mode != "zeros":
        raise UnsupportedModel(f"{at}: padding={padding!r}, padding_mode={mode!r}; the schema pads with zeros by "
                               "a whole number")
    if any(d != 1 for d in as_tuple(dilation)):
        raise UnsupportedModel(f"{at}: dilation={dilation}; the schema's convolutions have dilation 1")
    return {"channels": channels, "kernel": tuple(kernel), "stride": as_tuple(stride),
            "padding": as_tuple(padding), "groups": groups}


def _conv(imp: _Importer, node: torch.fx.Node, m: nn.Conv1d | nn.Conv2d, at: str) -> None:
    dims = 1 if isinstance(m, nn.Conv1d) else 2
    opts = _conv_options(at, m.kernel_size, m.stride, m.padding, m.dilation, m.groups, m.out_channels, dims,
                         m.padding_mode)
    params = [m.weight] + ([m.bias] if m.bias is not None else [])
    imp.layer(node, _Spec(f"conv{dims}d", (imp.source(node.args[0], at),), at, opts, params,
                          bias=m.bias is not None))


def _pool(imp: _Importer, node: torch.fx.Node, m: nn.AvgPool1d | nn.AvgPool2d, at: str) -> None:
    dims = 1 if isinstance(m, nn.AvgPool1d) else 2
    _pool_layer(imp, node, at, dims, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                getattr(m, "divisor_override", None))


def _pool_layer(imp: _Importer, node: torch.fx.Node, at: str, dims: int, kernel: Any, stride: Any, padding: Any,
                ceil_mode: bool, divisor: Any) -> None:
    as_tuple = functools.partial(_tuple, dims=dims)
    if any(as_tuple(padding)) or ceil_mode or divisor is not None:
        raise UnsupportedModel(f"{at}: average pooling with padding, ceil_mode or divisor_override; the schema's "
                               "pools have none")
    stride = as_tuple(stride) if stride not in (None, ()) else as_tuple(kernel)
    imp.layer(node, _Spec(f"avg_pool{dims}d", (imp.source(node.args[0], at),), at,
                          {"kernel": as_tuple(kernel), "stride": stride}))


def _flatten(imp: _Importer, node: torch.fx.Node, m: nn.Flatten, at: str) -> None:
    if m.start_dim != 1 or m.end_dim != -1:
        raise UnsupportedModel(f"{at}: Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}); the schema flattens "
                               "from axis 1 to the end")
    imp.layer(node, _Spec("flatten", (imp.source(node.args[0], at),), at))


def _layer_norm(imp: _Importer, node: torch.fx.Node, m: nn.LayerNorm, at: str) -> None:
    if len(m.normalized_shape) != 1:
        raise UnsupportedModel(f"{at}: LayerNorm over {tuple(m.normalized_shape)}; the schema normalises the last "
                               "axis only")
    affine = m.weight is not None
    if affine and m.bias is None:
        raise UnsupportedModel(f"{at}: LayerNorm(bias=False); the schema's affine LayerNorm has a bias")
    imp.layer(node, _Spec("layer_norm", (imp.source(node.args[0], at),), at, {"affine": affine, "eps": float(m.eps)},
                          [m.weight, m.bias] if affine else []))


def _batch_norm(imp: _Importer, node: torch.fx.Node, m: nn.BatchNorm1d | nn.BatchNorm2d, at: str) -> None:
    train = m.training or not m.track_running_stats
    opts: dict[str, Any] = {"affine": bool(m.affine), "eps": float(m.eps), "mode": "train" if train else "eval"}
    if not train:
        opts["running_mean"] = tuple(float(v) for v in m.running_mean)
        opts["running_var"] = tuple(float(v) for v in m.running_var)
    imp.layer(node, _Spec("batch_norm", (imp.source(node.args[0], at),), at, opts,
                          [m.weight, m.bias] if m.affine else []))


def _attention(imp: _Importer, node: torch.fx.Node, m: nn.MultiheadAttention, at: str) -> None:
    args = list(node.args) + [node.kwargs.get(k) for k in ("query", "key", "value") if k in node.kwargs]
    if len(args) != 3 or not (args[0] is args[1] is args[2]):
        raise UnsupportedModel(f"{at}: the schema's attention is self-attention, attn(x, x, x)")
    for key in ("key_padding_mask", "attn_mask"):
        if node.kwargs.get(key) is not None:
            raise UnsupportedModel(f"{at}: {key}; the schema's attention has no mask")
    if node.kwargs.get("is_causal"):
        raise UnsupportedModel(f"{at}: is_causal; the schema's attention has no mask")
    if not m.batch_first:
        raise UnsupportedModel(f"{at}: batch_first=False; the schema reads (N, T, d): use batch_first=True")
    if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
        raise UnsupportedModel(f"{at}: kdim/vdim, add_bias_kv or add_zero_attn are not in the schema")
    if m.training and m.dropout > 0:
        raise UnsupportedModel(f"{at}: dropout={m.dropout} in training mode; call model.eval() or set dropout=0")
    bias = m.in_proj_bias is not None
    params = [m.in_proj_weight] + ([m.in_proj_bias] if bias else []) + [m.out_proj.weight] + (
        [m.out_proj.bias] if bias else [])
    imp.layer(node, _Spec("attention", (imp.source(args[0], at),), at, {"heads": m.num_heads}, params, bias=bias))
    imp.tuples.add(node)


def _embedding(imp: _Importer, node: torch.fx.Node, m: nn.Embedding, at: str) -> None:
    if m.padding_idx is not None or m.max_norm is not None:
        raise UnsupportedModel(f"{at}: padding_idx or max_norm; the schema's embedding has neither")
    imp.layer(node, _Spec("embedding", (imp.source(node.args[0], at),), at, {"vocab": m.num_embeddings,
                                                                              "dim": m.embedding_dim}, [m.weight]))


_MODULE_HANDLERS: dict[type, Callable[..., None]] = {
    nn.Linear: _linear, nn.Conv1d: _conv, nn.Conv2d: _conv, nn.AvgPool1d: _pool, nn.AvgPool2d: _pool,
    nn.Flatten: _flatten, nn.LayerNorm: _layer_norm, nn.BatchNorm1d: _batch_norm, nn.BatchNorm2d: _batch_norm,
    nn.MultiheadAttention: _attention, nn.Embedding: _embedding,
}


def _arg(node: torch.fx.Node, i: int, name: str, default: Any) -> Any:
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def _f_linear(imp: _Importer, node: torch.fx.Node, at: str) -> None:
    w, b = imp.param(_arg(node, 1, "weight", None), at), imp.param(_arg(node, 2, "bias", None), at)
    if w is None or w.ndim != 2:
        raise UnsupportedModel(f"{at}: F.linear needs a (units, fan_in) weight parameter")
    imp.layer(node, _Spec("dense", (imp.source(node.args[0], at),), at, params=[w] + ([b] if b is not None else []),
                          units=int(w.shape[0]), bias=b is not None))


def _f_conv(imp: _Importer, node: torch.fx.Node, at: str) -> None:
    w, b = imp.param(_arg(node, 1, "weight", None), at), imp.param(_arg(node, 2, "bias", None), at)
    dims = w.ndim - 2
    opts = _conv_options(at, tuple(w.shape[2:]), _arg(node, 3, "stride", 1), _arg(node, 4, "padding", 0),
                         _arg(node, 5, "dilation", 1), _arg(node, 6, "groups", 1), int(w.shape[0]), dims)
    imp.layer(node, _Spec(f"conv{dims}d", (imp.source(node.args[0], at),), at, opts,
                          [w] + ([b] if b is not None else []), bias=b is not None))


def _f_pool(imp: _Importer, node: torch.fx.Node, at: str) -> None:
    dims = 1 if node.target is F.avg_pool1d else 2
    _pool_layer(imp, node, at, dims, _arg(node, 1, "kernel_size", None), _arg(node, 2, "stride", None),
                _arg(node, 3, "padding", 0), _arg(node, 4, "ceil_mode", False), _arg(node, 6, "divisor_override", None))


def _f_layer_norm(imp: _Importer, node: torch.fx.Node, at: str) -> None:
    shape = _arg(node, 1, "normalized_shape", None)
    w, b = imp.param(_arg(node, 2, "weight", None), at), imp.param(_arg(node, 3, "bias", None), at)
    if len(tuple(shape)) != 1 or (w is None) != (b is None):
        raise UnsupportedModel(f"{at}: F.layer_norm over the last axis, with both weight and bias or neither")
    imp.layer(node, _Spec("layer_norm", (imp.source(node.args[0], at),), at,
                          {"affine": w is not None, "eps": float(_arg(node, 4, "eps", 1e-5))},
                          [w, b] if w is not None else []))


_FUNCTION_HANDLERS: dict[Any, Callable[..., None]] = {
    F.linear: _f_linear, F.conv1d: _f_conv, F.conv2d: _f_conv, F.avg_pool1d: _f_pool, F.avg_pool2d: _f_pool,
    F.layer_norm: _f_layer_norm,
}


# -- the problem ----------------------------------------------------------------------------------------------------


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # data-dependent control flow, a custom Function, ...
        raise UnsupportedModel(f"{type(model).__name__}: torch.fx cannot trace its forward "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return torch.fx.GraphModule(tracer.root, graph)


def _layers(specs: list[_Spec]) -> tuple[Layer, ...]:
    out = []
    for index, s in enumerate(specs, start=1):
        try:
            if s.kind == "dense":
                out.append(Layer(s.units, s.activation, s.bias, s.sources))
            else:
                options = tuple((k, list(v) if isinstance(v, tuple) else v) for k, v in s.options.items())
                bias = s.bias if s.kind in ("conv1d", "conv2d", "attention") else True
                out.append(Layer(None, s.activation, bias, s.sources, s.kind, options))
        except (ValueError, KeyError) as exc:
            raise UnsupportedModel(f"{s.where}: layer {index} ({s.kind}): {exc}") from None
    return tuple(out)


def import_module(model: nn.Module, loss_fn: Any, inputs: torch.Tensor, targets: torch.Tensor, *,
                  id: str = "module") -> Problem:
    """The user's module and loss, at its current parameters, on ``inputs`` and ``targets``, as a Problem.

    Parameters
    ----------
    model:
        An ``nn.Module`` built from the layers of the module text's table.
        It is not changed (a copy is traced and run once; BatchNorm's running
        statistics stay as they are).
    loss_fn:
        ``nn.MSELoss()``, ``nn.CrossEntropyLoss()``, ``nn.BCEWithLogitsLoss()``,
        ``nn.HuberLoss()``, ``F.mse_loss``, ..., or a function of
        ``(outputs, targets)`` that calls one (:func:`loss_spec`).
    inputs, targets:
        One batch: ``inputs`` ``(N, ...)`` (token ids for an embedding
        network), ``targets`` as the loss takes them.

    Raises
    ------
    UnsupportedModel
        An op, module, setting or loss the schema lacks, named with where it is.

    Examples
    --------
    >>> import torch, hessverify
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    >>> problem = import_module(net, torch.nn.MSELoss(), torch.ones(5, 3, dtype=torch.float64),
    ...                         torch.zeros(5, 2, dtype=torch.float64))
    >>> problem.architecture.describe(), problem.loss, str(problem.reduction)
    ('3-4(tanh)-2(identity)', 'mse', 'mean')
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModel(f"model: a {type(model).__name__}, not a torch.nn.Module")
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise UnsupportedModel("inputs and targets must be tensors (one batch)")
    spec = loss_spec(loss_fn)
    work = copy.deepcopy(model).to(torch.float64)
    x = inputs.detach().to(torch.float64) if inputs.is_floating_point() else inputs.detach()
    gm = _trace(work)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(x)
    except Exception as exc:
        raise UnsupportedModel(f"{type(model).__name__}: the traced forward does not run on the inputs "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    imp = _Importer(gm)
    out = imp.run()
    out_shape = torch.Size(imp.shape(out))
    input_shape = tuple(x.shape[1:])
    layers = _layers(imp.specs)
    try:
        arch = Architecture(int(np.prod(input_shape)), layers, input_shape if len(input_shape) != 1 else None)
    except ValueError as exc:
        raise UnsupportedModel(f"{type(model).__name__}: {exc}") from None
    params, index = _flat_params(work, imp.specs)
    N = x.shape[0]
    rows = spec.targets(targets, out_shape)
    problem = Problem(arch, spec.name, params, x.to(torch.float64).reshape(N, -1).numpy().copy(), rows,
                      spec.reduction, id=id, description=f"imported from {type(model).__name__}",
                      meta={"torch_index": index}, loss_options=spec.options)
    if int(np.prod(out_shape[1:])) != arch.outputs:
        raise UnsupportedModel(f"the traced outputs {tuple(out_shape)} do not match the layers' {arch.shapes[-1]}")
    return problem


def _flat_params(model: nn.Module, specs: list[_Spec]) -> tuple[np.ndarray, np.ndarray]:
    """The layers' parameters as one float64 vector, and where each entry sits in ``model.parameters()``'s."""
    offsets: dict[int, tuple[int, str]] = {}
    start = 0
    for name, p in model.named_parameters():
        offsets[id(p)] = (start, name)
        start += p.numel()
    seen: set[int] = set()
    values, index = [], []
    for s in specs:
        for p in s.params:
            if id(p) not in offsets:
                raise UnsupportedModel(f"{s.where}: uses a tensor that is not among model.parameters()")
            if id(p) in seen:
                raise UnsupportedModel(f"{s.where}: parameter {offsets[id(p)][1]} is used twice (shared weights are "
                                       "not in the schema)")
            seen.add(id(p))
            values.append(p.detach().reshape(-1).numpy())
            index.append(offsets[id(p)][0] + np.arange(p.numel()))
    unused = [name for pid, (_, name) in offsets.items() if pid not in seen]
    if unused:
        raise UnsupportedModel(f"parameter {unused[0]} is not used by forward; remove it or freeze it out of the "
                               "model")
    return np.concatenate(values).astype(np.float64), np.concatenate(index).astype(np.int64)


def torch_index(problem: Problem) -> np.ndarray:
    """For each problem parameter, its index in the flat ``model.parameters()`` vector (identity if not imported)."""
    index = problem.meta.get("torch_index")
    return np.arange(problem.n_params) if index is None else np.asarray(index)
