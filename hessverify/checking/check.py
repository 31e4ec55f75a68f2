"""Check your own Hessian code against hessverify's methods and references.

:func:`check` runs a user function on one problem, a list of problems or a
Hypothesis strategy of problems (:func:`hessverify.checking.strategies.problems`),
compares what it returns with each named reference within the derived
bound of :func:`hessverify.engine.compare.bound_for`, and returns a
:class:`CheckResult`.  :func:`assert_hessian_close` does the same and raises
a readable :class:`AssertionError`, for use in tests.

The contracts of the user function (``returns=``):

``"hessian"``
    ``fn(problem) -> array (W, W)``: the Hessian of ``E`` with respect to
    ``problem.params``, rows and columns in the public order
    (``problem.param_names``: ``W1[0,0], ..., b1[0], W2[0,0], ...``).
``"hvp"``
    ``fn(problem, v) -> array (W,)``: the Hessian-vector product ``H v`` for
    a float64 vector ``v`` of shape ``(W,)`` in the public order.  ``check``
    calls it once per basis vector ``e_j`` to rebuild ``H`` column by column,
    so every entry is compared and named.
``"diagonal"``
    ``fn(problem) -> array (W,)``: the diagonal of the Hessian, compared with
    the references' diagonals.
``"blocks"``
    ``fn(problem) -> [B_1, B_2, ...]``: the per-layer diagonal blocks of the
    Hessian, ``B_l`` square over layer ``l``'s parameters (``W_l`` then
    ``b_l``, as in the public order), compared with the references' blocks.
``"ggn"``
    ``fn(problem) -> array (W, W)``: the generalised Gauss-Newton matrix
    ``J^T H_loss J`` (the reduction's ``1/N`` included for ``mean``), held
    to :data:`GGN_REFERENCES` within the Hessian's rounding bound (whose
    terms include the GGN's).

The :class:`~hessverify.model.problem.Problem` a function receives carries the flat
``params``, the per-layer ``weights`` (``(units, fan_in)``) and ``biases``
(``None`` for a layer without bias), ``inputs`` ``(N, inputs)``, ``targets``
``(N, outputs)``, the ``activations`` (one name a layer), ``loss`` and
``reduction`` (``"sum"`` or ``"mean"``); see :mod:`hessverify.model.problem`.

Examples
--------
>>> import hessverify
>>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
>>> result = hessverify.check(lambda p: hessverify.hessian(p, "autograd"), case, against=("backprop",))
>>> result.passed, result.n_problems
(True, 1)
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from hessverify.base.precision import FLOAT64, Precision, get_precision
from hessverify.base.typing import FloatArray
from hessverify.checking.sandbox import DEFAULT_TIMEOUT, call_user, user_copy
from hessverify.engine.budget import check_memory
from hessverify.engine.compare import TOLERANCES, Comparison, bound_for, compare
from hessverify.engine.point import Point
from hessverify.engine.registry import METHODS
from hessverify.engine.verify import check_reference, not_applicable_reason, not_applicable_record
from hessverify.errors import FunctionUnderTestError, UsageError
from hessverify.model.problem import Problem

__all__ = ["GGN_REFERENCES", "RETURNS", "CheckResult", "assert_hessian_close", "check", "check_problem", "describe",
           "reduce_problem"]

Returns = Literal["hessian", "hvp", "diagonal", "blocks", "ggn"]
RETURNS: tuple[str, ...] = ("hessian", "hvp", "diagonal", "blocks", "ggn")
"""What a user function may return (see the module text for each contract)."""

DEFAULT_AGAINST = ("backprop", "autograd", "fd")


def _ggn_method(problem: Problem) -> FloatArray:
    from hessverify.methods.gauss_newton import hessian

    return hessian(problem)


def _ggn_autograd(problem: Problem) -> FloatArray:
    from hessverify.references.curvature_ref import gauss_newton

    return gauss_newton(problem)


GGN_REFERENCES: dict[str, Callable[[Problem], FloatArray]] = {
    "gauss_newton": _ggn_method,  # hessverify's GGN, J^T H_loss J from the backprop quantities
    "autograd": _ggn_autograd,  # the same from autograd's Jacobian and loss Hessian, written independently
}
"""What a ``returns="ggn"`` function is held to (both by default)."""

USER = "user"
"""The method name the user's function is reported under."""


