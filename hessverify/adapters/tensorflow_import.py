"""A user's Keras model and Keras loss as a :class:`~hessverify.model.problem.Problem` of the case schema.

:func:`import_module` walks a ``keras.Sequential`` or functional ``keras.Model`` (Keras 3 on TensorFlow, what
:func:`hessverify.adapters.tensorflow.to_keras` builds) from its input to its output, layer by layer, and maps
each layer to a layer kind of :mod:`hessverify.model.layers`:

========================================================  ===========================================
Keras                                                      layer kind
========================================================  ===========================================
``Dense`` (its ``activation`` too)                         ``dense`` (on the last axis)
``Conv1D``, ``Conv2D`` (``channels_last``, ``valid``, or   ``conv1d`` / ``conv2d``
``same`` with stride 1 and odd kernels; dilation 1)
``AveragePooling1D/2D`` (``channels_last``, ``valid``)     ``avg_pool1d`` / ``avg_pool2d``
``Flatten``                                                ``flatten``
``LayerNormalization`` (last axis, ``center == scale``)    ``layer_norm``
``Add`` (two values)                                       ``add``
``MultiHeadAttention``, ``mha(x, x)``, no mask             ``attention`` (``key_dim = d / heads``)
``Embedding`` (first layer)                                ``embedding``
``Activation``: tanh, sigmoid, relu, gelu (exact), silu,   the activation of the layer before
softplus, sin, linear (``keras.activations`` or ``tf``)
``InputLayer``, ``Dropout``, ``Identity``                  nothing
========================================================  ===========================================

Layouts.  The schema's tensors are PyTorch's: channels first, ``W`` ``(out, in)``.  Keras is channels last
with kernels ``(in, out)``.  The import keeps track, for each value, of how Keras holds it: as the schema
does, channels last (a convolution's input and output: the schema's ``(C, L)`` is Keras' ``(L, C)``), or, after a
``Flatten`` of a channels-last value, a permutation of the schema's features.  An image or sequence input
read by a convolution or a pool is moved to channels first in the problem's inputs; a ``Dense`` after such a
``Flatten`` has its kernel's rows put in the schema's order, as does a ``LayerNormalization``'s ``gamma`` and
``beta``.  What cannot be expressed that way (a ``Dense`` or a ``LayerNormalization`` on a channels-last value,
a convolution of an embedding's ``(T, d)``) is refused.

The loss (:func:`loss_spec`): ``MeanSquaredError`` (``mse``), ``CategoricalCrossentropy(from_logits=True)``
and ``SparseCategoricalCrossentropy(from_logits=True)`` (``cross_entropy``; label smoothing
``(1 - e) t + e / K``), ``BinaryCrossentropy(from_logits=True)`` (``binary_cross_entropy``; one output),
``Huber(delta)`` (``huber``); reductions ``sum_over_batch_size`` and ``sum``.  Keras' MSE, Huber and BCE
average over the outputs before reducing: with ``sum`` (and BCE always) that is ``E / K`` of the schema's,
which no schema loss is, so more than one output is refused there.

The problem's parameters are the schema's tensors in layer order; ``problem.meta["keras_index"][i]`` is the
index, in the flat ``model.trainable_variables`` vector (each variable flattened row-major, concatenated), of
the problem's parameter ``i`` (:func:`keras_index`).  Anything the schema lacks raises
:class:`~hessverify.errors.UnsupportedModel`, one line naming the layer (its name and class) or the loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hessverify.adapters import tensorflow_table as _table
from hessverify.errors import UnsupportedModel
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem

keras, tf = _table.keras, _table.tf  # Keras 3 on TensorFlow, as the table set it up (KERAS_BACKEND)

__all__ = ["KerasLoss", "import_module", "keras_index", "loss_at", "loss_spec"]


# -- the loss -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KerasLoss:
    """A Keras loss as the schema's: name, reduction, settings, and how targets become ``(N, K)`` rows."""

    name: str
    reduction: str
    options: tuple[tuple[str, float], ...] = ()
    label_smoothing: float = 0.0
    sparse: bool = False
    keras_name: str = ""

    def targets(self, targets: Any, outputs: tuple[int, ...]) -> np.ndarray:
        """The targets as the schema's float64 ``(N, K)`` rows, in Keras' order of the outputs."""
        N, K = outputs[0], int(np.prod(outputs[1:], dtype=np.int64))
        t = np.asarray(targets.numpy() if hasattr(targets, "numpy") else targets)
        if len(outputs) != 2:
            raise UnsupportedModel(f"{self.keras_name} on outputs of shape {tuple(outputs)}: Keras averages over the "
                                   "axes between the batch and the last; flatten to (N, outputs) first")
        if self.sparse:
            if t.shape not in ((N,), (N, 1)) or not np.all(np.equal(np.rint(t), t)):
                raise UnsupportedModel(f"{self.keras_name}: class-index targets of shape {t.shape}, expected ({N},)")
            ids = np.rint(t).astype(np.int64).reshape(N)
            if ids.min() < 0 or ids.max() >= K:
                raise UnsupportedModel(f"{self.keras_name}: a class index outside 0..{K - 1}")
            return np.eye(K)[ids]
        if t.shape != tuple(outputs):
            raise UnsupportedModel(f"{self.keras_name}: targets of shape {t.shape} for outputs of shape "
                                   f"{tuple(outputs)}; give them the outputs' shape (no broadcasting)")
        rows = t.astype(np.float64).reshape(N, K)
        e = self.label_smoothing
        if e and self.name == "cross_entropy":
            return (1.0 - e) * rows + e / K
        if e:  # binary: towards 1/2
            return (1.0 - e) * rows + 0.5 * e
        return rows


