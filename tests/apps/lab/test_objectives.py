"""hessverify.apps.lab.objectives: the adaptive-gain objective against an independent gain network.

The reference writes a chain network with gains, ``z_j = sigmoid(c_j a_j)``, in
autograd.numpy from the definition (no reparametrisation, nothing of the model
or of the lab): its ``E``, gradient and Hessian over ``(w, b, c)`` come from
autograd, and central differences check the gradient once more.
"""

from __future__ import annotations

from typing import Any

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import hessverify
from hessverify.apps.lab.objectives import GainObjective, ModelObjective
from hessverify.io.cases import seeded_data, seeded_params
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from tests.conftest import CASES_DIR


def gain_error(problem: Problem) -> Any:
    """``E(w, b, c)`` of a chain network, a gain on every sigmoid unit, written from the definition."""
    arch = problem.architecture
    sizes = [arch.inputs] + [layer.units for layer in arch.layers]
    x, t = problem.inputs, problem.targets
    n0 = problem.n_params
    scale = 1.0 / x.shape[0] if problem.reduction == "mean" else 1.0

    def E(theta: Any) -> Any:
        at, gat = 0, n0
        z = x
        for l, layer in enumerate(arch.layers):
            fan_in, units = sizes[l], sizes[l + 1]
            W = anp.reshape(theta[at:at + units * fan_in], (units, fan_in))
            at += units * fan_in
            b = theta[at:at + units] if layer.bias else anp.zeros(units)
            at += units if layer.bias else 0
            a = anp.dot(z, W.T) + b
            if layer.activation == "sigmoid":
                c = theta[gat:gat + units]
                gat += units
                z = 1.0 / (1.0 + anp.exp(-c * a))
            elif layer.activation == "tanh":
                z = anp.tanh(a)
            else:
                assert layer.activation == "identity"
                z = a
        assert problem.loss == "sse"
        return scale * 0.5 * anp.sum((z - t) ** 2)

    return E


def _held_out() -> list[Problem]:
    """The shipped XOR case, and two seeded networks the code was not written against."""
    out = [hessverify.load_case(CASES_DIR / "xor-2-2-1-sigmoid.toml")]
    for seed, layers in ((3, (Layer(4, "sigmoid"), Layer(2, "sigmoid"))),
                         (5, (Layer(3, "tanh"), Layer(4, "sigmoid", bias=False), Layer(2, "identity")))):
        arch = Architecture(3, layers)
        x, t = seeded_data(arch, "sse", seed, 7)
        out.append(Problem(arch, "sse", seeded_params(arch, seed, 0.8), x, t, reduction="mean", id=f"held-{seed}"))
    return out


def _point(obj: GainObjective, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    theta = obj.start()
    theta[obj.problem.n_params:] = rng.uniform(0.5, 2.0, obj.m)  # gains away from 1
    theta[:obj.problem.n_params] += 0.3 * rng.standard_normal(obj.problem.n_params)
    return theta


@pytest.mark.parametrize("k", range(3))
def test_gain_objective_matches_an_independent_gain_network(k: int) -> None:
    p = _held_out()[k]
    obj = GainObjective(p)
    ref = gain_error(p)
    for seed in range(3):
        theta = _point(obj, seed)
        assert obj.E(theta) == pytest.approx(float(ref(theta)), rel=1e-13, abs=1e-15)
        g_ref = autograd.grad(ref)(theta)
        np.testing.assert_allclose(obj.g(theta), g_ref, rtol=1e-10, atol=1e-13)
        H_ref = autograd.hessian(ref)(theta)
        H = obj.hessian(theta)
        np.testing.assert_allclose(H, H_ref, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(H_ref).max()))
        v = np.random.default_rng(seed).standard_normal(obj.n)
        np.testing.assert_allclose(obj.hvp(theta, v), H_ref @ v, rtol=1e-9, atol=1e-11 * np.abs(H_ref).max())


def test_gain_gradient_by_central_differences() -> None:
    p = _held_out()[1]
    obj = GainObjective(p)
    theta = _point(obj, 7)
    h = 1e-6
    fd = np.array([(obj.E(theta + h * e) - obj.E(theta - h * e)) / (2 * h) for e in np.eye(obj.n)])
    np.testing.assert_allclose(obj.g(theta), fd, rtol=1e-6, atol=1e-9)


def test_gains_of_one_are_the_model_and_names_follow_the_parameters() -> None:
    p = _held_out()[2]
    obj = GainObjective(p)
    assert obj.m == 4 and obj.names[-4:] == ("c2[0]", "c2[1]", "c2[2]", "c2[3]")  # only the sigmoid layer
    theta = obj.start()
    assert obj.E(theta) == hessverify.error(p)
    np.testing.assert_array_equal(obj.g(theta)[:p.n_params], hessverify.gradient(p))
    # a gain scales its unit's incoming weights and bias: the same function as the model at c w
    theta = _point(obj, 1)
    assert obj.E(theta) == pytest.approx(hessverify.error(p, obj.model_params(theta)), rel=1e-15)


def test_gain_and_weight_scale_are_redundant() -> None:
    """Thimm et al. 1996: E is constant along (s w_j, s b_j, c_j / s), so g . v_j = 0, and H v_j = 0 where g = 0."""
    p = _held_out()[0]
    obj = GainObjective(p)
    theta = _point(obj, 2)
    V = obj.redundant_directions(theta)
    g = autograd.grad(gain_error(p))(theta)
    assert np.all(np.abs(V @ g) <= 1e-12 * np.linalg.norm(g) * np.linalg.norm(V, axis=1))
    # at a minimum (soft XOR: E = 0 at finite weights) H v_j vanishes
    soft = hessverify.load_case(CASES_DIR / "xor-2-2-1-sigmoid-soft.toml")
    from hessverify.apps import lab

    r = lab.run(soft, "bfgs-ag", tol=1e-11, max_iter=3000)
    assert r.converged
    obj = GainObjective(soft)
    H = autograd.hessian(gain_error(soft))(r.final_params)
    for v in obj.redundant_directions(r.final_params):
        assert np.linalg.norm(H @ v) <= 1e-6 * np.linalg.norm(H, 2) * np.linalg.norm(v)


def test_an_evaluation_is_a_point() -> None:
    p = _held_out()[0]
    obj = ModelObjective(p)
    theta = p.params.copy()
    obj.E(theta)
    obj.g(theta)  # the same point: one evaluation, one gradient
    obj.g(theta + 1.0)
    assert (obj.counts.evaluations, obj.counts.gradients) == (2, 2)
