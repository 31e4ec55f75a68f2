"""hessverify conformance: the libraries' own curvature code, mapped by its conventions, held to backprop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import hessverify
from hessverify import conformance
from hessverify.cli import main
from hessverify.engine.bounds import rounding_bound
from hessverify.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
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
    "ZeroTensors are immutable": lambda p: p.loss in ("sse", "mse") and p.reduction == "mean",
    "aten::silu_backward": lambda p: "silu" in p.activations,
    "in _sum_hessian": lambda p: p.loss == "binary_cross_entropy",  # BackPACK: no summed BCE loss Hessian
    "expected scalar type Double but found Float": lambda p: p.loss == "sse",  # BackPACK: MSELoss eye in float32
    "batch average), N = 1, losses but BCEWithLogitsLoss vs": lambda p: p.loss == "sse",  # the same: 2/K in float32
    # PyTorch's fused CPU attention kernel: no derivative of its backward, no forward-mode rule
    "_scaled_dot_product_flash_attention_for_cpu": lambda p: any(l.kind == "attention" for l in p.architecture.layers),
}


def _diagnosed(row: conformance.Row) -> bool:
    """A failure is one of the faults diagnosed in docs/conformance.md, on the problems it is diagnosed for."""
    if any(msg in row.failure_summary and on(row.failure) for msg, on in KNOWN.items()):
        return True
    return any(f.applies(row.failure) for f in conformance.FAULTS.values())
MODULES = {"torch.func": "torch", "jax": "jax", "backpack": "backpack", "curvlinops": "curvlinops"}


@pytest.mark.parametrize("library", list(MODULES))
def test_every_quantity_agrees_on_a_few_problems(library: str, request: pytest.FixtureRequest) -> None:
    """The dense rows in CI; every row (layer kinds too, some 200 Hypothesis runs) under the thorough profile."""
    pytest.importorskip(MODULES[library])
    thorough = "thorough" in {request.config.getoption("hessverify_profile", None),
                              request.config.getoption("hypothesis_profile", None)}
    networks = None if thorough else ["dense"]
    rows = conformance.run([library], examples=3, seed=3, networks=networks)
    assert [r.quantity for r in rows] == [conformance.QUANTITIES[library][k].name
                                          for k in conformance.selected(library, networks)]
    for r in rows:
        assert r.tried >= 1 and r.version and 0 <= r.worst_margin
        if r.failures:  # only the known faults, each on the problems it is diagnosed for
            assert _diagnosed(r), r.failure_summary
        if r.approximation:  # never a failure for its distance; the distance is measured
            assert r.failures == 0 or "raised" in r.failure_summary
            assert r.extra["distance_max"] >= r.extra["distance_median"] >= 0


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


def test_the_zero_tensor_fault_is_the_targets_missing_tangent() -> None:
    """The diagnosis: with no tangent, the target's tangent is an efficient ZeroTensor; mse_loss_backward's
    forward-AD formula passes ``target_t * grad_output_p`` (still a ZeroTensor) to mse_loss_double_backward,
    whose mean branch divides ``2 * grad`` in place.  Give the target a materialised zero tangent and the
    same jvp of grad runs and equals the explicit mean."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from torch.func import grad, jvp

    g = torch.Generator().manual_seed(0)
    X, t = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    w, v = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="ZeroTensors are immutable"):
        jvp(grad(lambda p: F.mse_loss(X @ p, t)), (w,), (v,))
    with_tangent = jvp(lambda p, tt: grad(lambda q: F.mse_loss(X @ q, tt))(p), (w, t), (v, torch.zeros_like(t)))[1]
    explicit = jvp(grad(lambda p: ((X @ p - t) ** 2).mean()), (w,), (v,))[1]
    torch.testing.assert_close(with_tangent, explicit, rtol=1e-12, atol=1e-14)
    with pytest.raises(RuntimeError, match="ZeroTensors are immutable"):  # the operation that fails
        (2 * torch._efficientzerotensor((5, 3), dtype=torch.float64)).div_(15)


