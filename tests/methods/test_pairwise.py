"""``pairwise`` and ``hessverify.hessian_entry``: every entry asked for equals backprop's."""

from __future__ import annotations

import numpy as np
import pytest

import hessverify
from hessverify.errors import UsageError
from hessverify.methods import backprop, pairwise

from .conftest import assert_within, exact_bound, load


def test_assembled_matrix_equals_backprop(case: hessverify.Problem) -> None:
    assert_within("pairwise vs backprop", case, pairwise.hessian(case), backprop.hessian(case), exact_bound(case))


def test_entries_by_index(case: hessverify.Problem) -> None:
    H = backprop.hessian(case)
    B = exact_bound(case)
    rng = np.random.default_rng(7)
    W = case.n_params
    pairs = {(0, 0), (0, W - 1), (W - 1, W - 1)} | {tuple(rng.integers(0, W, 2)) for _ in range(12)}
    for i, j in sorted(pairs):
        got = hessverify.hessian_entry(case, int(i), int(j))
        assert_within(f"hessian_entry({i}, {j})", case, np.array([[got]]), H[[i]][:, [j]], B[[i]][:, [j]])


def test_entries_by_name_cross_layer_and_bias() -> None:
    case = load("tanh-6-12-8-2")
    H = backprop.hessian(case)
    B = exact_bound(case)
    idx = case.architecture.param_index
    for a, b in [("W1[0,1]", "W3[1,7]"), ("W3[1,7]", "W1[0,1]"), ("b1[3]", "W2[4,11]"), ("b1[0]", "b3[1]"),
                 ("W2[2,2]", "W2[2,2]"), ("b2[5]", "b2[6]")]:
        i, j = idx(a), idx(b)
        got = hessverify.hessian_entry(case, a, b)
        assert_within(f"hessian_entry({a}, {b})", case, np.array([[got]]), H[[i]][:, [j]], B[[i]][:, [j]])


def test_entry_without_bias_layers() -> None:
    case = load("nobias-2-3-2-tanh-sigmoid")
    H = backprop.hessian(case)
    for a, b in [("W1[2,1]", "W2[1,2]"), ("W2[0,0]", "W1[1,0]")]:
        i, j = case.architecture.param_index(a), case.architecture.param_index(b)
        assert_within(a + " x " + b, case, np.array([hessverify.hessian_entry(case, a, b)]), H[i, j:j + 1],
                      exact_bound(case)[i, j:j + 1])


@pytest.mark.parametrize(("bad", "message"), [
    ("W9[0,0]", "2 layers"), ("W1[7,0]", "shape"), ("x1[0]", "not a parameter"),
    (10_000, "out of range"), (1.5, "flat index or a name"),
])
def test_bad_parameter_is_a_usage_error(bad: object, message: str) -> None:
    case = load("xor-2-2-1-sigmoid")
    with pytest.raises(UsageError, match=message):
        hessverify.hessian_entry(case, bad, 0)  # type: ignore[arg-type]