_LOSS_CLASSES = {"MeanSquaredError": "mse", "CategoricalCrossentropy": "cross_entropy",
                 "SparseCategoricalCrossentropy": "cross_entropy", "BinaryCrossentropy": "binary_cross_entropy",
                 "Huber": "huber"}


def _fn_kwargs(loss: Any) -> dict[str, Any]:
    return dict(getattr(loss, "_fn_kwargs", {}) or {})


def loss_spec(loss: Any, outputs: int | None = None) -> KerasLoss:
    """The schema's loss for a Keras loss object (``outputs``: ``K``, for the refusals that depend on it).

    Examples
    --------
    >>> spec = loss_spec(keras.losses.Huber(delta=0.5, reduction="sum"), outputs=1)
    >>> spec.name, spec.reduction, spec.options
    ('huber', 'sum', (('delta', 0.5),))
    """
    cls = type(loss).__name__
    if not isinstance(loss, keras.losses.Loss) or cls not in _LOSS_CLASSES or \
            type(loss).__module__.split(".")[0] != "keras":
        raise UnsupportedModel(f"loss {cls}: choose keras.losses.MeanSquaredError, CategoricalCrossentropy("
                               "from_logits=True), SparseCategoricalCrossentropy(from_logits=True), "
                               "BinaryCrossentropy(from_logits=True) or Huber")
    name = _LOSS_CLASSES[cls]
    kw = _fn_kwargs(loss)
    reduction = loss.reduction
    if reduction not in ("sum", "sum_over_batch_size"):
        raise UnsupportedModel(f"{cls}(reduction={reduction!r}): choose 'sum_over_batch_size' or 'sum' (a scalar "
                               "loss the schema has)")
    if name in ("cross_entropy", "binary_cross_entropy") and not kw.get("from_logits", False):
        raise UnsupportedModel(f"{cls}(from_logits=False): the schema's losses read logits; pass from_logits=True "
                               "and leave the last layer linear")
    if kw.get("axis", -1) != -1 or kw.get("ignore_class") is not None:
        raise UnsupportedModel(f"{cls}: axis other than -1 or ignore_class; not in the schema")
    per_output = name in ("mse", "huber", "binary_cross_entropy")
    if per_output and outputs is not None and outputs > 1 and (reduction == "sum" or name == "binary_cross_entropy"):
        raise UnsupportedModel(f"{cls}(reduction={reduction!r}) on {outputs} outputs averages over them: "
                               f"E / {outputs} of the schema's {name}, which no schema loss is; use one output"
                               + ("" if name == "binary_cross_entropy" else " or reduction='sum_over_batch_size'"))
    schema_reduction = "sum" if reduction == "sum" else "mean"
    options = (("delta", float(kw.get("delta", 1.0))),) if name == "huber" else ()
    return KerasLoss(name, schema_reduction, options, float(kw.get("label_smoothing", 0.0) or 0.0),
                     cls == "SparseCategoricalCrossentropy", cls)


