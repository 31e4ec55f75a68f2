"""Finite differences: exact steps, and an error estimate that really bounds the error."""

from __future__ import annotations

import numpy as np

import hessverify
from hessverify.references import autograd_ref, finite_differences
from hessverify.references.finite_differences import FD_SAFETY, steps


def test_steps_are_exactly_representable() -> None:
    theta = np.array([0.0, 1e-3, 0.7, -3.3, 123.456, 1e8])
    h = steps(theta)
    assert np.all(((theta + h) - theta) == h)
    assert np.all(h > 0)


def test_estimate_bounds_the_true_error(shipped_case: hessverify.Problem) -> None:
    """Against autograd (exact to rounding), fd's error is within FD_SAFETY times its own estimate."""
    H, est = finite_differences.hessian_with_error(shipped_case)
    true_err = np.abs(H - autograd_ref.hessian(shipped_case))
    assert np.all(true_err <= FD_SAFETY * est), shipped_case.id
    np.testing.assert_array_equal(H, H.T)


def test_estimate_is_informative() -> None:
    """The estimate is a bound, not a shrug: on a smooth case it is far below the entries."""
    case = hessverify.load_case("cases/tanh-6-12-8-2.toml")
    H, est = finite_differences.hessian_with_error(case)
    assert np.max(est) < 1e-6 * np.max(np.abs(H))


def _near_kink() -> hessverify.Problem:
    """relu-3-5-2 with unit 0 of layer 1 at net input 1e-9 for pattern 0: inside any fd step."""
    case = hessverify.load_case("cases/relu-3-5-2.toml")
    theta = case.params.copy()
    i = case.architecture.param_index("b1[0]")
    w = case.weights[0][0]
    theta[i] = 1e-9 - float(case.inputs[0] @ w)
    return case.with_params(theta)


def test_steps_across_a_kink_are_not_trusted() -> None:
    case = _near_kink()
    H, est = finite_differences.hessian_with_error(case)
    arch = case.architecture
    crossed = [arch.param_index(n) for n in ("b1[0]", "W1[0,0]", "W1[0,1]", "W1[0,2]")]
    assert np.all(np.isinf(est[crossed, :])) and np.all(np.isinf(est[:, crossed]))
    # and rightly so: there the difference quotient is far from the true Hessian
    true = autograd_ref.hessian(case)
    assert np.max(np.abs(H - true)[np.ix_(crossed, crossed)]) > 1e-3
    # elsewhere the estimate still holds
    ok = np.isfinite(est)
    assert np.all(np.abs(H - true)[ok] <= FD_SAFETY * est[ok])


def test_verify_reports_unchecked_entries_not_agreement() -> None:
    results = {c.reference: c for c in hessverify.verify_problem(_near_kink(), methods=["backprop"])}
    fd = results["fd"]
    assert fd.passed and fd.unchecked_entries > 0 and "not trusted" in fd.note
    assert results["autograd"].unchecked_entries == 0 and results["autograd"].passed


def test_central_differences_are_the_difference_quotients_column_by_column(monkeypatch) -> None:
    """Column j of D(s h) is (g(theta + s h_j e_j) - g(theta - s h_j e_j)) / (2 s h_j), bitwise, whether the
    gradients come in one batch or a column at a time."""
    from hessverify.model.forward import gradient

    case = hessverify.load_case("cases/tanh-6-12-8-2.toml")
    theta = np.asarray(case.params, dtype=np.float64)
    h = steps(theta)
    cols = [0, 7, theta.size - 1]
    for s, D in zip((1.0, 2.0), finite_differences.central_differences(case, theta, h, (1.0, 2.0)), strict=True):
        for j in cols:
            e = np.zeros(theta.size)
            e[j] = s * h[j]
            assert np.array_equal(D[:, j], (gradient(case, theta + e) - gradient(case, theta - e)) / (2.0 * s * h[j]))
    whole = finite_differences.central_differences(case, theta, h, (1.0,))[0]
    monkeypatch.setattr(finite_differences, "COLUMN_BATCH_FLOATS", 1)  # one column a batch
    assert np.array_equal(finite_differences.central_differences(case, theta, h, (1.0,))[0], whole)
