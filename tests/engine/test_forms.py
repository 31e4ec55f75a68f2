"""Result forms as types: the entries each holds, dense views, symmetry, shapes checked."""

from __future__ import annotations

import numpy as np
import pytest

import hessverify
from hessverify.engine.forms import (
    FORMS,
    BlockDiagonalHessian,
    DiagonalHessian,
    FullHessian,
    HessianVectorProduct,
    form_named,
)
from hessverify.engine.registry import METHODS, Method


@pytest.fixture
def case() -> hessverify.Problem:
    return hessverify.load_case("cases/nobias-2-3-2-tanh-sigmoid.toml")


def _H(case: hessverify.Problem) -> np.ndarray:
    return hessverify.hessian(case)


@pytest.mark.parametrize("form", [FullHessian, DiagonalHessian, BlockDiagonalHessian, HessianVectorProduct])
def test_a_form_cut_from_H_holds_H_at_its_places(form: type, case: hessverify.Problem) -> None:
    H = _H(case)
    f = form.of_matrix(H, case.architecture)
    values, rows, cols = f.entries(case.architecture)
    assert np.array_equal(values, H[rows, cols])
    assert np.array_equal(f.known(case.architecture), np.isin(np.arange(H.size), rows * H.shape[0] + cols)
                          .reshape(H.shape))
    dense = f.dense(case.architecture, fill=np.nan)
    assert np.array_equal(dense[f.known(case.architecture)], H[f.known(case.architecture)])


def test_which_entries_each_form_holds(case: hessverify.Problem) -> None:
    arch, W = case.architecture, case.n_params
    H = _H(case)
    assert FullHessian.of_matrix(H, arch).known(arch).all()
    assert np.array_equal(DiagonalHessian.of_matrix(H, arch).known(arch), np.eye(W, dtype=bool))
    blocks = BlockDiagonalHessian.of_matrix(H, arch).known(arch)
    assert blocks.sum() == sum(b.size**2 for b in arch.blocks)
    first = arch.blocks[0]
    assert blocks[first.slice, first.slice].all() and not blocks[first.slice, first.slice.stop:].any()


def test_the_registry_forms_match_what_the_methods_return(case: hessverify.Problem) -> None:
    H = _H(case)
    for name in ("backprop", "diagonal", "block_diagonal"):
        m = METHODS[name]
        result = m.result(case)
        assert isinstance(result, m.form)
        known = result.known(case.architecture)
        assert np.allclose(result.dense(case.architecture)[known], H[known], rtol=1e-12, atol=1e-14)


def test_the_old_kind_strings_are_properties_of_the_form() -> None:
    assert {name: METHODS[name].kind for name in ("backprop", "diagonal", "block_diagonal")} == {
        "backprop": "matrix", "diagonal": "vector", "block_diagonal": "blocks"}
    assert METHODS["diagonal"].form is DiagonalHessian
    legacy = Method("legacy", lambda p: None, "method", "blocks", "a string still builds a method")
    assert legacy.form is BlockDiagonalHessian and legacy.kind == "blocks"
    assert form_named("hvp") is HessianVectorProduct and set(FORMS) == {"matrix", "vector", "blocks", "hvp"}
    with pytest.raises(ValueError, match="unknown result form 'rows'; choose one of matrix, vector, blocks, hvp"):
        form_named("rows")


def test_symmetry_error_over_what_the_form_holds(case: hessverify.Problem) -> None:
    arch = case.architecture
    H = _H(case)
    bent = H.copy()
    bent[0, 1] += 1e-3
    assert FullHessian(bent).symmetry_error() == pytest.approx(1e-3, rel=1e-6)
    assert BlockDiagonalHessian.of_matrix(bent, arch).symmetry_error() == pytest.approx(1e-3, rel=1e-6)
    assert DiagonalHessian.of_matrix(bent, arch).symmetry_error() == 0.0
    assert HessianVectorProduct.of_matrix(bent, arch).symmetry_error() == pytest.approx(1e-3, rel=1e-6)
    off = H.copy()
    off[0, -1] += 1.0  # outside every layer block
    assert BlockDiagonalHessian.of_matrix(off, arch).symmetry_error() <= FullHessian(H).symmetry_error()


def test_products_with_other_directions(case: hessverify.Problem) -> None:
    arch, H = case.architecture, _H(case)
    V = np.random.default_rng(0).standard_normal((3, case.n_params))
    hv = HessianVectorProduct(np.stack([hessverify.hvp(case, v) for v in V]), V)
    ref = HessianVectorProduct.of_matrix(H, arch, V)
    assert np.allclose(hv.entries(arch)[0], ref.entries(arch)[0], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="do not give the Hessian's entries"):
        hv.dense(arch)


@pytest.mark.parametrize(("form", "value", "message"), [
    (FullHessian, np.zeros((3, 3)), r"expected a \(14, 14\) matrix, got \(3, 3\)"),
    (DiagonalHessian, np.zeros(5), r"a diagonal needs 14 entries, got \(5,\)"),
    (BlockDiagonalHessian, [np.zeros((6, 6))], "expected 2 layer blocks, got 1"),
    (BlockDiagonalHessian, [np.zeros((6, 6)), np.zeros((5, 5))], r"layer 2 block should be \(8, 8\), got \(5, 5\)"),
    (HessianVectorProduct, np.zeros((2, 14)), r"expected products of shape \(14, 14\), got \(2, 14\)"),
])
def test_a_wrong_shape_is_named_in_one_line(form: type, value: object, message: str, case: hessverify.Problem) -> None:
    with pytest.raises(ValueError, match=message):
        form(value).dense(case.architecture)
