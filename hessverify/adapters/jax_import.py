"""A user's equinox model and loss as a :class:`~hessverify.model.problem.Problem` of the case schema.

:func:`import_module` walks the model's structure (equinox models are
per-pattern functions, run on a batch as ``jax.vmap(model)(inputs)``) and maps
each module to a layer kind of :mod:`hessverify.model.layers`:

===========================================  ==========================================
equinox                                      layer kind
===========================================  ==========================================
``eqx.nn.MLP`` (``scan=False``)              ``dense`` layers with its activations
``eqx.nn.Sequential`` (nested too)           its modules in order
``eqx.nn.Linear``                            ``dense`` (weight ``(out, in)``, as the schema's ``W``)
``eqx.nn.Conv1d/2d``                         ``conv1d`` / ``conv2d`` (zero padding, equal on both
                                             sides, dilation 1)
``eqx.nn.AvgPool1d/2d``                      ``avg_pool1d`` / ``avg_pool2d`` (no padding)
``eqx.nn.LayerNorm`` (a vector input)        ``layer_norm``
``eqx.nn.Lambda(f)``, an activation          the activation of the layer before, recognised by
                                             evaluating ``f``: tanh, sigmoid, relu, gelu (exact:
                                             ``jax.nn.gelu(x, approximate=False)``), silu,
                                             softplus, sin, identity
``eqx.nn.Lambda(jnp.ravel)`` and the like    ``flatten`` (recognised by evaluating: it must ravel)
``eqx.nn.Identity``, ``eqx.nn.Dropout``      nothing (dropout must be inference-mode)
===========================================  ==========================================

flax nnx models (batch functions, ``model(inputs)``; their parameters the
``nnx.Param`` leaves): ``nnx.Sequential`` of ``nnx.Linear`` (its kernel
``(in, out)`` is the schema's ``W`` transposed: ``jax_index`` maps it),
activation functions and ``nnx.LayerNorm`` of the last axis.

A user ``eqx.Module`` (or ``nnx.Module``) with its own ``__call__`` (residual adds, say) is not
walked: its composition lives in Python code this import does not read.  It
raises :class:`~hessverify.errors.UnsupportedModel`, and
:func:`hessverify.adapters.jax_check.check_module` judges such a model by
references from its own forward.

The loss (:func:`loss_spec`) is ``loss_fn(outputs, targets)``, ``outputs`` the
batch ``(N, ...)``; a loss that returns per-pattern or per-output values (as
optax's do) is averaged (``jnp.mean``), as ``optax.softmax_cross_entropy(y, t).mean()``
is written.  It is recognised by evaluating it at drawn outputs against the
schema's losses: mean squared error (``optax.squared_error``, ``jnp.mean((y - t) ** 2)``),
softmax cross-entropy (``optax.softmax_cross_entropy`` with one-hot or
probability targets, ``optax.softmax_cross_entropy_with_integer_labels``
with class indices), sigmoid binary cross-entropy on logits
(``optax.sigmoid_binary_cross_entropy``, one output), Huber
(``optax.huber_loss``, its ``delta`` read from a ``functools.partial``, else
1), half the squared error summed over outputs (``sse``,
``optax.l2_loss``), each averaged over patterns or summed.  Anything else
raises :class:`~hessverify.errors.UnsupportedModel`.

The problem's parameters are the model's flat leaves
(``jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))``);
``problem.meta["jax_index"][i]`` is the index, in that flat vector, of the
problem's parameter ``i`` (:func:`jax_index`; the identity for the walked
models, whose leaves come in the schema's order).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hessverify.errors import UnsupportedModel
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.losses import get_loss, huber
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem

__all__ = ["LossSpec", "apply_batch", "batch_loss", "flat_leaves", "import_module", "jax_index", "loss_spec",
           "merge_model", "model_kind", "split_model"]


def _eqx() -> Any:
    try:
        import equinox
    except ImportError:
        raise UnsupportedModel("importing an equinox model needs equinox: pip install 'hessverify[jax]'") from None
    return equinox


def _jax() -> tuple[Any, Any]:
    import jax
    import jax.numpy as jnp

    return jax, jnp


def _nnx() -> Any:
    try:
        from flax import nnx
    except ImportError:
        return None
    return nnx


def model_kind(model: Any) -> str:
    """``"equinox"`` for an ``eqx.Module``, ``"nnx"`` for a flax ``nnx.Module``; else ``UnsupportedModel``."""
    try:
        import equinox as eqx
    except ImportError:
        eqx = None
    if eqx is not None and isinstance(model, eqx.Module):
        return "equinox"
    nnx = _nnx()
    if nnx is not None and isinstance(model, nnx.Module):
        return "nnx"
    raise UnsupportedModel(f"model: a {type(model).__name__}, not an eqx.Module or a flax nnx.Module "
                           "(pip install 'hessverify[jax]' for equinox)")


def split_model(model: Any) -> tuple[Any, Any]:
    """``(params, static)``: the trained arrays as a pytree (equinox: the inexact-array leaves; nnx: the
    ``nnx.Param`` state), and what :func:`merge_model` rebuilds the model from with them."""
    if model_kind(model) == "equinox":
        import equinox as eqx

        params, static = eqx.partition(model, eqx.is_inexact_array)
        return params, ("equinox", static)
    nnx = _nnx()
    jax, _ = _jax()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    # no other state (the walked layers have none): the parts hash (graphdef does), so jit compiles once a structure
    return params, ("nnx", graphdef, rest if jax.tree_util.tree_leaves(rest) else None)


def merge_model(params: Any, static: Any) -> Any:
    """The model of :func:`split_model`'s parts (``params`` may be traced, or at another dtype)."""
    if static[0] == "equinox":
        import equinox as eqx

        return eqx.combine(params, static[1])
    if static[2] is None:
        return _nnx().merge(static[1], params)
    return _nnx().merge(static[1], params, static[2])


