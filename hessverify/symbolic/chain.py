r"""The exact Hessian of a straight-line program: local closed forms composed by the chain rule.

A program (:mod:`hessverify.symbolic.arrays`) is a list of definitions
:math:`v_i = \varphi_i(u)`, ``u`` the arguments of line ``i``, ending in the
error ``E``; its leaves are the parameters :math:`\theta` (``W`` of them),
the inputs and the targets.  Each template's first and second derivatives
:math:`\partial\varphi/\partial u_s` and :math:`\partial^2\varphi/\partial
u_s \partial u_t` are closed forms (``sympy.diff`` of the small definition);
the Hessian is composed from them exactly (Griewank and Walther, *Evaluating
Derivatives*, 2nd ed. 2008, sec. 5.4; Gower and Mello, "A new framework for
the computation of Hessians", Optim. Methods Softw. 27, 2012, eq. 3.1):

.. math::

   J_i = \sum_s \frac{\partial \varphi_i}{\partial u_s} J_{u_s},\qquad
   \bar v_{u_s} \mathrel{+}= \bar v_i \frac{\partial \varphi_i}{\partial u_s},\qquad
   \nabla^2 E = \sum_i \bar v_i \sum_{s,t}
        \frac{\partial^2 \varphi_i}{\partial u_s \partial u_t}\, J_{u_s}^T J_{u_t}

with :math:`J_i = \partial v_i/\partial\theta` (a row of ``W``, sparse: a
convolution's entry depends on a few weights; :math:`J_\theta = I`) carried
forward and the adjoints :math:`\bar v_i = \partial E/\partial v_i`
(:math:`\bar E = 1`) carried back: forward over reverse, written out.  Three
passes over the program, each evaluating every line for all patterns at
once (``numpy.frompyfunc`` over object arrays):

1. forward: the values and the local derivatives;
2. reverse: the adjoints;
3. forward: the rows :math:`J_i`, and each line's second-order term, whose
   rows are stacked by their supports and summed as integer matrix products
   (:class:`Accumulator`), exactly.

The numbers are those of a :class:`Numbers`: mpmath at ``digits`` digits,
exact fractions (every template a polynomial with rational coefficients),
or float64 magnitudes (every derivative by its absolute value: the
:math:`|J|`, :math:`|\bar v|` and :math:`M = \sum |\bar v \varphi''| |J_s|^T
|J_t|` of the rounding bound).
"""

from __future__ import annotations

import contextlib
import decimal
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from typing import Any

import mpmath
import numpy as np
import sympy
from sympy.printing.pycode import MpmathPrinter, PythonCodePrinter

from hessverify.errors import NotDifferentiableError, OverflowReport
from hessverify.symbolic.arrays import Node, Template

__all__ = ["MAX_BUFFER", "Accumulator", "Numbers", "Result", "exact_numbers", "hessian_of_program",
           "magnitude_numbers", "mpmath_numbers"]

MAX_BUFFER = 400_000
"""Entries of second-order rows kept before they are summed into the Hessian (memory, not speed)."""


class _FractionPrinter(PythonCodePrinter):
    """Python code in which a rational constant is a :class:`fractions.Fraction`, not a float."""

    def _print_Rational(self, expr: sympy.Rational) -> str:
        return f"Fraction({expr.p}, {expr.q})"

    def _print_Half(self, expr: sympy.Rational) -> str:
        return self._print_Rational(expr)