@dataclass
class CheckResult:
    """The outcome of :func:`check`.

    Attributes
    ----------
    passed:
        Every comparison on every problem agreed within its bound.
    n_problems:
        How many problems the function was run on (for a strategy that
        failed: up to and including the first failure).
    problem:
        The first failing problem (for a strategy: the shrunk, minimal one),
        or ``None`` when everything passed.
    comparisons:
        The comparisons of ``problem`` when one failed, else those of every
        problem checked from a list (for a strategy: none are kept on
        success, there may be thousands).
    bounds:
        For each reference, how its bound is derived
        (:data:`hessverify.engine.compare.TOLERANCES`).
    error:
        The exception the user function raised, if that is how it failed.
    shrink_calls:
        For a strategy that failed: further calls made while shrinking.
    """

    passed: bool
    n_problems: int
    returns: str
    against: tuple[str, ...]
    problem: Problem | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    bounds: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    shrink_calls: int = 0

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.passed]

    @property
    def worst(self) -> Comparison | None:
        """The comparison closest to failing, or failing worst (largest margin)."""
        return max(self.comparisons, key=lambda c: c.margin, default=None)

    def summary(self) -> str:
        """A few lines for people: what failed, where, by how much, against which bound."""
        if self.passed:
            w = self.worst
            tail = f"; largest margin {w.margin:.2g} ({w.reference}, {w.worst_entry.row} x {w.worst_entry.col})" \
                if w is not None else ""
            narrow = _narrow_format(self.comparisons)
            if narrow and w is not None:
                tail += f"; consistent with {narrow} rounding (margin {w.margin:.2g})"
            return (f"check passed: {self.returns} on {self.n_problems} problem(s) "
                    f"against {', '.join(self.against)}{tail}")
        lines = [f"check FAILED: the user {self.returns} on {self.problem!r}"]
        if self.problem is not None:
            lines.append(f"  architecture {self.problem.architecture.describe()}, loss {self.problem.loss}, "
                         f"reduction {self.problem.reduction}, {self.problem.n_patterns} pattern(s)")
        if self.error:
            lines.append(f"  the function could not be compared: {self.error}")
        else:
            lines += ["  " + describe(c) for c in self.failures]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "n_problems": self.n_problems, "returns": self.returns,
            "against": list(self.against), "bounds": self.bounds, "error": self.error,
            "shrink_calls": self.shrink_calls,
            "problem_toml": self.problem.to_toml() if self.problem is not None else None,
            "comparisons": [c.to_dict() for c in self.comparisons],
        }

    def __str__(self) -> str:
        return self.summary()


def _narrow_format(comparisons: list[Comparison]) -> str | None:
    """The narrower format the comparisons were judged in (their bound kind ends ``+float32``), if any."""
    for c in comparisons:
        last = c.bound_kind.rsplit("+", 1)[-1]
        if last in ("float32", "float16", "bfloat16"):
            return last
    return None


def describe(c: Comparison) -> str:
    """One line for one comparison: which, where (parameter names), both values, error and bound."""
    w = c.worst_entry
    if c.bound_kind == "none":
        return f"{c.method} vs {c.reference}: not compared: {c.note}"
    state = "ok" if c.passed else f"FAIL ({c.failing_entries} entries over the bound)"
    note = f" [{c.note}]" if c.note else ""
    return (f"{c.method} vs {c.reference}: {state}; worst {w.row} x {w.col}: {c.method} {w.value:.17g}, "
            f"{c.reference} {w.reference_value:.17g}, |error| {w.abs_error:.3g} vs bound {w.bound:.3g} "
            f"({c.bound_kind}), margin {c.margin:.3g}{note}")


