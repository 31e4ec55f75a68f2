"""hessverify.apps.lab: optimisers, their logs, inertia and stationary points, checked independently.

Gradients are held to autograd (hessverify.references.autograd_ref) and
inertias to the eigenvalues of the symbolic reference's Hessian (SymPy closed
form at 50 digits, rounded once to float64): neither shares code with
the backprop the lab runs on.
"""

from __future__ import annotations

import numpy as np
import pytest

import hessverify
from hessverify import lab
from hessverify.engine.registry import METHODS
from hessverify.model.problem import Problem
from hessverify.references import autograd_ref
from tests.conftest import CASES_DIR


def _case(name: str) -> Problem:
    return hessverify.load_case(CASES_DIR / f"{name}.toml")


def _autograd_norm(p: Problem, theta: np.ndarray) -> float:
    return float(np.linalg.norm(autograd_ref.gradient(p.with_params(theta))))


def _symbolic_inertia(p: Problem) -> tuple[int, int, int]:
    H = np.asarray(METHODS["symbolic"].fn(p), dtype=np.float64)
    ev = np.linalg.eigvalsh((H + H.T) / 2)
    # the 50-digit Hessian at the float64 point: exact far below 1e-12; the XOR saddle's negative curvature is
    # about -5e-10 of the largest eigenvalue, so the cut sits below it
    tol = 1e-12 * max(1.0, float(np.abs(ev).max()))
    return int(np.sum(ev < -tol)), int(np.sum(np.abs(ev) <= tol)), int(np.sum(ev > tol))


# -- inertia and classification ------------------------------------------------------------------


def test_inertia_of_a_matrix_with_known_eigenvalues() -> None:
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    H = Q @ np.diag([-2.0, -1e-3, 0.0, 0.0, 1.0, 5.0]) @ Q.T
    i = lab.inertia(H)
    assert (i.negative, i.zero, i.positive) == (2, 2, 2)
    assert np.allclose(lab.spectrum(H), [-2.0, -1e-3, 0.0, 0.0, 1.0, 5.0], atol=1e-12)
    assert lab.inertia(H, tol=1e-2).zero == 3  # an explicit tol decides what counts as zero
    assert lab.classify(i) == "saddle"


@pytest.mark.parametrize("diag, kind", [([1.0, 2.0], "minimum"), ([-1.0, -3.0], "maximum"),
                                        ([-1.0, 0.0, 2.0], "saddle"), ([0.0, 2.0], "degenerate"),
                                        ([0.0, -2.0], "degenerate")])
def test_classify(diag: list[float], kind: str) -> None:
    assert lab.classify(lab.inertia(np.diag(diag))) == kind


def test_spectrum_wants_a_square_matrix() -> None:
    with pytest.raises(hessverify.UsageError, match="square"):
        lab.spectrum(np.zeros((2, 3)))


# -- runs ----------------------------------------------------------------------------------------------


ALL = ["gd", "gd-ls", "momentum", "adam", "newton", "lm", "sfn", "gauss-newton", "cg", "cgfr", "bfgs", "lbfgs-3",
       "lbfgs-20", "bp-ag", "cgfr-ag", "bfgs-ag"]


@pytest.mark.parametrize("name", ALL)
def test_every_optimizer_lowers_E_and_reports_the_true_gradient(name: str) -> None:
    import autograd

    from tests.apps.lab.test_objectives import gain_error

    p = _case("xor-2-2-1-sigmoid-soft")
    r = lab.run(p, name, max_iter=4000)
    gains = name.endswith("-ag")
    n = p.n_params + (3 if gains else 0)  # one gain per sigmoid unit: 2 hidden, 1 output
    assert r.optimizer == name and r.n_params == n and r.final_params.shape == (n,)
    # what the run reports is what an independent implementation finds at the point it reports
    E_ref = gain_error(p) if gains else autograd_ref.error_function(p)
    g_ref = float(np.linalg.norm(autograd.grad(E_ref)(r.final_params)))
    assert r.final_grad_norm == pytest.approx(g_ref, rel=1e-6, abs=1e-13)
    assert r.final_error == pytest.approx(float(E_ref(r.final_params)), rel=1e-10, abs=1e-20)
    assert r.converged == (r.reason == "converged") and (not r.converged or r.final_grad_norm < r.tol)
    assert r.evaluations >= r.iterations and r.gradients >= r.iterations and r.cpu_seconds >= 0
    assert r.iterations == len(r.log) - 1 and [x.iteration for x in r.log] == list(range(r.iterations + 1))
    assert r.log[0].error == pytest.approx(hessverify.error(p))
    if name != "newton":  # undamped Newton may climb: it heads for any stationary point
        assert r.final_error < r.log[0].error
    assert r.seconds >= r.log[-1].seconds >= 0 and r.peak_memory >= 0
    formed = lab.get_optimizer(name)[0].forms_hessian
    assert all((x.inertia is not None) == formed for x in r.log[1:])
    assert r.hessians >= (r.iterations if formed else 0)


