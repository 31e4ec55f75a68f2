"""Sums over patterns of products, in exact integer arithmetic on float64 BLAS.

The block formula of the Hessian (:mod:`hessverify.symbolic.reference`) is,
for each pair of layers, two products of the form

.. math::

   C_{rc} = \\sum_n A_{nr} B_{nc},

``A`` and ``B`` holding per-pattern values (``K`` and ``z z'``; ``delta' z``
and ``f' B``) in high precision: ``2 N W^2`` multiplications in all, most of
the work of the high-precision reference.  Done one number at a time in
Python they cost about a microsecond each; here they are matrix products of
float64 *limbs* (the splitting scheme of Ozaki, Ogita, Oishi and Rump,
"Error-free transformations of matrix multiplication by using fast routines
of matrix multiplication and its applications", Numer. Algorithms 59, 2012):

1. each column of ``A`` (and of ``B``) becomes integers at one power-of-two
   scale, ``A_{nr} ~ V_{nr} 2^{-k_r}`` with ``|V| < 2^{nl L}``: the largest
   value of the column keeps ``nl L`` bits, at least ``bits`` (the values'
   own precision and a guard);
2. each integer is cut into ``nl`` limbs of ``L`` bits,
   ``V = sum_s V_s 2^{(nl-1-s) L}``, held exactly in float64;
3. the products of limbs ``A_s^T B_t`` are float64 matrix products whose
   every partial sum is an integer below ``2^53``
   (``L`` is chosen so that ``nl N 2^{2L} < 2^53``): exact, in any order, on
   any BLAS;
4. the products of one significance ``s + t = l`` are summed in one matrix
   product of stacked limbs, and the levels ``l = 0, 1, ...`` are added in
   double-double arithmetic (Ogita, Rump and Oishi, "Accurate sum and dot
   product", SIAM J. Sci. Comput. 26, 2005, Algorithm 4.4, *Sum2*).

Levels past ``nl - 1`` are left out, as are the bits cut in step 1; with
``a_r = 2^{nl L - k_r}`` (at least the column's largest value), ``e_r``
the column's error from the cut, and ``b_c``, ``e_c`` the same for ``B``,
:attr:`Sum.error` bounds ``|C_{rc} - (hi + lo)|`` by

``N ((eps a_r + e_r) b_c + (a_r + e_r) e_c)`` with
``eps = 2 nl 2^(-nl L) + 4.04 (T+2)^2 2^-106 + 4.04 (T+2) 2^(-53-3L)``:

the terms of ``eps`` the levels left out, the double-double sum of the
``T + 1`` levels (Sum2's ``gamma^2`` with the levels' sum at most
``4 N a_r b_c``) and the least significant levels, summed in plain float64
before the head meets them.  With ``exact`` nothing is cut: every bit of
every (dyadic) value is kept, every level is summed, ``eps`` keeps only
its double-double terms, and
:meth:`Sum.exact` gives the sum as Python integers.
"""

from __future__ import annotations

import contextlib
import decimal
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from hessverify.base.typing import FloatArray

__all__ = ["Columns", "Sum", "add", "columns", "outer", "product", "times"]

_EXACT_BITS = 53  # float64's significand: every partial sum of limb products stays below 2^53
_THREADED_WORK = 2**27  # multiply-adds of one product past which BLAS may use every core
_UP = 1.0 + 2.0**-40  # a bound computed in float64 is itself rounded: widened by far more than that


def _top_bits(ints: np.ndarray) -> np.ndarray:
    """Per column, the bit length of the largest ``|int|`` (or one more: an upper bound is all that is needed)."""
    if ints.size == 0:
        return np.zeros(ints.shape[1], dtype=np.int64)
    try:  # float conversion in C: exact exponent, or the next power of two when it rounds up
        floats = ints.astype(np.float64)
    except OverflowError:  # past 2^1024: bit by bit
        floats = None
    if floats is None or not np.all(np.isfinite(floats)):
        bits = np.frompyfunc(lambda v: abs(v).bit_length(), 1, 1)(ints).astype(np.int64)
        return bits.max(axis=0)
    top = np.frexp(np.abs(floats).max(axis=0))[1].astype(np.int64)
    return np.where(np.abs(floats).max(axis=0) > 0, top, 0)


@dataclass
class Columns:
    """An ``(N, C)`` matrix of numbers as integers at one power-of-two scale per column.

    The number ``value[n, c]`` is ``ints[n, c] * 2^-scale[c]`` within
    ``err[c]``, and at most ``bound[c]`` in absolute value.
    """

    ints: np.ndarray  # object: Python ints
    scale: np.ndarray  # int64, one per column
    err: FloatArray  # one per column: 0 where every value is kept exactly
    bound: FloatArray

    @property
    def shape(self) -> tuple[int, int]:
        return self.ints.shape  # type: ignore[return-value]

    def take(self, idx: np.ndarray) -> Columns:
        """The columns ``idx`` (repeats allowed)."""
        return Columns(self.ints[:, idx], self.scale[idx], self.err[idx], self.bound[idx])


def columns(values: np.ndarray, bits: int | None) -> Columns:
    """``(N, C)`` numbers (``int``, ``float``, ``Fraction``, ``Decimal``: anything with ``as_integer_ratio``) per column.

    With ``bits`` each column is cut (toward zero) to ``bits`` bits below
    its largest value, an error below ``2^(1 - scale)``; with ``None`` the
    values must be dyadic rationals (float64 data, exact sums and products
    of them) and are kept exactly.
    """
    values = np.asarray(values, dtype=object)
    n, c = values.shape
    if values.size == 0:
        return Columns(np.zeros((n, c), dtype=object), np.zeros(c, np.int64), np.zeros(c), np.zeros(c))
    flat = values.ravel().tolist()
    if bits is None:
        ratios = [v.as_integer_ratio() for v in flat]
        if any(q & (q - 1) for _, q in ratios):
            raise ValueError("exact columns need dyadic rationals (denominators powers of two)")
        log_q = np.fromiter((q.bit_length() - 1 for _, q in ratios), np.int64, len(flat)).reshape(n, c)
        scale = log_q.max(axis=0)
        shifts = (scale[None, :] - log_q).ravel().tolist()
        ints = _objects([p << k for (p, _), k in zip(ratios, shifts, strict=True)], (n, c))
        return Columns(ints, scale, np.zeros(c), np.ldexp(1.0, _top_bits(ints) - scale))
    low = np.iinfo(np.int32).min
    top = np.fromiter((_top(v, low) for v in flat), np.int64, len(flat)).reshape(n, c).max(axis=0)
    top = np.where(top == low, 0, top)
    scale = bits - top  # |value| < 2^top: `bits` bits below it
    tens = np.ceil(scale * np.log10(2.0)).astype(np.int64) + 1  # 10^-j <= 2^-k / 10: a Decimal read at 10^-j
    ks = np.broadcast_to(scale, (n, c)).ravel().tolist()
    js = np.broadcast_to(tens, (n, c)).ravel().tolist()
    with decimal.localcontext(_WIDE):
        ints = _objects([_fixed(v, k, j) for v, k, j in zip(flat, ks, js, strict=True)], (n, c))
    return Columns(ints, scale, np.ldexp(2.0, -scale) * _UP, np.ldexp(1.0, top) * _UP)


_WIDE = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
_LOG2_10 = float(np.log2(10.0))


def _top(v: Any, low: int) -> int:
    """An integer ``t`` with ``|v| < 2^t`` (``low`` for zero)."""
    if not v:
        return low
    if type(v) is decimal.Decimal:  # |v| < 10^(adjusted + 1)
        return int((v.adjusted() + 1) * _LOG2_10) + 2
    p, q = v.as_integer_ratio()
    return p.bit_length() - q.bit_length() + 1


def _fixed(v: Any, k: int, j: int) -> int:
    """``v 2^k`` toward zero, within 2 (a Decimal is first cut to ``10^-j``, which is below ``2^-k / 10``)."""
    if type(v) is decimal.Decimal:
        p, q = int(v.scaleb(j)), 1  # exact scaling, then cut toward zero: an error below 10^-j
        return _scaled(p, 10**j, k) if j >= 0 else _scaled(p * 10**-j, q, k)
    p, q = v.as_integer_ratio()
    return _scaled(p, q, k)


