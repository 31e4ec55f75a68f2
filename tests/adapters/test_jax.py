"""The JAX adapter: its loss gives backprop's Hessian to rounding, its pure function, check_model."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)  # hessverify's bounds are float64 bounds (hessverify.jax)

import jax.numpy as jnp  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import hessverify  # noqa: E402
import hessverify.adapters.jax as hvj  # noqa: E402
from hessverify.engine.bounds import rounding_bound  # noqa: E402
from hessverify.errors import FunctionUnderTestError, UsageError  # noqa: E402
from tests.conftest import CASE_PATHS  # noqa: E402

XOR = hessverify.load_case(CASE_PATHS[[p.stem for p in CASE_PATHS].index("xor-2-2-1-sigmoid")])


def _bound(problem: hessverify.Problem, B: np.ndarray) -> np.ndarray | float:
    """The float64 rounding bound of two methods on a dense network; on other kinds (whose rounding model is the
    graph's, not this function's) 1e-12 of the largest entry, as the kinds' tests hold PyTorch's double backward."""
    return rounding_bound(problem, methods=2) if problem.architecture.is_dense else 1e-12 * np.max(np.abs(B))


def test_the_name_is_the_adapter_and_jax_is_the_package() -> None:
    assert hvj._jax is jax and hvj.__name__ == "hessverify.adapters.jax"
    assert hessverify.jax is hvj


@pytest.mark.parametrize("path", CASE_PATHS, ids=[p.stem for p in CASE_PATHS])
def test_jax_hessian_of_loss_matches_backprop_to_rounding(path) -> None:
    problem = hessverify.load_case(path)
    H = np.asarray(jax.jit(jax.hessian(hvj.loss(problem)))(problem.params))
    B = hessverify.hessian(problem, "backprop")
    bound = _bound(problem, B)
    assert np.isfinite(H).all()
    assert np.all(np.abs(H - B) <= bound), np.max(np.abs(H - B) / bound)


@pytest.mark.parametrize("path", CASE_PATHS, ids=[p.stem for p in CASE_PATHS])
def test_pure_function_params_and_flat_order(path) -> None:
    problem = hessverify.load_case(path)
    case = hvj.to_case(problem)
    np.testing.assert_array_equal(np.asarray(hvj.flat_params(problem, case.params)), problem.params)
    if not any(layer.kind == "attention" for layer in problem.architecture.layers):  # its keys sort otherwise
        flat, _ = ravel_pytree(case.params)
        np.testing.assert_array_equal(np.asarray(flat), problem.params)  # ravel_pytree gives the public order
    assert float(case.E()) == pytest.approx(hessverify.error(problem), rel=1e-12, abs=1e-300)
    assert float(case.loss(case.flat_params)) == pytest.approx(float(case.E()), rel=1e-13, abs=1e-300)
    for tensor in problem.architecture.tensors:  # W1, b1, Win2, ...: each tensor's place and slice
        i, key = case.param_map[tensor.label]
        assert (i, key) == (tensor.layer - 1, tensor.name)
        np.testing.assert_array_equal(np.asarray(case.params[i][key]).reshape(-1), problem.params[tensor.slice])


def test_softplus_and_gelu_are_sound_in_both_tails() -> None:
    a = jnp.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    for name in ("softplus", "gelu", "silu", "sigmoid"):
        f = hvj.ACTIVATIONS[name]
        d2 = jax.vmap(jax.grad(jax.grad(f)))(a)
        assert jnp.isfinite(f(a)).all() and jnp.isfinite(d2).all(), name
    assert float(jax.grad(jax.grad(hvj.softplus))(0.0)) == 0.25  # not the 0 of relu'(0) = sgn(0) = 0
    assert float(hvj.stable_gelu(-10.0)) == pytest.approx(-10.0 * 7.619853024160527e-24, rel=1e-12)


def test_check_model_passes_correct_code_in_every_form() -> None:
    def hessian(c):
        return jax.hessian(c.loss)(c.flat_params)

    def hvp(c, v):
        return jax.jvp(jax.grad(c.loss), (c.flat_params,), (v,))[1]

    def blocks(c):  # per layer, by the pytree: jax.hessian of E in the params list
        H = jax.hessian(c.E)(c.params)
        out = []
        for i, layer in enumerate(c.params):
            keys = sorted(layer)  # "W" before "b": the public order within a layer
            rows = [jnp.concatenate([H[i][k][i][m].reshape(layer[k].size, layer[m].size) for m in keys], axis=1)
                    for k in keys]
            out.append(jnp.concatenate(rows, axis=0))
        return out

    assert hvj.check_model(hessian, XOR)
    assert hvj.check_model(hvp, XOR, returns="hvp", against=("backprop",))
    assert hvj.check_model(lambda c: jnp.diag(hessian(c)), XOR, returns="diagonal", against=("backprop",))
    assert hvj.check_model(blocks, XOR, returns="blocks", against=("backprop",))


def test_check_model_catches_a_wrong_hessian() -> None:
    result = hvj.check_model(lambda c: 1.001 * jax.hessian(c.loss)(c.flat_params), XOR, against=("backprop",))
    assert not result.passed and "FAIL" in result.summary()


def test_check_model_faults_and_float32_without_x64() -> None:
    with pytest.raises(FunctionUnderTestError):
        hvj.check_model(lambda c: "H", XOR, against=("backprop",))
    with pytest.raises(UsageError, match="dtype="):
        hvj.to_case(XOR, dtype=np.int32)
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(UsageError, match="jax_enable_x64"):
            hvj.loss(XOR)
    finally:
        jax.config.update("jax_enable_x64", True)


def test_float32_jax_hessian_is_judged_by_float32_rounding() -> None:
    def hessian(c):
        return jax.hessian(c.loss)(c.flat_params)

    result = hvj.check_model(hessian, XOR, dtype=np.float32, against=("backprop",))
    assert result and "judged in float32" in result.summary()
    off = hvj.check_model(lambda c: hessian(c) * 1.001, XOR, dtype=np.float32, against=("backprop",))
    assert not off
