"""The JAX table: every activation, loss and layer kind of the case schema as pure JAX functions, written once.

Read by the adapter (:mod:`hessverify.adapters.jax`: ``to_function``, ``loss``, ``check_model``) and the
conformance rows (:mod:`hessverify.adapters.conformance`); nothing else writes JAX's side of the schema.

* :data:`ACTIVATIONS`: per activation, the ``accurate`` form (the adapter's: softplus branched on the sign,
  gelu as ``a/2 erfc(-a/sqrt 2)``, as in :mod:`hessverify.adapters.torch_table`) and JAX's ``builtin``
  (``jax.nn``), which conformance holds to account;
* :data:`LOSSES`: per loss, the per-pattern error from ``jax.nn`` (JAX has no loss classes, so ``E = L``),
  given the softplus to use;
* :data:`LAYERS`: per layer kind a pure function ``f(options, inputs, params, builtin)`` with JAX's own builtins where
  it has them: ``jax.lax.conv_general_dilated`` (convolutions, ``feature_group_count`` for groups),
  ``jax.lax.reduce_window`` (average pooling), ``jax.nn.standardize`` (LayerNorm, BatchNorm with batch or
  given statistics), ``jax.nn.dot_product_attention`` (attention), ``jnp.take`` (embedding); ``jax.numpy``
  for the rest (a dense map, a flatten, an add).  Attention's accurate column (the adapter's) writes the
  softmax of the scores out in ``jax.numpy``: ``jax.nn.dot_product_attention`` (JAX 0.10.2, its XLA
  implementation) converts the scores to float32 for the softmax even when the inputs are float64, so a
  float64 network's attention is float32-accurate (docs/conformance.md);
* :func:`apply_fn`: a network's ``apply(params, inputs)``, ``params`` a list, one dict a layer, keyed by the
  tensors' short names (``{"W": ..., "b": ...}``, ``{"Win", "bin", "Wout", "bout"}``).

Arrays are batched (one pattern per row of the leading axis), in the layouts of PyTorch (``NCL``,
``NCHW``, weights ``OIH``/``OIHW``), so a parameter has the same shape and order as in PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

from hessverify.adapters import rows
from hessverify.model.network import Architecture
from hessverify.model.problem import Problem

__all__ = ["ACTIVATIONS", "BUILTINS", "LAYERS", "LOSSES", "Activation", "Loss", "apply_fn", "flatten", "softplus", "stable_gelu",
           "unflatten"]

Array = Any
Params = list[dict[str, Array]]


# -- activations ---------------------------------------------------------------------------

def softplus(a: Array) -> Array:
    """``log(1 + e^a)``: ``a + log1p(e^-a)`` for ``a > 0``, ``log1p(e^a)`` otherwise, each branch on its own side."""
    positive = a > 0
    up = jnp.where(positive, a, 0.0)
    down = jnp.where(positive, 0.0, a)
    return jnp.where(positive, up + jnp.log1p(jnp.exp(-up)), jnp.log1p(jnp.exp(down)))


def stable_gelu(a: Array) -> Array:
    """``a Phi(a) = a/2 erfc(-a / sqrt 2)``: no cancellation in the left tail (unlike ``1 + erf``)."""
    return 0.5 * a * jsp.erfc(-a / math.sqrt(2.0))


def _identity(a: Array) -> Array:
    return a


def _silu(a: Array) -> Array:
    return a * jax.nn.sigmoid(a)


def _gelu(a: Array) -> Array:
    return jax.nn.gelu(a, approximate=False)


@dataclass(frozen=True)
class Activation:
    """One activation: the adapter's accurate form and JAX's builtin."""

    name: str
    accurate: Callable[[Array], Array]
    builtin: Callable[[Array], Array]


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("identity", _identity, _identity),
    Activation("sigmoid", jax.nn.sigmoid, jax.nn.sigmoid),
    Activation("tanh", jnp.tanh, jnp.tanh),
    Activation("softplus", softplus, jax.nn.softplus),
    Activation("sin", jnp.sin, jnp.sin),
    Activation("gelu", stable_gelu, _gelu),
    Activation("silu", _silu, jax.nn.silu),
    Activation("relu", jax.nn.relu, jax.nn.relu),
)}
"""Every activation of the case schema, by name."""


# -- losses -------------------------------------------------------------------------------------

def _sse(y: Array, t: Array, sp: Callable[[Array], Array]) -> Array:
    return 0.5 * jnp.sum((y - t) ** 2, axis=-1)


def _cross_entropy(y: Array, t: Array, sp: Callable[[Array], Array]) -> Array:
    return -jnp.sum(t * jax.nn.log_softmax(y, axis=-1), axis=-1)


def _binary_cross_entropy(y: Array, t: Array, sp: Callable[[Array], Array]) -> Array:
    return jnp.sum(sp(y) - t * y, axis=-1)


def _output(y: Array, t: Array, sp: Callable[[Array], Array]) -> Array:
    return jnp.sum(y, axis=-1)


def _mse(y: Array, t: Array, sp: Callable[[Array], Array]) -> Array:
    return jnp.sum((y - t) ** 2, axis=-1)  # no 1/2, as nn.MSELoss (the mean over N K is the problem's scale)


def _huber(y: Array, t: Array, sp: Callable[[Array], Array], delta: float = 1.0) -> Array:
    r = y - t
    return jnp.sum(jnp.where(jnp.abs(r) <= delta, 0.5 * r * r, delta * (jnp.abs(r) - 0.5 * delta)), axis=-1)


@dataclass(frozen=True)
class Loss:
    """One loss: the per-pattern error ``e(y, t, softplus) -> (N,)`` written from ``jax.nn``; ``E = L``."""

    name: str
    per_pattern: Callable[..., Array]  # e(y, t, softplus, **loss options) -> (N,)


LOSSES: dict[str, Loss] = {l.name: l for l in (
    Loss("sse", _sse), Loss("cross_entropy", _cross_entropy),
    Loss("binary_cross_entropy", _binary_cross_entropy), Loss("output", _output), Loss("mse", _mse),
    Loss("huber", _huber),
)}
"""Every loss of the case schema, by name (JAX has no loss classes: ``E = L``)."""


# -- layer kinds ---------------------------------------------------------------------------------

Layer = Callable[[dict[str, Any], Sequence[Array], Sequence[Array], bool], Array]
"""``f(options, inputs, params, builtin) -> output``: one layer kind, batched."""


def _standardize(x: Array, axis: Any, eps: float, builtin: bool, mean: Any = None, variance: Any = None) -> Array:
    """``jax.nn.standardize``: its default variance ``mean(x^2) - mean(x)^2`` clipped at 0 (``builtin``), or the
    two-pass ``mean((x - mean)^2)`` (``algorithm="stable"``, the adapter's: no cancellation, no clip at 0)."""
    if builtin or mean is not None:
        return jax.nn.standardize(x, axis=axis, mean=mean, variance=variance, epsilon=eps)
    return jax.nn.standardize(x, axis=axis, epsilon=eps, algorithm="stable")


def _dense(o: dict[str, Any], xs: Sequence[Array], ps: Sequence[Array], builtin: bool) -> Array:
    x = xs[0] if len(xs) == 1 else jnp.concatenate(list(xs), axis=-1)
    a = x @ ps[0].T
    a = a + ps[1] if o["bias"] else a
    return a * ps[-1] if o.get("gain") else a  # a gain per unit, c * (W x + b)


def _spatial(dims: int) -> str:
    return "H" if dims == 1 else "HW"


def _conv(dims: int) -> Layer:
    lhs, rhs = "NC" + _spatial(dims), "OI" + _spatial(dims)

    def conv(o: dict[str, Any], xs: Sequence[Array], ps: Sequence[Array], builtin: bool) -> Array:
        y = jax.lax.conv_general_dilated(xs[0], ps[0], o["stride"], [(p, p) for p in o["padding"]],
                                         dimension_numbers=(lhs, rhs, lhs), feature_group_count=o["groups"])
        if o["bias"]:
            y = y + ps[1].reshape((1, -1) + (1,) * dims)
        return y

    return conv


def _avg_pool(dims: int) -> Layer:
    def pool(o: dict[str, Any], xs: Sequence[Array], ps: Sequence[Array], builtin: bool) -> Array:
        stride = o["kernel"] if o["stride"] is None else o["stride"]
        total = jax.lax.reduce_window(xs[0], 0.0, jax.lax.add, (1, 1) + tuple(o["kernel"]), (1, 1) + tuple(stride),
                                      "VALID")
        return total / float(np.prod(o["kernel"]))

    return pool


def _flatten(o: dict[str, Any], xs: Sequence[Array], ps: Sequence[Array], builtin: bool) -> Array:
    return xs[0].reshape(xs[0].shape[0], -1)


def _layer_norm(o: dict[str, Any], xs: Sequence[Array], ps: Sequence[Array], builtin: bool) -> Array:
    y = _standardize(xs[0], -1, o["eps"], builtin)
    return y * ps[0] + ps[1] if o["affine"] else y


def _batch_norm(o: dict[str, Any], xs: Sequence[Array], ps: Sequence[Array], builtin: bool) -> Array:
    x = xs[0]
    C, d = x.shape[1], x.ndim - 2
    per_channel = (1, C) + (1,) * d
    if o["mode"] == "train":
        y = _standardize(x, (0,) + tuple(range(2, x.ndim)), o["eps"], builtin)
    else:  # the given running statistics
        mean = np.zeros(C) if o["running_mean"] is None else np.array(o["running_mean"])
        var = np.ones(C) if o["running_var"] is None else np.array(o["running_var"])
        y = _standardize(x, 1, o["eps"], builtin, mean.reshape(per_channel).astype(x.dtype),
                         var.reshape(per_channel).astype(x.dtype))
    if o["affine"]:
        y = y * ps[0].reshape(per_channel) + ps[1].reshape(per_channel)
    return y


def _attention(o: dict[str, Any], xs: Sequence[Array], ps: Sequence[Array], builtin: bool) -> Array:
    x = xs[0]
    n, T, d = x.shape
    h = o["heads"]
    Win, bin_, Wout, bout = (ps[0], ps[1], ps[2], ps[3]) if o["bias"] else (ps[0], None, ps[1], None)
    qkv = x @ Win.T
    if bin_ is not None:
        qkv = qkv + bin_
    q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(n, T, h, d // h) for i in range(3))  # (N, T, heads, d_h)
    if builtin:
        out = jax.nn.dot_product_attention(q, k, v).reshape(n, T, d)
    else:  # written out: jax.nn.dot_product_attention takes the softmax in float32 whatever the inputs' dtype
        scores = jnp.einsum("nthe,nshe->nhts", q, k) / math.sqrt(d // h)
        out = jnp.einsum("nhts,nshe->nthe", jax.nn.softmax(scores, axis=-1), v).reshape(n, T, d)
    y = out @ Wout.T
    return y + bout if bout is not None else y


def _embedding(o: dict[str, Any], xs: Sequence[Array], ps: Sequence[Array], builtin: bool) -> Array:
    return jnp.take(ps[0], xs[0], axis=0)


def _add(o: dict[str, Any], xs: Sequence[Array], ps: Sequence[Array], builtin: bool) -> Array:
    return xs[0] + xs[1]


LAYERS: dict[str, Layer] = {
    "dense": _dense, "conv1d": _conv(1), "conv2d": _conv(2), "avg_pool1d": _avg_pool(1), "avg_pool2d": _avg_pool(2),
    "flatten": _flatten, "layer_norm": _layer_norm, "batch_norm": _batch_norm, "add": _add,
    "attention": _attention, "embedding": _embedding,
}
"""Every layer kind as a pure JAX function ``f(options, inputs, params)``, batched, by kind."""

BUILTINS: dict[str, str] = {
    "dense": "x @ W.T + b", "conv1d": "jax.lax.conv_general_dilated (NCH, OIH)",
    "conv2d": "jax.lax.conv_general_dilated (NCHW, OIHW)", "avg_pool1d": "jax.lax.reduce_window (add) / k",
    "avg_pool2d": "jax.lax.reduce_window (add) / k", "flatten": "reshape", "layer_norm": "jax.nn.standardize",
    "batch_norm": "jax.nn.standardize (batch or given statistics)", "add": "+",
    "attention": "jax.nn.dot_product_attention (builtin; the adapter writes the softmax out)", "embedding": "jnp.take",
}
"""What each kind is written with (the docs and the conformance rows name it)."""


def require(problem: Problem) -> None:
    """Refuse in one line (:class:`~hessverify.errors.UnsupportedModel`) a problem with an activation, loss or
    layer kind this table has no row for (:mod:`hessverify.adapters.rows`: the table is optional for them)."""
    rows.require(problem, "JAX", "hessverify/adapters/jax_table.py", activations=ACTIVATIONS, losses=LOSSES,
                 kinds=LAYERS)


def within(draw: dict[str, Any]) -> dict[str, Any]:
    """Keywords of :func:`hessverify.checking.strategies.problems` drawing only what this table has rows for
    (:func:`hessverify.adapters.rows.within`)."""
    return rows.within(draw, "JAX", "hessverify/adapters/jax_table.py", activations=ACTIVATIONS, losses=LOSSES)


def apply_fn(arch: Architecture, *, builtin: bool = False) -> Callable[[Params, Array], Array]:
    """``apply(params, inputs) -> outputs``: the network, ``inputs`` of shape ``(N, *input_shape)`` (integer token
    ids for an embedding network), ``params`` one dict a layer keyed by its tensors' short names.  ``builtin``:
    JAX's own activations and ``jax.nn.standardize``'s default variance (what conformance runs), else the
    accurate column and the two-pass variance (the adapter's)."""
    acts = [(ACTIVATIONS[l.activation].builtin if builtin else ACTIVATIONS[l.activation].accurate)
            for l in arch.layers]
    sources = [arch.parents(l) for l in arch.bottom_up]
    names = [[t.name for t in arch.layer_tensors(l)] for l in arch.bottom_up]
    fns = [LAYERS[l.kind] for l in arch.layers]
    opts = [l.opts for l in arch.layers]

    def apply(params: Params, inputs: Array) -> Array:
        outs = [inputs]
        for f, o, act, src, keys, layer in zip(fns, opts, acts, sources, names, params):
            outs.append(act(f(o, [outs[j] for j in src], [layer[k] for k in keys], builtin)))
        return outs[-1]

    return apply


def unflatten(arch: Architecture, theta: Array) -> Params:
    """The flat vector in the public order as ``params`` (one dict a layer)."""
    out: Params = [{} for _ in arch.layers]
    for t in arch.tensors:
        out[t.layer - 1][t.name] = theta[t.slice].reshape(t.shape)
    return out


def flatten(arch: Architecture, params: Params) -> Array:
    """``params`` as the flat vector in the public order (the inverse of :func:`unflatten`)."""
    return jnp.concatenate([jnp.reshape(params[t.layer - 1][t.name], (-1,)) for t in arch.tensors])
