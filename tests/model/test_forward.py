"""Forward pass, first-order backprop, and the point checks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import hessverify
from hessverify.errors import NotDifferentiableError, OverflowReport
from hessverify.model import forward
from hessverify.model.forward import error, gradient, gradients
from hessverify.model.well_posed import ensure_well_posed
from hessverify.references import autograd_ref


def test_gradient_matches_autograd_on_every_case(shipped_case: hessverify.Problem) -> None:
    g = gradient(shipped_case)
    ref = autograd_ref.gradient(shipped_case)
    np.testing.assert_allclose(g, ref, rtol=1e-12, atol=1e-14 * max(1.0, np.abs(ref).max()))


def test_batched_gradients_are_the_gradients_one_at_a_time(shipped_case: hessverify.Problem,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """gradients(problem, thetas) is gradient at each row, bitwise (the same products, stacked), across batches."""
    theta = np.asarray(shipped_case.params, dtype=np.float64)
    rng = np.random.default_rng(3)
    thetas = theta + 1e-3 * np.maximum(np.abs(theta), 1.0) * rng.standard_normal((5, theta.size))
    one_at_a_time = np.stack([gradient(shipped_case, t) for t in thetas])
    assert np.array_equal(gradients(shipped_case, thetas), one_at_a_time)
    monkeypatch.setattr(forward, "GRADIENTS_BATCH_FLOATS", 1)  # one point a batch
    assert np.array_equal(gradients(shipped_case, thetas), one_at_a_time)
    assert gradients(shipped_case, thetas[:0]).shape == (0, theta.size)


def test_error_matches_autograd_on_every_case(shipped_case: hessverify.Problem) -> None:
    ref = float(autograd_ref.error_function(shipped_case)(shipped_case.params))
    assert error(shipped_case) == pytest.approx(ref, rel=1e-13, abs=1e-300)


def test_xor_error_by_hand() -> None:
    case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    s = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    e = 0.0
    for (x1, x2), t in zip(case.inputs, case.targets[:, 0]):
        h = s(np.array([1.5 * x1 - 2.0 * x2 + 0.3, 0.7 * x1 + 1.1 * x2 - 0.4]))
        y = s(2.0 * h[0] - 1.5 * h[1] + 0.1)
        e += 0.5 * (y - t) ** 2
    assert error(case) == pytest.approx(e, rel=1e-14)


def test_relu_at_its_kink_is_not_differentiable() -> None:
    case = hessverify.load_case("cases/relu-3-5-2.toml")
    # pattern 0 all zeros and b1[2] = 0: unit 2 of layer 1 has net input exactly 0
    theta = case.params.copy()
    theta[case.architecture.param_index("b1[2]")] = 0.0
    x = case.inputs.copy()
    x[0] = 0.0
    at_kink = replace(case, params=theta, inputs=x)
    with pytest.raises(NotDifferentiableError, match="relu unit 2 of layer 1.*pattern 0"):
        ensure_well_posed(at_kink)


def test_overflow_is_reported_not_returned() -> None:
    case = hessverify.load_case("cases/single-neuron-tanh.toml")
    with pytest.raises(OverflowReport, match="NaN or inf"):
        ensure_well_posed(case.with_params(np.array([np.nan, 0.0])))
    huge = replace(case, params=np.array([1e300, 0.0]), inputs=case.inputs * 1e10)
    with pytest.raises(OverflowReport, match="layer 1"):
        ensure_well_posed(huge)


def test_relu_within_rounding_of_its_kink_is_not_differentiable() -> None:
    """silu(-49.7) is about -1e-20, but (1 + tanh(a/2)) a / 2 gives exactly 0: the relu above it
    sees a net input of 1e-21 from one implementation and 0 from another. float64 cannot tell
    the side, so the point is reported, not compared (found by the 10 000-problem run)."""
    from hessverify.model.network import Architecture, Layer

    arch = Architecture(1, (Layer(1, "silu", bias=False), Layer(1, "relu", bias=False)))
    case = hessverify.Problem(arch, "output", np.array([1.0, 0.1]), np.array([[-49.7]]), np.array([[0.0]]))
    with pytest.raises(NotDifferentiableError, match="within its rounding error"):
        ensure_well_posed(case)
    safe = case.with_params(np.array([0.01, 0.1]))  # net input -0.05 * sigma(-0.497): far from 0
    ensure_well_posed(safe)


def test_batched_gradients_of_one_pattern_with_a_skip_connection_are_bitwise_too() -> None:
    """One pattern, a layer reading the input beside another layer's output: the batched input is a concatenation of
    a broadcast array and a computed one, which must not change the products' kernel (found in review: 1 ulp)."""
    from hessverify.io.cases import seeded_data, seeded_params
    from hessverify.model.network import Architecture, Layer

    arch = Architecture(3, (Layer(1, "tanh", bias=False), Layer(1, "tanh", bias=False, sources=(0, 1))))
    for seed in range(20):
        x, t = seeded_data(arch, "sse", seed, 1)
        problem = hessverify.Problem(arch, "sse", seeded_params(arch, seed, 0.7), x, t)
        thetas = problem.params + 0.1 * np.random.default_rng(seed).standard_normal((4, arch.n_params))
        assert np.array_equal(gradients(problem, thetas), np.stack([gradient(problem, th) for th in thetas]))
    assert gradients(problem, thetas.astype(np.float32)).dtype == np.float64  # as gradient() gives
