"""check_diagonal: a user's Hessian diagonal or trace, held to exact entries and Hutchinson intervals, no W x W."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hessverify.adapters.torch_diag import check_diagonal  # noqa: E402
from hessverify.errors import FunctionUnderTestError, UsageError  # noqa: E402
from tests.adapters import torch_models as tm  # noqa: E402


def _users_diagonal(model, loss_fn, x, t):  # noqa: ANN001, ANN202 - the user's signature
    """The user's diagonal: the diagonal of the user's own double-backward Hessian (a small model)."""
    return tm.users_hessian(model, loss_fn, x, t).diagonal()


def _planted(bug: str):  # noqa: ANN202
    def fn(model, loss_fn, x, t):  # noqa: ANN001, ANN202
        d = _users_diagonal(model, loss_fn, x, t).clone()
        sizes = [p.numel() for p in model.parameters()]
        start = sum(sizes[:2])  # the third tensor (a weight after the first layer), on its own
        if bug == "scaled-tensor":
            d[start:start + sizes[2]] *= 1.01
        elif bug == "few-entries":  # three entries far off, in a tensor the exact coordinates hardly sample
            big = int(np.argmax(sizes))
            first = sum(sizes[:big])
            d[first + 1:first + 4] += 1.0 + 10 * float(d[first:first + sizes[big]].abs().max())
        elif bug == "off-diagonal-sum":  # the row sums of H, a slip that is exact on a diagonal matrix
            d = tm.users_hessian(model, loss_fn, x, t).sum(dim=1)
        return d

    return fn


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", ["resmlp", "cnn"])
def test_a_correct_diagonal_passes(name: str, dtype: torch.dtype) -> None:
    result = check_diagonal(_users_diagonal, *tm.IMPORTABLE[name](), dtype=dtype)
    assert result.passed, result.summary()
    kinds = {p.name.split()[0] for p in result.probes}
    assert kinds == {"entry", "Hutchinson"}
    assert any(p.name == "Hutchinson trace" for p in result.probes)


@pytest.mark.parametrize("bug", ["scaled-tensor", "few-entries", "off-diagonal-sum"])
def test_planted_bugs_fail(bug: str) -> None:
    result = check_diagonal(_planted(bug), *tm.IMPORTABLE["resmlp"]())
    assert not result.passed, result.summary()
    assert "check_diagonal FAILED" in result.summary()


def test_few_wrong_entries_the_exact_coordinates_miss_are_caught_by_the_block_sums() -> None:
    model, loss_fn, x, t = tm.IMPORTABLE["resmlp"]()
    result = check_diagonal(_planted("few-entries"), model, loss_fn, x, t, entries=0)
    sizes = [p.numel() for p in model.parameters()]
    big = int(np.argmax(sizes))
    name = [n for n, _ in model.named_parameters()][big]
    entries_failed = [p for p in result.probes if p.name.startswith("entry") and not p.passed]
    sums_failed = [p.name for p in result.probes if p.name.startswith("Hutchinson") and not p.passed]
    assert not entries_failed  # one coordinate a tensor, none of the three planted ones
    assert f"Hutchinson tr {name}" in sums_failed  # its block sum; the whole trace is noisier


def test_the_trace_is_checked_alone() -> None:
    args = tm.IMPORTABLE["resmlp"]()
    true_trace = float(np.trace(tm.double_backward_hessian(*args)))
    spread = float(np.abs(np.diagonal(tm.double_backward_hessian(*args))).sum())
    ok = check_diagonal(lambda *a: _users_diagonal(*a).sum(), *args, returns="trace")
    assert ok.passed, ok.summary()
    assert [p.name for p in ok.probes] == ["Hutchinson trace"]
    wrong = check_diagonal(lambda *a: _users_diagonal(*a).sum() + spread, *args, returns="trace")
    assert not wrong.passed, wrong.summary()
    assert abs(true_trace) < 10 * spread  # the planted error is of the trace's own size


def test_a_cut_second_order_path_leaves_no_reference_for_the_estimates() -> None:
    # the custom Function's backward detaches: rev-rev misses tanh'' and disagrees with fd, so Hutchinson
    # (which runs on rev-rev) refuses to judge, and the exact entries are held to fd alone
    args = tm.custom_mlp(tm._CutTanh)
    result = check_diagonal(lambda *a: float(np.trace(tm.double_backward_hessian(*a))), *args, returns="trace")
    assert not result.passed and "rev-rev" in result.probes[0].not_served


def test_bad_arguments_are_one_line_usage_errors() -> None:
    args = tm.IMPORTABLE["resmlp"]()
    for kw in ({"returns": "hessian"}, {"samples": 1}, {"entries": -1}, {"alpha": 2.0}):
        with pytest.raises(UsageError):
            check_diagonal(_users_diagonal, *args, **kw)
    with pytest.raises(FunctionUnderTestError, match="shape"):
        check_diagonal(lambda *a: torch.zeros(3), *args)
