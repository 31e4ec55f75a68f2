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

* ``"decimal"``: Python's :mod:`decimal` at ``digits`` significant digits
  (50 by default), one pattern at a time: the high-precision evaluation of
  the reference (:mod:`hessverify.symbolic.numbers`); the float64 data and
  weights convert to it exactly;
* ``"mpmath"``: the same in mpmath (what :mod:`~hessverify.symbolic.formulas`
  checks the recursions with);
* ``"exact"``: rational arithmetic (:class:`fractions.Fraction`), where the
  network allows it: every activation a polynomial (``identity``) and the
  loss a polynomial (``sse``, ``output``); the float64 data are dyadic
  rationals, so the result is the exact Hessian of the case;
* ``"arb"``: python-flint's ball arithmetic, for the ``certified`` reference
  (:mod:`hessverify.references.certified`).

The block formula's sums over patterns, ``2 N W^2`` products and most of
the work, run as exact integer arithmetic on float64 BLAS
(:mod:`hessverify.symbolic.assembly`): every per-pattern value is cut to
``digits`` digits and 64 guard bits per column, the sums are exact, and the
result is a double-double with an explicit bound.

The registered method (:func:`hessian`) returns the exact value where the
network allows it and the high-precision value otherwise, rounded to
float64; :func:`hessian_with_error` also returns a bound on its distance
from the true Hessian.

Small enough.  ``hessverify verify`` uses ``symbolic`` as a reference by
default where its estimated run time (:func:`estimated_cost`, seconds,
calibrated in :mod:`hessverify.engine.budget`) is at most
:data:`MAX_COST`, and whenever it is asked for by name within
``--max-time``.  Every shipped case is small enough.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from functools import cache
from typing import Any, Literal

import mpmath
import numpy as np
import sympy

from hessverify.base.typing import FloatArray
from hessverify.engine.budget import estimated_cost  # the cost model lives with the other budgets
from hessverify.errors import NotDifferentiableError, OverflowReport
from hessverify.model.losses import get_loss
from hessverify.model.network import Architecture
from hessverify.model.problem import Problem
from hessverify.model.well_posed import kinked_net_inputs
from hessverify.symbolic import assembly
from hessverify.symbolic.expressions import (
    NetworkSymbols,
    activation_derivatives,
    definitions,
    lambdify_program,
    loss_derivatives,
)
from hessverify.symbolic.numbers import arb_namespace, decimal_context, decimal_namespace

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
    "block_formula",
    "per_pattern",
    "program",
    "small_enough",
]

DEFAULT_DIGITS = 50
"""Significant decimal digits of the high-precision evaluation."""

MAX_COST = 5.0
"""Largest :func:`estimated_cost` (seconds) for which ``verify`` runs ``symbolic`` by default.

Asked for by name (``--reference symbolic``) it runs within ``--max-time``
whatever this says; ``tanh-6-12-8-2`` (W = 206, N = 32), the largest
shipped case, is estimated at well under a second."""

GUARD_BITS = 8
"""Bits kept beyond the evaluation's own precision by the exact sums over patterns (:mod:`~hessverify.symbolic.assembly`):
each per-pattern column is cut to ``digits`` digits and these bits below its largest value."""

Backend = Literal["float64", "mpmath", "decimal", "exact", "arb"]


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
        """``f(*weights, *x, *t) -> [output values]`` in one of the number systems of the module text.

        ``"decimal"`` evaluates at the precision of the :mod:`decimal`
        context in force, ``"arb"`` at python-flint's ``ctx.prec``.
        """
        if backend not in self._compiled:
            # The program is already in common-subexpression form across units; SymPy's cse finds
            # what is shared inside a layer (sigma(a) and exp(-a) in f, f' and f'') for float64.
            # The other number systems evaluate the program as it is: no rounding to save there.
            modules: Any
            dialect = None
            if backend == "float64":
                modules = ["scipy", "numpy"]
            elif backend == "mpmath":
                modules = "mpmath"
            elif backend == "exact":
                modules, dialect = [{"Rational": Fraction}], "fractions"
            elif backend == "decimal":
                modules, dialect = [decimal_namespace()], "numbers"
            elif backend == "arb":
                modules, dialect = [arb_namespace()], "numbers"
            else:
                raise ValueError(f"unknown backend {backend!r}")
            cse = _chunked_cse if backend == "float64" else None
            self._compiled[backend] = lambdify_program(self.args, self.definitions, self.output_symbols, modules,
                                                       cse=cse, dialect=dialect)
        return self._compiled[backend]


def _partners(arch: Architecture, m: int) -> tuple[int, ...]:
    """The layers ``m' >= m`` whose block with ``m`` is not zero a priori: in a chain those above ``m``,
    in a graph every later layer (two layers meet where a later one reads both)."""
    return (m, *arch.above(m)) if arch.is_chain else tuple(l for l in arch.bottom_up if l >= m)


