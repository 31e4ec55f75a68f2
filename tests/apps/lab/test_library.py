"""hessverify.apps.lab.library: TensorFlow Probability's BFGS and L-BFGS and PSGD, run on the lab's objective.

Skipped where the library is not installed (make frameworks installs both).  The
gradient at the answer is held to autograd; the counts reported are the
library's own, held to the calls the lab saw.
"""

from __future__ import annotations

import numpy as np
import pytest

import hessverify
from hessverify.apps import lab
from hessverify.apps.lab import library
from hessverify.references import autograd_ref
from tests.conftest import CASES_DIR


def _case(name: str) -> hessverify.Problem:
    return hessverify.load_case(CASES_DIR / f"{name}.toml")


def _autograd_norm(p: hessverify.Problem, theta: np.ndarray) -> float:
    return float(np.linalg.norm(autograd_ref.gradient(p.with_params(theta))))


needs_tfp = pytest.mark.skipif(not library.available("tfp-bfgs"), reason="TensorFlow Probability not installed")
needs_psgd = pytest.mark.skipif(not library.available("psgd"), reason="psgd-torch not installed")


@needs_tfp
@pytest.mark.parametrize("name", ["tfp-bfgs", "tfp-lbfgs"])
def test_tfp_reports_its_own_counts_and_the_answer_is_stationary(name: str) -> None:
    p = _case("single-neuron-tanh")
    r = lab.run(p, name, max_iter=40)
    info = r.library
    assert info["library"] == "tensorflow_probability" and info["max_iterations"] == 40  # passed, not TFP's 50
    # the counts are TFP's, and TFP called the lab's objective exactly that often
    assert (r.iterations, r.evaluations) == (info["num_iterations"], info["num_objective_evaluations"])
    assert info["lab_counted"]["calls"] == info["num_objective_evaluations"] == len(r.log)
    assert r.converged == info["converged"] and info["converged"] and not info["failed"]
    assert r.final_grad_norm == pytest.approx(_autograd_norm(p, r.final_params), rel=1e-8, abs=1e-14)
    assert r.final_grad_norm < 1e-8 and r.log_unit == "evaluation" and not r.memory_traced


@needs_tfp
def test_tfp_stops_at_max_iterations() -> None:
    r = lab.run(_case("xor-2-2-1-sigmoid-soft"), "tfp-bfgs", max_iter=3)
    assert r.library["num_iterations"] <= 3 and not r.library["converged"] and r.reason in ("max-iter", "failed")


@needs_psgd
def test_psgd_lowers_E_and_its_answer_has_the_gradient_it_reports() -> None:
    p = _case("xor-2-2-1-sigmoid-soft")
    r = lab.run(p, "psgd", max_iter=200)
    assert r.library["library"] == "psgd_torch" and r.library["steps"] == r.iterations
    assert r.final_error < r.log[0].error
    assert r.final_grad_norm == pytest.approx(_autograd_norm(p, r.final_params), rel=1e-8, abs=1e-14)
    again = lab.run(p, "psgd", max_iter=200)  # seeded: the same run
    np.testing.assert_array_equal(again.final_params, r.final_params)


def test_a_missing_library_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(library._MODULES, "psgd", ("hessverify_no_such_module",))
    with pytest.raises(hessverify.UsageError, match="psgd needs a library that is not installed; pip install"):
        lab.run(_case("single-neuron-tanh"), "psgd")
