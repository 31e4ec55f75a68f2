"""The complex step: the gradient code accepts complex input, and each column is exact to rounding."""

from __future__ import annotations

import numpy as np

import hessverify
from hessverify.engine.bounds import chain_length, gamma, magnitude_gradient, rounding_bound
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


def _three_params(act: str) -> hessverify.Problem:
    from hessverify.model.network import Architecture, Layer

    arch = Architecture(1, (Layer(1, "identity", False), Layer(1, act, False), Layer(1, "identity", False)))
    return hessverify.Problem(arch, "sse", np.array([0.0, 1.0, 1.0]), np.array([[1.0]]), np.array([[0.0]]), "sum",
                              id=f"three-{act}")


def test_truncation_estimate_covers_the_error_at_exact_zeros() -> None:
    from hessverify.references.complex_step import COMPLEX_STEP_SAFETY
    from hessverify.symbolic.reference import hessian as gold

    for act in ("gelu", "silu", "tanh", "sigmoid"):
        p = _three_params(act)
        H, est = complex_step.hessian_with_error(p)
        truth = gold(p)
        err = np.abs(H - truth)
        assert np.all(err <= rounding_bound(p, methods=1) + COMPLEX_STEP_SAFETY * est), act
        if act in ("gelu", "silu"):  # f''' != 0 at 0: a truncation of ~1e-61 where the truth is exactly 0
            zero = truth == 0.0
            assert np.any(err[zero] > 0.0) and np.all(est[zero & (err > 0)] >= err[zero & (err > 0)])


def test_the_estimate_is_the_truncation_and_not_more() -> None:
    """Away from exact zeros the h^2 term is ~1e-60 of the entry: the estimate adds next to nothing."""
    case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    H, est = complex_step.hessian_with_error(case)
    assert np.all(est <= 1e-50 * (np.abs(H) + 1.0))


def test_complex_overflow_is_nan_and_verify_calls_it_not_applicable() -> None:
    from hessverify.engine.verify import not_applicable_reason
    from hessverify.model.network import Architecture, Layer

    arch = Architecture(1, (Layer(1, "tanh", False), Layer(1, "identity", False)))
    big = hessverify.Problem(arch, "sse", np.array([1.0, 0.5]), np.array([[700.0]]), np.array([[0.3]]), "sum",
                             id="tanh-at-700")
    H, est = complex_step.hessian_with_error(big)
    assert np.isnan(H[0, 0])  # tanh(700 + ih) overflows in complex arithmetic; the real tanh is 1
    reason = not_applicable_reason(big, "complex_step", H, est)
    assert reason is not None and "complex tanh/cosh overflow" in reason and "700" in reason
    results = hessverify.verify_problem(big, references=["autograd", "complex_step"])
    assert all(c.passed for c in results)
    assert [c.reference for c in results if c.bound_kind == "not_applicable"] == ["complex_step"]