def loss_at(loss: Any, dtype: Any) -> Any:
    """The same Keras loss computing in ``dtype`` (a Keras loss made without ``dtype`` computes in float32 even on
    float64 outputs); anything else (a function) as it is."""
    if not isinstance(loss, keras.losses.Loss):
        return loss
    name = tf.as_dtype(dtype).name
    if getattr(loss, "dtype", None) == name:
        return loss
    params = inspect.signature(type(loss).__init__).parameters
    config = {**loss.get_config(), **_fn_kwargs(loss), "dtype": name}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        config = {k: v for k, v in config.items() if k in params}
    return type(loss)(**config)


# -- the network ------------------------------------------------------------------------------------------------


def _activation_table() -> dict[Any, str]:
    A = keras.activations
    table: dict[Any, str] = {A.linear: "identity", A.tanh: "tanh", A.sigmoid: "sigmoid", A.relu: "relu",
                             A.silu: "silu", A.softplus: "softplus", A.gelu: "gelu"}
    for fn, name in ((tf.tanh, "tanh"), (tf.nn.tanh, "tanh"), (tf.math.tanh, "tanh"), (tf.sigmoid, "sigmoid"),
                     (tf.nn.sigmoid, "sigmoid"), (tf.math.sigmoid, "sigmoid"), (tf.nn.relu, "relu"),
                     (tf.nn.silu, "silu"), (tf.nn.softplus, "softplus"), (tf.math.softplus, "softplus"),
                     (tf.sin, "sin"), (tf.math.sin, "sin"), (tf.identity, "identity")):
        table[fn] = name
    return table


_ACTIVATIONS = _activation_table()


@dataclass
class _Value:
    """How Keras holds one value of the network: ``layer`` whose output it is (0: the input), ``layout``
    (``plain``: as the schema; ``cl``: channels last where the schema is channels first; ``perm``: features
    permuted, ``keras[k] = schema[perm[k]]``), Keras' shape (batch left out), and whether the layer owns it
    (an alias through ``Dropout`` does not)."""

    layer: int
    layout: str
    shape: tuple[int, ...]
    perm: np.ndarray | None = None
    owned: bool = True


@dataclass
class _Spec:
    kind: str
    sources: tuple[int, ...]
    where: str
    options: dict[str, Any] = field(default_factory=dict)
    params: list[np.ndarray] = field(default_factory=list)  # the schema's tensors, as indices of Keras' flat vector
    activation: str = "identity"
    units: int | None = None
    bias: bool = True


def _where(layer: Any) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _shape(kt: Any) -> tuple[int, ...]:
    return tuple(int(s) if s is not None else -1 for s in kt.shape[1:])


