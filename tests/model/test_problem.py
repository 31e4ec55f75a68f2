"""The problem object: views and the case-file round trip."""

from __future__ import annotations

import numpy as np

import hessverify
from hessverify.io.cases import parse_case


def test_to_toml_round_trips_bit_for_bit(shipped_case: hessverify.Problem) -> None:
    again = parse_case(shipped_case.to_toml(), source="roundtrip")
    assert again.id == shipped_case.id
    assert again.architecture == shipped_case.architecture
    assert (again.loss, again.reduction) == (shipped_case.loss, shipped_case.reduction)
    np.testing.assert_array_equal(again.params, shipped_case.params)
    np.testing.assert_array_equal(again.inputs, shipped_case.inputs)
    np.testing.assert_array_equal(again.targets, shipped_case.targets)


def test_views_match_the_layout() -> None:
    case = hessverify.load_case("cases/nobias-2-3-2-tanh-sigmoid.toml")
    assert [w.shape for w in case.weights] == [(3, 2), (2, 3)]
    assert case.biases[0] is None and case.biases[1].shape == (2,)
    assert case.activations == ["tanh", "sigmoid"]
    assert case.scale == 1 / case.n_patterns  # mean reduction
    assert "nobias" in repr(case)


def test_subset_keeps_the_reduction() -> None:
    case = hessverify.load_case("cases/mean-2-4-1-softplus.toml")
    part = case.subset(slice(0, 3))
    assert part.n_patterns == 3 and part.reduction == "mean"
