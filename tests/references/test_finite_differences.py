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
