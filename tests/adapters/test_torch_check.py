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
    assert result.precision == str(dtype).removeprefix("torch.")  # on either route, the format it was judged in


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
    model = MODELS[name]()
    result = check_module(_planted(bug), *model, dtype=dtype)
    assert not result.passed, result.summary()
    assert result.failures and "check FAILED: the user's hessian on " in result.summary()  # both routes alike
    if bug == "scaled-block":  # on either route the failure says which block: the second layer's weight alone
        weight = [n for n, _ in model[0].named_parameters()][2] if result.route == "module references" else "W2"
        assert result.where.startswith(f"(against {result.worst.reference}): by block {weight} x {weight} (100%)"), \
            result.summary()
        assert "  where " in result.summary()


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


@pytest.mark.parametrize("loss_fn, targets", [
    (nn.MSELoss(), "real"), (nn.HuberLoss(delta=0.3, reduction="sum"), "real"),
    (nn.CrossEntropyLoss(label_smoothing=0.1), "classes"), (nn.BCEWithLogitsLoss(reduction="sum"), "unit")])
def test_the_written_loss_is_the_loss(loss_fn, targets: str) -> None:
    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 3)).double()
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    t = {"real": torch.randn(4, 3, generator=g, dtype=torch.float64), "classes": torch.tensor([0, 2, 1, 1]),
         "unit": torch.rand(4, 3, generator=g, dtype=torch.float64)}[targets]
    flat = FlatModel(model, loss_fn, x, t)
    assert float(flat.E_written(flat.theta)) == pytest.approx(float(flat.E(flat.theta)), rel=1e-14)


def test_forward_over_reverse_serves_with_mse() -> None:
    # F.mse_loss's own forward-over-reverse raises in PyTorch 2.13; the written-out loss lets fwd-rev serve
    refs, not_served = module_references(FlatModel(*tm.resmlp()))
    assert set(refs) == {"rev-rev", "fwd-rev", "fd"} and not not_served


def _double_backward_hessian(model: nn.Module, loss_fn, x, t) -> torch.Tensor:
    """A user's Hessian by the usual idiom: the gradient over ``list(model.parameters())``, then each of its rows."""
    params = list(model.parameters())
    g = torch.cat([gi.reshape(-1) for gi in torch.autograd.grad(loss_fn(model(x), t), params, create_graph=True)])
    rows = [torch.cat([r.reshape(-1) for r in torch.autograd.grad(gi, params, retain_graph=True)]) for gi in g]
    return torch.stack(rows)


def _double_backward_hvp(model: nn.Module, loss_fn, x, t, v) -> torch.Tensor:
    params = list(model.parameters())
    g = torch.cat([gi.reshape(-1) for gi in torch.autograd.grad(loss_fn(model(x), t), params, create_graph=True)])
    return torch.cat([r.reshape(-1) for r in torch.autograd.grad(g @ v, params)])


def test_a_frozen_parameter_is_checked_like_the_others() -> None:
    """The Hessian is over every parameter, a frozen one too (as the import and the references take them), and
    the copy the user's function gets has them all requiring grad: the usual double backward over
    ``model.parameters()`` gives that Hessian and passes, where it raised "One of the differentiated Tensors does
    not require grad" before.  The user's own model keeps its flags."""
    from hessverify.adapters.torch_hvp import check_hvp

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    model[0].weight.requires_grad_(False)
    x, t = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    result = check_module(_double_backward_hessian, model, nn.MSELoss(), x, t)
    assert result.passed, result.summary()
    assert check_hvp(_double_backward_hvp, model, nn.MSELoss(), x, t, probes=2).passed
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad
