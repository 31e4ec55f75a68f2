"""The framework-free parts of the module references: fd's steps and its measured rounding noise."""

from __future__ import annotations

import numpy as np

from hessverify.checking.module_refs import exact_step, fd_hvp, fd_of_gradient, gradient_noise, probe_vector

U = 2.0 ** -53


def _cancelling(big: float):
    """The gradient of E = theta.theta / 2 computed as (a theta + theta) - a theta, a = big / 3: exact value theta,
    rounding noise of a theta's size (u big |theta| / 3), far above u |theta|."""
    a = big / 3
    return lambda th: (a * np.asarray(th) + np.asarray(th)) - a * np.asarray(th)


def test_the_noise_of_a_cancelling_gradient_is_measured() -> None:
    theta = np.array([0.3, -0.2, 0.7])
    noise = gradient_noise(_cancelling(1e6), theta)
    assert np.all(noise >= U * 1e6 / 100) and np.all(noise <= 8 * U * 1e6)
    assert np.all(gradient_noise(lambda th: np.asarray(th) * 1.0, theta) == 0.0)  # exact: no noise


def test_fd_covers_a_cancelling_gradients_noise() -> None:
    theta = np.array([0.3, -0.2, 0.7])
    for fd in (lambda g: fd_of_gradient(g, theta), lambda g: fd_hvp(g, theta, np.array([1.0, -1.0, 1.0]))):
        H, err = fd(_cancelling(1e6))
        exact = np.eye(3) if H.ndim == 2 else np.array([1.0, -1.0, 1.0])
        assert np.all(np.abs(H - exact) <= err)
        assert np.max(err) > 1e3 * 64 * U * 1.0 / 1e-5  # the measured noise joined the estimate (|g|'s term: 7e-10)
        assert np.max(err) < 1e-3  # and not vacuous


def test_steps_are_powers_of_two_and_exact_on_few_bit_probes() -> None:
    rng = np.random.default_rng(1)
    theta = rng.standard_normal(50) * 3
    s, worst = exact_step(theta, rng.choice([-1.0, 1.0], 50), 6e-6)
    assert s == 2.0 ** np.floor(np.log2(s)) and s <= 6e-6 and worst == 0.0
    z = rng.standard_normal(50)
    s, worst = exact_step(theta, probe_vector(z), 6e-6)
    assert worst == 0.0 and np.max(np.abs(probe_vector(z) - z)) <= 2.0 ** -7 * np.max(np.abs(z))
    _, worst = exact_step(theta * 1e6, z, 6e-6)  # full-mantissa steps on large parameters round: said
    assert worst > 0.0


def test_one_large_parameter_does_not_widen_the_others_noise() -> None:
    # the steps are per parameter: a step scaled by the largest |theta| measured the others' truncation
    theta = np.array([0.3, -0.2, 1e5])
    grad = lambda th: np.array([np.sin(th[0]) * 3, np.tanh(th[1]) * 2, 1e-12 * th[2]])  # noqa: E731
    noise = gradient_noise(grad, theta)
    assert np.all(noise[:2] <= 64 * U * 3)


def test_a_probe_has_no_zero_entry() -> None:
    z = np.random.default_rng(2).standard_normal(100_000)
    v = probe_vector(z)
    assert np.all(v != 0.0) and np.all(np.sign(v) == np.sign(z))
