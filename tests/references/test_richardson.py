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


def test_steps_outside_the_asymptotic_range_are_not_trusted() -> None:
    """Found by the special-value property: weights of 40 through identity layers into a softmax."""
    from hessverify.model.network import Architecture, Layer
    from hessverify.symbolic.reference import hessian as gold

    arch = Architecture(3, (Layer(1, "identity", False), Layer(2, "identity", False), Layer(2, "identity", False)))
    p = hessverify.Problem(arch, "cross_entropy", np.array([40.0, 0, 0, 0, 40, 0, 0, 0, 0]),
                           np.array([[2.0, 0, 0]]), np.array([[0.5, 0.5]]), "sum", id="steep-softmax")
    ours, est = richardson.hessian_with_error(p)
    wrong = np.abs(ours - gold(p)) > FD_SAFETY * np.where(np.isinf(est), 0.0, est)
    assert np.any(wrong & np.isinf(est))  # richardson is far off there (16 %) ...
    assert not np.any(wrong & np.isfinite(est))  # ... and says so: no finite estimate is wrong
    results = hessverify.verify_problem(p, methods=["backprop"], references=["richardson"])
    assert results[0].passed and results[0].unchecked_entries > 0 and "not trusted" in results[0].note


def test_extrapolation_that_does_not_shrink_the_differences_is_not_trusted() -> None:
    """Found by the special-value property: a gelu network behind weights of 20 to 60."""
    from hessverify.model.network import Architecture, Layer
    from hessverify.symbolic.reference import hessian as gold

    arch = Architecture(3, (Layer(2, "identity", False), Layer(3, "identity", False), Layer(3, "gelu", False)))
    theta = np.zeros(21)
    theta[[4, 5, 14, 17]] = [10.0, 20.0, 40.0, 60.0]
    p = hessverify.Problem(arch, "sse", theta, np.array([[0.0, 1.35232353, 0.2936819]]),
                           np.array([[-2.0, -0.5, 0.0]]), "sum", id="steep-gelu")
    ours, est = richardson.hessian_with_error(p)
    i = p.param_names.index("W2[2,1]")
    assert abs(ours[i, i] - gold(p)[i, i]) > 1e4 and np.isinf(est[i, i])  # 4.6 % off, and not trusted
    assert np.all(np.abs(ours - gold(p))[np.isfinite(est)] <= FD_SAFETY * est[np.isfinite(est)])


def test_the_estimate_covers_a_steep_network_where_the_h4_term_does_not_rule() -> None:
    """Found by the special-value property: weights of 60 into softplus and gelu; /15 was 8 times too small."""
    from pathlib import Path

    from hessverify.symbolic.reference import hessian as gold

    p = hessverify.load_case(Path(__file__).parent / "data" / "steep-softplus-gelu.toml")
    ours, est = richardson.hessian_with_error(p)
    checked = np.isfinite(est)
    assert np.all(np.abs(ours - gold(p))[checked] <= FD_SAFETY * est[checked])
    results = hessverify.verify_problem(p, methods=["backprop"], references=["richardson"])
    assert results[0].passed