def _as_real_array(value: Any, what: str, shape: tuple[int, ...], problem: Problem) -> FloatArray:
    """The user's result as float64 of ``shape``; anything else is the function's failure, not a discrepancy."""
    if value is None:
        raise FunctionUnderTestError(f"{what} returned None, expected an array of shape {shape}", problem=problem)
    try:
        arr = np.asarray(value)
    except Exception as exc:  # an object numpy cannot even look at
        raise FunctionUnderTestError(f"{what} returned a {type(value).__name__} that is not an array "
                                     f"({type(exc).__name__})", problem=problem) from None
    if np.iscomplexobj(arr):
        imag = float(np.max(np.abs(arr.imag))) if arr.size else 0.0
        raise FunctionUnderTestError(f"{what} returned complex values (largest |imaginary part| {imag:.3g}); "
                                     "return the real Hessian", problem=problem)
    if arr.dtype.kind not in "fiub":
        raise FunctionUnderTestError(f"{what} returned a {type(value).__name__} of {arr.dtype}, not an array of "
                                     "real numbers", problem=problem)
    if arr.shape != shape:
        raise FunctionUnderTestError(f"{what} returned shape {arr.shape}, expected {shape}", problem=problem)
    return arr.astype(np.float64)


def _precision_of(value: Any) -> Precision:
    """The format a result was computed in, from its dtype: float32, float16, bfloat16, else float64."""
    name = getattr(getattr(value, "dtype", None), "name", "float64")
    return get_precision(name) if name in ("float32", "float16", "bfloat16") else FLOAT64


def _user_matrix(fn: Callable[..., Any], problem: Problem, returns: str,
                 timeout: float | None = DEFAULT_TIMEOUT, seen: list[Precision] | None = None) -> FloatArray:
    """What the user function returns, as float64, with its shape checked against the contract.

    The function gets its own copy of the problem each call (:func:`~hessverify.sandbox.user_copy`).
    """
    n = problem.n_params
    if returns == "hvp":
        cols = []
        for j in range(n):
            e = np.zeros(n)
            e[j] = 1.0
            out = call_user(fn, user_copy(problem), e, timeout=timeout, problem=problem)
            if seen is not None:
                seen.append(_precision_of(out))
            cols.append(_as_real_array(out, "fn(problem, v)", (n,), problem))
        return np.stack(cols, axis=1)
    out = call_user(fn, user_copy(problem), timeout=timeout, problem=problem)
    if seen is not None:
        seen.append(_precision_of(out[0] if returns == "blocks" and isinstance(out, (list, tuple)) and out else out))
    if returns == "blocks":
        return _blocks_matrix(out, problem)
    expected = (n,) if returns == "diagonal" else (n, n)
    what = f"fn(problem) ({'the diagonal' if returns == 'diagonal' else 'the Hessian'} of {n} parameters)"
    return _as_real_array(out, what, expected, problem)


def _blocks_matrix(value: Any, problem: Problem) -> FloatArray:
    """The user's per-layer blocks placed on the diagonal of a ``(W, W)`` matrix (zeros elsewhere)."""
    blocks = problem.architecture.blocks
    if not isinstance(value, (list, tuple)) or len(value) != len(blocks):
        raise FunctionUnderTestError(f"fn(problem) returned a {type(value).__name__}, expected a list of "
                                     f"{len(blocks)} per-layer blocks", problem=problem)
    out = np.zeros((problem.n_params, problem.n_params))
    for blk, b in zip(blocks, value):
        out[blk.slice, blk.slice] = _as_real_array(b, f"block {blk.layer} of fn(problem)", (blk.size, blk.size), problem)
    return out


