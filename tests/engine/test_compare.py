"""Comparisons: a planted error fails and is named; agreement passes."""

from __future__ import annotations

import numpy as np
import pytest

import hessverify
from hessverify.engine.bounds import rounding_bound
from hessverify.engine.compare import TOLERANCES, bound_for, compare
from hessverify.methods import backprop
from hessverify.references import autograd_ref


def _case() -> hessverify.Problem:
    return hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")


def test_agreement_passes_and_reports_the_bound() -> None:
    case = _case()
    H, R = backprop.hessian(case), autograd_ref.hessian(case)
    B = rounding_bound(case)
    c = compare(case, "backprop", "autograd", H, R, B, "rounding")
    assert c.passed and c.failing_entries == 0 and c.margin <= 1
    assert c.bound > 0 and c.bound_kind == "rounding"


def test_a_planted_error_fails_and_is_named_by_parameters() -> None:
    case = _case()
    R = autograd_ref.hessian(case)
    A = R.copy()
    i, j = case.architecture.param_index("W2[0,1]"), case.architecture.param_index("b1[1]")
    A[i, j] *= 1 + 1e-9
    A[j, i] *= 1 + 1e-9
    c = compare(case, "planted", "autograd", A, R, rounding_bound(case), "rounding")
    assert not c.passed and c.failing_entries == 2
    assert {c.worst_entry.row, c.worst_entry.col} == {"W2[0,1]", "b1[1]"}
    assert c.worst_entry.value == A[i, j] or c.worst_entry.value == A[j, i]
    assert c.worst_entry.abs_error > c.worst_entry.bound


def test_nan_in_the_method_fails_with_a_note() -> None:
    case = _case()
    R = autograd_ref.hessian(case)
    A = R.copy()
    A[0, 0] = np.nan
    c = compare(case, "broken", "autograd", A, R, rounding_bound(case), "rounding")
    assert not c.passed and "NaN" in c.note and c.failing_entries == 1


def test_asymmetry_is_measured() -> None:
    case = _case()
    R = autograd_ref.hessian(case)
    A = R.copy()
    A[0, 1] += 1e-3
    c = compare(case, "asym", "autograd", A, R, rounding_bound(case), "rounding")
    assert c.symmetry_error == pytest.approx(1e-3, abs=1e-12)


def test_every_reference_has_a_documented_tolerance() -> None:
    for name, method in hessverify.METHODS.items():
        if method.role == "reference":
            assert name in TOLERANCES and TOLERANCES[name].reason


def test_fd_bound_uses_its_estimate() -> None:
    case = _case()
    est = np.full((case.n_params,) * 2, 1e-8)
    B, kind = bound_for(case, "fd", reference_error=est)
    assert kind == "fd_estimate" and np.all(B >= 4e-8)


def test_nan_in_the_reference_is_unchecked_not_failed() -> None:
    case = _case()
    A = backprop.hessian(case)
    R = A.copy()
    R[1, 2] = np.inf
    c = compare(case, "backprop", "flaky", A, R, rounding_bound(case), "rounding")
    assert c.passed and c.unchecked_entries == 1 and "flaky returned NaN or inf" in c.note


# -- each side brings its own bound (pair_bound) -----------------------------------

def test_each_side_of_a_comparison_brings_its_own_bound() -> None:
    from hessverify.engine.bounds import UNDERFLOW_FLOOR, rounding_bound
    from hessverify.engine.compare import pair_bound
    from hessverify.references import complex_step, finite_differences
    from hessverify.references.complex_step import COMPLEX_STEP_SAFETY
    from hessverify.references.finite_differences import FD_SAFETY

    case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    rounding = rounding_bound(case, methods=2)
    gm = (rounding - UNDERFLOW_FLOOR) / 2.0
    _, fd_err = finite_differences.hessian_with_error(case)
    _, cs_err = complex_step.hessian_with_error(case)
    exact, kind = pair_bound(case, "backprop", "autograd", rounding=rounding)
    np.testing.assert_allclose(exact, rounding)
    assert kind == "rounding"
    # fd as the method, autograd as the reference: fd's own estimate plus autograd's rounding
    fd_vs_ag, kind = pair_bound(case, "fd", "autograd", method_error=fd_err, rounding=rounding)
    np.testing.assert_allclose(fd_vs_ag, FD_SAFETY * fd_err + gm + UNDERFLOW_FLOOR)
    assert kind == "fd_estimate"
    # and the same the other way round
    ag_vs_fd, _ = pair_bound(case, "autograd", "fd", reference_error=fd_err, rounding=rounding)
    np.testing.assert_allclose(ag_vs_fd, fd_vs_ag)
    cs, kind = pair_bound(case, "backprop", "complex_step", reference_error=cs_err, rounding=rounding)
    np.testing.assert_allclose(cs, rounding + COMPLEX_STEP_SAFETY * cs_err)
    assert kind == "rounding+truncation"


def test_a_side_that_needs_its_estimate_refuses_to_go_without() -> None:
    from hessverify.engine.compare import pair_bound

    case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    with pytest.raises(ValueError, match="fd bound needs its own error estimate"):
        pair_bound(case, "fd", "autograd")
    with pytest.raises(ValueError, match="complex_step bound needs"):
        pair_bound(case, "backprop", "complex_step")


def test_margin_text_says_when_the_reference_is_exactly_zero() -> None:
    from hessverify.engine.compare import margin_text

    case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    H = hessverify.hessian(case)
    A = H.copy()
    R = H.copy()
    R[0, 1] = R[1, 0] = 0.0  # a reference entry that is exactly 0, and a method that is not
    A[0, 1] = A[1, 0] = 1e-3
    c = compare(case, "m", "r", A, R, np.full_like(H, 1e-300), "rounding")
    assert not c.passed and margin_text(c) == "reference is exactly 0"
    ok = compare(case, "m", "r", H, H, np.full_like(H, 1.0), "rounding")
    assert margin_text(ok) == f"{ok.margin:.1e}"


def test_compare_at_judges_only_the_entries_in_the_mask() -> None:
    from hessverify.engine.compare import compare_at

    case = _case()
    R = autograd_ref.hessian(case)
    A = np.full_like(R, np.nan)  # a routine that computes only the diagonal
    np.fill_diagonal(A, np.diag(R))
    mask = np.eye(case.n_params, dtype=bool)
    c = compare_at(case, "diag", "autograd", A, R, rounding_bound(case), "rounding", mask)
    assert c.passed and c.extra["compared_entries"] == case.n_params
    k = case.architecture.param_index("b2[0]")
    A[k, k] *= 1 + 1e-6
    c = compare_at(case, "diag", "autograd", A, R, rounding_bound(case), "rounding", mask)
    assert not c.passed and c.failing_entries == 1 and c.worst_entry.row == c.worst_entry.col == "b2[0]"