@pytest.mark.parametrize("name", ["lm", "gauss-newton", "bfgs", "lbfgs-5", "gd-ls", "cg", "cgfr"])
def test_robust_optimizers_reach_the_finite_minimum(name: str) -> None:
    p = _case("xor-2-2-1-sigmoid-soft")
    r = lab.run(p, name, max_iter=2000)
    assert r.converged and _autograd_norm(p, r.final_params) < 1e-8
    assert r.final_error < 1e-10  # E = 0 is reached: the targets 0.1 / 0.9 are at finite weights


def test_logged_inertia_is_the_inertia_of_the_true_hessian() -> None:
    p = _case("xor-2-2-1-sigmoid")
    r = lab.run(p, "newton", max_iter=1)
    assert r.log[1].inertia == _symbolic_inertia(p)  # the Hessian at the point the step was taken from


def test_undamped_newton_stalls_at_a_saddle_on_xor() -> None:
    # the observation: from the XOR case's point, Newton converges to E = 1/2, which is a saddle
    p = _case("xor-2-2-1-sigmoid")
    r = lab.run(p, "newton", max_iter=100)
    assert r.converged and r.final_error == pytest.approx(0.5, abs=1e-8)
    neg, _, pos = _symbolic_inertia(p.with_params(r.final_params))
    assert neg > 0 and pos > 0


def test_saddle_free_newton_leaves_a_saddle_faster_than_gradient_descent() -> None:
    p = _case("saddle-2-3-1-tanh-zero")
    d = np.random.default_rng(0).standard_normal(p.n_params)
    start = p.params + 1e-6 * d / np.linalg.norm(d)
    gd = lab.run(p, "gd", params=start, max_iter=3000, escape_radius=0.1, stop_on_escape=True)
    sfn = lab.run(p, "sfn", params=start, max_iter=3000, escape_radius=0.1, stop_on_escape=True)
    assert sfn.left_at is not None and sfn.reason == "left"
    assert gd.left_at is None or sfn.left_at < gd.left_at


def test_exact_saddle_holds_first_order_methods() -> None:
    p = _case("saddle-2-3-1-tanh-zero")
    r = lab.run(p, "gd", tol=1e-20, max_iter=5)
    assert np.array_equal(r.final_params, p.params) or np.linalg.norm(r.final_params - p.params) < 1e-12


def test_stop_reasons_and_bad_arguments() -> None:
    p = _case("xor-2-2-1-sigmoid")
    r = lab.run(p, "gd", max_iter=3)
    assert not r.converged and r.reason == "max-iter" and r.iterations == 3
    r = lab.run(_case("linear-3-2-2"), "gd", lr=1e6, max_iter=2000)  # a quadratic E: too long a step diverges
    assert not r.converged and r.reason == "diverged"
    r = lab.run(p, "lm", time_limit=1e-12, max_iter=50)
    assert r.reason == "time-limit" and r.iterations <= 1
    for kwargs, match in (({"tol": 0}, "tol"), ({"max_iter": -1}, "max_iter"), ({"lr": -1.0}, "lr")):
        with pytest.raises(hessverify.UsageError, match=match):
            lab.run(p, "gd", **kwargs)
    with pytest.raises(hessverify.UsageError, match="unknown optimizer 'newtn'.*lbfgs-M"):
        lab.run(p, "newtn")


def test_lbfgs_names() -> None:
    assert lab.get_optimizer("lbfgs-7")[1] == 7
    assert lab.get_optimizer("lbfgs")[1] == 10
    assert lab.get_optimizer("saddle-free-newton")[0].name == "sfn"
    assert lab.run(_case("single-neuron-tanh"), "damped-newton").optimizer == "damped-newton"
    for bad in ("lbfgs-0", "lbfgs-x", "lbfgs-"):
        with pytest.raises(hessverify.UsageError):
            lab.get_optimizer(bad)


