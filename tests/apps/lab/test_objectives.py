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


def layout(problem: Problem) -> list[tuple[slice, slice | None, slice | None]]:
    """Per layer, where ``W``, ``b`` and the gains ``c`` sit in the gain network's vector.

    Written from the documented order (docs/cases.md: a dense layer's ``W``, ``b``, ``c``, layer by layer),
    a gain on every sigmoid layer, not from the model's tables.
    """
    arch = problem.architecture
    sizes = [arch.inputs] + [layer.units for layer in arch.layers]
    out = []
    at = 0
    for l, layer in enumerate(arch.layers):
        fan_in, units = sizes[l], sizes[l + 1]
        W = slice(at, at + units * fan_in)
        at = W.stop
        b = slice(at, at + units) if layer.bias else None
        at += units if layer.bias else 0
        c = slice(at, at + units) if layer.activation == "sigmoid" else None
        at += units if c is not None else 0
        out.append((W, b, c))
    return out


def gain_error(problem: Problem) -> Any:
    """``E(w, b, c)`` of a chain network, a gain on every sigmoid unit, written from the definition."""
    arch = problem.architecture
    sizes = [arch.inputs] + [layer.units for layer in arch.layers]
    x, t = problem.inputs, problem.targets
    scale = 1.0 / x.shape[0] if problem.reduction == "mean" else 1.0
    places = layout(problem)

    def E(theta: Any) -> Any:
        z = x
        for l, layer in enumerate(arch.layers):
            fan_in, units = sizes[l], sizes[l + 1]
            Ws, bs, cs = places[l]
            W = anp.reshape(theta[Ws], (units, fan_in))
            b = theta[bs] if bs is not None else anp.zeros(units)
            a = anp.dot(z, W.T) + b
            if layer.activation == "sigmoid":
                z = 1.0 / (1.0 + anp.exp(-theta[cs] * a))
            elif layer.activation == "tanh":
                z = anp.tanh(a)
            else:
                assert layer.activation == "identity"
                z = a
        assert problem.loss == "sse"
        return scale * 0.5 * anp.sum((z - t) ** 2)

    return E


def directions(problem: Problem, theta: np.ndarray) -> np.ndarray:
    """``v_j = (w_j, b_j, -c_j)`` per sigmoid unit, from :func:`layout` (Thimm et al. 1996)."""
    rows = []
    for (Ws, bs, cs), layer in zip(layout(problem), problem.architecture.layers):
        if cs is None:
            continue
        W = np.arange(Ws.start, Ws.stop).reshape(layer.units, -1)
        for j in range(layer.units):
            v = np.zeros(theta.size)
            v[W[j]] = theta[W[j]]
            if bs is not None:
                v[bs.start + j] = theta[bs.start + j]
            v[cs.start + j] = -theta[cs.start + j]
            rows.append(v)
    return np.array(rows)


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
    gains = np.zeros(theta.size, dtype=bool)
    for _, _, cs in layout(obj.case):
        if cs is not None:
            gains[cs] = True
    assert gains.sum() == obj.m
    theta[gains] = rng.uniform(0.5, 2.0, obj.m)  # gains away from 1
    theta[~gains] += 0.3 * rng.standard_normal(theta.size - obj.m)
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
    assert obj.m == 4 and [n for n in obj.names if n.startswith("c")] == ["c2[0]", "c2[1]", "c2[2]", "c2[3]"]
    assert obj.names[:24] == p.param_names[:24] and obj.names[24:28] == ("c2[0]", "c2[1]", "c2[2]", "c2[3]")
    theta = obj.start()
    assert obj.E(theta) == pytest.approx(hessverify.error(p), rel=1e-15)
    g = dict(zip(obj.names, obj.g(theta)))
    # every gain 1: the case's own gradient (through the graph instead of the dense kernel: to rounding)
    np.testing.assert_allclose([g[n] for n in p.param_names], hessverify.gradient(p), rtol=1e-13, atol=1e-16)
    # a gain scales its unit's incoming weights and bias: the same function as the model at c w
    theta = _point(obj, 1)
    assert obj.E(theta) == pytest.approx(hessverify.error(p, obj.model_params(theta)), rel=1e-15)


def test_gain_and_weight_scale_are_redundant() -> None:
    """Thimm et al. 1996: E is constant along (s w_j, s b_j, c_j / s), so g . v_j = 0, and H v_j = 0 where g = 0."""
    p = _held_out()[0]
    obj = GainObjective(p)
    theta = _point(obj, 2)
    V = obj.redundant_directions(theta)
    np.testing.assert_array_equal(V, directions(p, theta))
    g = autograd.grad(gain_error(p))(theta)
    assert np.all(np.abs(V @ g) <= 1e-12 * np.linalg.norm(g) * np.linalg.norm(V, axis=1))
    # at a minimum (soft XOR: E = 0 at finite weights) H v_j vanishes
    soft = hessverify.load_case(CASES_DIR / "xor-2-2-1-sigmoid-soft.toml")
    from hessverify.apps import lab

    r = lab.run(soft, "bfgs-ag", tol=1e-11, max_iter=3000)
    assert r.converged
    H = autograd.hessian(gain_error(soft))(r.final_params)
    for v in directions(soft, r.final_params):
        assert np.linalg.norm(H @ v) <= 1e-6 * np.linalg.norm(H, 2) * np.linalg.norm(v)


def test_an_evaluation_is_a_point() -> None:
    p = _held_out()[0]
    obj = ModelObjective(p)
    theta = p.params.copy()
    obj.E(theta)
    obj.g(theta)  # the same point: one evaluation, one gradient
    obj.g(theta + 1.0)
    assert (obj.counts.evaluations, obj.counts.gradients) == (2, 2)