@dataclass
class Numbers:
    """A number system the program is evaluated in (module text)."""

    name: str
    modules: Any  # for sympy.lambdify
    number: Callable[[Any], Any]  # a float64 or an int, exactly
    dtype: Any = object
    absolute: bool = False  # magnitudes: every derivative by its absolute value
    printer: Any = None
    ints: Callable[[Sequence[np.ndarray]], tuple[Callable[[np.ndarray], np.ndarray], int]] | None = None
    """Exact numbers: ``ints(arrays) -> (to_int, den)``, every number of ``arrays`` is ``to_int(a) / den``; ``None``
    for numbers summed in their own arithmetic (the hook for python-flint's ``arb`` balls: a namespace of
    ``mpf``, ``exp``, ``log``, ``sqrt``, ``tanh``, ``erf``, ``sin``, ``cos``, ``pi`` for the templates and
    ``number = arb``)."""
    context: Callable[[], Any] = contextlib.nullcontext
    """The working precision the evaluation runs in."""

    def compile(self, exprs: Sequence[sympy.Expr], arity: int) -> Callable[..., Any]:
        from hessverify.symbolic.arrays import slot

        slots = [slot(i) for i in range(arity)]
        if self.dtype is not object:  # float64: constants such as sqrt(2^70 + 1) / 2^35 as floats first
            exprs = [e.evalf(30) for e in exprs]
        # cse: the value and the derivatives of tanh(a) share one tanh(a)
        cse = len(exprs) > 1 and any(e.atoms(sympy.Function) for e in exprs)
        if self.printer is not None:
            fn = sympy.lambdify(slots, list(exprs), modules=self.modules, printer=self.printer, cse=cse)
        else:
            fn = sympy.lambdify(slots, list(exprs), modules=self.modules, cse=cse)
        if self.dtype is not object:
            def vector(*args: Any) -> list[Any]:
                with np.errstate(all="ignore"):
                    return [np.broadcast_to(np.asarray(v, dtype=self.dtype), np.shape(args[0]))
                            for v in fn(*args)]
            return vector
        if arity + len(exprs) > 32:  # numpy's ufuncs take at most 64 operands: a loop over the patterns
            def rows(*args: Any) -> list[Any]:
                P = max(len(a) for a in args)
                cols = [a.tolist() if len(a) == P else [a[0]] * P for a in args]
                out = [fn(*row) for row in zip(*cols, strict=True)]
                return [_objects_of([o[k] for o in out]) for k in range(len(exprs))]
            return rows
        ufunc = np.frompyfunc(lambda *a: tuple(fn(*a)), arity, len(exprs)) if len(exprs) > 1 else \
            np.frompyfunc(lambda *a: fn(*a)[0], arity, 1)

        def objects(*args: Any) -> list[Any]:
            out = ufunc(*args)
            return list(out) if len(exprs) > 1 else [out]

        return objects

    def constant(self, expr: sympy.Expr) -> Any:
        """A constant expression (a rational, ``sqrt(2)``) as a number of this system."""
        if self.dtype is not object:  # float64: SymPy's own evaluation, then one rounding
            value = float(sympy.N(expr, 30))
            return abs(value) if self.absolute else value
        return sympy.lambdify([], expr, modules=self.modules, printer=self.printer)()

    def full(self, P: int, value: Any) -> np.ndarray:
        out = np.empty(P, dtype=self.dtype)
        out[:] = value
        return out

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.dtype is object:
            out = np.empty(shape, dtype=object)
            out[...] = self.number(0)
            return out
        return np.zeros(shape, dtype=self.dtype)


def mpmath_numbers(digits: int) -> Numbers:
    """mpmath ``mpf`` at ``digits`` significant digits (pure Python: slower than :func:`decimal_numbers`)."""
    prec = int(digits * 3.33) + 1  # bits: the integer scale's guard
    return Numbers(f"mpmath{digits}", "mpmath", lambda v: mpmath.mpf(v), ints=lambda arrays: _mpf_ints(arrays, prec),
                   context=lambda: mpmath.workdps(digits))


def decimal_numbers(digits: int) -> Numbers:
    """Python's :mod:`decimal` at ``digits`` significant digits: every ``+ - * /``, ``exp``, ``log`` and ``sqrt``
    correctly rounded (the General Decimal Arithmetic specification), in C; ``tanh``, ``erf``, ``sin`` and ``cos``,
    which it lacks, by mpmath ten digits wider, rounded back (within an ulp, like a libm)."""
    context = decimal.Context(prec=digits, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                              traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow])
    return Numbers(f"decimal{digits}", [_decimal_namespace(digits)], decimal.Decimal, printer=_MPMATH_STYLE,
                   ints=lambda arrays: _decimal_ints(arrays, digits), context=lambda: decimal.localcontext(context))


