"""Property: every Hessian a method or reference returns is symmetric, within rounding.

Mixed partials commute (Schwarz), so ``H - H^T`` is rounding only: both
``H_ij`` and ``H_ji`` are within ``gamma_k M_ij`` of the same true value
(``M`` is symmetric), so they differ by at most the two-method rounding
bound :func:`hessverify.engine.bounds.rounding_bound`.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from props_util import assert_property, matrix_methods, note_problem, quiet_autograd

from hessverify import METHODS, Problem
from hessverify.checking.strategies import problems
from hessverify.engine.bounds import rounding_bound
from hessverify.engine.compare import compare


@given(problems())
def test_hessians_are_symmetric(problem: Problem) -> None:
    note_problem(problem)
    bound = rounding_bound(problem, methods=2)
    # fd returns (D + D^T) / 2, symmetric by construction: holding it to symmetry tests nothing
    names = [name for name in matrix_methods() if METHODS[name].with_error is None]
    assert names, "no method returns a full Hessian"
    for name in names:
        with quiet_autograd():
            H = np.asarray(METHODS[name].fn(problem), dtype=np.float64)
        c = compare(problem, name, "its transpose", H, H.T, bound, "rounding")
        assert_property(f"symmetry of {name}", problem, c)
