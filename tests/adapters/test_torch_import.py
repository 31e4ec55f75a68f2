"""import_module: a user's nn.Module and loss as a Problem whose Hessian is PyTorch's own."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import hessverify  # noqa: E402
from hessverify.adapters.torch_import import import_module, loss_spec, torch_index  # noqa: E402
from hessverify.errors import UnsupportedModel, UsageError  # noqa: E402
from tests.adapters import torch_models as tm  # noqa: E402

D = torch.float64


def _agrees(model: nn.Module, loss_fn, x, t) -> float:
    problem = import_module(model, loss_fn, x, t)
    H = hessverify.hessian(problem, "backprop")
    idx = torch_index(problem)
    R = tm.double_backward_hessian(model, loss_fn, x, t)[np.ix_(idx, idx)]
    assert np.abs(R).max() > 0
    return float(np.abs(H - R).max() / np.abs(R).max())


@pytest.mark.parametrize("name", sorted(tm.IMPORTABLE))
def test_backprop_of_the_import_is_pytorchs_double_backward(name: str) -> None:
    assert _agrees(*tm.IMPORTABLE[name]()) <= 1e-12


LOSSES = [
    (nn.MSELoss(reduction="sum"), "real"), (nn.HuberLoss(delta=0.3), "real"), (F.huber_loss, "real"),
    (nn.CrossEntropyLoss(label_smoothing=0.2), "classes"), (F.cross_entropy, "probs"),
    (nn.BCEWithLogitsLoss(reduction="sum"), "unit"), (lambda y, t: F.mse_loss(y, t, reduction="sum"), "real"),
]


@pytest.mark.parametrize("loss_fn, targets", LOSSES, ids=[f"loss{i}" for i in range(len(LOSSES))])
def test_every_loss_and_reduction(loss_fn, targets: str) -> None:
    g = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 3)).to(D)
    x = torch.randn(5, 3, generator=g, dtype=D)
    t = {"real": torch.randn(5, 3, generator=g, dtype=D), "classes": torch.tensor([0, 2, 1, 1, 0]),
         "probs": torch.softmax(torch.randn(5, 3, generator=g, dtype=D), -1),
         "unit": torch.rand(5, 3, generator=g, dtype=D)}[targets]
    assert _agrees(model, loss_fn, x, t) <= 1e-12


class _Functional(nn.Module):
    """Parameters used through F.linear / F.conv1d, the batch norm in eval mode, and reshape-to-flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 2, 3, dtype=D) * 0.5)
        self.bn = nn.BatchNorm1d(2)
        self.fc = nn.Linear(2 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.conv1d(x, self.w)
        h = torch.sin(self.bn(h))
        return self.fc(h.reshape(h.shape[0], -1))


@pytest.mark.parametrize("train", [True, False])
def test_functional_calls_batch_norm_and_reshape(train: bool) -> None:
    torch.manual_seed(8)
    model = _Functional().to(D)
    with torch.no_grad():
        model.bn.running_mean.add_(0.3)
        model.bn.running_var.mul_(1.7)
    model.train(train)
    x = torch.randn(3, 2, 6, dtype=D)
    problem = import_module(model, nn.MSELoss(), x, torch.randn(3, 2, dtype=D))
    assert [layer.kind for layer in problem.architecture.layers] == ["conv1d", "batch_norm", "flatten", "dense"]
    assert _agrees(model, nn.MSELoss(), x, torch.randn(3, 2, dtype=D)) <= 1e-12


def test_parameters_out_of_definition_order_are_mapped() -> None:
    class Late(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.second = nn.Linear(4, 2)  # defined first, called last
            self.first = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.second(torch.tanh(self.first(x)))

    torch.manual_seed(9)
    model = Late().to(D)
    x, t = torch.randn(4, 3, dtype=D), torch.randn(4, 2, dtype=D)
    problem = import_module(model, nn.MSELoss(), x, t)
    assert list(torch_index(problem)[:3]) == [10, 11, 12]  # W1 is model.parameters()'s third tensor
    assert _agrees(model, nn.MSELoss(), x, t) <= 1e-12


def test_the_users_model_is_left_as_it_was() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)).to(D)
    before = model[1].running_mean.clone()
    import_module(model, nn.MSELoss(), torch.randn(4, 2, dtype=D), torch.randn(4, 1, dtype=D))
    assert torch.equal(model[1].running_mean, before) and model[0].weight.dtype == D


class _Max(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(self.l(x), x[:, :2])


UNSUPPORTED = [
    (nn.Sequential(nn.Linear(3, 2), nn.ELU()), nn.MSELoss(), "ELU"),
    (nn.Sequential(nn.Linear(3, 2), nn.GELU(approximate="tanh")), nn.MSELoss(), "approximate"),
    (_Max(), nn.MSELoss(), "module 'l'"),  # x[:, :2] is indexing, named where it is
    (nn.Sequential(nn.Linear(3, 2)), nn.L1Loss(), "L1Loss"),
    (nn.Sequential(nn.Linear(3, 2)), nn.MSELoss(reduction="none"), "reduction='none'"),
    (tm.custom_mlp()[0], nn.MSELoss(), "autograd.Function"),
]


@pytest.mark.parametrize("model, loss_fn, names", UNSUPPORTED, ids=[u[2] for u in UNSUPPORTED])
def test_what_the_schema_lacks_is_named(model, loss_fn, names: str) -> None:
    model = model.to(D)
    with pytest.raises(UnsupportedModel) as info:
        import_module(model, loss_fn, torch.randn(4, 3, dtype=D), torch.randn(4, 2, dtype=D))
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2
    assert "\n" not in str(info.value)
    if names != "module 'l'":
        assert names in str(info.value)
    else:
        assert "getitem" in str(info.value) or "indexing" in str(info.value)


def test_loss_spec_reads_settings() -> None:
    spec = loss_spec(nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1))
    assert (spec.name, spec.reduction, spec.label_smoothing) == ("cross_entropy", "sum", 0.1)
    assert loss_spec(lambda y, t: F.huber_loss(y, t, delta=0.5)).options == (("delta", 0.5),)
