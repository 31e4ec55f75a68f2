"""``fisher``: s sum_n grad e_n grad e_n^T against per-pattern autograd gradients, and its scaling."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

import hessverify
from hessverify.engine.bounds import chain_length, gamma, magnitude_gradient
from hessverify.methods import fisher
from hessverify.references import curvature_ref

from .conftest import assert_within, fisher_bound, load, psd_floor


def test_against_per_pattern_autograd_gradients(case: hessverify.Problem) -> None:
    assert_within("fisher vs autograd", case, fisher.hessian(case), curvature_ref.fisher(case), fisher_bound(case))


def test_mean_is_the_sum_divided_by_n() -> None:
    # the documented scaling: F = s sum_n grad e_n grad e_n^T with s = 1/N for mean (not 1/N^2)
    case = load("tanh-6-12-8-2")
    assert case.reduction == "mean"
    as_sum = replace(case, reduction="sum")
    assert_within("fisher(mean) vs fisher(sum) / N", case, fisher.hessian(case),
                  fisher.hessian(as_sum) / case.n_patterns, fisher_bound(case))


def test_per_pattern_gradients_sum_to_the_gradient(case: hessverify.Problem) -> None:
    from hessverify.model.forward import gradient

    rows = fisher.per_pattern_gradients(case)
    g = gradient(case)
    # the same products summed in two orders: each sum within gamma_N sum |terms| (Higham eq. 3.5); through a
    # graph (layer kinds) the two are computed by different passes, each within gamma_k M of the truth
    bound = 2 * gamma(case.n_patterns + 1) * np.abs(rows).sum(axis=0) + np.finfo(float).tiny
    if not case.architecture.is_dense:
        bound = bound + 2 * gamma(chain_length(case)) * magnitude_gradient(case)
    assert_within("sum of per-pattern gradients", case, rows.sum(axis=0), g, bound)


def test_psd(case: hessverify.Problem) -> None:
    F = fisher.hessian(case)
    assert float(np.linalg.eigvalsh(F)[0]) >= -psd_floor(case, F)