def _same_layer(problem: Problem) -> np.ndarray:
    layer = problem.architecture.layer_of_param
    return layer[:, None] == layer[None, :]


def check_problem(fn: Callable[..., Any], problem: Problem, *, against: Sequence[str] = DEFAULT_AGAINST,
                  returns: str = "hessian", timeout: float | None = DEFAULT_TIMEOUT,
                  precision: Precision | str | None = None) -> list[Comparison]:
    """Compare ``fn`` on one problem with each reference in ``against``; one :class:`Comparison` each.

    The references are computed first, on the problem as given; ``fn`` then
    gets a copy (so writing into its input changes nothing it is held to).

    ``fn`` is judged at ``precision`` (default: the format of the dtype it
    returns; float64 when that is float64 or not a float): in a narrower
    format its side of the bound is the rounding model at that unit roundoff,
    ``2 gamma_k M`` (once for its own arithmetic, once for the rounding of
    the problem's data into the format, which moves every term by up to
    ``u``), added to the float64 bound the comparison has anyway.

    Raises
    ------
    FunctionUnderTestError
        ``fn`` raised, exited, hung past ``timeout`` seconds, or returned
        no real array of the contract's shape: nothing could be compared.
    """
    check_memory(problem, [*against, USER], kept=len(against) * 2 + 1)

    point = Point.of(problem)
    rounding = point.finite_rounding
    refs = []
    not_applicable: list[Comparison] = []
    for ref_name in against:
        ref = METHODS.get(ref_name)
        with warnings.catch_warnings():
            # autograd warns when E is linear in some parameters (a constant Hessian): harmless here
            warnings.filterwarnings("ignore", "Output seems independent of input")
            if returns == "ggn":
                R, err = np.asarray(GGN_REFERENCES[ref_name](problem), dtype=np.float64), None
            else:
                R, err = ref.compute_with_error(point)
                R = np.asarray(R, dtype=np.float64)
        reason = not_applicable_reason(problem, ref_name, R, err)
        if reason is not None:  # this reference cannot serve here: say so, judge by the others
            not_applicable.append(not_applicable_record(problem, ref_name, reason, R, err))
            continue
        refs.append((ref_name, R, err))
    seen: list[Precision] = []
    A = _user_matrix(fn, problem, returns, timeout, seen)
    p = get_precision(precision) if precision is not None else max(seen, key=lambda q: q.unit_roundoff,
                                                                    default=FLOAT64)
    narrow = None
    if p.unit_roundoff > FLOAT64.unit_roundoff:
        narrow = point.at(p).rounding(2)
    out = not_applicable
    for ref_name, R, err in refs:
        bound, kind = bound_for(problem, ref_name, reference_error=err, rounding=rounding)
        if narrow is not None:
            bound, kind = bound + narrow, f"{kind}+{p.name}"
        if returns == "diagonal":
            R, bound = np.diag(R).copy(), np.diag(bound).copy()
        elif returns == "blocks":  # outside the blocks both sides are 0
            R = np.where(_same_layer(problem), R, 0.0)
        # NaN or inf where the reference is finite stays a discrepancy; compare's note says so
        out.append(compare(problem, USER, ref_name, A, R, bound, kind))
    return out


def _is_strategy(obj: object) -> bool:
    # a strategy can only exist if hypothesis is already imported, so this never imports it
    if "hypothesis" not in sys.modules:
        return False
    from hypothesis.strategies import SearchStrategy

    return isinstance(obj, SearchStrategy)