class _Importer:
    """Walks the layer graph once, from the input to the output (module text)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.offsets: dict[int, tuple[int, tuple[int, ...]]] = {}
        start = 0
        for v in model.trainable_variables:
            shape = tuple(int(s) for s in v.shape)
            self.offsets[id(v)] = (start, shape)
            start += int(np.prod(shape, dtype=np.int64))
        self.size = start
        self.specs: list[_Spec] = []
        self.values: dict[int, _Value] = {}
        self.users: dict[int, int] = {}

    # helpers ----------------------------------------------------------------------------------------------
    def kidx(self, v: Any, at: str) -> np.ndarray:
        """The indices, in Keras' flat vector, of a trainable variable's entries, shaped as the variable."""
        if id(v) not in self.offsets:
            raise UnsupportedModel(f"{at}: weight {v.path} is not trainable (a frozen layer); the schema has no "
                                   "constant weights")
        start, shape = self.offsets[id(v)]
        return start + np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape)

    def value(self, kt: Any, at: str) -> _Value:
        if id(kt) not in self.values:
            raise UnsupportedModel(f"{at}: reads a value that is not computed by the network's layers")
        return self.values[id(kt)]

    def layer(self, out: Any, spec: _Spec, layout: str, perm: np.ndarray | None = None) -> None:
        self.specs.append(spec)
        self.values[id(out)] = _Value(len(self.specs), layout, _shape(out), perm)

    def alias(self, out: Any, v: _Value, **changes: Any) -> None:
        self.values[id(out)] = _Value(**{**v.__dict__, "owned": False, "shape": _shape(out), **changes})

    def activation(self, out: Any, src: Any, fn: Any, at: str) -> None:
        name = _activation_name(fn, at)
        v = self.value(src, at)
        if name == "identity":
            return self.alias(out, v, owned=v.owned)
        if v.layer == 0:
            raise UnsupportedModel(f"{at}: {name} of the network's input; the schema applies activations after a "
                                   "layer")
        spec = self.specs[v.layer - 1]
        if spec.activation != "identity" or spec.kind == "flatten" or not v.owned or self.users.get(id(src), 0) != 1:
            raise UnsupportedModel(f"{at}: {name} of a value that already has an activation, is a flatten's, or is "
                                   "also used elsewhere; the schema applies one activation to a layer's only output")
        spec.activation = name
        self.values[id(out)] = _Value(v.layer, v.layout, _shape(out), v.perm)

    # the walk -----------------------------------------------------------------------------------------------
    def run(self, nodes: list[Any], inp: Any, out: Any) -> None:
        for node in nodes:
            for kt in node.arguments.keras_tensors:
                self.users[id(kt)] = self.users.get(id(kt), 0) + 1
        reads_cl = any(isinstance(n.operation, _CHANNELS_LAST) and inp in n.arguments.keras_tensors for n in nodes)
        rank = len(_shape(inp))
        if reads_cl and rank < 2:
            raise UnsupportedModel("the input is read by a convolution or a pool but has no channels axis")
        self.values[id(inp)] = _Value(0, "cl" if reads_cl else "plain", _shape(inp))
        for node in nodes:
            if node.is_input:
                continue
            self.node(node)
        v = self.value(out, "the output")
        if v.layer == 0:
            raise UnsupportedModel("the model returns its input unchanged: there is no layer to check")
        if v.layer != len(self.specs):
            raise UnsupportedModel("the model's output is not its last layer's (a branch computed after the "
                                   "output); remove the unused branch")
        if v.layout == "cl":
            raise UnsupportedModel("the model's output is channels-last (N, ..., C); flatten it to (N, outputs)")

    def node(self, node: Any) -> None:
        layer = node.operation
        at = _where(layer)
        args, kwargs = node.arguments.args, node.arguments.kwargs
        ins = node.arguments.keras_tensors
        outs = node.outputs
        if len(outs) != 1:
            raise UnsupportedModel(f"{at}: returns {len(outs)} values; the schema's layers return one")
        out = outs[0]
        L = keras.layers
        if isinstance(layer, L.MultiHeadAttention):
            return _attention(self, layer, args, kwargs, out, at)
        if isinstance(layer, L.Add):
            return _add(self, layer, ins, out, at)
        if len(ins) != 1:
            raise UnsupportedModel(f"{at}: reads {len(ins)} values; the schema's {type(layer).__name__} reads one")
        src = ins[0]
        if isinstance(layer, (L.Dropout, L.Identity)) or type(layer).__name__ == "InputLayer":
            return self.alias(out, self.value(src, at), owned=self.value(src, at).owned)
        if type(layer) is L.Activation:
            return self.activation(out, src, layer.activation, at)
        handler = _HANDLERS.get(type(layer))
        if handler is None:
            raise UnsupportedModel(f"{at}: {type(layer).__name__} is not a layer of the schema (Dense, Conv1D, "
                                   "Conv2D, AveragePooling1D/2D, Flatten, LayerNormalization, Add, "
                                   "MultiHeadAttention, Embedding, Activation)")
        handler(self, layer, src, out, at)


def _activation_name(fn: Any, at: str) -> str:
    name = _ACTIVATIONS.get(fn)
    if name is None:
        what = getattr(fn, "__name__", type(fn).__name__)
        raise UnsupportedModel(f"{at}: activation {what} is not one of the schema's (tanh, sigmoid, relu, gelu, silu, "
                               "softplus, sin, linear); a custom activation or tf.custom_gradient is judged by "
                               "check_module's references from the forward")
    return name


def _then_activation(imp: _Importer, layer: Any, out: Any, at: str) -> None:
    fn = getattr(layer, "activation", None)
    if fn is not None:
        imp.specs[-1].activation = _activation_name(fn, at)


def _dense(imp: _Importer, layer: Any, src: Any, out: Any, at: str) -> None:
    v = imp.value(src, at)
    if v.layout == "cl":
        raise UnsupportedModel(f"{at}: a Dense on a channels-last value acts on its channels, where the schema's "
                               "dense reads the last axis of channels-first; put a Flatten before it")
    if getattr(layer, "lora_enabled", False):
        raise UnsupportedModel(f"{at}: LoRA is not in the schema")
    K = imp.kidx(layer.kernel, at)  # (in, units)
    units = int(K.shape[1])
    W = np.empty((units, K.shape[0]), dtype=np.int64)
    if v.layout == "perm":
        W[:, v.perm] = K.T  # the schema's feature perm[k] is Keras' row k
    else:
        W[:] = K.T
    params = [W] + ([imp.kidx(layer.bias, at)] if layer.use_bias else [])
    imp.layer(out, _Spec("dense", (v.layer,), at, params=params, units=units, bias=bool(layer.use_bias)), "plain")
    _then_activation(imp, layer, out, at)


def _conv(imp: _Importer, layer: Any, src: Any, out: Any, at: str) -> None:
    dims = 1 if isinstance(layer, keras.layers.Conv1D) else 2
    v = imp.value(src, at)
    if v.layout != "cl":
        raise UnsupportedModel(f"{at}: a convolution of a value the schema holds channels-first in another order "
                               f"(Keras shape {v.shape}, layout {v.layout}); the schema's convolutions read the "
                               "input or another convolution's or pool's output")
    if layer.data_format != "channels_last":
        raise UnsupportedModel(f"{at}: data_format={layer.data_format!r}; only channels_last is imported")
    if any(d != 1 for d in layer.dilation_rate):
        raise UnsupportedModel(f"{at}: dilation_rate={layer.dilation_rate}; the schema's convolutions have dilation 1")
    kernel = tuple(int(k) for k in layer.kernel_size)
    stride = tuple(int(s) for s in layer.strides)
    if layer.padding == "valid":
        padding = (0,) * dims
    elif layer.padding == "same" and all(s == 1 for s in stride) and all(k % 2 for k in kernel):
        padding = tuple((k - 1) // 2 for k in kernel)
    else:
        raise UnsupportedModel(f"{at}: padding={layer.padding!r} with kernel {kernel} and strides {stride}; the "
                               "schema pads both sides equally ('valid', or 'same' with stride 1 and odd kernels)")
    K = imp.kidx(layer.kernel, at)  # (k, I/g, O) or (kh, kw, I/g, O)
    W = np.transpose(K, (2, 1, 0) if dims == 1 else (3, 2, 0, 1))
    params = [W] + ([imp.kidx(layer.bias, at)] if layer.use_bias else [])
    opts = {"channels": int(layer.filters), "kernel": kernel, "stride": stride, "padding": padding,
            "groups": int(layer.groups)}
    imp.layer(out, _Spec(f"conv{dims}d", (v.layer,), at, opts, params, bias=bool(layer.use_bias)), "cl")
    _then_activation(imp, layer, out, at)


def _pool(imp: _Importer, layer: Any, src: Any, out: Any, at: str) -> None:
    dims = 1 if isinstance(layer, keras.layers.AveragePooling1D) else 2
    v = imp.value(src, at)
    if v.layout != "cl" or layer.data_format != "channels_last" or layer.padding != "valid":
        raise UnsupportedModel(f"{at}: average pooling of a channels-last value with padding='valid' only "
                               f"(layout {v.layout}, data_format {layer.data_format!r}, padding {layer.padding!r})")
    opts = {"kernel": tuple(int(k) for k in layer.pool_size), "stride": tuple(int(s) for s in layer.strides)}
    imp.layer(out, _Spec(f"avg_pool{dims}d", (v.layer,), at, opts), "cl")


def _flatten(imp: _Importer, layer: Any, src: Any, out: Any, at: str) -> None:
    v = imp.value(src, at)
    if len(v.shape) <= 1:
        return imp.alias(out, v, owned=v.owned)  # (N, F): nothing to flatten
    if v.layout == "cl":
        if layer.data_format == "channels_first":  # Keras moves the channels first, then flattens: the schema's
            imp.layer(out, _Spec("flatten", (v.layer,), at), "plain")
            return
        schema = np.arange(int(np.prod(v.shape, dtype=np.int64))).reshape((v.shape[-1],) + v.shape[:-1])
        imp.layer(out, _Spec("flatten", (v.layer,), at), "perm", np.moveaxis(schema, 0, -1).reshape(-1))
        return
    if layer.data_format == "channels_first":
        raise UnsupportedModel(f"{at}: Flatten(data_format='channels_first') of a value the schema holds as Keras "
                               "does; it would move the last axis first")
    imp.layer(out, _Spec("flatten", (v.layer,), at), "plain")


def _layer_norm(imp: _Importer, layer: Any, src: Any, out: Any, at: str) -> None:
    v = imp.value(src, at)
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    rank = len(v.shape) + 1
    if [a % rank for a in axis] != [rank - 1]:
        raise UnsupportedModel(f"{at}: axis={layer.axis}; the schema normalises the last axis only")
    if v.layout == "cl":
        raise UnsupportedModel(f"{at}: a LayerNormalization of a channels-last value normalises its channels, the "
                               "schema's the last axis of channels-first; flatten first")
    if getattr(layer, "rms_scaling", False) or bool(layer.center) != bool(layer.scale):
        raise UnsupportedModel(f"{at}: rms_scaling, or center without scale (or scale without center); the schema's "
                               "affine LayerNorm has both")
    params: list[np.ndarray] = []
    if layer.scale:
        for w in (layer.gamma, layer.beta):
            k = imp.kidx(w, at)
            if v.layout == "perm":
                p = np.empty_like(k)
                p[v.perm] = k
                k = p
            params.append(k)
    imp.layer(out, _Spec("layer_norm", (v.layer,), at, {"affine": bool(layer.scale), "eps": float(layer.epsilon)},
                         params), v.layout, v.perm)


def _embedding(imp: _Importer, layer: Any, src: Any, out: Any, at: str) -> None:
    v = imp.value(src, at)
    if v.layer != 0:
        raise UnsupportedModel(f"{at}: an Embedding after another layer; the schema's embedding reads the input ids")
    if getattr(layer, "mask_zero", False) or getattr(layer, "lora_enabled", False):
        raise UnsupportedModel(f"{at}: mask_zero or LoRA; the schema's embedding has neither")
    imp.layer(out, _Spec("embedding", (0,), at, {"vocab": int(layer.input_dim), "dim": int(layer.output_dim)},
                         [imp.kidx(layer.embeddings, at)]), "plain")


def _add(imp: _Importer, layer: Any, ins: list[Any], out: Any, at: str) -> None:
    if len(ins) != 2:
        raise UnsupportedModel(f"{at}: adds {len(ins)} values; the schema's add takes two")
    a, b = (imp.value(x, at) for x in ins)
    if a.layer == b.layer:
        raise UnsupportedModel(f"{at}: adds a value to itself (2 x); the schema's add takes two different outputs")
    if a.layout != b.layout or (a.layout == "perm" and not np.array_equal(a.perm, b.perm)):
        raise UnsupportedModel(f"{at}: adds values Keras holds in different layouts ({a.layout}, {b.layout})")
    imp.layer(out, _Spec("add", (a.layer, b.layer), at), a.layout, a.perm)


def _attention(imp: _Importer, layer: Any, args: Any, kwargs: dict[str, Any], out: Any, at: str) -> None:
    names = ("query", "value", "key", "query_mask", "value_mask", "key_mask", "attention_mask",
             "return_attention_scores", "training", "use_causal_mask")
    given = dict(zip(names, args))
    given.update(kwargs)
    q, val, key = given.get("query"), given.get("value"), given.get("key")
    if q is None or val is not q or (key is not None and key is not q):
        raise UnsupportedModel(f"{at}: the schema's attention is self-attention, mha(x, x)")
    for k in ("query_mask", "value_mask", "key_mask", "attention_mask"):
        if given.get(k) is not None:
            raise UnsupportedModel(f"{at}: {k}; the schema's attention has no mask")
    if given.get("use_causal_mask") or given.get("return_attention_scores"):
        raise UnsupportedModel(f"{at}: use_causal_mask or return_attention_scores; not in the schema")
    v = imp.value(q, at)
    if v.layout != "plain" or len(v.shape) != 2:
        raise UnsupportedModel(f"{at}: attention over a value of Keras shape {v.shape} ({v.layout}); the schema "
                               "reads (N, T, d)")
    d = v.shape[1]
    heads = int(layer.num_heads)
    cfg = layer.get_config()
    if int(cfg["key_dim"]) * heads != d or int(cfg.get("value_dim") or cfg["key_dim"]) != int(cfg["key_dim"]) or \
            cfg.get("output_shape") is not None or tuple(cfg.get("attention_axes") or (1,)) != (1,) or \
            cfg.get("use_gate", False) or cfg.get("sliding_window") is not None:
        raise UnsupportedModel(f"{at}: key_dim * num_heads must be d = {d}, value_dim = key_dim, no output_shape, "
                               "attention_axes, gate or sliding window (the schema's attention)")
    bias = bool(layer._use_bias)
    win, bin_ = [], []
    for dense in (layer._query_dense, layer._key_dense, layer._value_dense):
        win.append(imp.kidx(dense.kernel, at).reshape(d, d).T)  # (d, heads, d_h) -> rows of Win
        if bias:
            bin_.append(imp.kidx(dense.bias, at).reshape(d))
    params = [np.concatenate(win)] + ([np.concatenate(bin_)] if bias else [])
    params.append(imp.kidx(layer._output_dense.kernel, at).reshape(d, d).T)  # (heads, d_h, d) -> Wout
    if bias:
        params.append(imp.kidx(layer._output_dense.bias, at))
    imp.layer(out, _Spec("attention", (v.layer,), at, {"heads": heads}, params, bias=bias), "plain")


_CHANNELS_LAST = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.AveragePooling1D,
                  keras.layers.AveragePooling2D)

_HANDLERS: dict[type, Callable[..., None]] = {
    keras.layers.Dense: _dense, keras.layers.Conv1D: _conv, keras.layers.Conv2D: _conv,
    keras.layers.AveragePooling1D: _pool, keras.layers.AveragePooling2D: _pool, keras.layers.Flatten: _flatten,
    keras.layers.LayerNormalization: _layer_norm, keras.layers.Embedding: _embedding,
}


# -- the problem ----------------------------------------------------------------------------------------------------


def _graph(model: Any) -> tuple[list[Any], Any, Any]:
    """The model's nodes in an order where each comes after what it reads, its input and its output."""
    if not isinstance(model, keras.Model):
        raise UnsupportedModel(f"model: a {type(model).__name__}, not a keras.Model")
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise UnsupportedModel(f"{model.name}: a Sequential that is not built; give it a keras.Input or call it "
                                   "once")
        model = functional
    if not isinstance(model, keras.src.models.functional.Functional):
        raise UnsupportedModel(f"{model.name} ({type(model).__name__}): a subclassed keras.Model is Python, not a "
                               "graph of layers; build it with keras.Sequential or the functional API (or judge it "
                               "by check_module's references from its forward)")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedModel(f"{model.name}: {len(model.inputs)} inputs and {len(model.outputs)} outputs; the "
                               "schema has one of each")
    order: list[Any] = []
    seen: set[int] = set()

    def visit(kt: Any) -> None:
        op, ni, _ = kt._keras_history
        node = op._inbound_nodes[ni]
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.arguments.keras_tensors:
            visit(parent)
        order.append(node)

    visit(model.outputs[0])
    return order, model.inputs[0], model.outputs[0]


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


