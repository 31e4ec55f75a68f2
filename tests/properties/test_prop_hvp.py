"""Properties of Hessian-vector products, once a ``rop``/``hvp`` method is registered.

The methods issue adds an R-operator (Pearlmutter 1994) method in parallel;
until it is merged these tests skip.  The function is looked up as
``hvp(problem, v)`` on the registry entry or in the module of its ``fn``.

Bounds, from the rounding model: the exact ``(H v)_i = sum_j H_ij v_j`` has
terms of magnitude ``(M |v|)_i``, summed over a chain ``k + W`` long, so a
computed ``H v`` is within ``gamma_{k+W} M |v|`` of the truth.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from props_util import assert_property, note_problem

from hessverify import METHODS, Problem
from hessverify.checking.strategies import problems
from hessverify.engine.bounds import chain_length, gamma, magnitude_hessian
from hessverify.engine.compare import compare
from hessverify.methods import backprop

HVP_NAMES = ("rop", "hvp")


def find_hvp() -> Callable[[Problem, np.ndarray], Any] | None:
    """``hvp(problem, v)`` of the registered R-operator method, if there is one."""
    for name in HVP_NAMES:
        method = METHODS.get(name)
        if method is None:
            continue
        fn = getattr(method, "hvp", None) or getattr(importlib.import_module(method.fn.__module__), "hvp", None)
        if callable(fn):
            return fn
    return None


HVP = find_hvp()
needs_hvp = pytest.mark.skipif(HVP is None, reason="no 'rop'/'hvp' method with hvp(problem, v) registered yet")


@st.composite
def problems_and_vectors(draw: st.DrawFn) -> tuple[Problem, np.ndarray, np.ndarray, float, float]:
    problem = draw(problems())
    vec = st.lists(st.floats(-1.0, 1.0, allow_subnormal=False), min_size=problem.n_params, max_size=problem.n_params)
    coef = st.floats(-2.0, 2.0, allow_subnormal=False)
    return problem, np.array(draw(vec)), np.array(draw(vec)), draw(coef), draw(coef)


def _as_diagonal(a: np.ndarray, r: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectors as diagonal matrices, so compare() names entry i by its parameter ("b1[0] x b1[0]").

    Off the diagonal both sides are 0 and the bound is the smallest normal number, not 0, so
    the ratio there is 0 rather than 0/0.
    """
    B = np.full((a.size, a.size), np.finfo(np.float64).tiny)
    np.fill_diagonal(B, bound)
    return np.diag(a), np.diag(r), B


def _hv_bound(problem: Problem, M: np.ndarray, v: np.ndarray) -> np.ndarray:
    return gamma(chain_length(problem) + problem.n_params) * (M @ np.abs(v)) + np.finfo(np.float64).tiny


@needs_hvp
@given(problems_and_vectors())
def test_hvp_equals_hessian_times_vector(drawn: tuple[Problem, np.ndarray, np.ndarray, float, float]) -> None:
    problem, v, _, _, _ = drawn
    note_problem(problem)
    assert HVP is not None
    H = backprop.hessian(problem)
    M = magnitude_hessian(problem)
    hv = np.asarray(HVP(problem, v), dtype=np.float64)
    # hvp and backprop's H each within gamma_{k+W} M|v| of the truth, plus the product H @ v
    bound = 2 * _hv_bound(problem, M, v) + gamma(problem.n_params) * (np.abs(H) @ np.abs(v))
    c = compare(problem, "hvp", "backprop H @ v", *_as_diagonal(hv, H @ v, bound), "rounding")
    assert_property("hvp equals H @ v", problem, c)


@needs_hvp
@given(problems_and_vectors())
def test_hvp_is_linear(drawn: tuple[Problem, np.ndarray, np.ndarray, float, float]) -> None:
    problem, v, w, a, b = drawn
    note_problem(problem)
    assert HVP is not None
    M = magnitude_hessian(problem)
    u = a * v + b * w
    lhs = np.asarray(HVP(problem, u), dtype=np.float64)
    hv, hw = np.asarray(HVP(problem, v), dtype=np.float64), np.asarray(HVP(problem, w), dtype=np.float64)
    rhs = a * hv + b * hw
    # three hvps, each within gamma_{k+W} M|.| of the truth; forming u and rhs rounds once or twice more
    eps = np.finfo(np.float64).eps
    bound = (_hv_bound(problem, M, u) + abs(a) * _hv_bound(problem, M, v) + abs(b) * _hv_bound(problem, M, w)
             + eps * (M @ np.abs(u)) + 2 * eps * (np.abs(a * hv) + np.abs(b * hw)))
    c = compare(problem, "hvp(a v + b w)", "a hvp(v) + b hvp(w)", *_as_diagonal(lhs, rhs, bound), "rounding")
    assert_property("hvp is linear", problem, c)
