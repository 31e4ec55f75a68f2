"""hessverify.jax's module adapter: equinox models imported or judged by references from their own forward."""

from __future__ import annotations

import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
eqx = pytest.importorskip("equinox")
optax = pytest.importorskip("optax")
jax.config.update("jax_enable_x64", True)  # the references compute in float64 (hessverify.jax)

import jax.numpy as jnp  # noqa: E402

import hessverify  # noqa: E402
from hessverify.adapters.jax_check import FlatModel, check_module, fd_of_gradient  # noqa: E402
from hessverify.adapters.jax_hvp import check_hvp  # noqa: E402
from hessverify.adapters.jax_import import import_module  # noqa: E402
from hessverify.errors import BudgetError, UnsupportedModel, UsageError  # noqa: E402
from tests.adapters import jax_models as jm  # noqa: E402

MODELS = {**jm.IMPORTABLE, **jm.FALLBACK}
# every check in this process: the process sandbox (spawned where JAX is loaded) is exercised once, below
QUICK = {"isolation": "thread"}


def test_the_public_names() -> None:
    import hessverify.jax as hj

    assert hj.import_module is import_module and hj.check_module is check_module and hj.check_hvp is check_hvp


@pytest.mark.parametrize("name", sorted(jm.IMPORTABLE))
def test_the_import_is_the_users_model(name: str) -> None:
    model, loss_fn, x, t = MODELS[name]()
    problem = import_module(model, loss_fn, x, t)
    H = jm.hessian_of(model, loss_fn, x, t)  # jax.hessian of the user's own error, in leaf order
    idx = problem.meta["jax_index"]
    B = hessverify.hessian(problem, "backprop")
    assert np.max(np.abs(B - H[np.ix_(idx, idx)])) <= 1e-12 * np.max(np.abs(H))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_correct_hessian_passes(name: str, dtype: str) -> None:
    # fd on the problem adds little here beyond backprop and autograd, and its time: only on the MLP
    against = ("backprop", "autograd", "fd") if name == "mlp" else ("backprop", "autograd")
    result = check_module(jm.users_hessian, *MODELS[name](), dtype=dtype, against=against, **QUICK)
    assert result.passed, result.summary()
    if name in jm.IMPORTABLE:
        assert result.route == "imported" and set(result.served) == set(against)
    else:
        assert result.route == "module references" and result.served == ("rev-rev", "fwd-rev", "fd")
        assert "eqx.Module with its own __call__" in result.not_served["import"]
    assert result.precision == dtype  # on either route, the format it was judged in


def test_the_process_sandbox_serves() -> None:
    # JAX is loaded, so the worker is spawned: the model travels as NumPy leaves and is rebuilt in float32 there
    result = check_module(jm.users_hessian, *jm.mlp(), dtype="float32", against=("backprop",))
    assert result.passed, result.summary()


def _planted(bug: str):
    """The user's Hessian with one realistic bug: the second weight's block scaled by 1.001, that weight's rows and
    columns in column-major order (a transposed W), or the outputs' second-derivative term left out (the GGN)."""
    if bug == "ggn":
        return jm.users_ggn

    def fn(model, loss_fn, x, t):
        H = np.array(jm.users_hessian(model, loss_fn, x, t))
        leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
        start = sum(leaf.size for leaf in leaves[:2])  # the second layer's weight, as its own leaf
        shape = leaves[2].shape
        k = int(np.prod(shape))
        if bug == "scaled-block":
            H[start:start + k, start:start + k] *= 1.001
        else:
            full = np.arange(H.shape[0])
            full[start:start + k] = np.arange(k).reshape(shape).T.reshape(-1) + start
            H = H[full][:, full]
        return jnp.asarray(H, dtype=leaves[0].dtype)

    return fn


@pytest.mark.parametrize("bug, dtype", [("scaled-block", "float64"), ("scaled-block", "float32"),
                                        ("transposed-weight", "float32"), ("ggn", "float32")])
@pytest.mark.parametrize("name", ["mlp", "resmlp"])
def test_planted_bugs_fail(name: str, bug: str, dtype: str) -> None:
    # float32's bounds are the wider: a bug caught there is caught in float64
    result = check_module(_planted(bug), *MODELS[name](), dtype=dtype, against=("backprop",), **QUICK)
    assert not result.passed, result.summary()
    assert result.failures and "FAILED" in result.summary()


def test_a_cut_second_order_path_is_caught() -> None:
    # the custom_vjp's bwd stops the gradient: both AD orders miss tanh'' and agree with each other, not with fd
    result = check_module(jm.users_hessian, *jm.custom_mlp(jm.cut_tanh))
    assert not result.passed, result.summary()
    assert result.served == ("fd",)
    assert "disagrees with fd" in result.not_served["rev-rev"] and "disagrees with fd" in result.not_served["fwd-rev"]


def test_fd_error_estimate_covers_its_error() -> None:
    model, loss_fn, x, t = jm.resmlp()
    H, err = fd_of_gradient(FlatModel(model, loss_fn, x, t))
    exact = jm.hessian_of(model, loss_fn, x, t)
    assert np.all(np.abs(H - exact) <= err)
    assert np.max(err) < 1e-6 * np.max(np.abs(exact))