@cache
def program(arch: Architecture, loss: str) -> Program:
    """Build and compile the closed form for ``arch`` and ``loss`` (cached)."""
    s = NetworkSymbols(arch)
    defs = definitions(s, loss, fast=True)
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
    return (f"symbolic: skipped, estimated cost {estimated_cost(problem):.3g} above the limit {MAX_COST:.3g} "
            "(seconds); name it to force it (--reference symbolic)")


def _program_of(problem: Problem) -> Program:
    """The closed form's program for a classic dense network and a loss without settings; anything else is refused
    (never evaluated as something it is not): :mod:`hessverify.symbolic.kinds` takes it."""
    if not problem.architecture.is_dense or problem.loss_options:
        raise ValueError(f"{problem.id}: the dense closed form takes dense layers and losses without settings; "
                         "hessverify.symbolic.kinds takes this problem")
    return program(problem.architecture, str(problem.loss))


def _per_pattern_float64(prog: Program, problem: Problem) -> list[np.ndarray]:
    n = problem.n_patterns
    args = [float(w) for w in problem.params] + list(problem.inputs.T) + list(problem.targets.T)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        values = prog.function("float64")(*args)
    return [np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)) for v in values]


def per_pattern(problem: Problem, backend: Backend, convert: Callable[[float], Any]) -> dict[tuple[Any, ...], np.ndarray]:
    """The program in ``backend``, one pattern at a time: each named quantity as an ``(N, ...)`` object array.

    ``convert`` turns the float64 weights and data into the backend's
    numbers, exactly (``Decimal``, ``Fraction``, ``arb``); the keys are
    those of :attr:`Program.outputs`.  The precision is the backend's own,
    in force around the call (a :mod:`decimal` context, ``flint.ctx.prec``).
    """
    prog = _program_of(problem)
    fn = prog.function(backend)
    weights = [convert(w) for w in problem.params]
    rows = [fn(*weights, *[convert(v) for v in x], *[convert(v) for v in t])
            for x, t in zip(problem.inputs, problem.targets, strict=True)]
    cols = np.empty((len(rows[0]), len(rows)), dtype=object)
    for n, row in enumerate(rows):
        cols[:, n] = row
    return _unpack(prog, list(cols))


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


def _indices(arch: Architecture, m: int) -> np.ndarray:
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


def block_formula(problem: Problem, q: dict[tuple[Any, ...], np.ndarray], convert: Callable[[float], Any]) -> np.ndarray:
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
            rows, cols = _indices(arch, m).reshape(-1), _indices(arch, mp).reshape(-1)
            flat = block.reshape(um * dm, ump * dmp)
            H[np.ix_(rows, cols)] = flat
            H[np.ix_(cols, rows)] = flat.T
    return H


def _scale(problem: Problem, one: Any) -> Any:
    if problem.reduction != "mean":
        return one
    # PyTorch's element-wise means (mse, huber): the loss's row says whether its mean is over every output
    per_output = problem.targets.shape[1] if get_loss(problem.loss).mean_over_outputs else 1
    return one / (problem.n_patterns * per_output)


def hessian_float64(problem: Problem) -> FloatArray:
    """The closed form evaluated in float64 (NumPy ``lambdify`` with ``cse``), all patterns at once."""
    prog = _program_of(problem)
    q = _unpack(prog, _per_pattern_float64(prog, problem))
    _check_values(problem, q)
    H = block_formula(problem, q, float) * _scale(problem, 1.0)
    if not np.all(np.isfinite(H)):
        raise OverflowReport("the float64 evaluation of the closed form overflowed; use hessian_mpmath")
    return H


def _layer_input(problem: Problem, q: dict[tuple[Any, ...], np.ndarray], m: int) -> np.ndarray:
    """``(N, fan_in [+ 1])`` objects: the sources' ``z`` side by side, and a column of ones for the bias."""
    arch = problem.architecture
    parts = [np.asarray(problem.inputs, dtype=np.float64).astype(object) if p == 0 else q[("z", p)]
             for p in arch.parents(m)]
    if arch.layer(m).bias:
        parts.append(np.ones((problem.n_patterns, 1), dtype=np.int64).astype(object))
    return np.concatenate(parts, axis=1)