def test_torch_func_hessian_escapes_the_mse_fault_through_vmaps_decomposition() -> None:
    """``torch.func.hessian`` is forward over reverse and runs on MSELoss(mean): ``jacrev`` pulls back under
    ``vmap``, where torch.func registers ``torch._decomp``'s ``mse_loss_backward`` (sub and mul), so the outer jvp
    never meets the native op's forward-AD formula.  The same forward over reverse without the vmap
    (``chunk_size=1``, or ``grad``) raises, and so does autograd.functional's forward-mode outer strategy."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from torch.func import grad, hessian, jacfwd, jacrev

    x, t = torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    w = torch.tensor([0.3, -0.2], dtype=torch.float64)
    f = lambda p: F.mse_loss(x @ p, t)  # noqa: E731
    H = 2 * x.T @ x  # the closed form (the mean over one element)
    torch.testing.assert_close(hessian(f)(w), H, rtol=1e-15, atol=0)
    for forward_over_reverse in (jacfwd(jacrev(f, chunk_size=1)), jacfwd(grad(f))):
        with pytest.raises(RuntimeError, match="ZeroTensors are immutable"):
            forward_over_reverse(w)
    written = jacfwd(jacrev(lambda p: ((x @ p - t) ** 2).mean(), chunk_size=1))(w)  # the workaround
    torch.testing.assert_close(written, H, rtol=1e-15, atol=0)
    problem = hessverify.load_case(FOUND)  # the minimal case, as the conformance rows run it
    with pytest.raises(RuntimeError, match="ZeroTensors are immutable"):
        conformance._torch_composition(
            "torch.autograd.functional.hessian(outer_jacobian_strategy='forward-mode', vectorize=True)")(problem)
    _within_rounding(problem, conformance._torch_composition("torch.func.jacfwd(jacrev)")(problem))


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
        conformance.check_libraries(["theano"], "float64")
    assert main(["conformance", "--library", "torch.func", "theano"]) == 2
    assert "choose from" in capsys.readouterr().err
    assert main(["conformance", "--library", "torch.func", "--precision", "float16"]) == 2
    assert "--precision float16: choose from float64, float32" in capsys.readouterr().err
    assert main(["conformance", "--library", "torch.func", "--examples", "0"]) == 2


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    from hessverify.reports.schema import RESULTS_SCHEMA

    jsonschema = pytest.importorskip("jsonschema")
    status = main(["conformance", "--library", "torch.func", "--examples", "2", "--seed", "5", "--networks", "dense",
                   "--report", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert status in (0, 1) and "| torch.func |" in out
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    jsonschema.validate(doc, RESULTS_SCHEMA)  # the usual results.json, with the table beside it
    rows = doc["conformance"]["rows"]
    assert len(rows) == len(conformance.selected("torch.func", ["dense"])) and doc["conformance"]["seed"] == 5
    assert {r["quantity"] for r in rows} >= {c["method"] for c in doc["results"]}  # records named by quantity
    assert doc["summary"]["comparisons"] >= 1 and doc["conformance"]["not_covered"]["torch.func"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert md.startswith("# hessverify conformance") and "| library |" in md and "## The cases" in md
    html = (tmp_path / "r" / "report.html").read_text()
    assert "<h1>hessverify conformance</h1>" in html and "torch.func.hessian" in html
    assert status == (1 if any(r["failures"] for r in rows) else 0)
    assert len(list((tmp_path / "r" / "cases").glob("*.toml"))) == sum(r["failures"] for r in rows)


def test_a_library_not_installed_is_named_with_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conformance, "_version", lambda library: "")
    with pytest.raises(UsageError, match=r"not installed; pip install 'hessverify\[conformance\]'"):
        conformance.check_libraries(["backpack"], "float64")
    with pytest.raises(UsageError, match=r"hessverify\[torch\]"):
        conformance.check_libraries(["torch.func"], "float64")


# -- BackPACK's and curvlinops' further routines: conventions on small problems, faults reproduced ----------

def _variants(path: str, patterns: int | None = None) -> list[hessverify.Problem]:
    """A shipped case under each loss class and reduction, as BackPACK takes it (targets adapted)."""
    base = hessverify.load_case(ROOT / "cases" / path)
    if patterns is not None:
        base = base.subset(slice(0, patterns))
    out = []
    for loss in ("sse", "cross_entropy", "binary_cross_entropy"):
        for reduction in ("sum", "mean"):
            p = conformance._backpack_targets(base.__class__(**{**base.__dict__, "loss": loss,
                                                                "reduction": reduction}))
            if p is not None:
                out.append(p)
    return out


def _rounding(problem: hessverify.Problem) -> np.ndarray:
    return rounding_bound(problem, methods=2)


def test_backpack_diagonals_and_exact_blocks_equal_ours() -> None:
    """DiagHessian and DiagGGNExact on every loss class; the batch-average HBP Hessian and KFLR's GGN
    blocks on one pattern, where they are exact (sigmoid hidden layer: HBP's residual term matters)."""
    pytest.importorskip("backpack")
    from hessverify.methods import gauss_newton

    for p in _variants("xor-2-2-1-sigmoid.toml"):  # one output: BCEWithLogitsLoss is run too
        H, G, B = hessverify.hessian(p, "backprop"), gauss_newton.hessian(p), _rounding(p)
        assert np.all(np.abs(conformance._backpack_diag_hessian(p) - np.diag(H)) <= np.diag(B)), p.loss
        assert np.all(np.abs(conformance._backpack_diag_ggn_exact(p) - np.diag(G)) <= np.diag(B)), p.loss
    for p in _variants("xor-2-2-1-sigmoid.toml", patterns=1):
        mask = conformance._mask(p, "ggn_blocks")
        H, G, B = hessverify.hessian(p, "backprop"), gauss_newton.hessian(p), _rounding(p)
        kflr = conformance._backpack_kflr(p)
        assert np.all(np.abs(kflr - G)[mask] <= B[mask]) and np.all(np.isnan(kflr[~mask])), p.loss
        if p.loss != "binary_cross_entropy":  # no summed loss Hessian in BackPACK (below)
            hbp = conformance._backpack_hbp_hessian(p)
            assert np.all(np.abs(hbp - H)[mask] <= B[mask]), p.loss
            assert not np.allclose(hbp[mask], G[mask])  # the Hessian blocks, not the GGN's


def test_kflr_on_several_patterns_is_an_approximation_reported_by_its_distance() -> None:
    pytest.importorskip("backpack")
    q = next(q for q in conformance.QUANTITIES["backpack"] if q.name == "backpack KFLR, N >= 2")
    p = _variants("xor-2-2-1-sigmoid.toml")[0]  # 4 patterns: the Kronecker factors are not the blocks
    (c,) = conformance.check_quantity(q, p)
    assert c.passed and c.bound_kind == "approximation" and c.extra["approximation"]
    assert 1e-6 < c.frobenius_rel_error < 1.0


def test_the_backpack_faults_reproduce() -> None:
    """BCEWithLogitsLoss has no summed loss Hessian (KFRA, batch-average HBP); MSELoss's summed one is
    built in PyTorch's default dtype, float32, and meets a float64 nn.Linear below the output."""
    pytest.importorskip("backpack")
    bce = hessverify.load_case(ROOT / "cases" / "conformance" / "backpack-kfra-bce.toml")
    with pytest.raises(NotImplementedError):
        conformance._backpack_kfra(bce)
    mse = hessverify.load_case(ROOT / "cases" / "conformance" / "backpack-kfra-mse-float64.toml")
    with pytest.raises(RuntimeError, match="expected scalar type Double but found Float"):
        conformance._backpack_kfra(mse)
    from hessverify.methods import gauss_newton

    G = conformance._backpack_kfra(mse, "float32")  # in float32, the default dtype, it agrees
    mask = conformance._mask(mse, "ggn_blocks")
    np.testing.assert_allclose(G[mask], gauss_newton.hessian(mse)[mask], rtol=1e-5, atol=1e-6)
    # one layer: no mixed types meet, but 2/K (K = 3) is rounded to float32 in a float64 result
    three = hessverify.load_case(ROOT / "cases" / "conformance" / "backpack-kfra-mse-mean-3.toml")
    q = next(q for q in conformance.QUANTITIES["backpack"] if q.name.startswith("backpack KFRA (HBP"))
    (c, _) = conformance.check_quantity(q, three)
    assert not c.passed and c.margin > 1e5 and c.worst_entry.value == pytest.approx(1 + 2.0**-25, rel=1e-12)


def test_the_backpack_pooling_fault_reproduces() -> None:
    """BackPACK's AvgPool derivatives build their averaging convolution in PyTorch's default dtype, float32: in a
    float64 network DiagHessian and DiagGGNExact raise below the pooling layer, whatever the loss; with the
    convolution built in float64 (the default dtype float64 for the call) DiagHessian agrees with backprop."""
    pytest.importorskip("backpack")
    import torch

    pool = hessverify.load_case(ROOT / "cases" / "conformance" / "backpack-avg-pool-float64.toml")
    q = next(q for q in conformance.QUANTITIES["backpack"]
             if q.name == "backpack DiagHessian" and q.families and not q.exclude)  # the row of the fault itself
    with pytest.raises(RuntimeError, match="expected scalar type Double but found Float"):
        conformance.check_quantity(q, pool)
    with pytest.raises(RuntimeError, match="expected scalar type Double but found Float"):
        conformance._backpack_diag_ggn_exact(pool)
    assert conformance._backpack_diag_hessian(pool, "float32").tolist() == [0.0]  # in float32 it runs
    cnn = hessverify.load_case(ROOT / "cases" / "conv1d-2x8-3-pool-2-tanh.toml")  # conv, tanh, pool, dense; sse
    with pytest.raises(RuntimeError, match="expected scalar type Double but found Float"):
        conformance._backpack_diag_hessian(cnn)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # BackPACK's nn.ConvTranspose1d is then float64: the only change
    try:
        comps = conformance.check_quantity(q, cnn)
    finally:
        torch.set_default_dtype(default)
    assert comps and all(c.passed for c in comps)


@pytest.mark.parametrize("loss", ["sse", "cross_entropy", "binary_cross_entropy"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_curvlinops_ef_is_our_fisher_by_the_written_scale(loss: str, reduction: str) -> None:
    pytest.importorskip("curvlinops")
    from hessverify.engine.bounds import fisher_rounding_bound
    from hessverify.references import curvature_ref

    base = hessverify.load_case(ROOT / "cases" / "gelu-silu-3-4-3-2-bce.toml")
    p = conformance._one_hot_targets(base.__class__(**{**base.__dict__, "loss": loss, "reduction": reduction}))
    F = curvature_ref.fisher(p)  # autograd's per-pattern gradients, not hessverify's backprop
    assert np.all(np.abs(conformance._curvlinops_ef(p) - F) <= fisher_rounding_bound(p))
    n, k = p.targets.shape
    expected = {("sse", "sum"): 0.25, ("sse", "mean"): k / 4, ("cross_entropy", "sum"): 1.0,
                ("cross_entropy", "mean"): 1.0, ("binary_cross_entropy", "sum"): 1.0,
                ("binary_cross_entropy", "mean"): float(k)}[(loss, reduction)]
    assert conformance.ef_scale(p) == pytest.approx(expected)


def test_float32_runs_the_library_in_float32_and_judges_it_there() -> None:
    pytest.importorskip("torch")
    (row,) = [conformance._run_quantity(q, 3, 0, "float32") for q in conformance.QUANTITIES["torch.func"][:1]]
    assert row.precision == "float32" and row.failures == 0
    assert all(c.bound_kind.endswith("+float32") for c in row.comparisons)
    q = conformance.QUANTITIES["torch.func"][0]  # a float32 Hessian 0.1 % off in the output layer is caught
    off = conformance.Quantity(q.library, q.name, q.equals, q.convention, lambda p, prec: _output_block_off(
        p, q.fn(p, prec)))
    row = conformance._run_quantity(off, 10, 0, "float32")
    assert row.failures == 1 and "FAIL" in row.failure_summary


def _output_block_off(p: hessverify.Problem, H: np.ndarray) -> np.ndarray:
    s = p.architecture.blocks[-1].slice
    H = H.copy()
    H[s, s] *= 1.001
    return H


KINDS = ROOT / "cases" / "conformance"


def _passes(name: str, problem: hessverify.Problem) -> bool:
    """The row's routine on the problem agrees with hessverify within the bound (as the table judges it)."""
    q = next(q for lib in ("torch.func", "jax") for q in conformance.QUANTITIES[lib] if q.name == name)
    return all(c.passed for c in conformance.check_quantity(q, problem))


def test_the_layer_norm_weight_fault_of_torch_func_reproduces() -> None:
    """Silent: torch.func's nested transforms through nn.LayerNorm with a weight return a wrong Hessian, while
    double backward of the same function agrees (docs/conformance.md)."""
    pytest.importorskip("torch")
    problem = hessverify.load_case(KINDS / "torch-func-hessian-layer-norm-weight.toml")
    H = hessverify.hessian(problem, "backprop")
    wrong = conformance._torch_composition("torch.func.hessian")(problem)
    assert np.max(np.abs(wrong - H)) > 0.5 * np.max(np.abs(H))  # 85 % of the largest entry off
    assert _passes("double backward (torch.autograd.grad twice)", problem)


def test_the_fused_attention_kernel_has_no_second_derivative_on_cpu() -> None:
    pytest.importorskip("torch")
    problem = hessverify.load_case(KINDS / "torch-mha-fused-double-backward.toml")
    with pytest.raises(RuntimeError, match="_scaled_dot_product_flash_attention_for_cpu_backward"):
        conformance._torch_composition("double backward (torch.autograd.grad twice)", attention="fused")(problem)
    assert _passes("double backward (torch.autograd.grad twice)", problem)  # the default call attn(x, x, x)


def test_jax_dot_product_attention_is_float32_accurate_in_float64() -> None:
    pytest.importorskip("jax")
    problem = hessverify.load_case(KINDS / "jax-dot-product-attention-float32-softmax.toml")
    H = hessverify.hessian(problem, "backprop")
    off = np.max(np.abs(conformance._jax_hessian(problem) - H)) / np.max(np.abs(H))
    assert 1e-12 < off < 1e-5  # float32's accuracy, not float64's


def test_a_network_family_no_row_runs_on_is_refused_by_name() -> None:
    pytest.importorskip("torch")
    with pytest.raises(UsageError, match="--networks lstm: torch.func has rows on add, attention"):
        conformance.selected("torch.func", ["lstm"])
    assert conformance.selected("torch.func", ["dense"]) != conformance.selected("torch.func", ["attention"])
