"""backprop against autograd on every case and on random architectures."""

from __future__ import annotations

import numpy as np
import pytest

import hessverify
from hessverify.engine.bounds import rounding_bound
from hessverify.methods import backprop
from hessverify.model.network import Architecture, Layer
from hessverify.references import autograd_ref


def _frobenius_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def test_backprop_equals_autograd_to_1e12_on_every_shipped_case(shipped_case: hessverify.Problem) -> None:
    H = backprop.hessian(shipped_case)
    R = autograd_ref.hessian(shipped_case)
    assert _frobenius_rel(H, R) <= 1e-12
    bad = np.abs(H - R) > rounding_bound(shipped_case)
    assert not bad.any(), f"{shipped_case.id}: {np.count_nonzero(bad)} entries over the rounding bound"


def test_backprop_is_exactly_symmetric(shipped_case: hessverify.Problem) -> None:
    H = backprop.hessian(shipped_case)
    np.testing.assert_array_equal(H, H.T)


ARCHS = [
    (3, [(4, "tanh"), (3, "gelu"), (2, "silu"), (2, "identity")], "sse", "mean"),
    (2, [(3, "sin"), (3, "softplus"), (4, "identity")], "cross_entropy", "sum"),
    (1, [(2, "sigmoid"), (1, "relu"), (3, "sigmoid")], "binary_cross_entropy", "sum"),
    (4, [(1, "tanh")], "output", "mean"),
]


@pytest.mark.parametrize("inputs, layers, loss, reduction", ARCHS)
@pytest.mark.parametrize("bias_pattern", [0, 1])
def test_backprop_equals_autograd_on_random_networks(inputs, layers, loss, reduction, bias_pattern) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(len(layers) * 10 + bias_pattern)
    arch = Architecture(inputs, tuple(Layer(u, a, bias=bool((i + bias_pattern) % 2 == 0 or i == 0))
                                      for i, (u, a) in enumerate(layers)))
    n = 7
    targets = rng.random((n, arch.outputs))
    case = hessverify.Problem(arch, loss, 0.8 * rng.standard_normal(arch.n_params),
                              rng.standard_normal((n, inputs)), targets, reduction)
    H, R = backprop.hessian(case), autograd_ref.hessian(case)
    assert _frobenius_rel(H, R) <= 1e-12
    assert not (np.abs(H - R) > rounding_bound(case)).any()


def test_single_linear_neuron_by_hand() -> None:
    """E = 1/2 sum_n (w x_n + b - t_n)^2 has H = sum_n [x_n^2, x_n; x_n, 1]: no reference code involved."""
    x = np.array([[1.0], [2.0], [-3.0]])
    case = hessverify.Problem(Architecture(1, (Layer(1, "identity"),)), "sse", np.array([0.3, -0.2]),
                              x, np.array([[0.0], [1.0], [2.0]]))
    expected = np.array([[np.sum(x**2), np.sum(x)], [np.sum(x), 3.0]])
    np.testing.assert_array_equal(backprop.hessian(case), expected)


def test_sigmoid_neuron_sse_by_hand() -> None:
    """One sigmoid unit, one pattern: d2E/dw2 = x^2 [(s')^2 + (s - t) s'']."""
    x, t, w, b = 1.7, 0.2, 0.4, -0.3
    case = hessverify.Problem(Architecture(1, (Layer(1, "sigmoid"),)), "sse", np.array([w, b]),
                              np.array([[x]]), np.array([[t]]))
    a = w * x + b
    s = 1 / (1 + np.exp(-a))
    s1 = s * (1 - s)
    s2 = s1 * (1 - 2 * s)
    h = s1**2 + (s - t) * s2
    np.testing.assert_allclose(backprop.hessian(case), h * np.array([[x * x, x], [x, 1]]), rtol=1e-14)
