r"""``symbolic`` for networks of any layer kinds: each kind's array form run on SymPy, then the exact chain rule.

The dense networks have their own closed form (:mod:`hessverify.symbolic.reference`:
Bishop's block formula over a program of named per-layer quantities).  For
the other kinds (convolution, pooling, LayerNorm, BatchNorm, residual add,
attention, embedding) this module builds the network's program from each
kind's array form (:meth:`~hessverify.model.layers.base.LayerKind.xp`,
written apart from the primitives the methods differentiate) run on SymPy
arrays (:mod:`hessverify.symbolic.arrays`), the activations from the
activation table's SymPy column and the loss from the loss table's, and
composes its Hessian exactly from the templates' ``sympy.diff``
(:mod:`hessverify.symbolic.chain`):

* one generic pattern (symbols ``x[...]``, ``t[k]``) evaluated for every
  pattern, where the patterns do not meet; the whole batch as one program
  where they do (BatchNorm with batch statistics) or where the program
  depends on the data (an embedding's token ids);
* exact fractions where every line of the program is a polynomial with
  rational coefficients (identity activations, ``sse`` or ``output``, no
  norm, no attention), else mpmath at ``digits`` digits (50 by default).

:func:`hessian_with_error` returns the value rounded to float64 and a bound
on its distance from the exact Hessian: its rounding to float64, measured
exactly (the sum over the program is exact in integers,
:class:`~hessverify.symbolic.chain.Accumulator`), plus for mpmath a bound on
the 50-digit evaluation, ``8 k 10^(1-digits) M``, with ``k`` the roundings
along the program's longest path and ``M`` the Hessian of magnitudes (every
local derivative by its absolute value; :func:`~hessverify.symbolic.chain.magnitude_numbers`):
a first-order bound, about 30 orders of magnitude below the float64 errors it
is used to judge (the ``certified`` reference proves its enclosures instead).

Examples
--------
>>> import numpy as np
>>> from hessverify.model.network import Architecture, Layer
>>> from hessverify.model.problem import Problem
>>> arch = Architecture(4, (Layer(kind="conv1d", options={"channels": 1, "kernel": 2}, activation="tanh"),
...                         Layer(kind="flatten"), Layer(1)), input_shape=(1, 4))
>>> case = Problem(arch, "sse", np.linspace(-0.5, 0.5, arch.n_params), np.array([[1.0, 0.5, -0.5, 2.0]]),
...                np.array([[0.25]]))
>>> H, err = hessian_with_error(case)
>>> H.shape, bool((err < 1e-15 * np.abs(H).max()).all())
((7, 7), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Any

import mpmath
import numpy as np
import sympy

from hessverify.base.typing import FloatArray
from hessverify.model.activations import get_activation
from hessverify.model.losses import get_loss
from hessverify.model.network import Architecture
from hessverify.model.problem import Problem
from hessverify.symbolic.arrays import SymArray, SymbolicNumpy, Tape
from hessverify.symbolic.chain import (
    Result,
    decimal_numbers,
    exact_numbers,
    hessian_of_program,
    magnitude_numbers,
    mpmath_numbers,
)

__all__ = ["DEFAULT_DIGITS", "MAX_LINES", "MAX_SECONDS", "OWN_FACTOR", "SECONDS_PER", "KindProgram", "counts",
           "estimated_seconds", "exact_allowed", "gradient", "hessian", "hessian_exact", "hessian_high_precision",
           "hessian_mpmath", "hessian_with_error", "left_out", "lines_bound", "magnitudes", "program", "program_of",
           "small_enough", "work"]

DEFAULT_DIGITS = 50
"""Significant decimal digits of the high-precision evaluation."""

OWN_FACTOR = 8.0
"""Safety factor of the bound on the mpmath evaluation, ``OWN_FACTOR k 10^(1-digits) M``: the three factors of a
second-order term each carry at most ``k`` roundings (``3 k``), and a local derivative inherits its argument's error
through its own derivative (a few more)."""


@dataclass(frozen=True)
class KindProgram:
    """A network's error as a straight-line program (:mod:`hessverify.symbolic.arrays`).

    ``inputs`` and ``targets`` are the symbols of the data, shape
    ``(n, ...)``: ``n = 1`` for a generic pattern (evaluated once per
    pattern), the number of patterns for a batch program; ``inputs`` is
    ``None`` where the network reads token ids (they are in the program).
    ``error`` is the sum of the per-pattern errors of the program's
    patterns, before the reduction's factor.
    """

    arch: Architecture
    loss: str
    tape: Tape
    params: tuple[sympy.Symbol, ...]
    inputs: np.ndarray | None
    targets: np.ndarray
    error: sympy.Symbol
    batch: bool
    layers: tuple[tuple[np.ndarray, Any], ...] = ()
    """Per layer (index ``l - 1``): its output entries before the activation, and its input (the sources' entries
    side by side, or the token ids)."""

    @property
    def size(self) -> int:
        """The number of lines."""
        return len(self.tape.nodes)

    @cached_property
    def exact(self) -> bool:
        """Whether every line is a polynomial with rational coefficients: the Hessian is a rational number."""
        seen = {id(n.template): n.template for n in self.tape.nodes}
        for t in seen.values():
            if not t.expr.is_polynomial(*t.slots):
                return False
            if not all(c.is_Rational for c in sympy.Poly(t.expr, *t.slots).coeffs()):
                return False
        return True

    @property
    def definitions(self) -> dict[sympy.Symbol, sympy.Expr]:
        return self.tape.definitions


def _couples(arch: Architecture) -> bool:
    return any(layer.kind_def.couples_patterns(layer.opts) or layer.kind_def.reads_ids for layer in arch.layers)


def program(arch: Architecture, loss: str, patterns: int = 1, ids: np.ndarray | None = None,
            loss_options: tuple[tuple[str, float], ...] = ()) -> KindProgram:
    """The program of ``arch`` and ``loss`` (with its settings ``loss_options``: Huber's delta) on ``patterns``
    patterns (``ids``: the token ids, for an embedding).

    Examples
    --------
    >>> from hessverify.model.network import Architecture, Layer
    >>> arch = Architecture(3, (Layer(kind="layer_norm", options={"affine": False}), Layer(1)))
    >>> prog = program(arch, "sse")
    >>> [f"{s} = {d}" for s, d in prog.definitions.items()][:3]
    ['h1.1 = x[0]/3 + x[1]/3 + x[2]/3', 'h1.2[0] = -h1.1 + x[0]', 'h1.2[1] = -h1.1 + x[1]']
    """
    ids = None if ids is None else np.asarray(ids, dtype=np.float64)
    key = (arch, loss, tuple(loss_options), patterns, None if ids is None else (ids.shape, ids.tobytes()))
    found = _PROGRAMS.pop(key, None)
    if found is None:
        found = _trace(arch, loss, patterns, ids, tuple(loss_options))
    _PROGRAMS[key] = found  # most recently used last
    while len(_PROGRAMS) > 16:
        _PROGRAMS.pop(next(iter(_PROGRAMS)))
    return found


_PROGRAMS: dict[Any, KindProgram] = {}
"""The programs built last (tracing a network costs a SymPy node per entry of every array it computes)."""


def _trace(arch: Architecture, loss: str, n: int, ids: np.ndarray | None,
           loss_options: tuple[tuple[str, float], ...] = ()) -> KindProgram:
    """Run every layer's array form on SymPy arrays, then its activation, then the loss per pattern."""
    tape = Tape(drop_axis=n == 1)
    xp = SymbolicNumpy(tape)
    names = iter(arch.param_names)
    ps_by_layer: list[list[SymArray]] = [[] for _ in range(arch.depth + 1)]
    params: list[sympy.Symbol] = []
    for t in arch.tensors:
        arr = xp.symbols(t.label, t.shape, [next(names) for _ in range(t.size)])
        ps_by_layer[t.layer].append(arr)
        params += list(arr.entries.ravel())
    if ids is not None:
        x: Any = ids.reshape((n,) + arch.shape)
        inputs = None
    else:
        shape = (n,) + arch.shape
        x = xp.symbols("x", shape, [_data_name("x", i, n) for i in np.ndindex(*shape)])
        inputs = x.entries
    K = arch.outputs
    t_sym = xp.symbols("t", (n, K), [_data_name("t", i, n) for i in np.ndindex(n, K)])
    outs: list[Any] = [x]
    layers = []
    for index, layer in enumerate(arch.layers, start=1):
        srcs = (index - 1,) if layer.sources is None else layer.sources
        tape.prefix = f"h{index}."
        y = layer.kind_def.xp(xp, layer.opts, [outs[s] for s in srcs], ps_by_layer[index])
        y = xp.asarray(y)
        layers.append((y.entries, [outs[s].entries if isinstance(outs[s], SymArray) else outs[s] for s in srcs]))
        tape.label(y, f"a{index}")
        act = get_activation(layer.activation)
        z = xp.apply(f"act:{act.name}", act.expr, y, kinks=tuple(act.kinks))
        tape.label(z, f"z{index}")
        outs.append(z)
    tape.prefix = "e"
    y = xp.reshape(outs[-1], (n, K))
    expr = get_loss(loss, **dict(loss_options)).expr
    per_pattern = []
    name = tape.begin()
    for i in range(n):
        entries = list(y.entries[i]) + list(t_sym.entries[i])
        per_pattern.append(tape.apply(name, f"loss:{loss}:{loss_options}:{K}", lambda *e: expr(list(e[:K]), list(e[K:])),
                                      entries, (i,)))
    if n == 1:
        error = per_pattern[0]
    else:
        tape.prefix = "E"
        error = xp.sum(xp.asarray(np.array(per_pattern, dtype=object))).entries[()]
    if not isinstance(error, sympy.Symbol):  # a constant error (no parameter reaches it): name it anyway
        error = sympy.Symbol("E", real=True)
    return KindProgram(arch, loss, tape, tuple(params), inputs, t_sym.entries, error, n > 1, tuple(layers))


def _data_name(base: str, index: tuple[int, ...], n: int) -> str:
    shown = index[1:] if n == 1 else index
    return f"{base}[{','.join(map(str, shown))}]"


def program_of(problem: Problem) -> KindProgram:
    """The program of a case: a generic pattern, or the batch where the patterns meet (module text)."""
    arch = problem.architecture
    options = tuple(problem.loss_options)
    if not _couples(arch):
        return program(arch, str(problem.loss), loss_options=options)
    ids = None
    if any(layer.kind_def.reads_ids for layer in arch.layers):
        ids = np.asarray(problem.inputs)
    return program(arch, str(problem.loss), problem.n_patterns, ids, options)


def exact_allowed(problem: Problem) -> bool:
    """Whether the Hessian is computed in exact fractions: every line of the program a rational polynomial."""
    return program_of(problem).exact


def _run(problem: Problem, numbers: Any) -> Result:
    prog = program_of(problem)
    N = problem.n_patterns
    x = np.asarray(problem.inputs, dtype=np.float64)
    t = np.asarray(problem.targets, dtype=np.float64)
    leaves: dict[sympy.Symbol, Any] = {p: numbers.number(float(v)) for p, v in zip(prog.params, problem.params,
                                                                                      strict=True)}
    convert = np.frompyfunc(numbers.number, 1, 1) if numbers.dtype is object else (lambda a: a)
    if prog.batch:
        P = 1
        if prog.inputs is not None:
            for sym, v in zip(prog.inputs.ravel(), x.ravel(), strict=True):
                leaves[sym] = numbers.full(1, numbers.number(float(v)))
        for sym, v in zip(() if prog.targets is None else prog.targets.ravel(), t.ravel() if prog.targets is not None
                          else (), strict=True):
            leaves[sym] = numbers.full(1, numbers.number(float(v)))
    else:
        P = N
        # a program that reads no inputs (or no targets) has none among its leaves
        for j, sym in enumerate(() if prog.inputs is None else prog.inputs.ravel()):
            leaves[sym] = np.asarray(convert(x[:, j]), dtype=numbers.dtype)
        for k, sym in enumerate(() if prog.targets is None else prog.targets.ravel()):
            leaves[sym] = np.asarray(convert(t[:, k]), dtype=numbers.dtype)
    return hessian_of_program(prog.tape.nodes, prog.params, leaves, prog.error, numbers, P, names=prog.tape.labels)


def _scale(problem: Problem) -> Fraction:
    """The reduction's factor, exactly: ``1/N``, or ``1/(N K)`` for a loss whose mean is over every output."""
    if problem.reduction != "mean":
        return Fraction(1)
    per_output = get_loss(str(problem.loss)).mean_over_outputs
    return Fraction(1, problem.n_patterns * (problem.targets.shape[1] if per_output else 1))


def hessian_exact(problem: Problem) -> np.ndarray:
    """The exact Hessian as an object array of :class:`fractions.Fraction` (``ValueError`` unless :func:`exact_allowed`)."""
    if not exact_allowed(problem):
        raise ValueError(f"{problem.id}: exact fractions need a program of rational polynomials "
                         "(identity activations, sse or output, no norm or attention)")
    r = _run(problem, exact_numbers())
    s = _scale(problem)
    return np.frompyfunc(lambda n: Fraction(n, r.den) * s, 1, 1)(r.num)


def hessian_high_precision(problem: Problem, digits: int = DEFAULT_DIGITS, *, numbers: str = "decimal"
                           ) -> tuple[np.ndarray, int, Result]:
    """The Hessian as exact integers over one denominator, ``(num, den, result)``, from ``digits``-digit numbers.

    ``numbers``: ``"decimal"`` (:func:`~hessverify.symbolic.chain.decimal_numbers`, the default) or
    ``"mpmath"`` (:func:`~hessverify.symbolic.chain.mpmath_numbers`, the same numbers more slowly: a
    cross-check).  ``num / den`` is the exact sum of the program's rounded local factors; the reduction's
    ``1/N`` is in ``den``.
    """
    system = {"decimal": decimal_numbers, "mpmath": mpmath_numbers}[numbers](digits)
    r = _run(problem, system)
    return r.num, r.den * _scale(problem).denominator, r


def hessian_mpmath(problem: Problem, digits: int = DEFAULT_DIGITS) -> np.ndarray:
    """The Hessian as an object array of ``mpf`` at ``digits`` digits (the program's factors in mpmath)."""
    num, den, _ = hessian_high_precision(problem, digits, numbers="mpmath")
    with mpmath.workdps(digits):
        return np.frompyfunc(lambda n: mpmath.mpf(n) / den, 1, 1)(num)


def _rounded(num: np.ndarray, den: int) -> tuple[FloatArray, FloatArray]:
    """``num / den`` rounded to float64, and ``|num / den - value|``, measured exactly and rounded up.

    Python's ``int / int`` is correctly rounded; with ``value = p / q``
    (``float.as_integer_ratio``) the distance is ``|num q - p den| / (den q)``,
    again one correctly rounded division, widened by an ulp.
    """
    flat = num.ravel().tolist()
    value = np.fromiter((n / den for n in flat), np.float64, len(flat))
    err = np.empty(len(flat))
    for i, (n, v) in enumerate(zip(flat, value.tolist(), strict=True)):
        p, q = v.as_integer_ratio()
        err[i] = abs(n * q - p * den) / (den * q)
    err = np.nextafter(err, np.inf)  # the division rounded to nearest: one ulp up makes it a bound
    return value.reshape(num.shape), err.reshape(num.shape)


def hessian_with_error(problem: Problem, digits: int = DEFAULT_DIGITS, *,
                       magnitude: FloatArray | None = None) -> tuple[FloatArray, FloatArray]:
    """The gold value rounded to float64, and a bound on its distance from the exact Hessian (module text).

    ``magnitude``, a magnitude Hessian the caller has (the point's), only
    widens the bound where it is larger than the program's own.
    """
    if exact_allowed(problem):
        r = _run(problem, exact_numbers())
        return _rounded(r.num, r.den * _scale(problem).denominator)
    num, den, r = hessian_high_precision(problem, digits)
    value, err = _rounded(num, den)
    M = magnitudes(problem)
    if magnitude is not None:
        M = np.maximum(M, np.asarray(magnitude, dtype=np.float64))
    own = OWN_FACTOR * r.chain * 10.0 ** (1 - digits) * M
    return value, err + own


def gradient(problem: Problem, digits: int = DEFAULT_DIGITS) -> np.ndarray:
    """The gradient at ``digits`` digits (object array of ``Decimal``): the parameters' adjoints of the same run."""
    r = _run(problem, decimal_numbers(digits))
    scale = _scale(problem)
    return r.gradient if scale == 1 else np.frompyfunc(lambda g: g / scale.denominator, 1, 1)(r.gradient)


def magnitudes(problem: Problem) -> FloatArray:
    """The Hessian of magnitudes ``M``: the program run in float64 with every derivative by its absolute value."""
    r = _run(problem, magnitude_numbers())
    M = np.asarray(r.num, dtype=np.float64) * float(_scale(problem))
    return np.where(np.isfinite(M), M, np.inf)


def hessian(problem: Problem) -> FloatArray:
    """The gold reference: exact where the program allows it, else 50-digit mpmath; rounded to float64."""
    return hessian_with_error(problem)[0]


def counts(problem: Problem) -> dict[str, int]:
    """The work of one evaluation, measured (lines, template evaluations, Jacobian entries, second-order products)."""
    r = _run(problem, magnitude_numbers())
    return {"lines": program_of(problem).size, **r.counts}


# -- cost: counted on the program, before any number is computed ------------------------------------------

SECONDS_PER = {"line": 2e-3, "evaluation": 5e-5, "jacobian": 3e-6, "product": 4e-6}
"""Seconds per unit of work of :func:`work` at 50 digits, measured on this machine under load
(``benchmarks/symbolic_scaling.py --kinds``; docs/symbolic.md gives the runs): tracing and compiling per line,
a template evaluation per line and pattern, a Jacobian entry carried (decimal multiply-add), an integer
multiply-add of the second-order sums; rounded up."""

MAX_SECONDS = 20.0
"""Longest estimated run for which ``verify`` uses ``symbolic`` on a network of other kinds by default."""

MAX_LINES = 200_000
"""Programs estimated past this many lines are not traced to be counted (the estimate alone says too large)."""


def lines_bound(problem: Problem) -> int:
    """An upper estimate of the program's lines without tracing it: every layer's output entries times the
    entries each reads, over the patterns a batch program holds (cheap: shapes only)."""
    arch = problem.architecture
    n = problem.n_patterns if _couples(arch) else 1
    total = 0
    for index, layer in enumerate(arch.layers, start=1):
        srcs = (index - 1,) if layer.sources is None else layer.sources
        out = int(np.prod(arch.shapes[index]))
        reads = sum(int(np.prod(arch.shapes[s])) for s in srcs)
        total += out * (8 + min(reads, 64))
    return n * (total + arch.outputs)


def work(problem: Problem) -> dict[str, int]:
    """The work of :func:`hessian_with_error`, counted exactly on the traced program (bit sets of supports):
    ``lines``, template ``evaluations``, ``jacobian`` entries carried and second-order ``products``."""
    prog = program_of(problem)
    found = _WORK.get(id(prog))
    if found is None or found[0] is not prog:
        found = _WORK[id(prog)] = (prog, _count(prog))
    per = found[1]
    P = 1 if prog.batch else problem.n_patterns
    return {"lines": prog.size, "evaluations": per["evaluations"] * P, "jacobian": per["jacobian"] * P,
            "products": per["products"] * P}


_WORK: dict[int, tuple[KindProgram, dict[str, int]]] = {}


def _count(prog: KindProgram) -> dict[str, int]:
    support: dict[sympy.Symbol, int] = {p: 1 << k for k, p in enumerate(prog.params)}
    evaluations = jacobian = products = 0
    for node in prog.tape.nodes:
        evaluations += 1
        reach = 0
        for a in node.args:
            s = support.get(a)
            if s is not None:
                reach |= s
                jacobian += s.bit_count()
        if not reach:
            continue
        support[node.symbol] = reach
        for s, t, _ in node.template.hess:
            ss, st = support.get(node.args[s]), support.get(node.args[t])
            if ss and st:
                products += ss.bit_count() * st.bit_count()
    return {"evaluations": evaluations, "jacobian": jacobian, "products": products}


def estimated_seconds(problem: Problem) -> float:
    """Seconds :func:`hessian_with_error` is expected to take (:data:`SECONDS_PER` times :func:`work`; the
    magnitude pass and the tracing included); past :data:`MAX_LINES` estimated lines, the bound alone."""
    if lines_bound(problem) > MAX_LINES:
        return SECONDS_PER["line"] * lines_bound(problem) * 10
    w = work(problem)
    return (SECONDS_PER["line"] * w["lines"] + SECONDS_PER["evaluation"] * w["evaluations"]
            + SECONDS_PER["jacobian"] * w["jacobian"] + SECONDS_PER["product"] * w["products"])


def small_enough(problem: Problem) -> bool:
    """Whether ``verify`` uses ``symbolic`` on this case by default (:data:`MAX_SECONDS`)."""
    return estimated_seconds(problem) <= MAX_SECONDS


def left_out(problem: Problem) -> str:
    """Why ``verify`` leaves ``symbolic`` out of this case by default (one line)."""
    return (f"symbolic: skipped, estimated {estimated_seconds(problem):.3g} s above the limit of {MAX_SECONDS:.0f} s "
            "for networks of these kinds; name it to force it (--reference symbolic)")