@dataclass
class _Block:
    """One block ``(units m, inputs m, units m', inputs m')`` of the Hessian as a double-double with its bound,
    and, when kept, its exact value (Fractions)."""

    hi: FloatArray
    lo: FloatArray
    err: FloatArray
    exact: np.ndarray | None

    @classmethod
    def of(cls, total: assembly.Sum, shape: tuple[int, ...], axes: tuple[int, ...]) -> _Block:
        def arrange(a: np.ndarray) -> np.ndarray:
            return a.reshape(shape).transpose(axes)

        exact = arrange(_fractions(*total.exact())) if total.levels else None
        return cls(arrange(total.hi), arrange(total.lo), arrange(total.error), exact)

    def add(self, other: _Block, cols: slice) -> None:
        """``self[..., cols] += other``."""
        mine = (self.hi[..., cols], self.lo[..., cols], self.err[..., cols])
        self.hi[..., cols], self.lo[..., cols], self.err[..., cols] = assembly.add(mine, (other.hi, other.lo, other.err))
        if self.exact is not None and other.exact is not None:
            self.exact[..., cols] = self.exact[..., cols] + other.exact

    def scatter(self, target: _Block, rows: np.ndarray, cols: np.ndarray) -> None:
        """Into ``target`` at ``(rows, cols)`` and, mirrored, at ``(cols, rows)``."""
        n_rows = len(rows)
        for name in ("hi", "lo", "err", "exact"):
            flat, into = getattr(self, name), getattr(target, name)
            if flat is None or into is None:
                continue
            flat = flat.reshape(n_rows, -1)
            into[np.ix_(rows, cols)] = flat
            into[np.ix_(cols, rows)] = flat.T


