"""check_hvp: a user's H v held to independent HVPs on random and per-layer probes, matrix-free."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hessverify.adapters.torch_hvp import check_hvp  # noqa: E402
from hessverify.errors import BudgetError  # noqa: E402
from tests.adapters import torch_models as tm  # noqa: E402


def _block_off(fn, factor: float = 1.001, tensor: int = 0):
    """The user's HVP with one tensor's block of H scaled: (H v)_T += (factor - 1) H_TT v_T."""

    def hvp(model, loss_fn, x, t, v):
        sizes = [p.numel() for p in model.parameters()]
        a = sum(sizes[:tensor])
        b = a + sizes[tensor]
        only = torch.zeros_like(v)
        only[a:b] = v[a:b]
        out = fn(model, loss_fn, x, t, v).clone()
        out[a:b] += (factor - 1) * fn(model, loss_fn, x, t, only)[a:b]
        return out

    return hvp


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_a_correct_hvp_passes_on_a_cnn(dtype: torch.dtype) -> None:
    result = check_hvp(tm.users_hvp, *tm.cnn(), probes=2, dtype=dtype)
    assert result.passed, result.summary()
    assert len(result.probes) == 2 + 2  # two random, one per module with parameters (conv, linear)
    assert all("fd" in p.served and "rev-rev" in p.served for p in result.probes)
    assert result.estimate["bytes"] > 0 and result.measured["seconds"] > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_one_blocks_tenth_of_a_percent_fails(dtype: torch.dtype) -> None:
    result = check_hvp(_block_off(tm.users_hvp), *tm.cnn(), probes=1, dtype=dtype)
    assert not result.passed
    assert any(p.name == "layer 0" for p in result.failures), result.summary()  # the conv's own probe


def test_a_cut_second_order_path_fails() -> None:
    result = check_hvp(tm.users_hvp, *tm.custom_mlp(tm._CutTanh), probes=2)
    assert not result.passed
    assert all("rev-rev" in p.not_served for p in result.probes if p.name.startswith("random"))


def test_the_budget_is_checked_before_work() -> None:
    calls = []
    with pytest.raises(BudgetError, match="GiB"):
        check_hvp(lambda *a: calls.append(a), *tm.cnn(), max_memory=1000)
    assert not calls
