"""hessverify.apps.lab.gains: the gain/weight-scale redundancy (Thimm et al. 1996), checked independently.

The Hessian here is autograd's of the gain network written from the definition in
``test_objectives`` (nothing of the model); the directions ``v_j`` are built
there too, from the documented parameter order.  The zero directions of that
Hessian at the minimum ``find_stationary`` reaches on the shipped case must be
the span of the ``v_j``, and the code's report must say so.
"""

from __future__ import annotations

import autograd
import numpy as np
import pytest

import hessverify
from hessverify.apps import lab
from hessverify.apps.lab.gains import gain_directions, with_gains
from tests.apps.lab.test_objectives import _held_out, directions, gain_error
from tests.conftest import CASES_DIR

CURVE = CASES_DIR / "curve-1-2-1-sigmoid-gain.toml"


@pytest.fixture(scope="module")
def at_minimum() -> lab.Stationary:
    return lab.find_stationary(hessverify.load_case(CURVE))


def test_the_zero_directions_at_the_minimum_are_the_predicted_ones(at_minimum: lab.Stationary) -> None:
    p = at_minimum.problem
    theta = p.params
    H = autograd.hessian(gain_error(p))(theta)  # independent of the model and of the code that predicts
    assert np.linalg.norm(autograd.grad(gain_error(p))(theta)) < 1e-11  # stationary, independently
    ev, Q = np.linalg.eigh((H + H.T) / 2)
    V = directions(p, theta)
    assert V.shape == (3, 10)
    order = np.argsort(np.abs(ev))
    null, rest = Q[:, order[:3]], ev[order[3:]]
    # the three eigenvalues nearest 0 are 0 to rounding, the others positive and far from it
    assert np.max(np.abs(ev[order[:3]])) < 1e-12 * np.max(np.abs(ev))
    assert np.min(rest) > 1e5 * np.max(np.abs(ev[order[:3]])) and np.all(rest > 0)
    # their eigenvectors span the v_j: each v_j lies in the null space and the v_j are independent
    for v in V:
        assert np.linalg.norm(v - null @ (null.T @ v)) < 1e-8 * np.linalg.norm(v)
    assert np.linalg.matrix_rank(V, tol=1e-8 * np.linalg.norm(V)) == 3
    # the code predicts the same directions and reports them
    names, V_code = gain_directions(p)
    assert names == ("c1[0]", "c1[1]", "c2[0]")
    np.testing.assert_array_equal(V_code, V)
    r = at_minimum.redundancy
    assert r is not None and r.forced == 3 and r.near_zero == 3
    assert np.all(r.residuals < 1e-12)
    assert (r.across.negative, r.across.zero, r.across.positive) == (0, 0, 7)
    assert at_minimum.kind_across == "minimum" and at_minimum.describe().startswith("minimum up to the gain redundancy")
    assert at_minimum.inertia.zero == 3 and at_minimum.inertia.negative == 0


def test_hessian_times_v_is_minus_d_g_anywhere() -> None:
    """Differentiating g . v_j = 0 in theta: H v_j = -D_j g (D_j = +1 on w_j, b_j, -1 on c_j) at every point."""
    for p in _held_out():
        obj = lab.GainObjective(p)
        rng = np.random.default_rng(4)
        theta = obj.start() + 0.4 * rng.standard_normal(obj.n)
        f = gain_error(p)
        H, g = autograd.hessian(f)(theta), autograd.grad(f)(theta)
        V = directions(p, theta)
        assert V.shape[0] == obj.m
        for v in V:
            D = np.divide(v, theta, out=np.zeros_like(v), where=v != 0)  # v_j = D_j theta: +1 on w_j, b_j; -1 on c_j
            assert set(np.unique(D)) == {-1.0, 0.0, 1.0}
            np.testing.assert_allclose(H @ v, -D * g, rtol=1e-9, atol=1e-12 * np.abs(H).max() * np.abs(v).max())
            assert abs(g @ v) <= 1e-12 * np.linalg.norm(g) * np.linalg.norm(v)


def test_no_gain_layers_no_redundancy() -> None:
    s = lab.find_stationary(hessverify.load_case(CASES_DIR / "saddle-2-3-1-tanh-zero.toml"))
    assert s.redundancy is None and s.redundancy_lines() == [] and s.to_dict()["gain_redundancy"] is None


def test_a_case_with_gains_added_computes_the_same_function() -> None:
    p = _held_out()[1]
    m = with_gains(p)
    theta = m.extend(p.params)
    rng = np.random.default_rng(0)
    theta[m.added] = rng.uniform(0.5, 2.0, m.added.size)
    # f(c (w.x + b)) = f((c w).x + c b): the gain network at theta is the case at the folded point
    assert hessverify.error(m.gained, theta) == pytest.approx(hessverify.error(p, m.model_params(theta)), rel=1e-14)
    assert float(gain_error(p)(theta)) == pytest.approx(hessverify.error(m.gained, theta), rel=1e-13)
