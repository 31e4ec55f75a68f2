"""check_module: a user's curvature code judged on the user's own model, imported or by references from its forward."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from hessverify.adapters.torch_check import FlatModel, check_module, fd_of_gradient, module_references  # noqa: E402
from hessverify.errors import UsageError  # noqa: E402
from tests.adapters import torch_models as tm  # noqa: E402

MODELS = {**tm.IMPORTABLE, "custom-function": tm.custom_mlp}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_correct_hessian_passes(name: str, dtype: torch.dtype) -> None:
    # finite differences on the graph networks take most of a minute: there backprop and autograd judge
    against = ("backprop", "autograd") if name in ("cnn", "transformer") else ("backprop", "autograd", "fd")
    result = check_module(tm.users_hessian, *MODELS[name](), dtype=dtype, against=against)
    assert result.passed, result.summary()
    assert result.route == ("module references" if name == "custom-function" else "imported")
    assert set(result.served) == ({"rev-rev", "fd"} if name == "custom-function" else set(against))


def _planted(bug: str, base=tm.users_hessian):
    """The user's Hessian with one realistic bug: a tensor's block scaled, a weight's rows and columns in
    column-major order (a transposed W), or the outputs' second-derivative term left out (the GGN)."""
    if bug == "missing-term":
        return tm.users_ggn

    def fn(model, loss_fn, x, t):
        H = base(model, loss_fn, x, t).clone()
        shapes = [p.shape for p in model.parameters()]
        start = sum(int(np.prod(s)) for s in shapes[:2])  # the second layer's weight, as its own tensor
        s = shapes[2]
        k = int(np.prod(s))
        if bug == "scaled-block":
            H[start:start + k, start:start + k] *= 1.001
        else:  # the W's entries in column-major order
            perm = torch.arange(k).reshape(s).T.reshape(-1) + start
            full = torch.arange(H.shape[0])
            full[start:start + k] = perm
            H = H[full][:, full]
        return H

    return fn


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("bug", ["scaled-block", "transposed-weight", "missing-term"])
@pytest.mark.parametrize("name", ["resmlp", "custom-function"])
def test_planted_bugs_fail(name: str, bug: str, dtype: torch.dtype) -> None:
    result = check_module(_planted(bug), *MODELS[name](), dtype=dtype)
    assert not result.passed, result.summary()
    assert result.failures and "FAILED" in result.summary()


def test_a_cut_second_order_path_is_caught() -> None:
    # the custom Function's backward detaches: double backward misses tanh'' and agrees with itself
    result = check_module(tm.users_hessian, *tm.custom_mlp(tm._CutTanh))
    assert not result.passed
    assert "rev-rev" in result.not_served and "disagrees with fd" in result.not_served["rev-rev"]
    assert result.served == ("fd",)


def test_fd_error_estimate_covers_its_error() -> None:
    model, loss_fn, x, t = tm.resmlp()
    H, err = fd_of_gradient(FlatModel(model, loss_fn, x, t))
    exact = tm.double_backward_hessian(model, loss_fn, x, t)
    assert np.all(np.abs(H - exact) <= err)
    assert np.max(err) < 1e-6 * np.max(np.abs(exact))  # and is small enough to judge with


def test_module_references_agree_where_ad_is_whole() -> None:
    refs, not_served = module_references(FlatModel(*tm.custom_mlp()))
    assert set(refs) == {"rev-rev", "fd"} and "jvp" in not_served["fwd-rev"]


@pytest.mark.parametrize("returns", ["hvp", "diagonal", "blocks"])
def test_other_returns(returns: str) -> None:
    def diagonal(*args):
        return torch.diagonal(tm.users_hessian(*args))

    def blocks(model, *rest):
        H = tm.users_hessian(model, *rest)
        sizes = [sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()]
        out, pos = [], 0
        for k in (s for s in sizes if s):
            out.append(H[pos:pos + k, pos:pos + k])
            pos += k
        return out

    fn = {"hvp": tm.users_hvp, "diagonal": diagonal, "blocks": blocks}[returns]
    for build in (tm.resmlp, tm.custom_mlp):
        assert check_module(fn, *build(), returns=returns).passed


def test_bad_use_is_one_line() -> None:
    with pytest.raises(UsageError, match="returns="):
        check_module(tm.users_hessian, *tm.resmlp(), returns="kfac")
    with pytest.raises(UsageError, match="not a torch.nn.Module"):
        check_module(tm.users_hessian, object(), nn.MSELoss(), torch.ones(1), torch.ones(1))
