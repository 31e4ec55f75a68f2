"""``rop`` and ``hessverify.hvp``: H v by the R-operator equals backprop's H times v."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import hessverify
from hessverify.errors import UsageError
from hessverify.methods import backprop, rop

from .conftest import assert_within, exact_bound, load, matvec_bound


def test_hvp_equals_backprop_times_v(case: hessverify.Problem) -> None:
    H = backprop.hessian(case)
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))  # reproducible per case
    for _ in range(3):
        v = rng.standard_normal(case.n_params)
        assert_within("hvp vs backprop @ v", case, hessverify.hvp(case, v), H @ v, matvec_bound(case, H, v))


def test_full_matrix_from_products_equals_backprop(case: hessverify.Problem) -> None:
    assert_within("rop vs backprop", case, rop.hessian(case), backprop.hessian(case), exact_bound(case))


def test_chunks_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    case = load("tanh-6-12-8-2")
    whole = rop.hessian(case)
    # force chunks of 7 directions (206 = 29 * 7 + 3: a ragged last chunk)
    monkeypatch.setattr(rop, "CHUNK_FLOATS", 7 * case.n_patterns * 12)
    assert rop.chunk_size(case) == 7
    assert_within("rop in chunks of 7", case, rop.hessian(case), whole, exact_bound(case))


def test_a_chunk_of_a_deep_network_keeps_its_r_quantities_within_the_budget() -> None:
    """rop keeps ``R a_l`` and ``R z_l`` of every layer for a chunk: the chunk shrinks with the depth."""
    from hessverify.model.network import Architecture, Layer
    from hessverify.model.problem import Problem

    arch = Architecture(1, tuple(Layer(1, "tanh", bias=False) for _ in range(10_000)))
    deep = Problem(arch, "sse", np.ones(10_000), np.ones((4, 1)), np.zeros((4, 1)))
    P = rop.chunk_size(deep)
    assert P * 4 * 2 * 10_000 <= rop.STORED_FLOATS < (P + 1) * 4 * 2 * 10_000
    assert rop.chunk_size(load("tanh-6-12-8-2")) == load("tanh-6-12-8-2").n_params  # shallow: one chunk


def test_hvp_is_linear_in_v() -> None:
    case = load("softmax-4-5-3-cross-entropy")
    H = backprop.hessian(case)
    e = np.zeros(case.n_params)
    e[5] = 2.0
    assert_within("hvp(2 e_5) vs 2 H[:, 5]", case, hessverify.hvp(case, e), H @ e, matvec_bound(case, H, e))


def test_wrong_length_names_both_lengths() -> None:
    case = load("xor-2-2-1-sigmoid")
    with pytest.raises(UsageError, match=r"shape \(4,\).*9 parameters"):
        hessverify.hvp(case, np.ones(4))


def test_matrix_direction_is_refused() -> None:
    case = load("xor-2-2-1-sigmoid")
    with pytest.raises(UsageError, match="length 9"):
        hessverify.hvp(case, np.ones((9, 1)))


def test_non_finite_direction_is_refused() -> None:
    case = load("xor-2-2-1-sigmoid")
    v = np.ones(9)
    v[3] = np.nan
    with pytest.raises(UsageError, match="NaN or inf"):
        hessverify.hvp(case, v)