def _objects(items: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(shape)


def _scaled(p: int, q: int, k: int) -> int:
    """``p / q * 2^k`` rounded toward zero."""
    num, den = (abs(p) << k, q) if k >= 0 else (abs(p), q << -k)
    v = num // den
    return -v if p < 0 else v


def times(a: Columns, b: Columns) -> Columns:
    """``a[n, c] * b[n, c]`` entrywise, the products exact.

    The error of a product of two inexact values:
    ``|a b - a' b'| <= |a| e_b + e_a |b| + e_a e_b``.
    """
    err = (a.bound * b.err + a.err * b.bound + a.err * b.err) * _UP
    return Columns(a.ints * b.ints, a.scale + b.scale, err, a.bound * b.bound * _UP)


def outer(a: Columns, b: Columns) -> Columns:
    """``a[n, i] * b[n, j]`` for every ``(i, j)``, row-major: ``(N, Ca * Cb)``, the products exact."""
    i, j = np.divmod(np.arange(a.shape[1] * b.shape[1]), b.shape[1])
    return times(a.take(i), b.take(j))


@dataclass
class Sum:
    """``C = A^T B`` as a double-double ``hi + lo``, with ``error`` a bound on ``|C - (hi + lo)|``.

    ``levels``, kept only when asked for, are the exact level sums; with
    ``shift`` they give the sum computed as Python integers (:meth:`exact`).
    """

    hi: FloatArray
    lo: FloatArray
    error: FloatArray
    limb_bits: int
    levels: list[FloatArray] = field(default_factory=list)
    shift: np.ndarray | None = None

    def exact(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ints, exponent)``: the sum of the levels is ``ints * 2^exponent`` entrywise, exactly."""
        if not self.levels or self.shift is None:
            raise ValueError("the levels were not kept: product(..., keep=True)")
        L = self.limb_bits
        acc = np.zeros(self.levels[0].shape, dtype=object)
        for level in self.levels:
            acc = (acc << L) + level.astype(np.int64).astype(object)
        return acc, self.shift - L * (len(self.levels) - 1)


def _limb_layout(n: int, bits: int) -> tuple[int, int]:
    """``(L, nl)``: ``nl`` limbs of ``L`` bits covering ``bits``, with ``nl N 2^(2L) < 2^53``."""
    for L in range(26, 0, -1):
        nl = -(-bits // L)
        if 2 * L + max(n * nl, 1).bit_length() <= _EXACT_BITS:
            return L, nl
    raise ValueError(f"too many patterns for an exact float64 sum: {n}")


def _limbs(cols: Columns, nl: int, L: int) -> tuple[list[FloatArray], np.ndarray, FloatArray]:
    """The columns as ``nl`` float64 limb matrices: ``value ~ sum_s limb_s 2^((nl-1-s) L) 2^-scale``.

    Each column is shifted so that its largest integer has at most
    ``nl L`` bits; where that drops bits (cut toward zero), the error per
    value grows by ``2^-scale`` (third value: the error per column).  The
    limbs are read from the integers' bytes (``int.to_bytes``), so the only
    work per number in Python is one shift and one conversion.
    """
    n, c = cols.shape
    shift = nl * L - _top_bits(cols.ints)
    width = (nl * L + 7) // 8 + 5  # every limb is read as 5 bytes from its first: room past the top
    lefts = np.broadcast_to(np.maximum(shift, 0), (n, c)).ravel().tolist()
    rights = np.broadcast_to(np.maximum(-shift, 0), (n, c)).ravel().tolist()
    raw = b"".join(((abs(v) << lft) >> rgt).to_bytes(width, "little")
                   for v, lft, rgt in zip(cols.ints.ravel().tolist(), lefts, rights, strict=True))
    data = np.frombuffer(raw, dtype=np.uint8).reshape(n * c, width).astype(np.uint64)
    sign = np.where(np.fromiter((v < 0 for v in cols.ints.ravel().tolist()), bool, n * c), -1.0, 1.0).reshape(n, c)
    mask = np.uint64((1 << L) - 1)
    limbs = []
    for s in range(nl):
        bit = (nl - 1 - s) * L
        first, offset = divmod(bit, 8)
        word = np.zeros(n * c, dtype=np.uint64)
        for k in range(5):  # L + offset <= 26 + 7 bits: five bytes
            word |= data[:, first + k] << np.uint64(8 * k)
        limb = ((word >> np.uint64(offset)) & mask).astype(np.float64).reshape(n, c)
        limbs.append(limb * sign)
    scale = cols.scale + shift
    err = cols.err + np.where(shift < 0, np.ldexp(1.0, -scale), 0.0)
    return limbs, scale, err


def _two_sum(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Knuth's TwoSum: ``s + e = a + b`` exactly, with ``s = fl(a + b)``."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def product(a: Columns, b: Columns, bits: int | None, *, keep: bool = False) -> Sum:
    """``sum_n a[n, r] b[n, c]`` for every ``(r, c)``: see the module text.

    ``bits`` (``None``: exact, every level) is the precision kept of each
    column; ``keep`` keeps the exact level sums (:meth:`Sum.exact`).
    """
    n, R = a.shape
    C = b.shape[1]
    exact = bits is None
    if exact:
        bits = int(max(_top_bits(a.ints).max(initial=1), _top_bits(b.ints).max(initial=1)))
    L, nl = _limb_layout(n, bits)
    A, ka, ea = _limbs(a, nl, L)
    B, kb, eb = _limbs(b, nl, L)
    last = 2 * nl - 2 if exact else nl - 1
    levels = []
    hi = lo = np.zeros((R, C))
    # BLAS threads only pay on large products: on small ones, and on a busy machine, they wait on each other
    threads = threadpool_limits(1) if R * C * n * nl < _THREADED_WORK else contextlib.nullcontext()
    with threads:
        for level in range(last, -1, -1):  # least significant first: the tail is summed before the head meets it
            ss = range(max(0, level - nl + 1), min(level, nl - 1) + 1)
            left = np.concatenate([A[s] for s in ss], axis=0)
            right = np.concatenate([B[level - s] for s in ss], axis=0)
            C_l = left.T @ right  # exact: integers below 2^53
            if keep:
                levels.insert(0, C_l)
            t = C_l * 2.0 ** (-level * L)  # exact: a power of two, far from the underflow
            if level > 2:  # far below the head: rounding each sum here costs 2^-53 of 2^(-3L) of the result
                lo = lo + t
            else:
                hi, e = _two_sum(hi, t)
                lo = lo + e
    hi, lo = _two_sum(hi, lo)
    # Per unit of N amax bmax: the double-double sum of the levels (Ogita, Rump and Oishi 2005, Prop. 4.5:
    # gamma_{n}^2 sum_l |t_l|, and sum_l |t_l| <= sum_l (l + 1) 2^(-l L) N amax bmax <= 4 N amax bmax), the tail
    # summed in plain float64 (gamma_n of 4 N amax bmax 2^(-3L)) and, unless exact, the levels past nl - 1
    # (sum_{l >= nl} nl 2^(-l L) <= 2 nl 2^(-nl L)); then the inputs' own errors.
    terms = last + 2
    per_unit = 4.0 * (1.01 * terms**2 * 2.0**-106 + 1.01 * terms * 2.0 ** (-53 - 3 * L))
    if not exact:
        per_unit += 2.0 * nl * 2.0 ** (-nl * L)
    ta, tb = nl * L - ka, nl * L - kb  # |value| < 2^t
    # C = (hi + lo) 2^((2 nl - 2) L - ka - kb) = (hi + lo) 2^(ta - L) 2^(tb - L): one multiplication by a power of
    # two, exact unless the product lands in the subnormals (an error of 2^-1075 at most)
    xa, xb = ta - L, tb - L
    amax, bmax = np.ldexp(1.0, ta), np.ldexp(1.0, tb)
    with np.errstate(over="ignore", under="ignore"):
        inside = max(np.abs(xa).max(initial=0), np.abs(xb).max(initial=0),
                     np.abs(xa[:, None] + xb[None, :]).max(initial=0)) < 1020
        factor = (np.outer(np.ldexp(1.0, xa), np.ldexp(1.0, xb)) if inside
                  else None)  # every factor a normal power of two
        if factor is not None:
            hi, lo = hi * factor, lo * factor
        else:
            shift = xa[:, None] + xb[None, :]
            hi, lo = np.ldexp(hi, shift), np.ldexp(lo, shift)
        error = np.outer(n * (per_unit * amax + (0.0 if exact else ea)) * _UP, bmax)
        if not exact:  # (amax + ea) (x) eb: the inputs' errors on b's side
            error += np.outer((amax + ea) * n * _UP, eb)
        error += 2.0**-1073  # a product or ldexp into the subnormals rounds, by 2^-1075 at most each
    return Sum(hi, lo, error, L, levels, xa[:, None] + xb[None, :] if keep else None)


def add(x: tuple[FloatArray, FloatArray, FloatArray], y: tuple[FloatArray, FloatArray, FloatArray]
        ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Two double-doubles ``(hi, lo, error)`` added, the bound of each plus that of the addition."""
    hi, e = _two_sum(x[0], y[0])
    hi, lo = _two_sum(hi, x[1] + y[1] + e)
    return hi, lo, (x[2] + y[2] + 8.0 * 2.0**-106 * (np.abs(x[0]) + np.abs(y[0]) + np.abs(x[1]) + np.abs(y[1]))) * _UP