def apply_batch(model: Any, x: Any, static: Any = None) -> Any:
    """The batch's outputs: ``jax.vmap(model)(x)`` for equinox (a function of one pattern), ``model(x)`` for nnx."""
    jax, _ = _jax()
    kind = static[0] if static is not None else model_kind(model)
    return jax.vmap(model)(x) if kind == "equinox" else model(x)


def flat_leaves(model: Any) -> list[Any]:
    """The model's parameters: the leaves of :func:`split_model`'s ``params``, in ``jax.tree_util`` order."""
    jax, _ = _jax()
    return jax.tree_util.tree_leaves(split_model(model)[0])


# -- the loss -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossSpec:
    """A JAX loss as the schema's: name, reduction, settings, and whether its targets are class indices."""

    name: str
    reduction: str
    options: tuple[tuple[str, float], ...] = ()
    integer_targets: bool = False
    what: str = ""

    def targets(self, targets: Any, outputs: tuple[int, ...]) -> np.ndarray:
        """The targets as the schema's float64 ``(N, K)`` rows (class indices become one-hot rows)."""
        N, K = outputs[0], int(np.prod(outputs[1:], dtype=np.int64))
        t = np.asarray(targets)
        if self.integer_targets:
            rows = np.zeros((N, K))
            rows[np.arange(N), t.astype(np.int64)] = 1.0
            return rows
        return t.astype(np.float64).reshape(N, K)

    def value(self, y: np.ndarray, rows: np.ndarray) -> float:
        """The schema's ``E`` of outputs ``y`` ``(N, K)`` and target rows."""
        loss = huber(dict(self.options)["delta"]) if self.name == "huber" else get_loss(self.name)
        e = float(np.sum(loss.value(y, rows)))
        if self.reduction == "sum":
            return e
        return e / (y.shape[0] * (y.shape[1] if loss.mean_over_outputs else 1))


def batch_loss(loss_fn: Callable[..., Any]) -> Callable[[Any, Any], Any]:
    """``loss_fn`` as a scalar: its mean where it returns per-pattern values."""
    _, jnp = _jax()

    def E(y: Any, t: Any) -> Any:
        out = loss_fn(y, t)
        return out if jnp.ndim(out) == 0 else jnp.mean(out)

    return E


