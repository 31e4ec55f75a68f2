"""``symbolic``: the closed-form Hessian of a case, evaluated in float64, in high precision or exactly.

The closed form is the straight-line program of
:func:`hessverify.symbolic.expressions.definitions` (named per-layer
quantities of one generic pattern, with symbolic weights) together with the
block formula of second-order backpropagation for each pair of layers
``m <= m'`` (Bishop 1992, eq. 22; :mod:`hessverify.symbolic.formulas`):

.. math::

   \\frac{\\partial^2 E}{\\partial W^{(m)}_{kj}\\, \\partial W^{(m')}_{k'j'}}
   = \\sum_n \\Big[ z^{(m-1)}_j z^{(m'-1)}_{j'} K^{(m,m')}_{kk'}
     + [m < m']\\, \\delta^{(m')}_{k'} f_{m'-1}'(a^{(m'-1)}_{j'}) B^{(m'-1,m)}_{j'k} z^{(m-1)}_j \\Big]

(a bias is a weight whose input is the constant 1).  The program is compiled
once with :func:`sympy.lambdify` and evaluated per pattern in one of three
number systems:

* ``"float64"``: NumPy, all patterns at once, after SymPy's common
  subexpression elimination (``sympy.cse``) of the definitions that apply a
  function (:math:`f`, :math:`f'` and :math:`f''` of one net input share
  ``exp(-a)``; the rest of the program is already in that form);
* ``"mpmath"``: mpmath at ``digits`` significant digits (50 by default), one
  pattern at a time; the float64 data and weights convert to mpmath exactly;
* ``"exact"``: rational arithmetic, where the network allows it: every
  activation a polynomial (``identity``) and the loss a polynomial (``sse``,
  ``output``); the float64 data are dyadic rationals, so the result is the
  exact Hessian of the case.

The registered method (:func:`hessian`) returns the exact value where the
network allows it and the mpmath value otherwise, rounded to float64;
:func:`hessian_with_error` also returns a bound on that rounding.

Small enough.  The high-precision evaluation costs about
:math:`N (P + 2 W^2)` mpmath operations (``P``: the size of the program;
:func:`estimated_cost`); ``hessverify verify`` uses ``symbolic`` as a
reference when that is at most :data:`MAX_COST` (a few seconds here), or
when asked for by name.  Every shipped case is small enough.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from typing import Any, Literal

import mpmath
import numpy as np
import sympy

from hessverify.base.typing import FloatArray
from hessverify.engine.budget import estimated_cost  # the cost model lives with the other budgets
from hessverify.errors import NotDifferentiableError, OverflowReport
from hessverify.model.network import Architecture
from hessverify.model.problem import Problem
from hessverify.model.well_posed import kinked_net_inputs
from hessverify.symbolic.expressions import (
    NetworkSymbols,
    activation_derivatives,
    definitions,
    lambdify_program,
    loss_derivatives,
)

__all__ = [
    "DEFAULT_DIGITS",
    "MAX_COST",
    "Program",
    "estimated_cost",
    "exact_allowed",
    "hessian",
    "hessian_exact",
    "hessian_float64",
    "hessian_mpmath",
    "hessian_with_error",
    "left_out",
    "program",
    "small_enough",
]

DEFAULT_DIGITS = 50
"""Significant decimal digits of the high-precision evaluation."""

MAX_COST = 5_000_000
"""Largest :func:`estimated_cost` for which ``verify`` runs ``symbolic`` by default.