def _numpy(a: Any) -> np.ndarray:
    return np.asarray(a.numpy() if hasattr(a, "numpy") else a)


def import_module(model: Any, loss: Any, inputs: Any, targets: Any, *, id: str = "keras") -> Problem:
    """The user's Keras model and loss, at its current weights, on ``inputs`` and ``targets``, as a Problem.

    Parameters
    ----------
    model:
        A built ``keras.Sequential`` or functional ``keras.Model`` of the layers of the module text's table.
        It is not changed.
    loss:
        A Keras loss object (:func:`loss_spec`).
    inputs, targets:
        One batch: ``inputs`` ``(N, ...)`` as the model reads them (channels last; token ids for an
        embedding network), ``targets`` as the loss takes them.

    Raises
    ------
    UnsupportedModel
        A layer, setting or loss the schema lacks, named with the layer.

    Examples
    --------
    >>> import keras, numpy as np
    >>> net = keras.Sequential([keras.Input((3,), dtype="float64"), keras.layers.Dense(4, "tanh", dtype="float64"),
    ...                         keras.layers.Dense(2, dtype="float64")])
    >>> problem = import_module(net, keras.losses.MeanSquaredError(), np.ones((5, 3)), np.zeros((5, 2)))
    >>> problem.architecture.describe(), problem.loss, str(problem.reduction)
    ('3-4(tanh)-2(identity)', 'mse', 'mean')
    """
    nodes, inp, out = _graph(model)
    imp = _Importer(model)
    imp.run(nodes, inp, out)
    x = _numpy(inputs)
    N = int(x.shape[0])
    if tuple(x.shape[1:]) != _shape(inp):
        raise UnsupportedModel(f"inputs of shape {x.shape} for a model that reads (N, {', '.join(map(str, _shape(inp)))})")
    v_in, v_out = imp.value(inp, "the input"), imp.value(out, "the output")
    if v_in.layout == "cl":
        x = np.moveaxis(x, -1, 1)
    input_shape = tuple(int(s) for s in x.shape[1:])
    layers = _layers(imp.specs)
    try:
        arch = Architecture(int(np.prod(input_shape)), layers, input_shape if len(input_shape) != 1 else None)
    except ValueError as exc:
        raise UnsupportedModel(f"{model.name}: {exc}") from None
    out_shape = (N,) + _shape(out)
    spec = loss_spec(loss, int(np.prod(out_shape[1:], dtype=np.int64)))
    rows = spec.targets(targets, out_shape)
    if v_out.layout == "perm":
        rows = rows[:, np.argsort(v_out.perm)]  # the schema's output j is Keras' output argsort(perm)[j]
    index = _index(imp)
    theta = np.concatenate([np.asarray(v.numpy(), dtype=np.float64).reshape(-1)
                            for v in model.trainable_variables]) if imp.size else np.zeros(0)
    if int(np.prod(out_shape[1:])) != arch.outputs:
        raise UnsupportedModel(f"the model's outputs {out_shape} do not match the layers' {arch.shapes[-1]}")
    return Problem(arch, spec.name, theta[index], x.astype(np.float64).reshape(N, -1).copy(), rows, spec.reduction,
                   id=id, description=f"imported from Keras {model.name}", meta={"keras_index": index},
                   loss_options=spec.options)


def _index(imp: _Importer) -> np.ndarray:
    """Where each schema parameter sits in Keras' flat vector; every trainable entry used exactly once."""
    parts = [p.reshape(-1) for s in imp.specs for p in s.params]
    index = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    counts = np.bincount(index, minlength=imp.size)
    if (counts > 1).any():
        raise UnsupportedModel("a weight is used twice (shared layers are not in the schema)")
    if (counts == 0).any():
        unused = next(v.path for v in imp.model.trainable_variables
                      if counts[imp.offsets[id(v)][0]] == 0)
        raise UnsupportedModel(f"weight {unused} is not used on the way to the output; remove it or freeze it")
    return index


def keras_index(problem: Problem) -> np.ndarray:
    """For each problem parameter, its index in the flat ``model.trainable_variables`` vector (identity if the
    problem was not imported from Keras)."""
    index = problem.meta.get("keras_index")
    return np.arange(problem.n_params) if index is None else np.asarray(index)
