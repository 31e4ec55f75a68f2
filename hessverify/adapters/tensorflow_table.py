"""The TensorFlow table: activations (``tf.nn``), Keras loss classes and Keras layers of the case schema, written once.

Read by the adapter (:mod:`hessverify.adapters.tensorflow`) and the conformance rows
(:mod:`hessverify.adapters.tensorflow_conformance`); nothing else writes TensorFlow's side of the schema.

* :data:`ACTIVATIONS`: per activation the ``accurate`` form (softplus branched on the sign, gelu as
  ``a/2 erfc(-a/sqrt 2)``, as the torch and JAX tables) and TensorFlow's ``builtin`` (``tf.nn``), which
  conformance holds to account;
* :data:`LOSSES`: per loss the accurate per-pattern error in ``tf`` operations, and the Keras loss class with
  ``c`` such that hessverify's ``E = c L``, ``L`` the class's value (:func:`keras_loss`);
* :func:`build_model`: a network as a Keras functional model of ``keras.layers`` (``Dense``, ``Conv1D``,
  ``Conv2D``, ``AveragePooling1D/2D``, ``LayerNormalization``, ``BatchNormalization``,
  ``MultiHeadAttention``, ``Embedding``, ``Add``, ``Flatten``), and :func:`keras_weights`, one layer's public
  tensors as the Keras layer's weights.

Layouts.  hessverify's tensors are PyTorch's (``NCL``, ``NCHW``; weights ``(out, in)``, ``OIH``); Keras is
channels-last with kernels ``(in, out)`` and ``(k, in, out)``.  The model keeps PyTorch's layout between
layers (so ``LayerNormalization`` on the last axis and ``Flatten`` read what ``nn.LayerNorm`` and
``nn.Flatten`` read) and wraps a convolution or pooling in two ``Permute`` layers; a zero padding is
``ZeroPadding1D/2D`` before the (``valid``) convolution.  Keras' ``MultiHeadAttention`` holds ``Win`` as three
kernels ``(d, heads, d_h)`` and ``Wout`` as ``(heads, d_h, d)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # Keras 3 runs on the backend it is told; ours is TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices are not ours to print

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from hessverify.adapters import rows  # noqa: E402
from hessverify.model.network import Architecture  # noqa: E402
from hessverify.model.problem import Problem  # noqa: E402

__all__ = ["ACTIVATIONS", "KERAS_KINDS", "LOSSES", "Activation", "Loss", "build_model", "exact_moments", "keras_loss",
           "keras_weights", "softplus", "stable_gelu"]

Tensor = Any

if keras.config.backend() != "tensorflow":  # pragma: no cover - KERAS_BACKEND set to another framework
    raise ImportError(f"hessverify.adapters.tensorflow needs Keras on TensorFlow; KERAS_BACKEND is "
                      f"{keras.config.backend()!r}")


# -- activations ---------------------------------------------------------------------------

def softplus(a: Tensor) -> Tensor:
    """``log(1 + e^a)``: ``a + log1p(e^-a)`` for ``a > 0``, ``log1p(e^a)`` otherwise, each branch on its own side."""
    positive = a > 0
    up = tf.where(positive, a, tf.zeros_like(a))
    down = tf.where(positive, tf.zeros_like(a), a)
    return tf.where(positive, up + tf.math.log1p(tf.exp(-up)), tf.math.log1p(tf.exp(down)))


def stable_gelu(a: Tensor) -> Tensor:
    """``a Phi(a) = a/2 erfc(-a / sqrt 2)``: no cancellation in the left tail (unlike ``1 + erf``)."""
    return 0.5 * a * tf.math.erfc(-a / math.sqrt(2.0))


def _identity(a: Tensor) -> Tensor:
    return a


def _silu(a: Tensor) -> Tensor:
    return a * tf.sigmoid(a)


def _gelu(a: Tensor) -> Tensor:
    return tf.nn.gelu(a, approximate=False)


@dataclass(frozen=True)
class Activation:
    """One activation: the adapter's accurate form and TensorFlow's builtin."""

    name: str
    accurate: Callable[[Tensor], Tensor]
    builtin: Callable[[Tensor], Tensor]
    builtin_name: str


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("identity", _identity, _identity, "(none)"),
    Activation("sigmoid", tf.sigmoid, tf.nn.sigmoid, "tf.nn.sigmoid"),
    Activation("tanh", tf.tanh, tf.nn.tanh, "tf.nn.tanh"),
    Activation("softplus", softplus, tf.nn.softplus, "tf.nn.softplus"),
    Activation("sin", tf.sin, tf.sin, "tf.sin"),
    Activation("gelu", stable_gelu, _gelu, "tf.nn.gelu(approximate=False)"),
    Activation("silu", _silu, tf.nn.silu, "tf.nn.silu"),
    Activation("relu", tf.nn.relu, tf.nn.relu, "tf.nn.relu"),
)}
"""Every activation of the case schema: accurate form and ``tf.nn`` builtin."""


# -- losses ----------------------------------------------------------------------------------

def _sse(y: Tensor, t: Tensor, delta: float) -> Tensor:
    return 0.5 * tf.reduce_sum((y - t) ** 2, axis=-1)


def _mse(y: Tensor, t: Tensor, delta: float) -> Tensor:
    return tf.reduce_sum((y - t) ** 2, axis=-1)


def _cross_entropy(y: Tensor, t: Tensor, delta: float) -> Tensor:
    return -tf.reduce_sum(t * tf.nn.log_softmax(y, axis=-1), axis=-1)


def _binary_cross_entropy(y: Tensor, t: Tensor, delta: float) -> Tensor:
    return tf.reduce_sum(softplus(y) - t * y, axis=-1)


def _output(y: Tensor, t: Tensor, delta: float) -> Tensor:
    return tf.reduce_sum(y, axis=-1)


def _huber(y: Tensor, t: Tensor, delta: float) -> Tensor:
    r = y - t
    inside = tf.abs(r) <= delta
    return tf.reduce_sum(tf.where(inside, 0.5 * r * r, delta * (tf.abs(r) - 0.5 * delta)), axis=-1)


@dataclass(frozen=True)
class Loss:
    """One loss: hessverify's per-pattern error in ``tf`` operations, and Keras' class for it (``None``: none).

    ``keras_scale(reduction, K)`` is ``c`` in ``E = c L`` with ``L`` the class's value under Keras' reduction
    (``"sum"`` or ``"sum_over_batch_size"``).
    """

    name: str
    per_pattern: Callable[[Tensor, Tensor, float], Tensor]
    keras_class: str | None
    keras_scale: Callable[[str, int], float]


def _per_output_mean(sum_scale: float, mean_scale: float) -> Callable[[str, int], float]:
    """Keras' MSE, Huber and BCE average over the last axis before reducing: ``c`` is ``K`` times what it else is."""
    return lambda reduction, k: (sum_scale if reduction == "sum" else mean_scale) * k