def _delta(loss_fn: Any) -> float:
    if isinstance(loss_fn, functools.partial):
        return float(loss_fn.keywords.get("delta", 1.0))
    return 1.0


def loss_spec(loss_fn: Any, outputs: np.ndarray, targets: Any) -> LossSpec:
    """The schema's loss that ``loss_fn`` computes, recognised by evaluating it on drawn outputs (module text).

    ``outputs`` is the model's batch output (its shape and scale); ``targets``
    the user's.  Raises :class:`~hessverify.errors.UnsupportedModel` naming the
    loss when no schema loss agrees within ``1e-10`` relative.
    """
    _, jnp = _jax()
    what = getattr(loss_fn, "__name__", None) or getattr(getattr(loss_fn, "func", None), "__name__", None) \
        or type(loss_fn).__name__
    if not callable(loss_fn):
        raise UnsupportedModel(f"loss_fn: a {type(loss_fn).__name__} is not a loss")
    y0 = np.asarray(outputs, dtype=np.float64)
    shape = y0.shape
    N, K = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    t = np.asarray(targets)
    integer = np.issubdtype(t.dtype, np.integer)
    if integer and t.shape != (N,):
        raise UnsupportedModel(f"loss {what}: integer targets of shape {t.shape}, expected class indices ({N},)")
    if not integer and t.shape != shape:
        raise UnsupportedModel(f"loss {what}: targets of shape {t.shape} for outputs of shape {shape}; give them the "
                               "outputs' shape (no broadcasting)")
    E = batch_loss(loss_fn)
    rng = np.random.default_rng(0)
    draws = [y0] + [y0 + rng.normal(0.0, 2.0, shape) for _ in range(2)]
    try:
        mine = [float(E(jnp.asarray(y), jnp.asarray(t))) for y in draws]
    except Exception as exc:
        raise UnsupportedModel(f"loss {what}: does not run on (outputs, targets) ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    names = ["cross_entropy"] if integer else ["mse", "cross_entropy", "binary_cross_entropy", "huber", "sse"]
    for name in names:
        options = (("delta", _delta(loss_fn)),) if name == "huber" else ()
        for reduction in ("mean", "sum"):
            spec = LossSpec(name, reduction, options, bool(integer), what)
            rows = spec.targets(t, shape)
            with np.errstate(all="ignore"):
                theirs = [spec.value(y.reshape(N, K), rows) for y in draws]
            if all(np.isfinite(b) and abs(a - b) <= 1e-10 * max(abs(a), abs(b), 1e-300) for a, b in zip(mine, theirs)):
                return spec
    raise UnsupportedModel(f"loss {what}: not one of the schema's losses (mean squared error, softmax cross-entropy, "
                           "sigmoid binary cross-entropy on logits, Huber, half the squared error; averaged over "
                           "patterns or summed): evaluated on drawn outputs, none agrees")


# -- the network ------------------------------------------------------------------------------------------------


@dataclass
class _Spec:
    kind: str
    where: str
    options: dict[str, Any] = field(default_factory=dict)
    params: list[Any] = field(default_factory=list)
    activation: str = "identity"
    units: int | None = None
    bias: bool = True


_GRID = np.linspace(-4.0, 4.0, 33)


def activation_name(f: Callable[[Any], Any], where: str) -> str:
    """The schema's activation that ``f`` computes, recognised by evaluating it on a grid of ``[-4, 4]``."""
    _, jnp = _jax()
    try:
        got = np.asarray(f(jnp.asarray(_GRID)), dtype=np.float64)
    except Exception as exc:
        raise UnsupportedModel(f"{where}: {getattr(f, '__name__', f)!r} does not run elementwise on an array "
                               f"({type(exc).__name__})") from None
    if got.shape == _GRID.shape:
        for name, act in ACTIVATIONS.items():
            ref = act.f(_GRID)
            if np.all(np.abs(got - ref) <= 1e-12 * np.maximum(1.0, np.abs(ref))):
                return name
    name = getattr(f, "__name__", None) or repr(f)
    raise UnsupportedModel(f"{where}: {name} is not an activation of the schema (tanh, sigmoid, relu, exact gelu "
                           "(jax.nn.gelu(x, approximate=False)), silu, softplus, sin, identity), evaluated on [-4, 4]")


def _is_flatten(f: Callable[[Any], Any], shape: tuple[int, ...]) -> bool:
    _, jnp = _jax()
    probe = np.arange(float(np.prod(shape))).reshape(shape)
    try:
        out = np.asarray(f(jnp.asarray(probe)))
    except Exception:
        return False
    return out.shape == (probe.size,) and bool(np.all(out == probe.ravel()))


def _value(v: Any) -> Any:
    """An nnx variable's array (the array itself elsewhere)."""
    get = getattr(v, "get_value", None)  # flax >= 0.12 (``.value`` is deprecated there)
    if callable(get):
        return get()
    return v.value if hasattr(v, "value") else v


class _Walker:
    """The model's modules in the order they run, as layer specs (module text)."""

    def __init__(self) -> None:
        self.specs: list[_Spec] = []

    def activation(self, f: Callable[[Any], Any], where: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) > 1 and self.specs and _is_flatten(f, shape):
            self.specs.append(_Spec("flatten", where))
            return (int(np.prod(shape)),)
        name = activation_name(f, where)
        if name == "identity":
            return shape
        if not self.specs:
            raise UnsupportedModel(f"{where}: an activation on the inputs, before any layer; the schema applies "
                                   "activations after layers")
        last = self.specs[-1]
        if last.activation != "identity" or last.kind in ("flatten", "avg_pool1d", "avg_pool2d"):
            raise UnsupportedModel(f"{where}: {name} after {last.where} ({last.kind}, activation {last.activation}); "
                                   "the schema applies one activation after a dense, conv or layer-norm layer")
        last.activation = name
        return shape

    def walk(self, m: Any, where: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        nnx = _nnx()
        if nnx is not None and isinstance(m, nnx.Module):
            return self.nnx(m, where, shape)
        try:
            import equinox
        except ImportError:
            equinox = None
        if (equinox is None or not isinstance(m, equinox.Module)) and callable(m):  # a function in a Sequential
            return self.activation(m, where, shape)
        eqx = _eqx()
        nn = eqx.nn
        if isinstance(m, nn.Sequential):
            for k, sub in enumerate(m.layers):
                shape = self.walk(sub, f"{where}.layers[{k}]", shape)
            return shape
        if isinstance(m, nn.MLP):
            return self.mlp(m, where, shape)
        if isinstance(m, nn.Linear):
            return self.linear(m, where, shape)
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) and type(m) in (nn.Conv1d, nn.Conv2d):
            return self.conv(m, where, shape)
        if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
            return self.pool(m, where, shape)
        if isinstance(m, nn.LayerNorm):
            return self.layer_norm(m, where, shape)
        if isinstance(m, nn.Lambda):
            if _jax()[0].tree_util.tree_leaves(eqx.filter(m.fn, eqx.is_inexact_array)):
                raise UnsupportedModel(f"{where}: Lambda of a function with parameters")
            return self.activation(m.fn, where, shape)
        if isinstance(m, nn.Identity):
            return shape
        if isinstance(m, nn.Dropout):
            if not m.inference and m.p > 0:
                raise UnsupportedModel(f"{where}: Dropout(p={m.p}) not in inference mode; eqx.nn.inference_mode(model)")
            return shape
        if isinstance(m, eqx.Module):
            raise UnsupportedModel(f"{where}: {type(m).__name__} is an eqx.Module with its own __call__, which the "
                                   "import does not read (it walks eqx.nn.MLP, eqx.nn.Sequential and the layers of "
                                   "hessverify.adapters.jax_import); check_module judges it by references from its "
                                   "forward")
        if callable(m):  # a bare function in a Sequential
            return self.activation(m, where, shape)
        raise UnsupportedModel(f"{where}: a {type(m).__name__} is not a module")

    def nnx(self, m: Any, where: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        nnx = _nnx()
        if isinstance(m, nnx.Sequential):
            for k, sub in enumerate(m.layers):
                shape = self.walk(sub, f"{where}.layers[{k}]", shape)
            return shape
        if isinstance(m, nnx.Linear):
            if len(shape) != 1:
                raise UnsupportedModel(f"{where}: nnx.Linear on an input of shape {shape}; flatten first")
            n_in, n_out = int(m.in_features), int(m.out_features)
            transposed = np.arange(n_in * n_out).reshape(n_in, n_out).T.reshape(-1)  # kernel (in, out): W is (out, in)
            params: list[Any] = [(_value(m.kernel), transposed)] + ([_value(m.bias)] if m.use_bias else [])
            self.specs.append(_Spec("dense", where, params=params, units=n_out, bias=bool(m.use_bias)))
            return (n_out,)
        if isinstance(m, nnx.LayerNorm):
            axes = tuple(np.atleast_1d(m.reduction_axes)), tuple(np.atleast_1d(m.feature_axes))
            if len(shape) != 1 or axes != ((-1,), (-1,)):
                raise UnsupportedModel(f"{where}: nnx.LayerNorm over axes {axes} on an input of shape {shape}; the "
                                       "import takes a LayerNorm of a vector's last axis")
            if m.use_scale != m.use_bias:
                raise UnsupportedModel(f"{where}: nnx.LayerNorm with only one of scale and bias; the schema's affine "
                                       "LayerNorm has both or neither")
            affine = bool(m.use_scale)
            self.specs.append(_Spec("layer_norm", where, {"affine": affine, "eps": float(m.epsilon)},
                                    [_value(m.scale), _value(m.bias)] if affine else []))
            return shape
        raise UnsupportedModel(f"{where}: nnx.{type(m).__name__} is not walked (the import takes nnx.Sequential, "
                               "nnx.Linear, nnx.LayerNorm and activation functions); check_module judges it by "
                               "references from its forward")

    def mlp(self, m: Any, where: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        eqx = _eqx()
        if getattr(m, "scan", False):
            raise UnsupportedModel(f"{where}: eqx.nn.MLP(scan=True) stacks its hidden layers; use scan=False")
        if m.in_size == "scalar" or m.out_size == "scalar":
            raise UnsupportedModel(f"{where}: eqx.nn.MLP with a 'scalar' input or output; give sizes")
        for f, label in ((m.activation, "activation"), (m.final_activation, "final_activation")):
            if _jax()[0].tree_util.tree_leaves(eqx.filter(f, eqx.is_inexact_array)):
                raise UnsupportedModel(f"{where}.{label}: an activation with parameters is not in the schema")
        for k, layer in enumerate(m.layers):
            shape = self.linear(layer, f"{where}.layers[{k}]", shape)
            f = m.activation if k < len(m.layers) - 1 else m.final_activation
            shape = self.activation(f, f"{where}.{'activation' if k < len(m.layers) - 1 else 'final_activation'}",
                                    shape)
        return shape

    def linear(self, m: Any, where: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        if m.in_features == "scalar" or m.out_features == "scalar":
            raise UnsupportedModel(f"{where}: Linear with 'scalar' features; give sizes")
        if len(shape) != 1:
            raise UnsupportedModel(f"{where}: Linear on an input of shape {shape}; flatten first")
        params = [m.weight] + ([m.bias] if m.bias is not None else [])
        self.specs.append(_Spec("dense", where, params=params, units=int(m.out_features), bias=m.bias is not None))
        return (int(m.out_features),)

    def conv(self, m: Any, where: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        dims = m.num_spatial_dims
        if str(getattr(m, "padding_mode", "ZEROS")).upper() != "ZEROS":
            raise UnsupportedModel(f"{where}: padding_mode={m.padding_mode!r}; the schema pads with zeros")
        pads = tuple(tuple(p) for p in m.padding)
        if any(lo != hi for lo, hi in pads):
            raise UnsupportedModel(f"{where}: padding {pads}; the schema pads equally on both sides")
        if any(d != 1 for d in m.dilation):
            raise UnsupportedModel(f"{where}: dilation={m.dilation}; the schema's convolutions have dilation 1")
        if getattr(m, "transpose", False):
            raise UnsupportedModel(f"{where}: a transposed convolution is not in the schema")
        kernel = tuple(int(k) for k in m.kernel_size)
        opts = {"channels": int(m.out_channels), "kernel": kernel, "stride": tuple(int(s) for s in m.stride),
                "padding": tuple(int(lo) for lo, _ in pads), "groups": int(m.groups)}
        params = [m.weight] + ([m.bias] if m.use_bias else [])
        self.specs.append(_Spec(f"conv{dims}d", where, opts, params, bias=bool(m.use_bias)))
        spatial = tuple((n + 2 * p - k) // s + 1 for n, p, k, s in zip(shape[1:], opts["padding"], kernel,
                                                                      opts["stride"]))
        return (int(m.out_channels), *spatial)

    def pool(self, m: Any, where: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        import jax

        if m.operation is not jax.lax.add:
            raise UnsupportedModel(f"{where}: {type(m).__name__} is not average pooling")
        if any(p != (0, 0) for p in (tuple(q) for q in m.padding)) or m.use_ceil:
            raise UnsupportedModel(f"{where}: average pooling with padding or use_ceil; the schema's pools have none")
        dims = m.num_spatial_dims
        kernel, stride = tuple(int(k) for k in m.kernel_size), tuple(int(s) for s in m.stride)
        self.specs.append(_Spec(f"avg_pool{dims}d", where, {"kernel": kernel, "stride": stride}))
        return (shape[0], *((n - k) // s + 1 for n, k, s in zip(shape[1:], kernel, stride)))

    def layer_norm(self, m: Any, where: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(tuple(m.shape)) != 1 or len(shape) != 1:
            raise UnsupportedModel(f"{where}: LayerNorm over {tuple(m.shape)} on an input of shape {shape}; the "
                                   "import takes a LayerNorm of a vector (the schema normalises the last axis)")
        if m.use_weight != m.use_bias:
            raise UnsupportedModel(f"{where}: LayerNorm with only one of weight and bias; the schema's affine "
                                   "LayerNorm has both or neither")
        affine = bool(m.use_weight)
        self.specs.append(_Spec("layer_norm", where, {"affine": affine, "eps": float(m.eps)},
                                [m.weight, m.bias] if affine else []))
        return shape


def _layers(specs: list[_Spec]) -> tuple[Layer, ...]:
    out = []
    for index, s in enumerate(specs, start=1):
        sources = (index - 1,)
        try:
            if s.kind == "dense":
                out.append(Layer(s.units, s.activation, s.bias, sources))
            else:
                options = tuple((k, list(v) if isinstance(v, tuple) else v) for k, v in s.options.items())
                bias = s.bias if s.kind in ("conv1d", "conv2d") else True
                out.append(Layer(None, s.activation, bias, sources, s.kind, options))
        except (ValueError, KeyError) as exc:
            raise UnsupportedModel(f"{s.where}: layer {index} ({s.kind}): {exc}") from None
    return tuple(out)


def _flat_params(model: Any, specs: list[_Spec]) -> tuple[np.ndarray, np.ndarray]:
    """The layers' parameters as one float64 vector, and where each entry sits among the model's flat leaves."""
    leaves = flat_leaves(model)
    offsets: dict[int, int] = {}
    start = 0
    for leaf in leaves:
        offsets[id(leaf)] = start
        start += int(np.size(leaf))
    seen: set[int] = set()
    values, index = [], []
    for s in specs:
        for entry in s.params:
            p, order = entry if isinstance(entry, tuple) else (entry, np.arange(int(np.size(entry))))
            if id(p) not in offsets:
                raise UnsupportedModel(f"{s.where}: uses an array that is not among the model's inexact leaves")
            if id(p) in seen:
                raise UnsupportedModel(f"{s.where}: an array is used twice (shared weights are not in the schema)")
            seen.add(id(p))
            values.append(np.asarray(p, dtype=np.float64).reshape(-1)[order])
            index.append(offsets[id(p)] + order)
    if len(seen) != len(leaves):
        raise UnsupportedModel(f"the model has {len(leaves) - len(seen)} inexact array leaves that no walked layer "
                               "uses (a buffer or a frozen array?); the schema's parameters are all trained")
    return np.concatenate(values), np.concatenate(index).astype(np.int64)


def import_module(model: Any, loss_fn: Any, inputs: Any, targets: Any, *, id: str = "module") -> Problem:
    """The user's equinox model and loss, at its current parameters, on ``inputs`` and ``targets``, as a Problem.

    Parameters
    ----------
    model:
        An ``eqx.nn.MLP``, ``eqx.nn.Sequential`` or one layer of the module text's table, a function of
        one pattern (the batch runs as ``jax.vmap(model)(inputs)``).
    loss_fn:
        ``loss_fn(outputs, targets)`` of the batch, one of the schema's losses (module text).
    inputs, targets:
        One batch: ``inputs`` ``(N, ...)``; ``targets`` as ``loss_fn`` takes them.

    Raises
    ------
    UnsupportedModel
        A module, setting or loss the schema lacks, named with where it is.

    Examples
    --------
    >>> import jax, equinox as eqx, optax
    >>> jax.config.update("jax_enable_x64", True)
    >>> mlp = eqx.nn.MLP(3, 2, 4, 1, activation=jax.nn.tanh, key=jax.random.key(0), dtype=jax.numpy.float64)
    >>> x, t = jax.numpy.ones((5, 3)), jax.numpy.zeros((5, 2))
    >>> p = import_module(mlp, lambda y, t: optax.squared_error(y, t).mean(), x, t)
    >>> p.architecture.describe(), p.loss, str(p.reduction)
    ('3-4(tanh)-2(identity)', 'mse', 'mean')
    """
    jax, jnp = _jax()
    kind = model_kind(model)
    x = np.asarray(inputs)
    if not np.issubdtype(x.dtype, np.floating) or x.ndim < 2:
        raise UnsupportedModel(f"inputs: a batch (N, ...) of floating-point values, got {x.dtype} {x.shape}")
    walker = _Walker()
    out_shape = walker.walk(model, type(model).__name__, tuple(x.shape[1:]))
    if not walker.specs:
        raise UnsupportedModel(f"{type(model).__name__}: no layer with parameters or shape to import")
    layers = _layers(walker.specs)
    input_shape = tuple(int(n) for n in x.shape[1:])
    try:
        arch = Architecture(int(np.prod(input_shape)), layers, input_shape if len(input_shape) != 1 else None)
    except ValueError as exc:
        raise UnsupportedModel(f"{type(model).__name__}: {exc}") from None
    params, index = _flat_params(model, walker.specs)
    try:
        y = np.asarray(apply_batch(model, jnp.asarray(x)), dtype=np.float64)
    except Exception as exc:
        raise UnsupportedModel(f"{type(model).__name__}: does not run on the inputs ({type(exc).__name__})") from None
    if y.shape[1:] != tuple(out_shape) or int(np.prod(out_shape)) != arch.outputs:
        raise UnsupportedModel(f"{type(model).__name__}: outputs {y.shape[1:]} do not match the layers' {out_shape}")
    spec = loss_spec(loss_fn, y, targets)
    N = x.shape[0]
    rows = spec.targets(targets, y.shape)
    return Problem(arch, spec.name, params, x.astype(np.float64).reshape(N, -1).copy(), rows, spec.reduction, id=id,
                   description=f"imported from {type(model).__name__} ({kind})", meta={"jax_index": index},
                   loss_options=spec.options)


def jax_index(problem: Problem) -> np.ndarray:
    """For each problem parameter, its index in the model's flat leaves (identity if not imported)."""
    index = problem.meta.get("jax_index")
    return np.arange(problem.n_params) if index is None else np.asarray(index)