Measured here: about 1.5 microseconds per estimated operation, so at most
some 8 seconds per case; ``tanh-6-12-8-2`` (W = 206, N = 32), the largest
shipped case, costs 3.0e6 and takes about 4 s."""

Backend = Literal["float64", "mpmath", "exact"]


@dataclass
class Program:
    """The closed form of one architecture and loss, compiled per backend on first use.

    ``outputs`` names, in order, the values each compiled function returns
    for one pattern: ``("a", l)``, ``("z", l)``, ``("fp", l)``,
    ``("delta", l)``, ``("K", m, m')`` and ``("B", l, m)``, each a flat list
    of the quantity's entries (row-major for matrices).
    """

    arch: Architecture
    loss: str
    definitions: dict[sympy.Symbol, sympy.Expr]
    args: list[sympy.Symbol]
    outputs: list[tuple[tuple[Any, ...], tuple[int, ...]]]
    output_symbols: list[sympy.Symbol]
    _compiled: dict[str, Callable[..., Any]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """The number of named definitions."""
        return len(self.definitions)

    def function(self, backend: Backend) -> Callable[..., list[Any]]:
        """``f(*weights, *x, *t) -> [output values]`` for ``"float64"``, ``"mpmath"`` or ``"exact"``."""
        if backend not in self._compiled:
            # The program is already in common-subexpression form across units; SymPy's cse finds
            # what is shared inside a layer (sigma(a) and exp(-a) in f, f' and f'') for float64.
            # mpmath and exact rationals evaluate the program as it is: no rounding to save there.
            modules: Any = {"float64": ["scipy", "numpy"], "mpmath": "mpmath",
                            "exact": ["sympy", {"Rational": sympy.Rational}]}[backend]
            cse = _chunked_cse if backend == "float64" else None
            self._compiled[backend] = lambdify_program(self.args, self.definitions, self.output_symbols, modules,
                                                       cse=cse)
        return self._compiled[backend]


def _partners(arch: Architecture, m: int) -> tuple[int, ...]:
    """The layers ``m' >= m`` whose block with ``m`` is not zero a priori: in a chain those above ``m``,
    in a graph every later layer (two layers meet where a later one reads both)."""
    return (m, *arch.above(m)) if arch.is_chain else tuple(l for l in arch.bottom_up if l >= m)


@cache
def program(arch: Architecture, loss: str) -> Program:
    """Build and compile the closed form for ``arch`` and ``loss`` (cached)."""
    s = NetworkSymbols(arch)
    defs = definitions(s, loss)
    wanted: list[tuple[tuple[Any, ...], tuple[int, ...], list[sympy.Symbol]]] = []
    for l in arch.bottom_up:
        units = (arch.layer(l).units,)
        wanted.append((("a", l), units, s.a[l]))
        wanted.append((("z", l), units, s.z[l]))
        wanted.append((("fp", l), units, s.fp[l]))
        wanted.append((("delta", l), units, s.delta[l]))
    for m in arch.bottom_up:
        for mp in _partners(arch, m):
            um, ump = arch.layer(m).units, arch.layer(mp).units
            name = f"Q{m}" if m == mp else f"K{m},{mp}"
            flat = [sym for row in s.matrix(name, um, ump) for sym in row]
            wanted.append((("K", m, mp), (um, ump), flat))
        for l in arch.above(m):
            ul, um = arch.layer(l).units, arch.layer(m).units
            flat = [sym for row in s.matrix(f"B{l},{m}", ul, um) for sym in row]
            wanted.append((("B", l, m), (ul, um), flat))
    args = list(s.params) + list(s.x) + list(s.t)
    outputs = [sym for _, _, flat in wanted for sym in flat]
    return Program(arch, loss, defs, args, [(key, shape) for key, shape, _ in wanted], outputs)


def _chunked_cse(pairs: list[tuple[sympy.Symbol, sympy.Expr]], chunk: int = 256
                 ) -> list[tuple[sympy.Symbol, sympy.Expr]]:
    """``sympy.cse`` over runs of at most ``chunk`` mutually independent definitions, in order.

    Only definitions that apply a function (``exp``, ``tanh``, ``erf``, ...)
    take part: ``f``, ``f'`` and ``f''`` of one net input, the loss's
    derivatives.  The rest are sums of products of names already.
    """
    fresh = sympy.numbered_symbols("c")
    out: list[tuple[sympy.Symbol, sympy.Expr]] = []
    run: list[tuple[sympy.Symbol, sympy.Expr]] = []
    names: set[sympy.Symbol] = set()

    def flush() -> None:
        if run:
            hoisted, reduced = sympy.cse([v for _, v in run], symbols=fresh)
            out.extend(hoisted)
            out.extend(zip([k for k, _ in run], reduced, strict=True))
            run.clear()
            names.clear()

    for key, value in pairs:
        if not value.atoms(sympy.Function):  # sums of products of names: nothing for cse to share
            flush()
            out.append((key, value))
            continue
        if len(run) >= chunk or value.free_symbols & names:
            flush()
        run.append((key, value))
        names.add(key)
    flush()
    return out


def exact_allowed(problem: Problem) -> bool:
    """Whether the Hessian is a rational function of the data: polynomial activations and loss.

    Examples
    --------
    >>> import hessverify
    >>> exact_allowed(hessverify.load_case("cases/linear-3-2-2.toml"))
    True
    >>> exact_allowed(hessverify.load_case("cases/xor-2-2-1-sigmoid.toml"))
    False
    """
    s = sympy.Symbol("s", real=True)
    for layer in problem.architecture.layers:
        f = activation_derivatives(layer.activation)[0]
        if not f.is_polynomial(next(iter(f.free_symbols), s)):
            return False
    y, t, e, _, _ = loss_derivatives(problem.loss, problem.architecture.outputs)
    return bool(e.is_polynomial(*y))


def small_enough(problem: Problem) -> bool:
    """Whether ``verify`` uses ``symbolic`` on this case by default (:data:`MAX_COST`)."""
    return estimated_cost(problem) <= MAX_COST


# -- evaluation ---------------------------------------------------------------------------------------


def left_out(problem: Problem) -> str:
    """Why ``verify`` leaves the symbolic reference out of ``problem`` by default (one line)."""
    return (f"symbolic: skipped, estimated cost {estimated_cost(problem):.3g} above the limit {MAX_COST:.3g}; "
            "name it to force it (--reference symbolic)")


def _per_pattern_float64(prog: Program, problem: Problem) -> list[np.ndarray]:
    n = problem.n_patterns
    args = [float(w) for w in problem.params] + list(problem.inputs.T) + list(problem.targets.T)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        values = prog.function("float64")(*args)
    return [np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)) for v in values]


def _per_pattern_objects(prog: Program, problem: Problem, convert: Callable[[float], Any],
                         fn: Callable[..., Any], back: Callable[[Any], Any]) -> list[np.ndarray]:
    weights = [convert(w) for w in problem.params]
    rows = []
    for x, t in zip(problem.inputs, problem.targets, strict=True):
        rows.append([back(v) for v in fn(*weights, *[convert(v) for v in x], *[convert(v) for v in t])])
    cols = np.empty((len(rows[0]), len(rows)), dtype=object)
    for n, row in enumerate(rows):
        cols[:, n] = row
    return list(cols)


def _to_fraction(v: Any) -> Fraction:
    v = sympy.sympify(v)
    if not v.is_Rational:
        raise ValueError(f"exact evaluation produced a non-rational value {v}")
    return Fraction(int(v.p), int(v.q))


def _unpack(prog: Program, values: list[np.ndarray]) -> dict[tuple[Any, ...], np.ndarray]:
    """Group the flat per-output columns into ``(N, ...)`` arrays per quantity."""
    out = {}
    pos = 0
    for key, shape in prog.outputs:
        size = int(np.prod(shape))
        block = np.stack(values[pos:pos + size], axis=1)
        out[key] = block.reshape((block.shape[0],) + shape)
        pos += size
    return out


def _check_values(problem: Problem, q: dict[tuple[Any, ...], np.ndarray]) -> None:
    """A net input exactly at a kink (relu at 0), judged on the reference's own values."""
    arch = problem.architecture
    net_inputs = {l: q[("a", l)] for l in arch.bottom_up}
    for l, kink, a in kinked_net_inputs(arch, net_inputs):
        hits = np.argwhere(a == kink)
        if hits.size:
            n, unit = hits[0]
            raise NotDifferentiableError(
                f"not twice differentiable at this point: {arch.layer(l).activation} unit {unit} of layer {l} "
                f"has net input exactly {kink:g} for pattern {n}")


def _assemble(problem: Problem, q: dict[tuple[Any, ...], np.ndarray], convert: Callable[[float], Any],
              scaled: bool = False) -> np.ndarray:
    """The block formula summed over patterns, scattered into the public order.

    ``convert`` turns a float64 into the number type of ``q`` (``float``,
    ``Fraction``, or a fixed-point ``int``), exactly.  With ``scaled`` the
    numbers are fixed-point integers ``v * 2^S`` (``convert(1.0) = 2^S``) and
    the result is at scale ``2^(4S)``.
    """
    arch = problem.architecture
    n = problem.n_patterns
    dtype = q[("z", arch.output_layer)].dtype
    one, zero = convert(1.0), convert(0.0)
    H = np.empty((arch.n_params, arch.n_params), dtype=dtype)
    zs = {0: np.vectorize(convert, otypes=[dtype])(np.asarray(problem.inputs, dtype=np.float64))}
    zs.update({l: q[("z", l)] for l in arch.bottom_up})

    def layer_input(m: int) -> np.ndarray:
        """The sources' z side by side with a column of ones for the bias (the bias's 'input')."""
        z = np.concatenate([zs[p] for p in arch.parents(m)], axis=1)
        if not arch.layer(m).bias:
            return z
        ones = np.empty((n, 1), dtype=dtype)
        ones[:] = one
        return np.concatenate([z, ones], axis=1)

    def indices(m: int) -> np.ndarray:
        """Public flat index of each (unit k, input j) of layer m; the bias is input j = fan_in."""
        fan = arch.fan_in(m)
        units = arch.layer(m).units
        cols = fan + (1 if arch.layer(m).bias else 0)
        idx = np.empty((units, cols), dtype=np.int64)
        for k in range(units):
            for j in range(fan):
                idx[k, j] = arch.param_index(f"W{m}[{k},{j}]")
            if cols > fan:
                idx[k, fan] = arch.param_index(f"b{m}[{k}]")
        return idx

    for m in arch.bottom_up:
        zm = layer_input(m)
        um, dm = arch.layer(m).units, zm.shape[1]
        for mp in _partners(arch, m):
            zmp = layer_input(mp)
            ump, dmp = arch.layer(mp).units, zmp.shape[1]
            # sum_n K[n,k,k'] z[n,j] z'[n,j']: one contraction over patterns
            K = q[("K", m, mp)].reshape(n, um * ump)
            zz = (zm[:, :, None] * zmp[:, None, :]).reshape(n, dm * dmp)
            block = (K.T @ zz).reshape(um, ump, dm, dmp).transpose(0, 2, 1, 3)
            if scaled:  # fixed point: bring the three-factor main term to the scale of the four-factor one
                block = block * one
            # sum_n delta'[n,k'] f'_p[n,i] B_{p,m}[n,i,k] z[n,j] for every source p of m' that is m or
            # depends on it, i the unit of p in the input column j'; zero for the bias input j'
            for p in arch.parents(mp) if mp != m else ():
                if p != m and p not in arch.above(m):
                    continue
                cols = arch.source_slice(mp, p)
                up = cols.stop - cols.start
                if p == m:  # B_{m,m} = I
                    B = np.empty((n, um, um), dtype=dtype)
                    B[:] = zero
                    B[:, np.arange(um), np.arange(um)] = one
                else:
                    B = q[("B", p, m)]
                left = (q[("delta", mp)][:, :, None] * zm[:, None, :]).reshape(n, ump * dm)
                right = (q[("fp", p)][:, :, None] * B).reshape(n, up * um)
                bil = (left.T @ right).reshape(ump, dm, up, um).transpose(3, 1, 0, 2)
                block = np.array(block)
                block[:, :, :, cols] = block[:, :, :, cols] + bil
            rows, cols = indices(m).reshape(-1), indices(mp).reshape(-1)
            flat = block.reshape(um * dm, ump * dmp)
            H[np.ix_(rows, cols)] = flat
            H[np.ix_(cols, rows)] = flat.T
    return H


def _scale(problem: Problem, one: Any) -> Any:
    if problem.reduction != "mean":
        return one
    per_output = problem.targets.shape[1] if problem.loss in ("mse", "huber") else 1  # PyTorch's element-wise means
    return one / (problem.n_patterns * per_output)


def hessian_float64(problem: Problem) -> FloatArray:
    """The closed form evaluated in float64 (NumPy ``lambdify`` with ``cse``), all patterns at once."""
    prog = program(problem.architecture, problem.loss)
    q = _unpack(prog, _per_pattern_float64(prog, problem))
    _check_values(problem, q)
    H = _assemble(problem, q, float) * _scale(problem, 1.0)
    if not np.all(np.isfinite(H)):
        raise OverflowReport("the float64 evaluation of the closed form overflowed; use hessian_mpmath")
    return H


def hessian_mpmath(problem: Problem, digits: int = DEFAULT_DIGITS) -> np.ndarray:
    """The closed form evaluated with mpmath at ``digits`` significant digits (object array of ``mpf``).

    The per-pattern program runs in mpmath.  The block formula's sums over
    patterns (``2 N W^2`` products, most of the work) run in exact integer
    arithmetic on fixed-point images of those mpmath values: every value is
    scaled by one power of two ``2^S`` chosen so that the smallest nonzero
    value keeps ``prec + 64`` bits, products and sums of Python integers are
    exact, and the one rounding back to ``digits`` digits is mpmath's.  The
    result is the same as summing in mpmath, only within a smaller error, and
    several times faster.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/single-neuron-tanh.toml")
    >>> H = hessian_mpmath(case, digits=30)
    >>> mpmath.nstr(H[0, 1], 25)
    '0.3701274736551130397513182'
    """
    prog = program(problem.architecture, problem.loss)
    with mpmath.workdps(digits):
        q = _unpack(prog, _per_pattern_objects(prog, problem, mpmath.mpf, prog.function("mpmath"), mpmath.mpf))
        _check_values(problem, q)
        inputs = [mpmath.mpf(float(v)) for v in np.ravel(problem.inputs)]
        S = _fixed_point_scale([v for arr in q.values() for v in arr.ravel()] + inputs, mpmath.mp.prec)
        fixed = {key: np.vectorize(lambda v: _to_fixed(v, S), otypes=[object])(arr) for key, arr in q.items()}
        H_int = _assemble(problem, fixed, lambda f: _to_fixed(mpmath.mpf(f), S), scaled=True)
        prec = mpmath.mp.prec
        H = np.vectorize(lambda n: _from_fixed(n, -4 * S, prec), otypes=[object])(H_int)
        if problem.reduction == "mean":  # a sum's scale is 1: the product would be the same mpf
            scale = _scale(problem, mpmath.mpf(1))
            H = np.vectorize(lambda h: h * scale, otypes=[object])(H)
    return H


_MAX_EXTRA_BITS = 4096
"""Cap on the bits spent on tiny values: a value below 2^-4096 relative to 1 is kept to 2^-(4096 + prec)."""


def _fixed_point_scale(values: list[Any], prec: int) -> int:
    """``S`` such that every nonzero value times ``2^S`` is an integer of at least ``prec + 64`` bits."""
    low = 0
    for v in values:
        sign, man, exp, bc = v._mpf_
        if man:
            low = min(low, exp + bc)  # |v| >= 2^(exp + bc - 1)
    return prec + 64 + min(-low, _MAX_EXTRA_BITS)


def _from_fixed(n: int, exponent: int, prec: int) -> Any:
    """``n * 2^exponent`` as an ``mpf``: truncated to ``prec + 8`` bits first, so mpmath rounds a short integer.

    The truncation moves the value by less than ``2^-(prec + 7)`` relative,
    a 128th of the rounding to ``prec`` bits that follows.
    """
    extra = abs(n).bit_length() - (prec + 8)
    if extra > 0:
        n, exponent = (n >> extra if n > 0 else -((-n) >> extra)), exponent + extra
    return mpmath.mpf((n, exponent))


def _to_fixed(v: Any, S: int) -> int:
    """``round(v * 2^S)`` for an ``mpf`` ``v``, exactly."""
    sign, man, exp, _ = v._mpf_
    if not man:
        if v != 0:
            raise OverflowReport(f"the high-precision evaluation produced {v}")
        return 0
    shift = exp + S
    n = man << shift if shift >= 0 else (man + (1 << (-shift - 1))) >> -shift
    return -n if sign else n


def hessian_exact(problem: Problem) -> np.ndarray:
    """The exact Hessian as an object array of :class:`fractions.Fraction` (polynomial networks only).

    Raises ``ValueError`` unless :func:`exact_allowed`.
    """
    if not exact_allowed(problem):
        raise ValueError(f"{problem.id}: exact rationals need polynomial activations and loss")
    prog = program(problem.architecture, problem.loss)
    q = _unpack(prog, _per_pattern_objects(prog, problem, lambda v: sympy.Rational(float(v)),
                                           prog.function("exact"), _to_fraction))
    _check_values(problem, q)
    return _assemble(problem, q, Fraction) * _scale(problem, Fraction(1))


def _to_float64(H: np.ndarray) -> FloatArray:
    return np.vectorize(float, otypes=[np.float64])(H)


def hessian_with_error(problem: Problem, digits: int = DEFAULT_DIGITS, *,
                       magnitude: FloatArray | None = None) -> tuple[FloatArray, FloatArray]:
    """The gold value rounded to float64, and a bound on its distance from the true Hessian.

    The bound is the rounding to float64, measured exactly in high precision,
    plus, for the mpmath value, its own rounding: a chain of ``k`` roundings
    at ``10^(1-digits)`` each on terms of magnitude ``M``
    (:func:`hessverify.engine.bounds.magnitude_hessian`, or ``magnitude`` when
    the caller has it): some 35 orders of magnitude below the float64 errors it
    is used to measure.
    """
    if exact_allowed(problem):
        exact = hessian_exact(problem)
        value = _to_float64(exact)
        err = np.vectorize(lambda e, v: float(abs(e - Fraction(v))), otypes=[np.float64])(exact, value)
        return value, err
    from hessverify.engine.bounds import chain_length, magnitude_hessian

    H = hessian_mpmath(problem, digits)
    value, err = _rounded_to_float64(H, digits)
    M = magnitude_hessian(problem) if magnitude is None else magnitude
    own = chain_length(problem) * 10.0 ** (1 - digits) * M
    return value, err + own


def _rounded_to_float64(H: np.ndarray, digits: int) -> tuple[FloatArray, FloatArray]:
    """Each ``mpf`` rounded to the nearest float64, and ``|H - value|`` at ``digits`` digits rounded to float64.

    What ``float(e)`` and ``float(abs(e - mpf(float(e))))`` give, computed on
    mpmath's raw tuples (``mpmath.libmp``) without building an ``mpf`` per
    step: the same roundings, in a fraction of the time.
    """
    from mpmath import libmp

    with mpmath.workdps(digits):
        prec = mpmath.mp.prec
    flat = H.ravel()
    value, err = np.empty(flat.size), np.empty(flat.size)
    for i, e in enumerate(flat):
        x = e._mpf_
        v = libmp.to_float(x, rnd=libmp.round_nearest)
        value[i] = v
        d = libmp.mpf_sub(x, libmp.from_float(v), prec, libmp.round_nearest)
        err[i] = libmp.to_float(libmp.mpf_abs(d), rnd=libmp.round_nearest)
    return value.reshape(H.shape), err.reshape(H.shape)


def hessian(problem: Problem) -> FloatArray:
    """The gold reference: exact where the network allows it, else 50-digit mpmath; rounded to float64."""
    return hessian_with_error(problem)[0]