def _fractions(ints: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """``ints * 2^exponent`` entrywise as Fractions."""
    return np.frompyfunc(lambda i, e: Fraction(i << e) if e >= 0 else Fraction(i, 1 << -e), 2, 1)(ints, exponent)


def _assemble_sums(problem: Problem, q: dict[tuple[Any, ...], np.ndarray], bits: int | None, *,
                   keep: bool = False) -> _Block:
    """The block formula summed over patterns exactly (:mod:`~hessverify.symbolic.assembly`), in the public order.

    ``bits`` is the precision kept of each per-pattern column (``None``:
    every bit of dyadic values, an exact result); ``keep`` also gives the
    sums themselves as Fractions.  The same blocks as :func:`block_formula`.
    """
    arch = problem.architecture
    n, W = problem.n_patterns, arch.n_params
    H = _Block(np.zeros((W, W)), np.zeros((W, W)), np.zeros((W, W)),
               np.zeros((W, W), dtype=object) if keep else None)

    def columns(values: np.ndarray) -> assembly.Columns:
        return assembly.columns(values.reshape(n, -1), bits)

    inputs = {m: columns(_layer_input(problem, q, m)) for m in arch.bottom_up}
    for m in arch.bottom_up:
        zm = inputs[m]
        um, dm = arch.layer(m).units, zm.shape[1]
        for mp in _partners(arch, m):
            zmp = inputs[mp]
            ump, dmp = arch.layer(mp).units, zmp.shape[1]
            # sum_n K[n,k,k'] z[n,j] z'[n,j']
            main = assembly.product(columns(q[("K", m, mp)]), assembly.outer(zm, zmp), bits, keep=keep)
            block = _Block.of(main, (um, ump, dm, dmp), (0, 2, 1, 3))
            # sum_n delta'[n,k'] z[n,j] f'_p[n,i] B_{p,m}[n,i,k] for every source p of m' that is m or depends on it
            for p in arch.parents(mp) if mp != m else ():
                if p != m and p not in arch.above(m):
                    continue
                cols = arch.source_slice(mp, p)
                up = cols.stop - cols.start
                B = (np.tile(np.eye(um, dtype=np.int64).reshape(1, -1), (n, 1)).astype(object) if p == m
                     else q[("B", p, m)])  # B_{m,m} = I
                right = assembly.times(columns(q[("fp", p)]).take(np.repeat(np.arange(up), um)), columns(B))
                left = assembly.outer(columns(q[("delta", mp)]), zm)
                bil = assembly.product(left, right, bits, keep=keep)
                block.add(_Block.of(bil, (ump, dm, up, um), (3, 1, 0, 2)), cols)
            block.scatter(H, _indices(arch, m).reshape(-1), _indices(arch, mp).reshape(-1))
    return H


def _evaluate(problem: Problem, digits: int) -> dict[tuple[Any, ...], np.ndarray]:
    """The per-pattern program in :mod:`decimal` at ``digits`` digits, the reduction's ``1/N`` applied to K and delta."""
    with decimal.localcontext(decimal_context(digits)):
        try:
            q = per_pattern(problem, "decimal", Decimal)
            _check_values(problem, q)
            if problem.reduction == "mean":  # K and delta carry every term once: the scale applied there
                scale = _scale(problem, Decimal(1))
                for key in q:
                    if key[0] in ("K", "delta"):
                        q[key] = q[key] * scale
        except (decimal.Overflow, decimal.InvalidOperation, decimal.DivisionByZero) as exc:
            raise OverflowReport(f"the high-precision evaluation of the closed form failed: {exc!r}") from None
    return q


def _bits(digits: int) -> int:
    """The bits kept of each per-pattern column: the digits' own bits and :data:`GUARD_BITS`."""
    return int(np.ceil(digits * np.log2(10.0))) + GUARD_BITS


def hessian_mpmath(problem: Problem, digits: int = DEFAULT_DIGITS) -> np.ndarray:
    """The closed form evaluated at ``digits`` significant digits (object array of mpmath ``mpf``).

    The per-pattern program runs in :mod:`decimal` at ``digits`` digits; the
    block formula's sums over patterns are exact on those values cut to
    ``digits`` digits and :data:`GUARD_BITS` (:mod:`~hessverify.symbolic.assembly`),
    and each sum is rounded once to ``digits`` digits.  The error is that of
    the evaluation (a chain of roundings at ``10^(1-digits)``), a few more
    roundings of the same size, and ``2^-GUARD_BITS`` of that.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/single-neuron-tanh.toml")
    >>> H = hessian_mpmath(case, digits=30)
    >>> mpmath.nstr(H[0, 1], 25)
    '0.3701274736551130397513182'
    """
    H = _assemble_sums(problem, _evaluate(problem, digits), _bits(digits), keep=True).exact
    assert H is not None
    with mpmath.workdps(digits):
        return np.frompyfunc(lambda f: mpmath.mpf(f.numerator) / f.denominator, 1, 1)(H)


def hessian_exact(problem: Problem) -> np.ndarray:
    """The exact Hessian as an object array of :class:`fractions.Fraction` (polynomial networks only).

    The program runs in Fractions, the sums over patterns in exact integers
    (:mod:`~hessverify.symbolic.assembly` keeping every bit).  Raises
    ``ValueError`` unless :func:`exact_allowed`.
    """
    if not exact_allowed(problem):
        raise ValueError(f"{problem.id}: exact rationals need polynomial activations and loss")
    q = per_pattern(problem, "exact", Fraction)
    _check_values(problem, q)
    H = _assemble_sums(problem, q, None, keep=True).exact
    assert H is not None
    return H * _scale(problem, Fraction(1))


def _up(x: Fraction) -> float:
    """The float64 nearest ``x`` or, where that is below it, the next one up: a bound, not an estimate."""
    f = float(x)
    return f if Fraction(f) >= x else float(np.nextafter(f, np.inf))


def _to_float64(H: np.ndarray) -> FloatArray:
    return np.vectorize(float, otypes=[np.float64])(H)


def hessian_with_error(problem: Problem, digits: int = DEFAULT_DIGITS, *,
                       magnitude: FloatArray | None = None) -> tuple[FloatArray, FloatArray]:
    """The gold value rounded to float64, and a bound on its distance from the true Hessian.

    Exact rationals where :func:`exact_allowed`: the bound is the rounding to
    float64, measured exactly.  Otherwise the sum of

    * the rounding to float64 (``|lo|`` of the double-double result),
    * the error of the exact sums over patterns: the per-pattern values cut
      to ``digits`` digits and :data:`GUARD_BITS` bits, the double-double
      (:class:`~hessverify.symbolic.assembly.Sum`), computed per entry,
    * the evaluation's own error, a chain of ``k + 2`` roundings at
      ``10^(1-digits)`` on terms of magnitude ``M``
      (:func:`hessverify.engine.bounds.magnitude_hessian`, or ``magnitude``
      when the caller has it; the ``+ 2`` for the reduction's ``1/N``): some
      35 orders of magnitude below the float64 errors it is used to measure.
    """
    if exact_allowed(problem):
        exact = hessian_exact(problem)
        value = _to_float64(exact)
        err = np.vectorize(lambda e, v: _up(abs(e - Fraction(v))), otypes=[np.float64])(exact, value)
        return value, err
    from hessverify.engine.bounds import chain_length, magnitude_hessian

    H = _assemble_sums(problem, _evaluate(problem, digits), _bits(digits))
    M = magnitude_hessian(problem) if magnitude is None else magnitude
    own = (chain_length(problem) + 2) * 10.0 ** (1 - digits) * M
    if not np.all(np.isfinite(H.hi)):
        raise OverflowReport("the high-precision Hessian does not fit in float64")
    with np.errstate(over="ignore", invalid="ignore"):  # an error past float64 (a target of 1e308): an infinite
        return H.hi, np.abs(H.lo) + H.err + own           # bound entry, unchecked there, never a disagreement


def hessian(problem: Problem) -> FloatArray:
    """The gold reference: exact where the network allows it, else 50-digit; rounded to float64."""
    return hessian_with_error(problem)[0]