def check(
    fn: Callable[..., Any],
    problems: Problem | Iterable[Problem] | Any,
    *,
    against: Sequence[str] = DEFAULT_AGAINST,
    returns: Returns = "hessian",
    max_examples: int = 100,
    seed: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    precision: Precision | str | None = None,
) -> CheckResult:
    """Hold a user's Hessian (or H v, or diagonal) to hessverify's references.

    Parameters
    ----------
    fn:
        The code under test; its contract depends on ``returns`` (module text).
    problems:
        One :class:`~hessverify.model.problem.Problem`, an iterable of them, or a
        Hypothesis strategy of them.  A strategy is run for ``max_examples``
        examples (with ``seed`` if given) and a failure is shrunk to a
        minimal problem: by Hypothesis, then by :func:`reduce_problem` (no
        single layer, pattern, input, unit or bias can be removed from it).
    against:
        Registered methods or references to compare with (``hessverify
        methods`` lists them; default backprop, autograd and fd).  Each
        comparison uses the bound of :func:`hessverify.engine.compare.bound_for`
        for that name: the float64 rounding bound ``2 gamma_k M`` for exact
        ones, the finite-difference error estimate for ``fd``.  For
        ``returns="ggn"``: names of :data:`GGN_REFERENCES` (default both).
    returns:
        ``"hessian"``, ``"hvp"``, ``"diagonal"``, ``"blocks"`` or ``"ggn"``.
    timeout:
        Seconds one call of ``fn`` may take (``None`` or ``0``: no limit).
    precision:
        The format ``fn`` computes in (``"float32"``, a :class:`~hessverify.precision.Precision`),
        so it is judged by that format's rounding (:func:`check_problem`);
        default: taken from the dtype ``fn`` returns.

    Returns
    -------
    CheckResult
        Truthy when everything passed; ``summary()`` says what failed.

    Raises
    ------
    FunctionUnderTestError
        ``fn`` itself failed (raised, called ``sys.exit``, hung past
        ``timeout``, returned ``None``, a complex or wrongly shaped array)
        on the problem in ``error.problem``: a fault, not a discrepancy, so
        a strategy's example is not shrunk.
    UsageError
        No problems given, or a bad ``against`` / ``returns``.
    """
    if returns not in RETURNS:
        raise UsageError(f"returns={returns!r}: choose one of {', '.join(RETURNS)}")
    if precision is not None:
        try:
            precision = get_precision(precision)
        except ValueError as exc:
            raise UsageError(f"precision={precision!r}: {exc}") from None
    if returns == "ggn" and against is DEFAULT_AGAINST:  # the default names Hessian references
        against = tuple(GGN_REFERENCES)
    if isinstance(against, str):
        against = (against,)
    if against is None or not isinstance(against, Iterable):
        raise UsageError(f"against={against!r}: give a method or reference name, or a sequence of them")
    against = tuple(against)
    if not against:
        raise UsageError("against: name at least one method or reference")
    for name in against:
        if not isinstance(name, str):
            raise UsageError(f"against: {name!r} is not a method or reference name")
        if returns == "ggn":
            if name not in GGN_REFERENCES:
                raise UsageError(f"against: {name!r} is no Gauss-Newton reference; choose from {', '.join(GGN_REFERENCES)}")
            continue
        check_reference(name)
        if METHODS[name].kind != "matrix":
            raise UsageError(f"against: {name!r} does not return a full matrix; choose exact methods or references")
    bounds = {name: TOLERANCES[name].reason if name in TOLERANCES and returns != "ggn" else "exact: rounding bound"
              for name in against}
    if not callable(fn):
        raise UsageError(f"fn: {type(fn).__name__!r} is not callable; pass the function under test")
    if isinstance(problems, Problem):
        problems = [problems]
    if _is_strategy(problems):
        return _check_strategy(fn, problems, against, returns, max_examples, seed, bounds, timeout, precision)
    if isinstance(problems, (str, bytes)) or not isinstance(problems, Iterable):
        raise UsageError(f"problems: a Problem, an iterable of them or a strategy, got {type(problems).__name__} "
                         "(hessverify.load_case(path) reads a case file)")
    comparisons: list[Comparison] = []
    n = 0
    for problem in problems:
        if not isinstance(problem, Problem):
            raise UsageError(f"problems: item {n} is a {type(problem).__name__}, not a Problem")
        n += 1
        comps = check_problem(fn, problem, against=against, returns=returns, timeout=timeout, precision=precision)
        if not all(c.passed for c in comps):
            return CheckResult(False, n, returns, against, problem, comps, bounds,
                               next((c.note for c in comps if c.note), None))
        comparisons += comps
    if n == 0:  # passing with nothing checked would be a check that cannot fail
        raise UsageError("problems: none given; pass at least one Problem (or a strategy of them)")
    return CheckResult(True, n, returns, against, None, comparisons, bounds)