LOSSES: dict[str, Loss] = {l.name: l for l in (
    # MeanSquaredError: sum_n mean_k r^2 (sum) or that / N: E = 1/2 sum r^2 = K/2 L either way
    Loss("sse", _sse, "MeanSquaredError", _per_output_mean(0.5, 0.5)),
    # hessverify's mse: sum r^2 (sum: E = K L) or its mean over N K (E = L)
    Loss("mse", _mse, "MeanSquaredError", lambda reduction, k: float(k) if reduction == "sum" else 1.0),
    Loss("cross_entropy", _cross_entropy, "CategoricalCrossentropy", lambda reduction, k: 1.0),
    # BinaryCrossentropy: mean over the K outputs; hessverify's mean is over N only: E = K L either way
    Loss("binary_cross_entropy", _binary_cross_entropy, "BinaryCrossentropy", _per_output_mean(1.0, 1.0)),
    Loss("huber", _huber, "Huber", lambda reduction, k: float(k) if reduction == "sum" else 1.0),
    Loss("output", _output, None, lambda reduction, k: 1.0),
)}
"""Every loss of the case schema: its per-pattern error in ``tf`` and its Keras class with ``E = c L``."""


def _delta(problem: Problem) -> float:
    return float(dict(problem.loss_options).get("delta", 1.0))