def test_memory_is_predicted_and_bounded_before_work() -> None:
    from hessverify.model.network import Architecture, Layer

    arch = Architecture(100, (Layer(200, "tanh"), Layer(10, "identity")))  # 22 210 parameters
    p = Problem(arch, "sse", np.zeros(arch.n_params), np.zeros((1, 100)), np.zeros((1, 10)))
    assert lab.predicted_memory("newton", p.n_params) == 8 * p.n_params**2
    assert lab.predicted_memory("lbfgs-20", p.n_params) == 8 * (2 * 20 * p.n_params + 4 * p.n_params)
    with pytest.raises(hessverify.UsageError, match="newton on 22210 parameters needs about"):
        lab.run(p, "newton")
    with pytest.raises(hessverify.UsageError, match="bfgs"):
        lab.run_all(p, ["gd", "bfgs"])


def test_peak_memory_grows_with_n_squared_for_newton_not_for_lbfgs() -> None:
    from hessverify.io.cases import seeded_data, seeded_params
    from hessverify.model.network import Architecture, Layer

    arch = Architecture(8, (Layer(30, "tanh"), Layer(3, "identity")))  # 363 parameters
    x, t = seeded_data(arch, "sse", 1, 40)
    p = Problem(arch, "sse", seeded_params(arch, 1, 0.3), x, t)
    newton = lab.run(p, "lm", max_iter=2)
    lbfgs = lab.run(p, "lbfgs-5", max_iter=2)
    assert newton.peak_memory >= 8 * p.n_params**2  # at least the Hessian itself
    assert lbfgs.peak_memory < 8 * p.n_params**2 / 4


