"""hessverify.error and hessverify.gradient against the independent autograd implementation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import hessverify
from hessverify.checking.strategies import problems
from hessverify.references import autograd_ref
from tests.conftest import CASES_DIR

CASES = sorted(p.stem for p in CASES_DIR.glob("*.toml"))


@pytest.mark.parametrize("name", CASES)
def test_error_and_gradient_match_autograd_on_every_case(name: str) -> None:
    p = hessverify.load_case(CASES_DIR / f"{name}.toml")
    E_ref = float(autograd_ref.error_function(p)(p.params))
    assert hessverify.error(p) == pytest.approx(E_ref, rel=1e-12, abs=1e-300)
    g_ref = autograd_ref.gradient(p)
    scale = max(1.0, float(np.abs(g_ref).max()))
    assert np.max(np.abs(hessverify.gradient(p) - g_ref)) <= 1e-11 * scale


@settings(max_examples=25, deadline=None)
@given(problems(max_layers=3, max_units=4))
def test_gradient_at_other_points_matches_autograd(p: hessverify.Problem) -> None:
    theta = np.linspace(-0.7, 0.9, p.n_params)
    g = hessverify.gradient(p, theta)
    g_ref = autograd_ref.gradient(p.with_params(theta))
    assert np.allclose(g, g_ref, rtol=1e-9, atol=1e-11 * max(1.0, float(np.abs(g_ref).max())))
    assert hessverify.error(p, theta) == pytest.approx(float(autograd_ref.error_function(p)(theta)), rel=1e-11, abs=1e-14)


def test_params_default_to_the_problems_point_and_are_checked() -> None:
    p = hessverify.load_case(CASES_DIR / "xor-2-2-1-sigmoid.toml")
    assert hessverify.error(p, p.params) == hessverify.error(p)
    with pytest.raises(hessverify.UsageError, match="params has 3 numbers but xor-2-2-1-sigmoid has 9"):
        hessverify.gradient(p, [1.0, 2.0, 3.0])
    bad = p.params.copy()
    bad[4] = np.nan
    with pytest.raises(hessverify.UsageError, match=r"b1\[0\] is nan"):
        hessverify.error(p, bad)


def test_public_and_light() -> None:
    assert {"error", "gradient"} <= set(hessverify.__all__)
    assert hessverify.error.__doc__ and hessverify.gradient.__doc__
