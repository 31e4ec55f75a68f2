"""The false-alarm study: its special-value problems, and a small run of it with no alarm."""

from __future__ import annotations

import io

import numpy as np

from hessverify.apps.trust.false_alarms import SPECIAL_VALUES, run, special_problem


def test_special_problems_are_made_of_special_values() -> None:
    rng = np.random.default_rng(3)
    drawn = [special_problem(rng, i) for i in range(300)]
    params = np.concatenate([p.params for p in drawn])
    inputs = np.concatenate([p.inputs.ravel() for p in drawn])
    assert np.mean(params == 0.0) > 0.1 and np.mean(inputs == 0.0) > 0.05
    assert np.mean(np.isin(params, SPECIAL_VALUES)) > 0.5
    # whole zero layers, one pattern with the mean, repeated patterns, targets of exactly 0
    assert any(np.all(w == 0) for p in drawn for w in p.weights)
    assert any(p.n_patterns == 1 and p.reduction == "mean" for p in drawn)
    assert any(p.n_patterns > 1 and np.all(p.inputs == p.inputs[0]) for p in drawn)
    assert any(p.loss == "sse" and np.any(p.targets == 0.0) for p in drawn)


def test_the_special_share_is_honoured_with_no_alarm() -> None:
    out = io.StringIO()
    summary = run(40, seed=5, use_torch=False, out=out, special_share=0.5)
    assert summary["drawn_special"] + summary["drawn_log_uniform"] == 40 and summary["drawn_special"] >= 10
    assert summary["drawn_graphs"] >= 10  # feed-forward graphs with skip connections, half by default
    assert summary["failures"] == 0, out.getvalue()
    assert "complex_step" in summary["per_method"]
    assert run(5, seed=5, use_torch=False, out=io.StringIO(), special_share=0.0)["drawn_special"] == 0
    assert run(5, seed=5, use_torch=False, out=io.StringIO(), special_share=1.0)["drawn_log_uniform"] == 0


def test_the_saturated_share_draws_saturated_outputs_with_no_alarm() -> None:
    from hessverify.apps.trust.false_alarms import problem_at
    from hessverify.model.forward import forward

    out = io.StringIO()
    summary = run(16, seed=5, use_torch=False, out=out, special_share=0.0, saturated_share=1.0)
    assert summary["drawn_saturated"] == 16 and summary["failures"] == 0, out.getvalue()
    saturated = 0
    for i in range(16):
        p, draw = problem_at(5, i, 0.0, 0.5, 1.0)
        assert draw == "saturated"
        saturated += bool(np.max(np.abs(forward(p, derivatives=False).a[p.architecture.output_layer])) >= 16.0)
    assert saturated >= 8
