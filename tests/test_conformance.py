"""hessverify conformance: the libraries' own curvature code, mapped by its conventions, held to backprop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import hessverify
from hessverify import conformance
from hessverify.bounds import rounding_bound
from hessverify.cli import main
from hessverify.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
FOUND = ROOT / "cases" / "conformance" / "torch-func-jvp-grad-mse-mean.toml"
SILU = ROOT / "cases" / "conformance" / "curvlinops-hessian-silu.toml"


@pytest.mark.parametrize("loss", ["sse", "cross_entropy", "binary_cross_entropy", "output"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_torch_conventions_map_each_loss_class_to_E(loss: str, reduction: str) -> None:
    pytest.importorskip("torch")
    import torch

    problem = hessverify.load_case(ROOT / "cases" / "gelu-silu-3-4-3-2-bce.toml")
    t = problem.targets if loss != "cross_entropy" else problem.targets / problem.targets.sum(1, keepdims=True)
    problem = problem.__class__(**{**problem.__dict__, "loss": loss, "reduction": reduction, "targets": t})
    L, c, theta = conformance._torch_objective(problem)
    assert c * L(theta).item() == pytest.approx(hessverify.error(problem), rel=1e-12)
    # the Hessian with the convention applied is backprop's (MSELoss has no 1/2; means over N K)
    H = conformance._torch_hessian(problem)
    np.testing.assert_allclose(H, hessverify.hessian(problem, "backprop"), rtol=1e-9, atol=1e-12)
    assert torch.get_default_dtype() == torch.float32  # nothing here changed the global default


KNOWN = {  # the faults diagnosed in docs/conformance.md, by the message each raises
    "ZeroTensors are immutable": lambda p: p.loss == "sse" and p.reduction == "mean",
    "aten::silu_backward": lambda p: "silu" in p.activations,
}
MODULES = {"torch.func": "torch", "jax": "jax", "backpack": "backpack", "curvlinops": "curvlinops"}


@pytest.mark.parametrize("library", list(MODULES))
def test_every_quantity_agrees_on_a_few_problems(library: str) -> None:
    pytest.importorskip(MODULES[library])
    rows = conformance.run([library], examples=3, seed=3)
    assert [r.quantity for r in rows] == [q.name for q in conformance.QUANTITIES[library]]
    for r in rows:
        assert r.tried >= 1 and r.version and 0 <= r.worst_margin
        if r.failures:  # only the known faults, each on the problems it is diagnosed for
            assert any(msg in r.failure_summary and on(r.failure) for msg, on in KNOWN.items()), r.failure_summary


def test_backpack_and_curvlinops_conventions_on_a_shipped_case() -> None:
    pytest.importorskip("backpack")
    pytest.importorskip("curvlinops")
    from hessverify.methods import gauss_newton

    problem = hessverify.load_case(ROOT / "cases" / "xor-2-2-1-sigmoid.toml")  # sse, sum: MSELoss's L = 2 E
    H = hessverify.hessian(problem, "backprop")
    np.testing.assert_allclose(conformance._backpack_diag_hessian(problem), np.diag(H), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(conformance._curvlinops_hessian(problem), H, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(conformance._curvlinops_ggn(problem), gauss_newton.hessian(problem), rtol=1e-10,
                               atol=1e-14)



def _within_rounding(problem: hessverify.Problem, H: np.ndarray) -> None:
    """Equal to backprop within the float64 rounding bound (not bit for bit: another order of sums)."""
    assert np.all(np.abs(H - hessverify.hessian(problem, "backprop")) <= rounding_bound(problem, methods=2))


def test_the_silu_fault_of_curvlinops_hessian_reproduces() -> None:
    pytest.importorskip("curvlinops")
    problem = hessverify.load_case(SILU)
    with pytest.raises(NotImplementedError, match="silu_backward"):
        conformance._curvlinops_hessian(problem)
    _within_rounding(problem, conformance._torch_hvp(problem))  # the same routine works on the rest


def test_the_jvp_of_grad_fault_of_mse_mean_reproduces() -> None:
    pytest.importorskip("torch")
    problem = hessverify.load_case(FOUND)
    with pytest.raises(RuntimeError, match="ZeroTensors are immutable"):
        conformance._torch_hvp(problem)
    _within_rounding(problem, conformance._torch_hessian(problem))  # the same routine works on the rest


def test_a_wrong_convention_is_caught_and_shrunk(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    q = conformance.QUANTITIES["torch.func"][0]
    forgot_half = conformance.Quantity(q.library, q.name, q.equals, "MSELoss without the 1/2 undone",
                                       lambda p, prec: 2 * q.fn(p, prec) if p.loss == "sse" else q.fn(p, prec))
    row = conformance._run_quantity(forgot_half, 20, 0)
    assert row.failures == 1 and row.failure.loss == "sse" and row.failure.n_params <= 2
    assert "FAIL" in row.failure_summary and row.failure.to_toml()


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match="choose from"):
        conformance.check_libraries(["tensorflow"], "float64")
    assert main(["conformance", "--library", "torch.func", "tensorflow"]) == 2
    assert "choose from" in capsys.readouterr().err
    assert main(["conformance", "--library", "torch.func", "--precision", "float32"]) == 2
    assert "only float64" in capsys.readouterr().err
    assert main(["conformance", "--library", "torch.func", "--examples", "0"]) == 2


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    status = main(["conformance", "--library", "torch.func", "--examples", "2", "--seed", "5",
                   "--report", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert status in (0, 1) and "| torch.func |" in out
    doc = json.loads((tmp_path / "r" / "conformance.json").read_text())
    assert len(doc["rows"]) == len(conformance.QUANTITIES["torch.func"]) and doc["seed"] == 5
    assert (tmp_path / "r" / "conformance.md").read_text().startswith("| library |")
    assert status == (1 if any(r["failures"] for r in doc["rows"]) else 0)


def test_a_library_not_installed_is_named_with_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conformance, "_version", lambda library: "")
    with pytest.raises(UsageError, match=r"not installed; pip install 'hessverify\[conformance\]'"):
        conformance.check_libraries(["backpack"], "float64")
    with pytest.raises(UsageError, match=r"hessverify\[torch\]"):
        conformance.check_libraries(["torch.func"], "float64")
