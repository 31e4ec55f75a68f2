"""Extremes: saturated units, weights up to 50, inputs up to 1e3, weights down to 1e-8.

Nothing may come back as a silent NaN or inf, and no correct method may be
reported as disagreeing with a reference: either every comparison passes,
or the point is reported as overflow or as not differentiable.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, note, settings
from hypothesis import strategies as st

import hessverify
from hessverify.errors import NotDifferentiableError, OverflowReport
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.losses import LOSSES
from hessverify.model.network import Architecture, Layer


@st.composite
def extreme_problems(draw: st.DrawFn) -> hessverify.Problem:
    n_in = draw(st.integers(1, 3))
    layers = tuple(
        Layer(draw(st.integers(1, 3)), draw(st.sampled_from(sorted(ACTIVATIONS))), draw(st.booleans()))
        for _ in range(draw(st.integers(1, 3)))
    )
    arch = Architecture(n_in, layers)
    loss = draw(st.sampled_from(sorted(LOSSES)))
    w_exp = draw(st.floats(-8.0, np.log10(50.0)))
    x_exp = draw(st.floats(-3.0, 3.0))
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, 4))
    rng = np.random.default_rng(seed)
    theta = 10.0**w_exp * rng.uniform(-1, 1, arch.n_params)
    x = 10.0**x_exp * rng.uniform(-1, 1, (n, n_in))
    t = rng.random((n, arch.outputs))
    if loss == "cross_entropy":
        t /= t.sum(axis=1, keepdims=True)
    return hessverify.Problem(arch, loss, theta, x, t, draw(st.sampled_from(["sum", "mean"])), id="extreme")


@settings(max_examples=60, deadline=None)
@given(extreme_problems())
def test_no_false_alarm_and_no_silent_nan_at_extremes(problem: hessverify.Problem) -> None:
    note(f"{problem!r}; |w| <= {np.abs(problem.params).max():.2e}, |x| <= {np.abs(problem.inputs).max():.2e}")
    try:
        results = hessverify.verify_problem(problem, references=["autograd", "complex_step"])
    except (OverflowReport, NotDifferentiableError) as exc:
        assert str(exc)  # reported, with a message, never as a discrepancy
        return
    H = hessverify.hessian(problem)
    assert np.all(np.isfinite(H)), "a finite point must give a finite Hessian"
    for r in results:
        note(f"{r.method} vs {r.reference}: margin {r.margin:.3g} at {r.worst_entry.row} x {r.worst_entry.col}; {r.note}")
        assert r.passed, f"false alarm: {r.method} vs {r.reference}"


def test_overflow_is_reported_as_overflow() -> None:
    arch = Architecture(1, (Layer(1, "identity"), Layer(1, "identity")))
    huge = hessverify.Problem(arch, "sse", np.array([1e200, 0.0, 1e200, 0.0]), np.array([[1e10]]), np.array([[0.0]]))
    try:
        hessverify.verify_problem(huge)
    except OverflowReport as exc:
        assert "overflow" in str(exc)
    else:  # pragma: no cover - the assertion below explains
        raise AssertionError("1e200 * 1e200 * 1e10 must overflow and be reported")