def exact_numbers() -> Numbers:
    """Exact :class:`fractions.Fraction` (polynomial templates with rational coefficients only)."""
    return Numbers("exact", [{"Fraction": Fraction}, "math"], lambda v: Fraction(v), printer=_FRACTION_STYLE,
                   ints=_fraction_ints)


def magnitude_numbers() -> Numbers:
    """float64 with every derivative by its absolute value: the magnitudes of the rounding bound."""
    return Numbers("magnitude", ["scipy", "numpy"], float, dtype=np.float64, absolute=True)


_SETTINGS = {"fully_qualified_modules": False, "inline": True, "allow_unknown_functions": True, "user_functions": {}}
_FRACTION_STYLE = _FractionPrinter(_SETTINGS)
_MPMATH_STYLE = MpmathPrinter(_SETTINGS)  # prints mpf(1)/mpf(3), sqrt, exp, tanh, erf, pi: the decimal names below


@cache
def _decimal_namespace(digits: int) -> dict[str, Any]:
    D = decimal.Decimal

    def via_mpmath(name: str) -> Callable[[Any], decimal.Decimal]:
        fn = getattr(mpmath, name)

        def f(x: Any) -> decimal.Decimal:
            with mpmath.workdps(digits + 10):
                text = mpmath.libmp.to_str(fn(mpmath.mpf(str(x)))._mpf_, digits + 5)
            return +D(text)  # unary plus rounds to the context's precision

        return f

    with mpmath.workdps(digits + 10):
        pi = D(mpmath.libmp.to_str(mpmath.pi._mpf_, digits + 5))
    return {"mpf": D, "exp": lambda x: D(x).exp(), "log": lambda x: D(x).ln(), "sqrt": lambda x: D(x).sqrt(),
            "tanh": via_mpmath("tanh"), "erf": via_mpmath("erf"), "sin": via_mpmath("sin"),
            "cos": via_mpmath("cos"), "pi": pi}