class _FunctionFailed(BaseException):
    """Carries a FunctionUnderTestError out of Hypothesis, which passes a BaseException straight through
    instead of shrinking it: a fault of the function is reported where it happened."""


def _check_strategy(fn: Callable[..., Any], strategy: Any, against: tuple[str, ...], returns: str,
                    max_examples: int, seed: int | None, bounds: dict[str, str],
                    timeout: float | None = DEFAULT_TIMEOUT, precision: Precision | str | None = None) -> CheckResult:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed

    state: dict[str, Any] = {"n": 0, "last": None, "first": None}

    class _Discrepancy(AssertionError):
        pass

    # No explain phase: it re-runs variations of the minimal failure after shrinking, and the
    # last failing call must be the shrunk example itself.
    @settings(max_examples=max_examples, deadline=None, database=None, report_multiple_bugs=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], print_blob=False)
    @given(strategy)
    def run(problem: Problem) -> None:
        state["n"] += 1
        try:
            comps = check_problem(fn, problem, against=against, returns=returns, timeout=timeout, precision=precision)
        except FunctionUnderTestError as exc:
            raise _FunctionFailed(exc) from None
        if not all(c.passed for c in comps):
            # Hypothesis replays the shrunk example last, so this ends as the minimal failure
            state["last"] = (problem, comps)
            if state["first"] is None:
                state["first"] = state["n"]
            raise _Discrepancy(problem.id)

    if seed is not None:
        run = with_seed(seed)(run)
    try:
        run()
    except _FunctionFailed as wrapped:
        raise wrapped.args[0] from None
    except _Discrepancy:
        problem, comps = state["last"]
        calls = state["n"]
        # Hypothesis cannot move a value from one position to another, so it can stop at, say,
        # three inputs of which only the first matters; finish with structural reductions.
        problem, comps, extra = reduce_problem(problem, comps, lambda p: check_problem(
            fn, p, against=against, returns=returns, timeout=timeout, precision=precision))
        state["n"] = calls + extra
        # n_problems: examples tried up to the first failure; the calls made while shrinking are not examples
        return CheckResult(False, state["first"], returns, against, problem, comps, bounds,
                           next((c.note for c in comps if c.note), None), shrink_calls=state["n"] - state["first"])
    return CheckResult(True, state["n"], returns, against, None, [], bounds)