def keras_loss(problem: Problem, dtype: Any) -> tuple[Callable[[Tensor, Tensor], Tensor], float]:
    """Keras' loss class for the problem's loss and reduction (``from_logits=True`` where it applies), and ``c``
    with ``E = c L``.  The ``output`` loss has no class: the sum of the outputs (``/ N`` for mean).

    The class is made with ``dtype`` (Keras 3 computes a loss in ``keras.config.floatx()``, float32, unless
    told: float64 outputs would be rounded to float32 first).
    """
    row = LOSSES[problem.loss]
    reduction = "sum" if problem.reduction == "sum" else "sum_over_batch_size"
    k = int(problem.targets.shape[1])
    c = row.keras_scale(reduction, k)
    name = tf.as_dtype(dtype).name
    if row.keras_class is None:
        n = problem.n_patterns if problem.reduction == "mean" else 1

        def output(t: Tensor, y: Tensor) -> Tensor:
            return tf.reduce_sum(y) / n

        return output, c
    cls = getattr(keras.losses, row.keras_class)
    options: dict[str, Any] = {"reduction": reduction, "dtype": name}
    if row.keras_class in ("CategoricalCrossentropy", "BinaryCrossentropy"):
        options["from_logits"] = True
    if row.keras_class == "Huber":
        options["delta"] = _delta(problem)
    return cls(**options), c


# -- layers ------------------------------------------------------------------------------------

KERAS_KINDS: dict[str, str] = {
    "dense": "keras.layers.Dense (Concatenate for several sources)",
    "conv1d": "keras.layers.Conv1D (ZeroPadding1D, Permute to channels-last and back)",
    "conv2d": "keras.layers.Conv2D (ZeroPadding2D, Permute to channels-last and back)",
    "avg_pool1d": "keras.layers.AveragePooling1D (Permute)",
    "avg_pool2d": "keras.layers.AveragePooling2D (Permute)",
    "flatten": "keras.layers.Flatten (on the channels-first layout: PyTorch's order)",
    "layer_norm": "keras.layers.LayerNormalization(axis=-1) (the adapter's: exact_moments)",
    "batch_norm": "keras.layers.BatchNormalization(axis=1), training=True or the given moving statistics "
                  "(the adapter's: exact_moments)",
    "add": "keras.layers.Add",
    "attention": "keras.layers.MultiHeadAttention(heads, key_dim=d/heads), mha(x, x) (the adapter's: the scale in "
                 "the query's format)",
    "embedding": "keras.layers.Embedding(vocab, dim)",
}
"""The Keras layer each kind of the case schema is built from."""


def keras_weights(kind: str, o: dict[str, Any], tensors: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One layer's public tensors (PyTorch's shapes and order) as its Keras layer's trainable weights, in order."""
    if kind == "dense":
        return [tensors[0].T, *tensors[1:]]
    if kind == "conv1d":
        return [np.transpose(tensors[0], (2, 1, 0)), *tensors[1:]]  # (O, I, k) -> (k, I, O)
    if kind == "conv2d":
        return [np.transpose(tensors[0], (2, 3, 1, 0)), *tensors[1:]]  # (O, I, kh, kw) -> (kh, kw, I, O)
    if kind == "attention":
        Win, Wout = tensors[0], tensors[2 if o["bias"] else 1]
        d = Win.shape[1]
        h = o["heads"]
        dh = d // h
        out: list[np.ndarray] = []
        for part in range(3):  # query, key, value: kernel (d, h, dh)[, bias (h, dh)]
            out.append(Win[part * d:(part + 1) * d].T.reshape(d, h, dh))
            if o["bias"]:
                out.append(tensors[1][part * d:(part + 1) * d].reshape(h, dh))
        out.append(Wout.T.reshape(h, dh, d))
        if o["bias"]:
            out.append(tensors[3])
        return out
    return list(tensors)  # layer_norm, batch_norm (gamma, beta), embedding (the table)


