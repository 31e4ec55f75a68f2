"""``becker_lecun``: the vectorised recursion against a literal evaluation of its formula."""

from __future__ import annotations

import numpy as np
import pytest

import hessverify
from hessverify.methods import backprop, becker_lecun, gauss_newton
from hessverify.references import curvature_ref

from .conftest import assert_within, exact_bound, load


@pytest.mark.parametrize("with_f2", [True, False], ids=["with-f2", "without-f2"])
def test_against_literal_formula(case: hessverify.Problem, with_f2: bool) -> None:
    if not case.architecture.is_dense:
        pytest.skip("the literal loops write dense networks; layer kinds go through the graph's diag_back")
    assert_within(f"becker_lecun(with_f2={with_f2}) vs loops", case,
                  becker_lecun.diagonal(case, with_f2=with_f2), curvature_ref.becker_lecun(case, with_f2=with_f2),
                  np.diag(exact_bound(case)))


def test_exact_on_a_chain_of_single_units() -> None:
    # one unit per layer: every Q_l is 1 x 1, so nothing off the diagonal is dropped
    case = load("deep-chain-tanh-1-1-1-1-1")
    B = np.diag(exact_bound(case))
    assert_within("BL vs exact diagonal", case, becker_lecun.diagonal(case), np.diag(backprop.hessian(case)), B)
    assert_within("BL without f'' vs GGN diagonal", case, becker_lecun.diagonal(case, with_f2=False),
                  np.diag(gauss_newton.hessian(case)), B)


def test_is_an_approximation_on_wider_networks() -> None:
    # with several units per layer the dropped cross terms matter: the diagonal is not exact
    case = load("tanh-6-12-8-2")
    diff = np.abs(becker_lecun.diagonal(case) - np.diag(backprop.hessian(case)))
    assert np.max(diff / np.diag(exact_bound(case))) > 1e6
