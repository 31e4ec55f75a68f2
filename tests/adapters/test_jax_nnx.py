"""hessverify.jax's module adapter on flax nnx models: nnx.Sequential of nnx.Linear, activations and nnx.LayerNorm
imported (the kernel is (in, out), the schema's W its transpose), others judged by references from their forward."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")
optax = pytest.importorskip("optax")
jax.config.update("jax_enable_x64", True)  # the references compute in float64 (hessverify.jax)

import jax.flatten_util  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import hessverify  # noqa: E402
from hessverify.adapters.jax_check import check_module  # noqa: E402
from hessverify.adapters.jax_hvp import check_hvp  # noqa: E402
from hessverify.adapters.jax_import import import_module  # noqa: E402

F64 = jnp.float64


class Residual(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.a = nnx.Linear(3, 3, rngs=rngs, param_dtype=F64)
        self.b = nnx.Linear(3, 2, rngs=rngs, param_dtype=F64)

    def __call__(self, x):
        return self.b(x + jnp.tanh(self.a(x)))


def _mse(y, t):
    return optax.squared_error(y, t).mean()


def sequential():
    r = nnx.Rngs(0)
    model = nnx.Sequential(nnx.Linear(3, 4, rngs=r, param_dtype=F64), jnp.tanh,
                           nnx.LayerNorm(4, rngs=r, param_dtype=F64), nnx.Linear(4, 2, rngs=r, param_dtype=F64))
    return model, _mse, jax.random.normal(jax.random.key(1), (5, 3), F64), \
        jax.random.normal(jax.random.key(2), (5, 2), F64)


def residual():
    _, loss_fn, x, t = sequential()
    return Residual(nnx.Rngs(3)), loss_fn, x, t


def _E(model, loss_fn, x, t):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    theta, unravel = jax.flatten_util.ravel_pytree(params)
    return (lambda th: loss_fn(nnx.merge(graphdef, unravel(th), rest)(x), t)), theta


def users_hessian(model, loss_fn, x, t):
    """A user's Hessian: jax.hessian of the error of the nnx.Param leaves (a batch function, no vmap)."""
    E, theta = _E(model, loss_fn, x, t)
    return jax.hessian(E)(theta)


def users_hvp(model, loss_fn, x, t, v):
    E, theta = _E(model, loss_fn, x, t)
    return jax.jvp(jax.grad(E), (theta,), (v,))[1]


def test_the_import_is_the_users_model() -> None:
    model, loss_fn, x, t = sequential()
    problem = import_module(model, loss_fn, x, t)
    H = np.asarray(users_hessian(model, loss_fn, x, t))
    idx = problem.meta["jax_index"]  # the kernels' entries transposed into W's order
    assert not np.array_equal(idx, np.arange(idx.size))
    assert np.max(np.abs(hessverify.hessian(problem, "backprop") - H[np.ix_(idx, idx)])) <= 1e-12 * np.max(np.abs(H))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_correct_hessian_passes_and_a_scaled_block_fails(dtype: str) -> None:
    args = sequential()
    result = check_module(users_hessian, *args, dtype=dtype, against=("backprop", "autograd"), isolation="thread")
    assert result.passed and result.route == "imported", result.summary()

    # float32 bounds through LayerNorm are wide: a 1 % block error reaches margin 0.25 there (measured)
    factor = 1.001 if dtype == "float64" else 1.1

    def scaled(*a):
        H = np.array(users_hessian(*a))
        H[4:16, 4:16] *= factor  # the first kernel's block (its bias comes first among the leaves)
        return H

    assert not check_module(scaled, *args, dtype=dtype, against=("backprop",), isolation="thread").passed


def test_a_residual_module_is_judged_by_its_forward() -> None:
    result = check_module(users_hessian, *residual())
    assert result.passed and result.route == "module references", result.summary()
    assert result.served == ("rev-rev", "fwd-rev", "fd") and "nnx.Residual is not walked" in result.not_served["import"]


def test_check_hvp() -> None:
    result = check_hvp(users_hvp, *sequential(), probes=1)
    assert result.passed, result.summary()
    assert [p.name for p in result.probes][1:] == ["layer ['layers'][0]", "layer ['layers'][2]", "layer ['layers'][3]"]
