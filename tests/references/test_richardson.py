"""Richardson extrapolation: its estimate bounds its error, and numdifftools agrees with it."""

from __future__ import annotations

import numdifftools as nd
import numpy as np
import pytest

import hessverify
from hessverify.model.forward import gradient
from hessverify.references import autograd_ref, richardson
from hessverify.references.finite_differences import FD_SAFETY, hessian_with_error


def test_estimate_bounds_the_true_error(shipped_case: hessverify.Problem) -> None:
    H, est = richardson.hessian_with_error(shipped_case)
    assert np.all(np.abs(H - autograd_ref.hessian(shipped_case)) <= FD_SAFETY * est + 1e-300)


def test_more_accurate_than_plain_central_differences() -> None:
    case = hessverify.load_case("cases/tanh-6-12-8-2.toml")
    truth = autograd_ref.hessian(case)
    r_err = np.max(np.abs(richardson.hessian(case) - truth))
    fd_err = np.max(np.abs(hessian_with_error(case)[0] - truth))
    assert r_err < fd_err / 3


@pytest.mark.parametrize("case_id", ["xor-2-2-1-sigmoid", "gelu-silu-3-4-3-2-bce", "softmax-4-5-3-cross-entropy"])
def test_agrees_with_numdifftools(case_id: str) -> None:
    """numdifftools' adaptive Richardson scheme is an outside implementation of the same idea."""
    case = hessverify.load_case(f"cases/{case_id}.toml")
    ours, est = richardson.hessian_with_error(case)
    theirs = nd.Jacobian(lambda t: gradient(case, t), method="central", full_output=True)(case.params)
    J = 0.5 * (theirs.estimate + theirs.estimate.T)
    # numdifftools' own error estimate is sometimes zero, so hold both to ours plus theirs
    allowed = FD_SAFETY * (est + 0.5 * (theirs.error_estimate + theirs.error_estimate.T)) + 1e-12 * np.abs(ours).max()
    assert np.all(np.abs(ours - J) <= allowed)
