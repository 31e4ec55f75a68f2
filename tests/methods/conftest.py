"""Bounds for the method tests, derived from the float64 rounding model.

Every tolerance used in ``tests/methods`` comes from this table; each row
says why the bound covers the comparison (see :mod:`hessverify.engine.bounds` for
``M``, the magnitudes of the terms of every Hessian entry, and ``gamma_k``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import hessverify
from hessverify.base.typing import FloatArray
from hessverify.engine.bounds import UNIT_ROUNDOFF, chain_length, gamma, magnitude_gradient, magnitude_hessian, rounding_bound
from hessverify.model.problem import Problem

ROOT = Path(__file__).resolve().parents[2]
CASES = {p.stem: p for p in sorted((ROOT / "cases").glob("*.toml"))}

BOUND_REASONS = {
    "exact_vs_exact": "two exact float64 computations of the same entries: each within gamma_k M of the truth, "
                      "so 2 gamma_k M apart (rounding_bound(problem, methods=2))",
    "subset_of_hessian_terms": "the GGN and Becker-LeCun sum a subset of the Hessian's terms, each term no larger "
                               "in magnitude than the Hessian's, so M bounds their term magnitudes too: "
                               "rounding_bound(problem, methods=2) again",
    "matvec": "H v: each exact side within gamma_k M of H entrywise, then a product with v: "
              "2 gamma_k M |v| + gamma_W |H| |v| (Higham eq. 3.5 for the final dot products)",
    "fisher": "s sum_n g_n g_n^T from per-pattern gradients, each within gamma_k G_n of the truth (G_n the "
              "magnitudes of pattern n's gradient terms): 2 (2 gamma_k + gamma_N) s sum_n G_n G_n^T",
    "psd": "Weyl: the smallest eigenvalue moves by at most ||E||_2 <= ||gamma_k M||_F under the rounding E of the "
           "assembly, plus the backward error of eigvalsh, about W u ||G||_2",
}
"""Why each bound below holds."""


def load(name: str) -> Problem:
    return hessverify.load_case(CASES[name])


def exact_bound(problem: Problem) -> FloatArray:
    """``BOUND_REASONS["exact_vs_exact"]``, also ``"subset_of_hessian_terms"``."""
    return rounding_bound(problem, methods=2)


def matvec_bound(problem: Problem, H: FloatArray, v: FloatArray, rounding: FloatArray | None = None) -> FloatArray:
    """``BOUND_REASONS["matvec"]`` (``rounding``: ``rounding_bound(problem, methods=2)``, if already at hand)."""
    av = np.abs(v)
    rounding = rounding_bound(problem, methods=2) if rounding is None else rounding
    return rounding @ av + gamma(problem.n_params) * (np.abs(H) @ av)


def fisher_bound(problem: Problem) -> FloatArray:
    """``BOUND_REASONS["fisher"]``: per-pattern gradient magnitudes from :func:`magnitude_gradient`."""
    # pattern n alone, with the sum reduction: the magnitudes of the terms of grad e_n itself
    G = np.array([magnitude_gradient(replace(problem.subset([n]), reduction="sum"))
                  for n in range(problem.n_patterns)])
    k = chain_length(problem)
    return 2.0 * (2.0 * gamma(k) + gamma(problem.n_patterns)) * problem.scale * (G.T @ G) + np.finfo(float).tiny


def psd_floor(problem: Problem, G: FloatArray) -> float:
    """``BOUND_REASONS["psd"]``: how far below zero a computed PSD matrix's eigenvalues may fall."""
    M = magnitude_hessian(problem)
    return float(gamma(chain_length(problem)) * np.linalg.norm(M) + G.shape[0] * UNIT_ROUNDOFF * np.linalg.norm(G, 2))


def assert_within(name: str, problem: Problem, A: FloatArray, R: FloatArray, bound: FloatArray) -> None:
    """Fail naming the worst entry by parameter name (row, column or index), both values and the bound."""
    A, R, bound = np.asarray(A), np.asarray(R), np.broadcast_to(bound, np.shape(A))
    assert A.shape == R.shape, f"{name}: shapes {A.shape} and {R.shape}"
    diff = np.abs(A - R)
    bad = ~(diff <= bound)
    if bad.any():
        idx = np.unravel_index(int(np.argmax(np.where(bad, diff / bound, -np.inf))), A.shape)
        names = problem.param_names
        where = " x ".join(names[i] for i in idx) if A.ndim <= 2 and A.size and len(idx) else str(idx)
        raise AssertionError(
            f"{problem.id}: {name}: {int(bad.sum())} of {A.size} entries over the bound; worst {where}: "
            f"{A[idx]!r} vs {R[idx]!r}, |error| {diff[idx]:.3g} > bound {bound[idx]:.3g}"
        )


@pytest.fixture(params=sorted(CASES), ids=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Problem:
    return load(request.param)