@pytest.mark.parametrize("returns", ["hvp", "diagonal", "blocks"])
def test_other_returns(returns: str) -> None:
    def diagonal(*args):
        return jnp.diagonal(jm.users_hessian(*args))

    def blocks(model, *rest):
        H = jm.users_hessian(model, *rest)
        out, pos = [], 0
        for layer in [*getattr(model, "layers", ())] or [model.inp, model.a, model.b, model.out]:
            k = sum(leaf.size for leaf in jax.tree_util.tree_leaves(eqx.filter(layer, eqx.is_inexact_array)))
            out.append(H[pos:pos + k, pos:pos + k])
            pos += k
        return out

    fn = {"hvp": jm.users_hvp, "diagonal": diagonal, "blocks": blocks}[returns]
    for build in (jm.mlp, jm.resmlp):
        result = check_module(fn, *build(), returns=returns, against=("backprop",), **QUICK)
        assert result.passed, result.summary()


def test_unsupported_is_named() -> None:
    model, _, x, t = jm.mlp()
    with pytest.raises(UnsupportedModel, match="not one of the schema's losses"):
        import_module(model, lambda y, t: jnp.mean(jnp.abs(y - t)), x, t)
    k = jax.random.key(0)
    approx = eqx.nn.MLP(3, 2, 4, 1, activation=jax.nn.gelu, key=k, dtype=jnp.float64)  # tanh-approximate gelu
    with pytest.raises(UnsupportedModel, match=r"MLP\.activation: gelu is not an activation of the schema"):
        import_module(approx, jm.mse, x, t)
    with pytest.raises(UnsupportedModel, match="ResMLP is an eqx.Module with its own __call__"):
        import_module(*jm.resmlp())


def test_the_losses_are_recognised() -> None:
    model, _, x, t = jm.mlp()
    cases = {optax.squared_error: ("mse", "mean", ()), functools.partial(optax.huber_loss, delta=0.5):
             ("huber", "mean", (("delta", 0.5),)), (lambda y, t: optax.l2_loss(y, t).sum()): ("sse", "sum", ()),
             (lambda y, t: optax.softmax_cross_entropy(y, t).sum()): ("cross_entropy", "sum", ())}
    for loss_fn, want in cases.items():
        target = jax.nn.softmax(t) if want[0] == "cross_entropy" else t
        p = import_module(model, loss_fn, x, target)
        assert (p.loss, str(p.reduction), p.loss_options) == want


def test_bad_use_is_one_line() -> None:
    with pytest.raises(UsageError, match="returns="):
        check_module(jm.users_hessian, *jm.mlp(), returns="kfac")
    with pytest.raises(UsageError, match="not an eqx.Module"):
        check_module(jm.users_hessian, object(), jm.mse, jnp.ones((1, 1)), jnp.ones((1, 1)))


# -- check_hvp ----------------------------------------------------------------------------------------------------


def _block_off(fn, factor: float = 1.001, leaf: int = 0):
    """The user's HVP with one leaf's block of H scaled: (H v)_T += (factor - 1) H_TT v_T."""

    def hvp(model, loss_fn, x, t, v):
        sizes = [a.size for a in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))]
        a = sum(sizes[:leaf])
        b = a + sizes[leaf]
        only = jnp.zeros_like(v).at[a:b].set(v[a:b])
        return fn(model, loss_fn, x, t, v).at[a:b].add((factor - 1) * fn(model, loss_fn, x, t, only)[a:b])

    return hvp


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_correct_hvp_passes_on_a_cnn(dtype: str) -> None:
    result = check_hvp(jm.users_hvp, *jm.cnn(), probes=2, dtype=dtype)
    assert result.passed, result.summary()
    assert len(result.probes) == 2 + 2  # two random, one per module with parameters (conv, linear)
    assert all(set(p.served) == {"rev-rev", "fwd-rev", "fd"} for p in result.probes)
    assert result.measured["seconds"] > 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_blocks_tenth_of_a_percent_fails(dtype: str) -> None:
    result = check_hvp(_block_off(jm.users_hvp), *jm.cnn(), probes=1, dtype=dtype)
    assert not result.passed
    assert any(p.name == "layer .layers[0]" for p in result.failures), result.summary()  # the conv's own probe


def test_a_cut_second_order_path_fails_the_hvp() -> None:
    result = check_hvp(jm.users_hvp, *jm.custom_mlp(jm.cut_tanh), probes=2)
    assert not result.passed
    # the random probes cross tanh'' (the last layer's own probe does not: its block holds no second derivative
    # of the activation)
    assert all("rev-rev" in p.not_served and "fwd-rev" in p.not_served for p in result.probes
               if p.name.startswith("random"))


def test_the_hvp_budget_is_checked_before_work() -> None:
    calls = []
    with pytest.raises(BudgetError, match="GiB"):
        check_hvp(lambda *a: calls.append(a), *jm.cnn(), max_memory=1000)
    assert not calls


@pytest.mark.parametrize("key", [0, 1, 2])
def test_no_false_alarm_where_the_gradient_cancels(key: int) -> None:
    # all-equal inputs: the gradient (1e-4) is a sum of terms of size 1, whose rounding noise (4e-16) is far above
    # u |g|. With fd's rounding term taken from |g|, fd disagreed with a correct HVP (margin 1.57 at key 0) and
    # both AD references were marked as not serving; it is now measured (module_refs.gradient_noise). Key 0 is
    # the case that failed; keys 1 and 2 passed before too (no false alarm either way)
    mlp = eqx.nn.MLP(2, 1, 2, 1, activation=jnp.tanh, key=jax.random.key(key), dtype=jnp.float64)
    x, t = jnp.ones((3, 2)), jnp.zeros((3, 1))
    result = check_hvp(jm.users_hvp, mlp, lambda y, t: jnp.mean((y - t) ** 2), x, t, probes=2)
    assert result.passed, result.summary()
    assert all({"fd", "rev-rev", "fwd-rev"} <= set(p.served) for p in result.probes), result.summary()