def _smaller(problem: Problem) -> Iterator[Problem]:
    """Every problem one step smaller: an edge, a layer, a pattern, an input, a unit, a layer's bias or an output fewer.

    An edge is one source of a layer that reads several (its columns of ``W``
    go); a layer is read as the identity and composed into every layer that
    reads it, which then reads the layer's own sources instead (exact for an
    identity layer, a dead one included, and shape-correct for any).
    """
    from hessverify.checking.strategies import _case_id
    from hessverify.model.network import Architecture, Layer

    arch = problem.architecture
    if not arch.is_dense:  # these reductions are written for dense layers; Hypothesis has shrunk the others
        return
    Ws = [w.copy() for w in problem.weights]
    bs = [b.copy() if b is not None else np.zeros(w.shape[0]) for b, w in zip(problem.biases, Ws, strict=True)]
    layers = list(arch.layers)
    # sources[i]: what layer i + 1 reads (0-based layer list, 1-based sources as in the schema)
    srcs = [list(arch.parents(i)) for i in range(1, arch.depth + 1)]

    def build(n_in: int, lay: list[Layer], W: list[FloatArray], b: list[FloatArray], x: FloatArray,
              t: FloatArray, sources: list[list[int]] | None = None) -> Problem:
        sources = srcs if sources is None else sources
        new = Architecture(n_in, tuple(replace(layer, sources=tuple(src)) for layer, src in zip(lay, sources,
                                                                                                  strict=True)))
        # a fresh description: the one drawn with the problem names an architecture it no longer has
        return replace(problem, architecture=new, params=new.pack(list(zip(W, b, strict=True))),
                       inputs=x, targets=t, id=_case_id(new),
                       description=f"reduced by hessverify.check: {new.describe()}, {problem.loss}, "
                                   f"{problem.reduction}")

    def size(p: int, n_in: int = arch.inputs) -> int:
        return n_in if p == 0 else layers[p - 1].units

    def columns(i: int, p: int) -> slice:
        """The columns of W of layer i + 1 that read source p (for the current srcs)."""
        start = sum(size(q) for q in srcs[i][:srcs[i].index(p)])
        return slice(start, start + size(p))

    x, t = problem.inputs, problem.targets
    for i in range(len(layers)):  # an edge: a source of a layer that reads several
        for p in srcs[i] if len(srcs[i]) > 1 else ():
            W = list(Ws)
            W[i] = np.delete(Ws[i], np.arange(columns(i, p).start, columns(i, p).stop), axis=1)
            sources = [list(src) for src in srcs]
            sources[i].remove(p)
            yield build(arch.inputs, layers, W, bs, x, t, sources)
    for l in range(len(layers) if len(layers) > 1 else 0):  # a whole layer, 0-based
        if l < len(layers) - 1:
            yield _without_layer(l, layers, srcs, Ws, bs, size, columns, lambda lay, W, b, sources: build(
                arch.inputs, lay, W, b, x, t, sources))
        elif layers[l - 1].units == layers[l].units:  # the output layer, where the targets still fit
            yield build(arch.inputs, layers[:-1], Ws[:-1], bs[:-1], x, t, srcs[:-1])
    for n in range(problem.n_patterns if problem.n_patterns > 1 else 0):
        yield build(arch.inputs, layers, Ws, bs, np.delete(x, n, axis=0), np.delete(t, n, axis=0))
    for j in range(arch.inputs if arch.inputs > 1 else 0):  # an input: its column in every layer that reads x
        W = [np.delete(w, columns(i, 0).start + j, axis=1) if 0 in srcs[i] else w for i, w in enumerate(Ws)]
        yield build(arch.inputs - 1, layers, W, bs, np.delete(x, j, axis=1), t)
    for l, layer in enumerate(layers):  # 0-based here
        last = l == len(layers) - 1
        for k in range(layer.units if layer.units > 1 else 0):
            W = list(Ws)
            W[l] = np.delete(W[l], k, axis=0)
            b = list(bs)
            b[l] = np.delete(b[l], k)
            for i in range(l + 1, len(layers)):  # every layer that reads this one loses the unit's column
                if l + 1 in srcs[i]:
                    W[i] = np.delete(W[i], columns(i, l + 1).start + k, axis=1)
            tk = np.delete(t, k, axis=1) if last else t
            if last and problem.loss == "cross_entropy":
                continue  # dropping a class would change what the other targets mean
            lay = list(layers)
            lay[l] = replace(layer, units=layer.units - 1)
            yield build(arch.inputs, lay, W, b, x, tk)
        if layer.bias:
            lay = list(layers)
            lay[l] = replace(layer, bias=False)
            b = list(bs)
            b[l] = np.zeros_like(b[l])
            yield build(arch.inputs, lay, Ws, b, x, t)


