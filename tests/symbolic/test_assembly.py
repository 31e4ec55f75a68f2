"""Exact sums over patterns on float64 BLAS: equal to Fraction arithmetic, or within the stated bound."""

from __future__ import annotations

import decimal
from fractions import Fraction

import numpy as np
import pytest

from hessverify.symbolic import assembly


def _decimals(rng: np.random.Generator, shape: tuple[int, int], spread: int, digits: int = 50) -> np.ndarray:
    """Decimals of ``digits`` digits whose magnitudes span ``10^-spread`` to 10, zeros and signs mixed."""
    out = np.empty(shape, dtype=object)
    with decimal.localcontext(decimal.Context(prec=digits)):
        for idx in np.ndindex(shape):
            v = decimal.Decimal(float(rng.standard_normal())) / 3
            out[idx] = v.scaleb(-int(rng.integers(0, spread + 1))) if rng.random() > 0.1 else decimal.Decimal(0)
    return out


def _exact_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([[sum((Fraction(a[n, r]) * Fraction(b[n, c]) for n in range(a.shape[0])), Fraction(0))
                      for c in range(b.shape[1])] for r in range(a.shape[1])], dtype=object)


def _gap(total: assembly.Sum, exact: np.ndarray) -> np.ndarray:
    """``|exact - (hi + lo)|`` entrywise, exactly."""
    return np.array([abs(e - Fraction(h) - Fraction(lo)) for e, h, lo in
                     zip(exact.ravel(), total.hi.ravel(), total.lo.ravel(), strict=True)], dtype=object).reshape(exact.shape)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spread", [0, 40])
def test_a_cut_product_is_within_its_bound(seed: int, spread: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    a, b = _decimals(rng, (n, 5), spread), _decimals(rng, (n, 4), spread)
    total = assembly.product(assembly.columns(a, 176), assembly.columns(b, 176), 176)
    gap = _gap(total, _exact_product(a, b))
    assert all(g <= Fraction(e) for g, e in zip(gap.ravel(), total.error.ravel(), strict=True))
    # and the bound is not vacuous: some 1e-30 of N times the columns' largest values
    amax = np.abs(a.astype(float)).max(axis=0)
    bmax = np.abs(b.astype(float)).max(axis=0)
    assert np.all(total.error <= 1e-28 * n * np.outer(amax, bmax) + 1e-300)


def test_outer_and_times_carry_their_errors() -> None:
    rng = np.random.default_rng(11)
    a, z, w = _decimals(rng, (6, 3), 5), _decimals(rng, (6, 2), 5), _decimals(rng, (6, 2), 5)
    zz = assembly.outer(assembly.columns(z, 100), assembly.columns(w, 100))
    total = assembly.product(assembly.columns(a, 100), zz, 100)
    exact = np.array([[sum((Fraction(a[n, r]) * Fraction(z[n, c // 2]) * Fraction(w[n, c % 2]) for n in range(6)),
                           Fraction(0)) for c in range(4)] for r in range(3)], dtype=object)
    gap = _gap(total, exact)
    assert all(g <= Fraction(e) for g, e in zip(gap.ravel(), total.error.ravel(), strict=True))


def test_dyadic_values_are_summed_exactly() -> None:
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((9, 4)) * np.exp2(rng.integers(-60, 60, (9, 4)))).astype(object)
    b = rng.standard_normal((9, 3)).astype(object)
    total = assembly.product(assembly.columns(a, None), assembly.columns(b, None), None, keep=True)
    ints, exponent = total.exact()
    got = np.array([Fraction(int(i)) * Fraction(2) ** int(e) for i, e in zip(ints.ravel(), exponent.ravel(), strict=True)],
                   dtype=object).reshape(4, 3)
    assert (got == _exact_product(a, b)).all()


def test_non_dyadic_values_cannot_be_kept_exactly() -> None:
    with pytest.raises(ValueError, match="dyadic"):
        assembly.columns(np.array([[Fraction(1, 3)]], dtype=object), None)


def test_many_patterns_shorten_the_limbs() -> None:
    # every partial sum of limb products stays below 2^53: more patterns, shorter limbs
    short, long_ = assembly._limb_layout(10_000, 176), assembly._limb_layout(10, 176)
    assert short[0] < long_[0]
    for n, (L, nl) in ((10_000, short), (10, long_)):
        assert n * nl * 2 ** (2 * L) < 2**53 and nl * L >= 176
