"""Researcher-style equinox models for the JAX module adapter's tests, and the user's own curvature code.

Each builder returns ``(model, loss_fn, inputs, targets)`` in float64, seeded: a model is a function of one
pattern, run on the batch as ``jax.vmap(model)(inputs)``, as equinox users write it.  The user's Hessian is
``jax.hessian`` of the user's own error through ``jax.flatten_util.ravel_pytree`` of the model's inexact leaves
(the leaves' order, each raveled row-major): it shares nothing with hessverify's import, methods or references.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

F64 = jnp.float64


class ResMLP(eqx.Module):
    """A residual MLP: tanh(in(x)), then h + b(gelu(a(h))), then a linear head."""

    inp: eqx.nn.Linear
    a: eqx.nn.Linear
    b: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self, key: Any) -> None:
        k = jax.random.split(key, 4)
        self.inp = eqx.nn.Linear(3, 4, key=k[0], dtype=F64)
        self.a = eqx.nn.Linear(4, 4, key=k[1], dtype=F64)
        self.b = eqx.nn.Linear(4, 4, key=k[2], dtype=F64)
        self.out = eqx.nn.Linear(4, 2, key=k[3], dtype=F64)

    def __call__(self, x: Any) -> Any:
        h = jnp.tanh(self.inp(x))
        h = h + self.b(jax.nn.gelu(self.a(h), approximate=False))
        return self.out(h)


@jax.custom_vjp
def my_tanh(a: Any) -> Any:
    """tanh with a hand-written backward that is itself differentiable."""
    return jnp.tanh(a)


def _tanh_fwd(a: Any) -> tuple[Any, Any]:
    return jnp.tanh(a), a


def _tanh_bwd(a: Any, g: Any) -> tuple[Any]:
    return (g * (1 - jnp.tanh(a) ** 2),)


my_tanh.defvjp(_tanh_fwd, _tanh_bwd)


@jax.custom_vjp
def cut_tanh(a: Any) -> Any:
    """tanh whose backward stops the gradient: its first derivative is right, its second silently zero."""
    return jnp.tanh(a)


def _cut_bwd(a: Any, g: Any) -> tuple[Any]:
    return (g * jax.lax.stop_gradient(1 - jnp.tanh(a) ** 2),)


cut_tanh.defvjp(_tanh_fwd, _cut_bwd)


class CustomMLP(eqx.Module):
    l1: eqx.nn.Linear
    l2: eqx.nn.Linear
    act: Callable[[Any], Any] = eqx.field(static=True)

    def __init__(self, key: Any, act: Callable[[Any], Any] = my_tanh) -> None:
        k1, k2 = jax.random.split(key)
        self.l1 = eqx.nn.Linear(3, 4, key=k1, dtype=F64)
        self.l2 = eqx.nn.Linear(4, 2, key=k2, dtype=F64)
        self.act = act

    def __call__(self, x: Any) -> Any:
        return self.l2(self.act(self.l1(x)))


def _keys(seed: int) -> tuple[Any, Any, Any]:
    return tuple(jax.random.split(jax.random.key(seed), 3))  # type: ignore[return-value]


def mse(y: Any, t: Any) -> Any:
    return jnp.mean((y - t) ** 2)


def mlp() -> tuple[Any, Any, Any, Any]:
    k, kx, kt = _keys(1)
    model = eqx.nn.MLP(3, 2, 4, 2, activation=jax.nn.tanh, key=k, dtype=F64)
    return model, mse, jax.random.normal(kx, (5, 3), F64), jax.random.normal(kt, (5, 2), F64)


def layernorm_mlp() -> tuple[Any, Any, Any, Any]:
    k, kx, kt = _keys(3)
    k1, k2 = jax.random.split(k)
    model = eqx.nn.Sequential([eqx.nn.Linear(3, 4, key=k1, dtype=F64), eqx.nn.LayerNorm(4, dtype=F64),
                               eqx.nn.Lambda(jax.nn.silu), eqx.nn.Linear(4, 1, key=k2, dtype=F64)])
    # perturb LayerNorm's affine parameters off their (1, 0) start so that they take part in the Hessian
    model = eqx.tree_at(lambda m: (m.layers[1].weight, m.layers[1].bias), model,
                        (1 + 0.1 * jax.random.normal(kx, (4,), F64), 0.1 * jax.random.normal(kt, (4,), F64)))
    return model, optax.sigmoid_binary_cross_entropy, jax.random.normal(kx, (5, 3), F64), \
        jax.random.uniform(kt, (5, 1), F64)


def cnn() -> tuple[Any, Any, Any, Any]:
    k, kx, _ = _keys(2)
    k1, k2 = jax.random.split(k)
    model = eqx.nn.Sequential([eqx.nn.Conv2d(1, 2, 3, padding=1, key=k1, dtype=F64), eqx.nn.Lambda(jnp.tanh),
                               eqx.nn.AvgPool2d(2, 2), eqx.nn.Lambda(jnp.ravel),
                               eqx.nn.Linear(8, 3, key=k2, dtype=F64)])
    return model, optax.softmax_cross_entropy_with_integer_labels, jax.random.normal(kx, (4, 1, 4, 4), F64), \
        jnp.array([0, 2, 1, 0])


def resmlp() -> tuple[Any, Any, Any, Any]:
    k, kx, kt = _keys(4)
    return ResMLP(k), mse, jax.random.normal(kx, (5, 3), F64), jax.random.normal(kt, (5, 2), F64)


def custom_mlp(act: Callable[[Any], Any] = my_tanh) -> tuple[Any, Any, Any, Any]:
    k, kx, kt = _keys(5)

    def huber(y: Any, t: Any) -> Any:
        return optax.huber_loss(y, t, delta=2.0).mean()

    return CustomMLP(k, act), huber, jax.random.normal(kx, (4, 3), F64), jax.random.normal(kt, (4, 2), F64)


def _E(theta: Any, unravel: Any, static: Any, loss_fn: Any, x: Any, t: Any) -> Any:
    return jnp.mean(loss_fn(jax.vmap(eqx.combine(unravel(theta), static))(x), t))


@eqx.filter_jit
def _hessian(theta: Any, unravel: Any, static: Any, loss_fn: Any, x: Any, t: Any) -> Any:
    return jax.hessian(_E)(theta, unravel, static, loss_fn, x, t)


@eqx.filter_jit
def _hvp(theta: Any, unravel: Any, static: Any, loss_fn: Any, x: Any, t: Any, v: Any) -> Any:
    return jax.jvp(lambda th: jax.grad(_E)(th, unravel, static, loss_fn, x, t), (theta,), (v,))[1]


@eqx.filter_jit
def _ggn(theta: Any, unravel: Any, static: Any, loss_fn: Any, x: Any, t: Any) -> Any:
    def outputs(th: Any) -> Any:
        return jax.vmap(eqx.combine(unravel(th), static))(x)

    y = outputs(theta)
    J = jax.jacrev(lambda th: outputs(th).reshape(-1))(theta)
    Hl = jax.hessian(lambda z: jnp.mean(loss_fn(z.reshape(y.shape), t)))(y.reshape(-1))
    return J.T @ Hl @ J


def _split(model: Any) -> tuple[Any, Any, Any]:
    params, static = eqx.partition(model, eqx.is_inexact_array)
    theta, unravel = jax.flatten_util.ravel_pytree(params)
    return theta, unravel, static


def users_hessian(model: Any, loss_fn: Any, x: Any, t: Any) -> Any:
    """A user's Hessian code: jax.hessian of the error of the flat leaves, at the model's dtype (compiled once a
    structure, as a user would)."""
    return _hessian(*_split(model), loss_fn, x, t)


def users_hvp(model: Any, loss_fn: Any, x: Any, t: Any, v: Any) -> Any:
    """A user's H v: forward over reverse, jax.jvp of jax.grad."""
    return _hvp(*_split(model), loss_fn, x, t, v)


def users_ggn(model: Any, loss_fn: Any, x: Any, t: Any) -> Any:
    """J^T H_loss J: the Hessian with the outputs' second-derivative term missing."""
    return _ggn(*_split(model), loss_fn, x, t)


IMPORTABLE: dict[str, Callable[[], tuple[Any, Any, Any, Any]]] = {
    "mlp": mlp, "layernorm-mlp": layernorm_mlp, "cnn": cnn}
FALLBACK: dict[str, Callable[[], tuple[Any, Any, Any, Any]]] = {"resmlp": resmlp, "custom-vjp": custom_mlp}


def hessian_of(model: Any, loss_fn: Any, x: Any, t: Any) -> np.ndarray:
    return np.asarray(users_hessian(model, loss_fn, x, t), dtype=np.float64)
