"""The PyTorch reference: its softplus and gelu, and the outside faults kept in cases/outside/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import ndtr

import hessverify
from hessverify.engine.bounds import rounding_bound
from hessverify.symbolic.reference import hessian_with_error

torch = pytest.importorskip("torch")
F = torch.nn.functional
from hessverify.adapters import torch_ref, torch_table  # noqa: E402

OUTSIDE = Path(__file__).resolve().parents[2] / "cases" / "outside"


def _derivatives(f, values):  # type: ignore[no-untyped-def]
    a = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    y = f(a)
    (g,) = torch.autograd.grad(y.sum(), a, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), a)
    return y.detach().numpy(), g.detach().numpy(), h.numpy()


def test_softplus_at_zero_has_derivatives_half_and_quarter() -> None:
    y, g, h = _derivatives(torch_ref.softplus, [0.0])
    assert y[0] == pytest.approx(np.log(2.0), rel=1e-15)
    assert g[0] == 0.5 and h[0] == 0.25


def test_softplus_branch_not_taken_gives_no_inf_or_nan() -> None:
    y, g, h = _derivatives(torch_ref.softplus, [-800.0, 800.0, -40.0, 40.0])
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g)) and np.all(np.isfinite(h))
    assert y[1] == 800.0 and g[1] == 1.0 and g[0] == 0.0
    assert h[2] == pytest.approx(np.exp(-40.0), rel=1e-12)  # sigma'(-40)


def test_pytorch_gelu_cancels_and_the_stable_form_does_not() -> None:
    x = torch.tensor([-9.0, -6.0], dtype=torch.float64)
    truth = np.array([-9.0, -6.0]) * ndtr(np.array([-9.0, -6.0]))
    assert F.gelu(x, approximate="none")[0].item() == 0.0  # the upstream fault: exactly 0, truth -1.0e-18
    np.testing.assert_allclose(torch_ref.stable_gelu(x).numpy(), truth, rtol=1e-13)


def _old_torch_hessian(problem: hessverify.Problem, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """The torch reference as it was: PyTorch's F.gelu and softplus as relu(h) + log1p(exp(-|h|)) (the loss's,
    read from the table at call time)."""
    with monkeypatch.context() as m:
        m.setattr(torch_table, "softplus", lambda a: torch.relu(a) + torch.log1p(torch.exp(-torch.abs(a))))
        return torch_ref.hessian(problem, builtin_gelu=True)


@pytest.mark.parametrize("case_id, off", [("torch-sin-gelu-bce-436", 2.0), ("torch-silu-gelu-bce-4711", 1.0)])
def test_outside_cases_show_the_old_torch_fault_and_the_fix(case_id: str, off: float,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    problem = hessverify.load_case(OUTSIDE / f"{case_id}.toml")
    gold, gold_err = hessian_with_error(problem)
    bound = rounding_bound(problem, methods=1) + gold_err
    old = _old_torch_hessian(problem, monkeypatch)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(gold != 0, np.abs(old - gold) / np.abs(gold), 0.0)
    assert np.max(relative) > off  # 205 % and 103 %, as docs/trust.md says
    assert np.any(np.abs(old - gold) > bound)  # and hessverify's bound catches it
    assert np.all(np.abs(torch_ref.hessian(problem) - gold) <= bound)  # the fixed reference passes


def test_hessverify_passes_on_every_outside_case() -> None:
    for path in sorted(OUTSIDE.glob("*.toml")):
        results = hessverify.verify_problem(hessverify.load_case(path), references=["autograd", "complex_step"])
        assert results and all(c.passed for c in results), path.name


def test_the_torch_reference_builds_graphs_itself() -> None:
    for path in sorted((Path(__file__).resolve().parents[2] / "cases").glob("graph-*.toml")):
        case = hessverify.load_case(path)
        H = torch_ref.hessian(case)
        assert np.all(np.abs(H - hessverify.hessian(case)) <= rounding_bound(case)), case.id