def _objects_of(items: list[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


# -- turning numbers into integers at one scale, exactly --------------------------------------------------

_CAP_BITS = 4096
"""Bits kept below a block's largest value: a value below ``2^-(prec + 64 + 4096)`` of it is rounded."""


def _exponents(values: np.ndarray) -> tuple[int, int]:
    """``(lowest exponent, highest top)`` of the nonzero ``mpf`` in ``values`` (value = man 2^exp, < 2^top)."""
    low, top = None, None
    for v in values.ravel().tolist():
        sign, man, exp, bc = v._mpf_
        if man:
            low = exp if low is None else min(low, exp)
            top = exp + bc if top is None else max(top, exp + bc)
        elif v != 0:
            raise OverflowReport(f"the high-precision evaluation produced {v}")
    return (0, 0) if low is None else (low, top)  # type: ignore[return-value]


def _mpf_ints(arrays: Sequence[np.ndarray], prec: int) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    ranges = [_exponents(a) for a in arrays if a.size] or [(0, 0)]
    low, top = min(r[0] for r in ranges), max(r[1] for r in ranges)
    S = min(-low, prec + 64 + _CAP_BITS - top)
    up = 1 << max(0, -S)
    to_int = np.frompyfunc(lambda v: _mpf_to_int(v, max(S, 0)) * up, 1, 1)
    return to_int, 1 << max(S, 0)


def _mpf_to_int(v: Any, S: int) -> int:
    sign, man, exp, _ = v._mpf_
    shift = exp + S
    n = man << shift if shift >= 0 else (man + (1 << (-shift - 1))) >> -shift
    return -n if sign else n


def _decimal_ints(arrays: Sequence[np.ndarray], digits: int) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """Decimals ``c 10^e`` as integers at one scale ``10^S``: exact (``S = max(-e)``), but for values more than
    :data:`_CAP_BITS` bits below the largest, which are rounded there."""
    low, top = None, None
    for a in arrays:
        for v in a.ravel().tolist():
            if v:
                t = v.as_tuple()
                e = t.exponent if isinstance(t.exponent, int) else 0
                low = e if low is None else min(low, e)
                adj = v.adjusted()
                top = adj if top is None else max(top, adj)
    if low is None:
        return np.frompyfunc(lambda v: 0, 1, 1), 1
    S = min(-low, digits + 20 + int(_CAP_BITS * 0.30103) - top)
    wide = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
    up = 10 ** max(0, -S)

    def to_int(v: decimal.Decimal) -> int:
        return int(wide.scaleb(v, S)) * up  # exact, but for the values past the cap: truncated there

    return np.frompyfunc(to_int, 1, 1), 10 ** max(0, S)


def _fraction_ints(arrays: Sequence[np.ndarray]) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    D = 1
    for a in arrays:
        for v in a.ravel().tolist():
            D = math.lcm(D, v.denominator)
    return np.frompyfunc(lambda v: v.numerator * (D // v.denominator), 1, 1), D


@dataclass
class Accumulator:
    """Sums of second-order terms :math:`\\sum_r c_r J_{s,r}^T J_{t,r}`, grouped by the rows' supports.

    For exact numbers (mpmath's ``mpf`` are dyadic rationals) each flush
    turns the buffered rows into integers at one scale and sums them with
    integer matrix products: the Hessian is the exact sum of the rounded
    factors, ``num / den``.  For float64 magnitudes the products are BLAS's.
    """

    W: int
    numbers: Numbers
    groups: dict[tuple[Any, ...], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=dict)
    places: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    buffered: int = 0
    num: np.ndarray | None = None  # exact: numerators of A (off-diagonal slot pairs) and B (one slot)
    den: int = 1
    rows: int = 0

    def add(self, key: tuple[int, int, bool], places: tuple[np.ndarray, np.ndarray], c: np.ndarray,
            left: np.ndarray, right: np.ndarray) -> None:
        """Buffer ``c_r left_r^T right_r`` for rows ``r``: ``key`` names the supports (the parameters ``places``
        of the columns of ``left`` and ``right``) and whether the term is one slot's (symmetric)."""
        self.groups.setdefault(key, []).append((c, left, right))
        self.places[key] = places
        self.buffered += left.size + right.size + c.size
        self.rows += c.size
        if self.buffered > MAX_BUFFER:
            self.flush()

    def flush(self) -> None:
        if not self.groups:
            return
        if self.numbers.dtype is not object:
            self._flush_float()
        elif self.numbers.ints is None:
            self._flush_objects()
        else:
            self._flush_exact()
        self.groups.clear()
        self.buffered = 0

    def _flush_float(self) -> None:
        if self.num is None:
            self.num = np.zeros((2, self.W, self.W))
        for key, items in self.groups.items():
            (sl, sr), same = self.places[key], key[2]
            c = np.concatenate([it[0] for it in items])
            L = np.concatenate([it[1] for it in items]) * c[:, None]
            R = np.concatenate([it[2] for it in items])
            self.num[int(same)][np.ix_(sl, sr)] += L.T @ R

    def _flush_objects(self) -> None:
        """Numbers that are not exact rationals (an interval system's balls): summed as they are, in their own
        arithmetic (object matrix products); the result is ``num`` over ``den = 1``."""
        if self.num is None:
            self.num = np.empty((2, self.W, self.W), dtype=object)
            self.num[...] = self.numbers.number(0)
        for key, items in self.groups.items():
            (sl, sr), same = self.places[key], key[2]
            c = np.concatenate([it[0] for it in items])
            L = np.concatenate([it[1] for it in items]) * c[:, None]
            R = np.concatenate([it[2] for it in items])
            block = self.num[int(same)]
            block[np.ix_(sl, sr)] += L.T @ R

    def _flush_exact(self) -> None:
        assert self.numbers.ints is not None
        cs = [it[0] for items in self.groups.values() for it in items]
        js = [a for items in self.groups.values() for it in items for a in it[1:]]
        ints_c, Dc = self.numbers.ints(cs)
        ints_j, Dj = self.numbers.ints(js)
        den = Dc * Dj * Dj
        if self.num is None:
            self.num = np.zeros((2, self.W, self.W), dtype=object)
            self.num[...] = 0
            self.den = den
        common = math.lcm(self.den, den)
        if common != self.den:
            self.num = self.num * (common // self.den)
            self.den = common
        factor = common // den
        for key, items in self.groups.items():
            (sl, sr), same = self.places[key], key[2]
            c = ints_c(np.concatenate([it[0] for it in items]))
            if factor != 1:
                c = c * factor
            L = ints_j(np.concatenate([it[1] for it in items])) * c[:, None]
            R = ints_j(np.concatenate([it[2] for it in items]))
            block = self.num[int(same)]
            block[np.ix_(sl, sr)] += L.T @ R

    def total(self) -> tuple[np.ndarray, int]:
        """``(numerators, denominator)`` of the Hessian (float64 magnitudes: the matrix and 1)."""
        self.flush()
        if self.num is None:
            zero = np.zeros((self.W, self.W)) if self.numbers.dtype is not object else \
                np.full((self.W, self.W), 0, dtype=object)
            return zero, 1
        A, B = self.num
        return A + A.T + B, self.den


@dataclass
class Result:
    """What :func:`hessian_of_program` returns."""

    num: np.ndarray  # Hessian numerators (object ints), or float64 magnitudes
    den: int
    gradient: np.ndarray  # the adjoints of the parameters, summed over the evaluations
    chain: int  # roundings along the longest path (for the error bound)
    counts: dict[str, int]  # work done: template evaluations, J entries, second-order rows and entries


_COMPILED: weakref.WeakKeyDictionary[Template, dict[str, Any]] = weakref.WeakKeyDictionary()
"""Each template compiled once per number system (and precision: the constants are numbers of it)."""


def _support(cache: dict[bytes, tuple[int, np.ndarray]], idx: np.ndarray) -> tuple[int, np.ndarray]:
    key = idx.tobytes()
    found = cache.get(key)
    if found is None:
        found = cache[key] = (len(cache), idx)
    return found


def hessian_of_program(nodes: Sequence[Node], params: Sequence[sympy.Symbol], leaves: dict[sympy.Symbol, Any],
                       output: sympy.Symbol, numbers: Numbers, P: int, *,
                       names: dict[sympy.Symbol, str] | None = None) -> Result:
    """The Hessian of ``output`` with respect to ``params``, summed over ``P`` evaluations (module text).

    ``leaves`` gives every leaf's value: a parameter's as one number, an
    input's or target's as ``P`` numbers (one per pattern), all already in
    ``numbers``' type.  ``names`` names the lines for people, in errors.
    """
    with numbers.context():
        return _hessian(nodes, params, leaves, output, numbers, P, names)


def _hessian(nodes: Sequence[Node], params: Sequence[sympy.Symbol], leaves: dict[sympy.Symbol, Any],
             output: sympy.Symbol, numbers: Numbers, P: int, names: dict[sympy.Symbol, str] | None) -> Result:
    counts = {"evaluations": 0, "jacobian": 0, "rows": 0, "products": 0}
    if output not in leaves and all(node.symbol != output for node in nodes):
        # no line computes the output: the program folded it to a constant (cross-entropy over one class, say),
        # so its gradient and Hessian are exactly zero
        W = len(params)
        zero = np.zeros((W, W), dtype=np.float64) if numbers.dtype == np.float64 else np.full((W, W), 0, dtype=object)
        return Result(zero, 1, numbers.zeros((W,)), 0, counts)
    local = _forward(nodes, params, leaves, output, numbers, P, names, counts)
    varies = _varying(nodes, params)
    adj = _adjoints(nodes, local, varies, output, numbers, P)
    acc, chain = _second_order(nodes, local, varies, adj, params, numbers, P, counts)
    num, den = acc.total()
    grad = numbers.zeros((len(params),))
    for k, p in enumerate(params):
        if p in adj:
            total = adj[p]
            grad[k] = total.sum() if isinstance(total, np.ndarray) else total * P
    return Result(num, den, grad, chain, counts)


Local = tuple[list[Any], list[tuple[int, int, Any]]]
"""A line's local derivatives at every pattern: its gradient in its slots, and its nonzero second derivatives."""


def _compiled(t: Template, numbers: Numbers) -> tuple[Callable[..., Any], list[Any], list[Any]]:
    """The template's function (value, then the derivatives that need evaluating) and where each goes."""
    kept = _COMPILED.setdefault(t, {})
    found = kept.get(numbers.name)
    if found is None:
        exprs: list[sympy.Expr] = [t.expr]
        grads = [_plan(g, exprs, numbers) for g in t.grad]
        hess = [(s, u, _plan(h, exprs, numbers)) for s, u, h in t.hess]
        found = kept[numbers.name] = (numbers.compile(exprs, t.arity), grads, hess)
    return found


def _forward(nodes: Sequence[Node], params: Sequence[sympy.Symbol], leaves: dict[sympy.Symbol, Any],
             output: sympy.Symbol, numbers: Numbers, P: int, names: dict[sympy.Symbol, str] | None,
             counts: dict[str, int]) -> list[Local]:
    """1. Every line's value and local derivatives, all patterns at once."""
    values: dict[sympy.Symbol, Any] = {}
    for sym, v in leaves.items():
        values[sym] = v if isinstance(v, np.ndarray) else numbers.full(P, v)
    local: list[Local] = []
    for node in nodes:
        fn, grads, hess = _compiled(node.template, numbers)
        args = [values[a] for a in node.args]
        out = fn(*args)
        counts["evaluations"] += P
        values[node.symbol] = _as_array(out[0], P, numbers)
        if node.template.kinks:
            _check_kinks(node, args[0], names)
        local.append(([_take(plan, out, args, numbers, P) for plan in grads],
                      [(s, u, _take(plan, out, args, numbers, P)) for s, u, plan in hess]))
    if output not in values and isinstance(output, sympy.Symbol):  # a constant output: a Hessian of zeros
        raise ValueError("the program does not compute its output")
    return local


def _varying(nodes: Sequence[Node], params: Sequence[sympy.Symbol]) -> set[sympy.Symbol]:
    """The parameters and the lines that depend on them (their rows ``J`` are not zero)."""
    varies: set[sympy.Symbol] = set(params)
    for node in nodes:
        if any(a in varies for a in node.args):
            varies.add(node.symbol)
    return varies


def _adjoints(nodes: Sequence[Node], local: list[Local], varies: set[sympy.Symbol], output: sympy.Symbol,
              numbers: Numbers, P: int) -> dict[sympy.Symbol, Any]:
    """2. The adjoints ``dE/dv`` of every line that depends on the parameters, and of the parameters."""
    adj: dict[sympy.Symbol, Any] = {output: numbers.full(P, numbers.number(1))}
    for node, (g, _) in zip(reversed(nodes), reversed(local), strict=True):
        a = adj.get(node.symbol)
        if a is None:
            continue
        for s, arg in enumerate(node.args):
            if arg in varies:
                term = a * g[s]
                adj[arg] = term if arg not in adj else adj[arg] + term
    return adj


class _Rows:
    """The sparse rows ``J`` (a support, shared and interned, and a ``(P, |support|)`` array of values)."""

    def __init__(self) -> None:
        self.supports: dict[bytes, tuple[int, np.ndarray]] = {}
        self.unions: dict[tuple[int, ...], tuple[tuple[int, np.ndarray], list[np.ndarray | None]]] = {}

    def support(self, idx: np.ndarray) -> tuple[int, np.ndarray]:
        return _support(self.supports, idx)

    def union(self, sups: list[tuple[int, np.ndarray]]) -> tuple[tuple[int, np.ndarray], list[np.ndarray | None]]:
        """The union of the supports and where each lies in it (``None``: it is the union)."""
        key = tuple(sup[0] for sup in sups)
        found = self.unions.get(key)
        if found is None:
            idx = np.unique(np.concatenate([sup[1] for sup in sups]))
            found = self.unions[key] = (self.support(idx), [None if len(sup[1]) == len(idx) else
                                                             np.searchsorted(idx, sup[1]) for sup in sups])
        return found


def _combine(terms: list[tuple[Any, tuple[tuple[int, np.ndarray], np.ndarray]]], rows: _Rows, numbers: Numbers,
             P: int) -> tuple[tuple[int, np.ndarray], np.ndarray]:
    """``J = sum_s g_s J_s`` on the union of the supports (a new array: the arguments' rows are never written)."""
    union, places = rows.union([sup for _, (sup, _) in terms])
    vals = numbers.zeros((P, len(union[1]))) if any(p is not None for p in places) else None
    for (gs, (_, v)), place in zip(terms, places, strict=True):
        term = _scale_rows(gs, v)
        if place is not None:
            vals[:, place] += term  # type: ignore[index]
        else:
            vals = term.copy() if vals is None and term is v else term if vals is None else vals + term
    return union, vals  # type: ignore[return-value]


def _second_order(nodes: Sequence[Node], local: list[Local], varies: set[sympy.Symbol], adj: dict[sympy.Symbol, Any],
                  params: Sequence[sympy.Symbol], numbers: Numbers, P: int,
                  counts: dict[str, int]) -> tuple[Accumulator, int]:
    """3. The rows ``J`` forward and each line's second-order term; returns the sums and the longest chain."""
    last_use: dict[sympy.Symbol, int] = {}
    for i, node in enumerate(nodes):
        for a in node.args:
            last_use[a] = i
    rows = _Rows()
    one = numbers.full(P, numbers.number(1))[:, None]
    J = {p: (rows.support(np.array([k], dtype=np.int64)), one) for k, p in enumerate(params)}
    acc = Accumulator(len(params), numbers)
    is_param = set(params)
    depth: dict[sympy.Symbol, int] = {}
    for i, (node, (g, h)) in enumerate(zip(nodes, local, strict=True)):
        if node.symbol not in varies:
            continue
        depth[node.symbol] = node.template.ops + node.template.arity + max(
            (depth.get(a, 0) for a in node.args), default=0)
        terms = [(g[s], J[a]) for s, a in enumerate(node.args) if a in J]
        counts["jacobian"] += sum(v.size for _, (_, v) in terms)
        J[node.symbol] = _combine(terms, rows, numbers, P)
        a = adj.get(node.symbol)
        for s, u, hsu in (h if a is not None else ()):
            if node.args[s] in J and node.args[u] in J:
                (sl, vl), (sr, vr) = J[node.args[s]], J[node.args[u]]
                c = a * hsu
                c = c if isinstance(c, np.ndarray) else numbers.full(P, c)
                acc.add((sl[0], sr[0], s == u), (sl[1], sr[1]), c, vl, vr)
                counts["rows"] += P
                counts["products"] += P * vl.shape[1] * vr.shape[1]
        for arg in node.args:  # free what no later line reads
            if last_use.get(arg) == i and arg not in is_param:
                J.pop(arg, None)
    return acc, max(depth.values(), default=1)


def _plan(expr: sympy.Expr, exprs: list[sympy.Expr], numbers: Numbers) -> tuple[str, Any]:
    """Where a derivative comes from: a constant, a slot's value, or an output of the compiled function."""
    if expr.is_number:
        return ("const", numbers.constant(expr))
    if isinstance(expr, sympy.Symbol):
        return ("slot", int(expr.name[1:]))
    exprs.append(expr)
    return ("out", len(exprs) - 1)


def _take(plan: tuple[str, Any], out: list[Any], args: list[Any], numbers: Numbers, P: int) -> Any:
    how, where = plan
    if how == "const":
        return where
    value = args[where] if how == "slot" else _as_array(out[where], P, numbers)
    if numbers.absolute:
        return np.abs(value)
    return value


def _as_array(v: Any, P: int, numbers: Numbers) -> Any:
    if isinstance(v, np.ndarray) and v.shape == (P,):
        return v
    return numbers.full(P, v if not isinstance(v, np.ndarray) else v.reshape(-1)[0])


def _scale_rows(g: Any, v: np.ndarray) -> np.ndarray:
    if isinstance(g, np.ndarray):
        return v * g[:, None]
    if g == 1:
        return v
    return v * g


def _check_kinks(node: Node, arg: np.ndarray, names: dict[sympy.Symbol, str] | None) -> None:
    for kink in node.template.kinks:
        hits = [n for n, v in enumerate(arg.tolist()) if v == kink]
        if hits:
            shown = (names or {}).get(node.args[0], str(node.args[0]))
            raise NotDifferentiableError(f"not twice differentiable at this point: {shown} is exactly {kink:g} "
                                         f"(a kink of the activation) for pattern {hits[0]}")
