"""The complex step: the gradient code accepts complex input, and each column is exact to rounding."""

from __future__ import annotations

import numpy as np

import hessverify
from hessverify.bounds import chain_length, gamma, magnitude_gradient, rounding_bound
from hessverify.model.forward import gradient
from hessverify.references import autograd_ref, complex_step


def test_gradient_is_analytic_in_the_parameters(shipped_case: hessverify.Problem) -> None:
    """On a real point with zero imaginary part, the complex gradient is the real gradient."""
    g_complex = gradient(shipped_case, shipped_case.params.astype(np.complex128))
    assert g_complex.dtype == np.complex128
    np.testing.assert_array_equal(g_complex.imag, 0.0)
    # complex and real kernels round differently: within two rounding bounds of the gradient's terms
    allowed = 2 * gamma(chain_length(shipped_case)) * magnitude_gradient(shipped_case)
    assert np.all(np.abs(g_complex.real - gradient(shipped_case)) <= allowed)


def test_complex_step_within_the_rounding_bound_of_autograd(shipped_case: hessverify.Problem) -> None:
    C = complex_step.hessian(shipped_case)
    R = autograd_ref.hessian(shipped_case)
    assert np.all(np.abs(C - R) <= rounding_bound(shipped_case))


def test_complex_step_has_no_subtraction_error() -> None:
    """A step of 1e-30 would destroy a real difference quotient; the complex step does not care."""
    case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    C = complex_step.hessian(case)
    assert complex_step.STEP <= 1e-30
    rel = np.linalg.norm(C - autograd_ref.hessian(case)) / np.linalg.norm(C)
    assert rel < 1e-14
