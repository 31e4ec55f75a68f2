"""Property: the Hessian of a sum over patterns is the sum of the per-pattern Hessians.

``E = s * sum_n e_n`` (``s = 1`` for ``sum``, ``1/N`` for ``mean``), so
``H = s * sum_n H_n`` with ``H_n`` the Hessian of pattern ``n`` alone under
``sum``.  The bound, derived from the rounding model: ``H`` is within
``gamma_k M`` of the truth, each ``H_n`` within ``gamma_{k_n} M_n`` of its
truth, and adding the ``N`` scaled matrices rounds by at most
``gamma_{N+1} * s * sum_n |H_n|`` (Higham, eq. 3.4).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given
from props_util import assert_property, exact_matrix_methods, note_problem

from hessverify import METHODS, Problem
from hessverify.checking.strategies import problems
from hessverify.engine.bounds import gamma, rounding_bound
from hessverify.engine.compare import compare


@given(problems(min_patterns=2, kinds=False))
def test_hessian_of_a_sum_is_the_sum_of_hessians(problem: Problem) -> None:
    note_problem(problem)
    s, n = problem.scale, problem.n_patterns
    singles = [replace(problem.subset([i]), reduction="sum") for i in range(n)]
    for name in exact_matrix_methods():
        fn = METHODS[name].fn
        H = np.asarray(fn(problem), dtype=np.float64)
        parts = [s * np.asarray(fn(p), dtype=np.float64) for p in singles]
        total = np.sum(parts, axis=0)
        bound = (rounding_bound(problem, methods=1)
                 + s * sum(rounding_bound(p, methods=1) for p in singles)
                 + gamma(n + 1) * np.sum(np.abs(parts), axis=0))
        assert_property(f"pattern sum of {name}", problem,
                        compare(problem, name, "sum over patterns", H, total, bound, "rounding"))