def test_result_table_json_latex_and_plot(tmp_path) -> None:
    p = _case("xor-2-2-1-sigmoid-soft")
    res = lab.run_all(p, ["gd-ls", "newton"], max_iter=50)
    d = res.to_dict()
    assert [r["optimizer"] for r in d["runs"]] == ["gd-ls", "newton"]
    for rec in d["runs"]:
        assert {"optimizer", "iterations", "converged", "final_error", "final_grad_norm", "final_params", "seconds",
                "peak_memory", "log"} <= set(rec)
    assert "gd-ls" in res.table() and "newton" in str(res)
    tex = res._repr_latex_()
    assert tex.startswith("$$\\begin{array}") and r"\text{newton}" in tex
    assert res.runs[0]._repr_latex_().count(r"\\") == 2  # header and one row
    png = tmp_path / "runs.png"
    res.plot(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- stationary points -----------------------------------------------------------------------------


def test_the_shipped_saddle_is_a_genuine_saddle() -> None:
    p = _case("saddle-2-3-1-tanh-zero")
    assert np.linalg.norm(autograd_ref.gradient(p)) < 1e-12
    neg, zero, pos = _symbolic_inertia(p)
    assert neg > 0 and pos > 0
    s = lab.find_stationary(p)
    assert s.iterations == 0 and s.kind == "saddle"
    assert (s.inertia.negative, s.inertia.zero, s.inertia.positive) == (neg, zero, pos)
    assert s.inertia_line() == f"inertia: {neg} negative, {zero} zero, {pos} positive"


def test_find_stationary_reaches_a_true_stationary_point() -> None:
    p = _case("xor-2-2-1-sigmoid")
    s = lab.find_stationary(p)
    assert _autograd_norm(p, s.problem.params) < 1e-12
    assert (s.inertia.negative, s.inertia.zero, s.inertia.positive) == _symbolic_inertia(s.problem)
    assert s.kind == lab.classify(s.inertia)


def test_the_xor_minimum_with_soft_targets_is_finite() -> None:
    p = _case("xor-2-2-1-sigmoid-soft")
    r = lab.run(p, "lm", tol=1e-13, max_iter=300)
    s = lab.find_stationary(p, params=r.final_params)
    assert _autograd_norm(p, s.problem.params) < 1e-12 and np.all(np.abs(s.problem.params) < 50)
    assert s.inertia.negative == 0 and s.kind in ("minimum", "degenerate")
    assert "global minimum" in s.describe()


def test_no_stationary_point_within_the_iterations() -> None:
    p = _case("xor-2-2-1-sigmoid")
    with pytest.raises(lab.NoStationaryPointError, match="no stationary point found near xor-2-2-1-sigmoid") as e:
        lab.find_stationary(p, max_iter=1)
    assert e.value.exit_code == lab.EXIT_NOT_FOUND == 6


# -- at a glance: flags, saddles, threads, warm-up ---------------------------------------------------------------


def _autograd_eigenvalues(p: Problem, theta: np.ndarray) -> np.ndarray:
    import autograd

    return np.linalg.eigvalsh(autograd.hessian(autograd_ref.error_function(p))(theta))


def test_a_run_at_a_saddle_is_flagged_and_one_that_leaves_it_goes_on() -> None:
    p = _case("xor-2-2-1-sigmoid")
    s = lab.find_stationary(p)  # the saddle at E = 1/2 (issue 23's demo)
    assert s.kind == "saddle" and s.error == pytest.approx(0.5)
    d = np.random.default_rng(0).standard_normal(p.n_params)
    start = s.problem.params + 1e-6 * d / np.linalg.norm(d)
    res = lab.run_all(s.problem, ["newton", "lm"], params=start, max_iter=300)
    newton, lm = res.runs
    ev = _autograd_eigenvalues(p, newton.final_params)
    assert newton.reason == "saddle" and not newton.converged and ev[0] < -1e-8 * np.abs(ev).max()
    assert newton.at_saddle and "AT A SADDLE" in newton.summary()
    assert any("negative eigenvalue" in f for f in res.flags(newton))
    assert lm.converged and lm.saddles_passed >= 1 and lm.final_error < 0.1
    assert _autograd_eigenvalues(p, lm.final_params)[0] > -1e-8
    assert res.flags(lm) == [] and "left 1 saddle" in res.table()


def test_the_table_gives_n_kappa_the_ratio_to_gd_and_flags_a_point_far_above_the_best() -> None:
    p = _case("xor-2-2-1-sigmoid-soft")
    res = lab.run_all(p, ["gd", "lm", "newton"], max_iter=3000)
    gd, lm, newton = res.runs
    head = res.header()
    assert head.startswith("xor-2-2-1-sigmoid-soft: n = 9 parameters") and "kappa = " in head
    # kappa over the eigenvalues above FLAT of the largest, from an independent Hessian at the best point
    best = res.best()
    ev = _autograd_eigenvalues(p, best.final_params)
    big = ev[ev > lab.FLAT * np.abs(ev).max()]
    assert best.final_kappa == pytest.approx(big.max() / big.min(), rel=1e-4)
    assert res.ratio_to_gd(lm) == f"{gd.iterations / lm.iterations:.3g}"
    assert newton.final_error > 0.1 and any("far above the best" in f for f in res.flags(newton))
    assert res.flags(lm) == [] and lm.final_inertia is not None and lm.final_inertia[0] == 0


def test_iteration_counts_do_not_depend_on_the_blas_threads() -> None:
    from threadpoolctl import threadpool_limits

    p = _case("tanh-6-12-8-2")
    runs = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            runs.append(lab.run(p, "newton", max_iter=100))
    assert runs[0].iterations == runs[1].iterations
    np.testing.assert_array_equal(runs[0].final_params, runs[1].final_params)


def test_the_first_run_is_not_charged_for_imports(tmp_path) -> None:
    """Issue 23: the first L-BFGS of a process showed 12 MiB (SciPy's import), the same optimiser later 70 KiB."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import hessverify; from hessverify.apps import lab\n"
            "p = hessverify.load_case('cases/tanh-6-12-8-2.toml')\n"
            "a = lab.run(p, 'lbfgs-5', max_iter=30); b = lab.run(p, 'lbfgs-5', max_iter=30)\n"
            "print(a.peak_memory, b.peak_memory)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    first, second = map(int, out.stdout.split())
    assert first <= 2 * second + 64 * 1024


def test_a_target_error_stops_the_run() -> None:
    p = _case("xor-2-2-1-sigmoid-soft")
    r = lab.run(p, "lm", target_error=1e-3, max_iter=300)
    assert r.reason == "target" and r.final_error <= 1e-3 < r.log[-2].error