def _channels_last(rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``Permute`` dimensions (1-based, batch excluded) from channels-first to channels-last, and back."""
    if rank == 2:
        return (2, 1), (2, 1)
    return (2, 3, 1), (3, 1, 2)


class EvalBatchNorm(keras.layers.BatchNormalization):
    """``BatchNormalization`` with its moving statistics whatever ``training`` the model is called with (PyTorch's
    ``.eval()``): a functional model passes its own ``training`` to every layer, over the one given when built."""

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        return super().call(inputs, training=False, mask=mask)


def exact_moments(x: Tensor, axes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Mean and (biased) variance over ``axes``, differentiable to every order.

    ``tf.nn.moments`` (which Keras' ``LayerNormalization`` and ``BatchNormalization`` call) computes the
    variance as ``mean((x - stop_gradient(mean))^2)``: right to first order, since the variance's derivative
    in the mean is zero at the mean, but the stop drops the mean's term ``-(2/n^2) 1 1^T`` from the
    variance's second derivative (docs/conformance.md).  Here nothing is stopped.
    """
    mean = tf.reduce_mean(x, axis=axes, keepdims=True)
    return mean, tf.reduce_mean(tf.square(x - mean), axis=axes, keepdims=True)


class ExactLayerNorm(keras.layers.LayerNormalization):
    """``LayerNormalization`` on the last axis with :func:`exact_moments` (the adapter's, not the builtin)."""

    def call(self, inputs: Any) -> Any:
        mean, var = exact_moments(inputs, [-1])
        y = (inputs - mean) * tf.math.rsqrt(var + self.epsilon)
        if self.scale:
            y = y * self.gamma
        if self.center:
            y = y + self.beta
        return y


class ExactBatchNorm(keras.layers.BatchNormalization):
    """``BatchNormalization`` whose batch statistics are :func:`exact_moments` (the adapter's, not the builtin)."""

    def _moments(self, inputs: Any, mask: Any) -> Any:
        mean, var = exact_moments(inputs, list(self._reduction_axes))
        return tf.squeeze(mean, self._reduction_axes), tf.squeeze(var, self._reduction_axes)


class ExactAttention(keras.layers.MultiHeadAttention):
    """``MultiHeadAttention`` with the scale ``1/sqrt(d_h)`` in the format of the query (the adapter's).

    Keras' TensorFlow backend multiplies the logits by ``tf.cast(scale, dtype)`` of a Python float, which
    ``tf.cast`` first converts to a float32 tensor: at float64 the scale is rounded to float32 (relative
    ``2^-24``) unless ``d_h`` is a power of 4 (docs/conformance.md).  Here the scores are written out.
    """

    def _compute_attention(self, query: Any, key: Any, value: Any, attention_mask: Any = None, training: Any = None,
                           return_attention_scores: bool = False, use_causal_mask: bool = False) -> Any:
        scale = tf.constant(1.0 / math.sqrt(float(self._key_dim)), dtype=query.dtype)
        scores = tf.einsum("btnh,bsnh->bnts", query * scale, key)
        weights = tf.nn.softmax(scores, axis=-1)
        return tf.einsum("bnts,bsnh->btnh", weights, value), weights


def _layer_output(kind: str, o: dict[str, Any], xs: list[Any], shapes: Sequence[tuple[int, ...]],
                  dtype: str, training: bool, builtin: bool = True) -> tuple[Any, list[Any]]:
    """The Keras layers of one layer kind applied to its inputs: ``(output, [layers holding its weights])``."""
    L = keras.layers
    if kind == "dense":
        x = xs[0] if len(xs) == 1 else L.Concatenate(axis=-1, dtype=dtype)(xs)
        layer = L.Dense(o["units"], use_bias=o["bias"], dtype=dtype)
        return layer(x), [layer]
    if kind in ("conv1d", "conv2d", "avg_pool1d", "avg_pool2d"):
        dims = 1 if kind.endswith("1d") else 2
        there, back = _channels_last(dims + 1)
        x = L.Permute(there, dtype=dtype)(xs[0])
        if kind.startswith("conv"):
            if any(o["padding"]):
                pad = o["padding"][0] if dims == 1 else tuple((p, p) for p in o["padding"])
                x = (L.ZeroPadding1D if dims == 1 else L.ZeroPadding2D)(pad, dtype=dtype)(x)
            layer = (L.Conv1D if dims == 1 else L.Conv2D)(o["channels"], o["kernel"], strides=o["stride"],
                                                          padding="valid", groups=o["groups"], use_bias=o["bias"],
                                                          dtype=dtype)
            held = [layer]
        else:
            stride = o["kernel"] if o["stride"] is None else o["stride"]
            layer = (L.AveragePooling1D if dims == 1 else L.AveragePooling2D)(o["kernel"], strides=stride,
                                                                              padding="valid", dtype=dtype)
            held = []
        return L.Permute(back, dtype=dtype)(layer(x)), held
    if kind == "flatten":
        return L.Flatten(dtype=dtype)(xs[0]), []
    if kind == "layer_norm":
        layer = (L.LayerNormalization if builtin else ExactLayerNorm)(axis=-1, epsilon=o["eps"], center=o["affine"],
                                                                       scale=o["affine"], dtype=dtype)
        return layer(xs[0]), [layer]
    if kind == "batch_norm":
        cls = (L.BatchNormalization if builtin else ExactBatchNorm) if o["mode"] == "train" and training \
            else EvalBatchNorm
        layer = cls(axis=1, epsilon=o["eps"], center=o["affine"], scale=o["affine"], dtype=dtype)
        return layer(xs[0]), [layer]
    if kind == "add":
        return L.Add(dtype=dtype)(xs), []
    if kind == "attention":
        d = shapes[0][1]
        layer = (L.MultiHeadAttention if builtin else ExactAttention)(o["heads"], d // o["heads"], use_bias=o["bias"],
                                                                       dtype=dtype)
        return layer(xs[0], xs[0]), [layer]
    if kind == "embedding":
        layer = L.Embedding(o["vocab"], o["dim"], dtype=dtype)
        return layer(xs[0]), [layer]
    raise ValueError(f"{kind}: Keras has no layer for this kind here")


def require(problem: Problem) -> None:
    """Refuse in one line (:class:`~hessverify.errors.UnsupportedModel`) a problem with an activation or loss this
    table has no row for (:mod:`hessverify.adapters.rows`: the table is optional for them; the layer kinds Keras
    lacks are :func:`unsupported`'s)."""
    rows.require(problem, "TensorFlow", "hessverify/adapters/tensorflow_table.py", activations=ACTIVATIONS,
                 losses=LOSSES)


def within(draw: dict[str, Any]) -> dict[str, Any]:
    """Keywords of :func:`hessverify.checking.strategies.problems` drawing only what this table has rows for
    (:func:`hessverify.adapters.rows.within`)."""
    return rows.within(draw, "TensorFlow", "hessverify/adapters/tensorflow_table.py", activations=ACTIVATIONS, losses=LOSSES)


def unsupported(arch: Architecture) -> str | None:
    """Why the network cannot be a Keras model of :func:`build_model` (``None``: it can)."""
    for index, layer in enumerate(arch.layers, start=1):
        if layer.kind not in KERAS_KINDS:
            return f"layer {index} ({layer.kind}): no Keras layer for this kind"
        if layer.kind == "dense" and layer.opts["gain"]:
            return f"layer {index} (dense, gain = true): Keras' Dense has no per-unit gain"
    return None


def build_model(problem: Problem, *, dtype: Any = tf.float64, builtin: bool = True,
                training: bool = True) -> tuple[Any, list[list[Any]]]:
    """The problem's network as a Keras functional model with the problem's parameters set.

    Returns ``(model, held)``: ``held[l - 1]`` the Keras layers holding layer ``l``'s weights.  ``builtin``:
    the ``tf.nn`` activations (else the accurate ones of :data:`ACTIVATIONS`).  The model maps
    ``(N, *input_shape)`` (token ids for an embedding network) to ``(N, outputs)``, PyTorch's flattening.
    """
    arch = problem.architecture
    require(problem)
    why = unsupported(arch)
    if why is not None:
        raise ValueError(why)
    name = tf.as_dtype(dtype).name
    first = arch.layers[0]
    ids = first.kind_def.reads_ids
    inp = keras.Input(shape=arch.shape, dtype="int32" if ids else name)
    outs: list[Any] = [inp]
    held: list[list[Any]] = []
    for index, layer in enumerate(arch.layers, start=1):
        srcs = arch.parents(index)
        y, layers = _layer_output(layer.kind, layer.opts, [outs[s] for s in srcs], [arch.shapes[s] for s in srcs],
                                  name, training, builtin)
        if layer.activation != "identity":
            row = ACTIVATIONS[layer.activation]
            y = keras.layers.Activation(row.builtin if builtin else row.accurate, dtype=name)(y)
        outs.append(y)
        held.append(layers)
    y = keras.layers.Reshape((arch.outputs,), dtype=name)(outs[-1])
    model = keras.Model(inp, y)
    set_params(model, held, problem, problem.params)
    return model, held


def set_params(model: Any, held: list[list[Any]], problem: Problem, theta: np.ndarray) -> None:
    """Put the flat public vector ``theta`` into the model's Keras layers (and a BatchNorm's running statistics)."""
    arch = problem.architecture
    tensors = arch.unpack_tensors(np.asarray(theta, dtype=np.float64))
    present = {id(w) for w in model.weights}
    for index, (layer, layers) in enumerate(zip(arch.layers, held), start=1):
        if not layers or not all(id(w) in present for w in layers[0].weights):  # a layer the output does not read
            continue
        mine = [tensors[i] for i, t in enumerate(arch.tensors) if t.layer == index]
        weights = keras_weights(layer.kind, layer.opts, mine)
        keras_layer = layers[0]
        if layer.kind == "batch_norm":
            C = arch.shapes[arch.parents(index)[0]][0]
            mean = np.zeros(C) if layer.opts["running_mean"] is None else np.array(layer.opts["running_mean"])
            var = np.ones(C) if layer.opts["running_var"] is None else np.array(layer.opts["running_var"])
            weights = weights + [mean, var]
        keras_layer.set_weights([np.asarray(w, dtype=v.dtype) for w, v in zip(weights, keras_layer.get_weights())])


def public_index(model: Any, held: list[list[Any]], problem: Problem) -> np.ndarray:
    """For each entry of the Keras model's trainable weights (flattened, concatenated), its public index.

    Found by setting every parameter to its own index and reading the weights back: exact, and it follows
    whatever transposes and splits :func:`keras_weights` makes.  A layer no path leads from to the output is
    not in a Keras functional model, so its parameters are in no weight (``E`` does not depend on them).
    """
    labels = np.arange(problem.n_params, dtype=np.float64)
    set_params(model, held, problem, labels)
    flat = np.concatenate([np.asarray(v.numpy(), dtype=np.float64).reshape(-1) for v in model.trainable_variables])
    set_params(model, held, problem, problem.params)
    index = np.rint(flat).astype(np.int64)
    if len(set(index.tolist())) != index.size:  # pragma: no cover - a layout the table got wrong
        raise AssertionError("the Keras weights hold a public parameter twice")
    return index