def _without_layer(l: int, layers: list[Any], srcs: list[list[int]], Ws: list[FloatArray], bs: list[FloatArray],
                   size: Callable[[int], int], columns: Callable[[int, int], slice],
                   build: Callable[..., Problem]) -> Problem:
    """The problem with hidden layer ``l`` (0-based) read as the identity and composed into its readers.

    A reader ``c`` had ``W_{c,l} z_l``; with ``z_l = W_l x_l + b_l`` that is
    ``W_{c,l} W_l x_l + W_{c,l} b_l``: ``c`` reads ``l``'s sources instead
    (added to its own columns where it already reads one) and its bias takes
    ``W_{c,l} b_l``.  Later layers are renumbered.
    """
    L = l + 1
    W, b, lay, sources = list(Ws), list(bs), list(layers), [list(src) for src in srcs]
    for i in range(l + 1, len(layers)):
        if L not in srcs[i]:
            continue
        through = Ws[i][:, columns(i, L)]  # W_{c,l}
        keep = [q for q in srcs[i] if q != L]
        blocks = {q: Ws[i][:, columns(i, q)] for q in keep}
        for p in srcs[l]:
            start = sum(size(q) for q in srcs[l][:srcs[l].index(p)])
            part = through @ Ws[l][:, start:start + size(p)]
            if p in blocks:
                blocks[p] = blocks[p] + part
            else:
                blocks[p] = part
                keep.append(p)
        W[i] = np.concatenate([blocks[q] for q in keep], axis=1)
        b[i] = bs[i] + through @ bs[l]
        lay[i] = replace(layers[i], bias=layers[i].bias or layers[l].bias)
        sources[i] = keep
    del W[l], b[l], lay[l], sources[l]
    sources = [[q - 1 if q > L else q for q in src] for src in sources]
    return build(lay, W, b, sources)


def reduce_problem(problem: Problem, comparisons: list[Comparison],
                   compare_fn: Callable[[Problem], list[Comparison]]) -> tuple[Problem, list[Comparison], int]:
    """Greedily remove layers, patterns, inputs, units and biases while the problem still fails.

    A problem one step smaller replaces the current one when it is well posed
    (no relu net input near the kink, nothing overflows) and some comparison
    still fails.  Returns the reduced problem, its comparisons and the number
    of calls made.
    """
    from hessverify.checking.strategies import near_kink
    from hessverify.errors import HessverifyError
    from hessverify.model.well_posed import ensure_well_posed

    calls = 0
    improved = True
    while improved:
        improved = False
        for candidate in _smaller(problem):
            try:
                ensure_well_posed(candidate)
            except HessverifyError:
                continue
            if near_kink(candidate):
                continue
            calls += 1
            try:
                comps = compare_fn(candidate)
            except HessverifyError:  # the function fails on the smaller problem: not the same discrepancy
                continue
            if not all(c.passed for c in comps):
                problem, comparisons, improved = candidate, comps, True
                break
    return problem, comparisons, calls


def assert_hessian_close(fn: Callable[..., Any], problems: Problem | Iterable[Problem] | Any, *,
                         against: Sequence[str] = DEFAULT_AGAINST, returns: Returns = "hessian",
                         max_examples: int = 100, seed: int | None = None,
                         timeout: float | None = DEFAULT_TIMEOUT,
                         precision: Precision | str | None = None) -> CheckResult:
    """:func:`check`, raising an :class:`AssertionError` that names the failure.

    The message gives the problem, each failing comparison with its worst
    entry by parameter names, both values, the error and the bound, and the
    minimal problem as a case file to save into ``cases/``.
    """
    result = check(fn, problems, against=against, returns=returns, max_examples=max_examples, seed=seed,
                   timeout=timeout, precision=precision)
    if not result.passed:
        toml = result.problem.to_toml() if result.problem is not None else ""
        raise AssertionError(result.summary() + "\n\nthe failing problem as a case file:\n\n" + toml)
    return result
