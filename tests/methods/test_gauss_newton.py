"""``gauss_newton``: J^T H_loss J against its own autograd definition, and the identities it obeys."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import hessverify
from hessverify.methods import backprop, gauss_newton
from hessverify.model.forward import forward
from hessverify.model.losses import get_loss
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.references import curvature_ref

from .conftest import assert_within, exact_bound, load, psd_floor

SSE_CASES = ["deep-chain-tanh-1-1-1-1-1", "linear-3-2-2", "relu-3-5-2", "saddle-2-3-1-tanh-zero",
             "single-neuron-tanh", "tanh-6-12-8-2", "xor-2-2-1-sigmoid"]


def test_against_autograd_definition(case: hessverify.Problem) -> None:
    assert_within("gauss_newton vs autograd J^T H J", case, gauss_newton.hessian(case),
                  curvature_ref.gauss_newton(case), exact_bound(case))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_hessian_for_a_network_linear_in_its_parameters(seed: int) -> None:
    # one identity layer: y = W x + b is linear in theta, so d2y/dtheta2 = 0 and H = J^T H_loss J at any point
    rng = np.random.default_rng(seed)
    arch = Architecture(3, (Layer(2, "identity"),))
    case = Problem(arch, "sse", 2.0 * rng.standard_normal(arch.n_params), rng.standard_normal((9, 3)),
                   5.0 * rng.standard_normal((9, 2)), id=f"linear-single-layer-{seed}")
    assert_within("GGN vs Hessian, linear model", case, gauss_newton.hessian(case), backprop.hessian(case),
                  exact_bound(case))


def test_deep_linear_network_differs_away_from_zero_residual() -> None:
    # A deep linear network is bilinear in (W1, W2): the term g_y d2y/dW1 dW2 survives, so "linear network"
    # in the identity means linear in the parameters.  Here the two must differ beyond rounding.
    case = load("linear-3-2-2")
    diff = np.abs(gauss_newton.hessian(case) - backprop.hessian(case))
    assert np.max(diff / exact_bound(case)) > 1e6


@pytest.mark.parametrize("name", SSE_CASES + ["gelu-silu-3-4-3-2-bce", "softmax-4-5-3-cross-entropy"])
def test_equals_hessian_at_zero_residual_with_sse(name: str) -> None:
    base = load(name)
    base = replace(base, loss="sse")
    # targets equal to the outputs make y - t exactly zero, so every term with g_y vanishes
    case = replace(base, targets=forward(base).y.copy())
    assert np.all(forward(case).g_y == 0.0)
    assert_within("GGN vs Hessian at zero residual", case, gauss_newton.hessian(case), backprop.hessian(case),
                  exact_bound(case))


def test_psd_for_convex_losses(case: hessverify.Problem) -> None:
    assert get_loss(case.loss).convex
    G = gauss_newton.hessian(case)
    lowest = float(np.linalg.eigvalsh(G)[0])
    floor = psd_floor(case, G)
    assert lowest >= -floor, f"{case.id}: smallest eigenvalue {lowest:.3g} below -{floor:.3g}"


@pytest.mark.parametrize("loss", ["sse", "cross_entropy", "binary_cross_entropy"])
def test_relu_hessian_diagonal_equals_ggn_diagonal(loss: str) -> None:
    # relu and identity have f'' = 0 away from the kinks, and a diagonal entry has no cross-layer term,
    # so only the J^T H_loss J part of each diagonal entry is left
    case = load("relu-3-5-2")
    targets = np.abs(case.targets) / np.abs(case.targets).sum(axis=1, keepdims=True)  # valid for every loss
    case = replace(case, loss=loss, targets=targets)
    H = backprop.hessian(case)
    assert np.min(np.abs(forward(case).a[1])) > 0  # away from the kinks
    assert_within("diag H vs diag GGN, relu", case, np.diag(gauss_newton.hessian(case)), np.diag(H),
                  np.diag(exact_bound(case)))
    # and the off-diagonal parts do differ, so the identity is not vacuous
    assert np.max(np.abs(gauss_newton.hessian(case) - H) / exact_bound(case)) > 1e3
