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
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hessverify.base.precision import FLOAT64, Precision, get_precision
from hessverify.base.typing import FloatArray
from hessverify.checking.sandbox import DEFAULT_ISOLATION, DEFAULT_TIMEOUT, Sandbox, check_isolation, check_timeout
from hessverify.engine.budget import check_memory
from hessverify.engine.compare import TOLERANCES, Comparison, bound_for, compare
from hessverify.engine.point import Point
from hessverify.engine.registry import METHODS
from hessverify.engine.verify import check_reference, not_applicable_reason, not_applicable_record
from hessverify.errors import FunctionUnderTestError, UsageError
from hessverify.model.problem import Problem

if TYPE_CHECKING:
    from hessverify.reports.localise import Localisation

__all__ = ["GGN_REFERENCES", "RETURNS", "CheckResult", "Returns", "assert_hessian_close", "check", "check_problem",
           "describe",
           "reduce_problem"]

class Returns(StrEnum):
    """What the function under test returns: a full Hessian, Hessian-vector products, the diagonal, the
    per-layer diagonal blocks, or the Gauss-Newton matrix.  Parsed once, in :func:`check`; equal to its name."""

    HESSIAN = "hessian"
    HVP = "hvp"
    DIAGONAL = "diagonal"
    BLOCKS = "blocks"
    GGN = "ggn"


RETURNS: tuple[str, ...] = tuple(Returns)
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
        problem checked from a list (for a strategy that passed: the worst
        comparison against each reference, of all the examples).
    bounds:
        For each reference, how its bound is derived
        (:data:`hessverify.engine.compare.TOLERANCES`).
    error:
        The exception the user function raised, if that is how it failed.
    shrink_calls:
        For a strategy that failed: further calls made while shrinking.
    precision:
        The format the function was judged in (``"float64"``, or the
        narrower format it returned or was given: its rounding is added to
        every bound).
    localisations:
        For each failing comparison, by reference: where its error lives
        (:class:`hessverify.reports.localise.Localisation`: the blocks, the
        shape of the error, the largest entries).
    shrunk_from:
        For a strategy that failed: the first failing example, before any
        shrinking (:attr:`shrinking` says what was dropped from it).
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
    precision: str = "float64"
    localisations: dict[str, Localisation] = field(default_factory=dict)
    shrunk_from: Problem | None = None

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.passed]

    @property
    def worst(self) -> Comparison | None:
        """The comparison closest to failing, or failing worst (largest margin)."""
        judged = [c for c in self.comparisons if c.bound_kind != "none"]
        return max(judged, key=lambda c: c.margin, default=None)

    @property
    def case_toml(self) -> str | None:
        """The failing (for a strategy: shrunk, minimal) problem as a case file to save into ``cases/``."""
        return self.problem.to_toml() if self.problem is not None else None

    @property
    def shrinking(self) -> str:
        """What the shrinker dropped from the first failing example (``""``: nothing, or no strategy)."""
        if self.shrunk_from is None or self.problem is None:
            return ""
        return _dropped(self.shrunk_from, self.problem)

    @property
    def where(self) -> str:
        """Where the worst failing comparison's error lives: its blocks and the shape of the error, in words
        (``""`` when nothing failed or the error could not be localised)."""
        worst = max(self.failures, key=lambda c: c.margin, default=None)
        loc = self.localisations.get(worst.reference) if worst is not None else None
        if worst is None or loc is None:
            return ""
        blocks = f"by block {loc.by_block()}; " if loc.blocks else ""
        return f"(against {worst.reference}): {blocks}{loc.head}"

    @property
    def subject(self) -> str:
        """What the failure line names: the problem's id, or what the result knows of it instead."""
        return self.problem.id if self.problem is not None else "a problem"

    def summary(self, *, case_file: str | None = None) -> str:
        """A few lines for people.

        Passed: on how many problems, against what, the largest margin
        (``|error| / bound``; at most 1 passes) and where, and the precision
        judged.  Failed: the problem (and what shrinking dropped from the
        first failure), the blocks where the error lives and its shape, the
        worst entry with both values and the bound, each failing
        comparison, and how to get the problem as a case file (``case_file``:
        where it was written).
        """
        judged = f"judged in {self.precision}" + ("" if self.precision == "float64" else
                                                  " (its rounding added to every bound)")
        if self.passed:
            w = self.worst
            where = "" if w is None else (f"; largest margin {w.margin:.2g} (|error| / bound, at most 1 passes), "
                                          f"against {w.reference} at {w.worst_entry.row} x {w.worst_entry.col}"
                                          + (f" on {w.case}" if self.n_problems > 1 else ""))
            return (f"check passed: {self.returns} on {self.n_problems} problem(s) against "
                    f"{', '.join(self.against)}, {judged}{where}")
        p = self.problem
        lines = [f"check FAILED: the user's {self.returns} on {self.subject}"
                 + (f" (example {self.n_problems}, shrunk in {self.shrink_calls} more call(s))"
                    if self.shrunk_from is not None else
                    f" (problem {self.n_problems} of those given)" if self.n_problems > 1 else "")]
        if p is not None:
            lines.append(f"  problem: {p.architecture.describe()}, loss {p.loss}, reduction {p.reduction}, "
                         f"{p.n_patterns} pattern(s), W = {p.n_params}; {judged}")
        if self.shrinking:
            lines.append(f"  shrinking: {self.shrinking}")
        if self.error:
            lines.append(f"  note: {self.error}")
        if self.where:
            lines.append(f"  where {self.where}")
        lines += ["  " + describe(c) for c in self.failures]
        if case_file is not None:
            lines.append(f"  the problem as a case file: {case_file} (hessverify.load_case reads it back bit for bit)")
        elif p is not None:
            lines.append("  the problem as a case file: result.case_toml (save it as cases/NAME.toml; "
                         "hessverify.load_case reads it back bit for bit)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "n_problems": self.n_problems, "returns": self.returns,
            "against": list(self.against), "bounds": self.bounds, "error": self.error,
            "shrink_calls": self.shrink_calls, "precision": self.precision, "shrinking": self.shrinking,
            "problem_toml": self.case_toml,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "localisations": {ref: loc.to_dict() for ref, loc in self.localisations.items()},
        }

    def __str__(self) -> str:
        return self.summary()


def _dropped(first: Problem, final: Problem) -> str:
    """What shrinking took away between the first failing example and the minimal one, in words."""
    a, b = first.architecture, final.architecture
    counts = [
        (a.depth - b.depth, "layer"),
        (sum(layer.bias for layer in a.layers) - sum(layer.bias for layer in b.layers), "bias vector"),
        (sum(int(np.prod(s)) for s in a.shapes[1:]) - sum(int(np.prod(s)) for s in b.shapes[1:]), "unit"),
        (a.inputs - b.inputs, "input"),
        (first.n_patterns - final.n_patterns, "pattern"),
        (sum(len(a.parents(i)) for i in range(1, a.depth + 1)) - sum(len(b.parents(i)) for i in range(1, b.depth + 1))
         - (a.depth - b.depth), "skip connection"),
    ]
    parts = [f"{n} {what}{'s' if n > 1 else ''}" for n, what in counts if n > 0]
    if not parts:
        return ""
    none_left = " (none is left: the minimal problem has no bias)" if not any(layer.bias for layer in b.layers) \
        and any(layer.bias for layer in a.layers) else ""
    return (f"dropped {', '.join(parts)}{none_left} from the first failing example, {a.describe()} with "
            f"{first.n_patterns} pattern(s); it still fails")


def describe(c: Comparison) -> str:
    """One line for one comparison: which, where (parameter names), both values, error and bound."""
    w = c.worst_entry
    if c.bound_kind == "none":
        return f"{c.method} vs {c.reference}: not compared: {c.note}"
    state = "ok" if c.passed else \
        f"FAIL ({c.failing_entries} {'entry' if c.failing_entries == 1 else 'entries'} over the bound)"
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


def _user_matrix(box: Sandbox, problem: Problem, returns: str, seen: list[Precision] | None = None) -> FloatArray:
    """What the user function returns, as float64, with its shape checked against the contract.

    The function runs in ``box`` (:class:`~hessverify.checking.sandbox.Sandbox`) and gets its own copy of the
    problem each call.
    """
    n = problem.n_params
    if returns == "hvp":
        cols = []
        for j in range(n):
            e = np.zeros(n)
            e[j] = 1.0
            out = box(problem, e)
            if seen is not None:
                seen.append(_precision_of(out))
            cols.append(_as_real_array(out, "fn(problem, v)", (n,), problem))
        return np.stack(cols, axis=1)
    out = box(problem)
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


def check_problem(fn: Callable[..., Any] | Sandbox, problem: Problem, *, against: Sequence[str] = DEFAULT_AGAINST,
                  returns: str = "hessian", timeout: float | None = DEFAULT_TIMEOUT,
                  precision: Precision | str | None = None,
                  isolation: str = DEFAULT_ISOLATION) -> list[Comparison]:
    """Compare ``fn`` on one problem with each reference in ``against``; one :class:`Comparison` each.

    The references are computed first, on the problem as given; ``fn`` then
    gets a copy (so writing into its input changes nothing it is held to).
    ``fn`` runs as ``isolation`` says (:mod:`hessverify.checking.sandbox`: a
    child process by default); a :class:`~hessverify.checking.sandbox.Sandbox`
    may be given instead, to run many problems in one process.

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
    if isinstance(fn, Sandbox):
        return _judge(fn, problem, against=against, returns=returns, precision=precision)[0]
    with Sandbox(fn, isolation=isolation, timeout=timeout) as box:
        return _judge(box, problem, against=against, returns=returns, precision=precision)[0]


@dataclass
class _Evidence:
    """What a comparison saw on one problem, kept so that a failure can be localised afterwards."""

    problem: Problem
    returns: str
    precision: Precision
    user: FloatArray
    references: dict[str, tuple[FloatArray, FloatArray]]  # reference name -> (its result, the bound)


def _judge(box: Sandbox, problem: Problem, *, against: Sequence[str], returns: str,
           precision: Precision | str | None) -> tuple[list[Comparison], _Evidence]:
    """:func:`check_problem`, with what it compared (:class:`_Evidence`)."""
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
    A = _user_matrix(box, problem, returns, seen)
    p = get_precision(precision) if precision is not None else max(seen, key=lambda q: q.unit_roundoff,
                                                                    default=FLOAT64)
    narrow = None
    if p.unit_roundoff > FLOAT64.unit_roundoff:
        narrow = point.at(p).rounding(2)
    out = not_applicable
    evidence = _Evidence(problem, returns, p, A, {})
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
        evidence.references[ref_name] = (R, bound)
    return out, evidence


def _localise(evidence: _Evidence, comparisons: Sequence[Comparison]) -> dict[str, Localisation]:
    """Where each failing comparison's error lives (:func:`hessverify.reports.localise.localise`), by reference."""
    from hessverify.reports.localise import localise

    out = {}
    for c in comparisons:
        if c.passed or c.reference not in evidence.references:
            continue
        R, bound = evidence.references[c.reference]
        A = evidence.user
        if evidence.returns == "diagonal":  # the diagonals on the diagonal: every other entry agrees (0 = 0)
            A, R, bound = np.diag(A), np.diag(R), np.diag(bound)
        try:
            out[c.reference] = localise(evidence.problem, A, R, bound)
        except ValueError:  # a shape localise cannot read: the comparison's own words stand
            continue
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
    returns: Returns | str = "hessian",
    max_examples: int = 100,
    seed: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    precision: Precision | str | None = None,
    show_progress: bool | None = None,
    isolation: str = DEFAULT_ISOLATION,
    observe: Callable[[Problem], Any] | None = None,
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
    show_progress:
        Draw a progress bar on standard error (examples, then shrinking);
        default: when standard error is a terminal, and not under pytest
        (:mod:`hessverify.reports.progress`).
    isolation:
        Where ``fn`` runs (:mod:`hessverify.checking.sandbox`): ``"process"``
        (default: one child process for the whole check, so a timeout is a
        kill and any exit is seen), ``"thread"`` or ``"none"`` (this process,
        for a debugger).
    observe:
        Called, in this process, with each problem before ``fn`` runs on it.

    Returns
    -------
    CheckResult
        Truthy when everything passed; ``summary()`` says what failed.

    Raises
    ------
    FunctionUnderTestError
        ``fn`` itself failed (raised, called ``sys.exit`` or ``os._exit``, was
        killed, hung past ``timeout``, returned ``None``, a complex or wrongly
        shaped array) on the problem in ``error.problem``: a fault, not a
        discrepancy, so a strategy's example is not shrunk.
    UsageError
        No problems given, or an argument of the wrong type or value (named).
    """
    against, bounds = _check_arguments(fn, against, returns, precision, max_examples, seed, observe)
    if precision is not None:
        precision = get_precision(precision)
    timeout = check_timeout(timeout)
    check_isolation(isolation)
    if isinstance(problems, Problem):
        problems = [problems]
    strategy = _is_strategy(problems)
    if not strategy and (isinstance(problems, (str, bytes)) or not isinstance(problems, Iterable)):
        raise UsageError(f"problems: a Problem, an iterable of them or a strategy, got {type(problems).__name__} "
                         "(hessverify.load_case(path) reads a case file)")
    from hessverify.reports.progress import progress

    with Sandbox(fn, isolation=isolation, timeout=timeout) as box:
        def judge(problem: Problem) -> tuple[list[Comparison], _Evidence]:
            if observe is not None:
                observe(problem)
            return _judge(box, problem, against=against, returns=returns, precision=precision)

        if strategy:
            return _check_strategy(judge, problems, against, returns, max_examples, seed, bounds, show_progress)
        comparisons: list[Comparison] = []
        judged: list[str] = []
        n = 0
        total = len(problems) if isinstance(problems, Sequence) else None
        with progress(total, f"checking {returns}", enabled=show_progress) as bar:
            for problem in problems:
                if not isinstance(problem, Problem):
                    raise UsageError(f"problems: item {n} is a {type(problem).__name__}, not a Problem")
                n += 1
                comps, evidence = judge(problem)
                judged.append(evidence.precision.name)
                if not all(c.passed for c in comps):
                    return CheckResult(False, n, returns, against, problem, comps, bounds,
                                       next((c.note for c in comps if c.note), None),
                                       precision=evidence.precision.name, localisations=_localise(evidence, comps))
                comparisons += comps
                bar(problem.id)
    if n == 0:  # passing with nothing checked would be a check that cannot fail
        raise UsageError("problems: none given; pass at least one Problem (or a strategy of them)")
    return CheckResult(True, n, returns, against, None, comparisons, bounds, precision=_narrowest(judged))


def _check_arguments(fn: Any, against: Any, returns: Any, precision: Any, max_examples: Any, seed: Any,
                     observe: Any) -> tuple[tuple[str, ...], dict[str, str]]:
    """Every argument of :func:`check` that can be wrong, refused with a :class:`UsageError` naming it."""
    if not isinstance(returns, str) or returns not in RETURNS:
        raise UsageError(f"returns={returns!r}: choose one of {', '.join(RETURNS)}")
    returns = Returns(returns)
    if precision is not None:
        if not isinstance(precision, (Precision, str, type, np.dtype)):
            raise UsageError(f"precision={precision!r}: give a format such as 'float32' (or a Precision, a dtype)")
        try:
            get_precision(precision)
        except (ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"precision={precision!r}: {exc}") from None
    if isinstance(max_examples, bool) or not isinstance(max_examples, (int, np.integer)) or max_examples < 1:
        raise UsageError(f"max_examples={max_examples!r}: give a whole number, at least 1")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise UsageError(f"seed={seed!r}: give a whole number, or None for a random one")
    if observe is not None and not callable(observe):
        raise UsageError(f"observe={observe!r}: give a function of a problem, or None")
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
    if not callable(fn):
        raise UsageError(f"fn: {type(fn).__name__!r} is not callable; pass the function under test")
    bounds = {name: TOLERANCES[name].reason if name in TOLERANCES and returns != "ggn" else "exact: rounding bound"
              for name in against}
    return against, bounds


def _narrowest(names: Sequence[str]) -> str:
    """The narrowest of the formats judged (the largest unit roundoff); float64 when none."""
    return max(names, key=lambda name: get_precision(name).unit_roundoff, default=FLOAT64.name)


def _keep_worst(kept: dict[str, Comparison], comps: Sequence[Comparison]) -> None:
    """Keep, per reference, the comparison with the largest margin seen so far."""
    for c in comps:
        if c.bound_kind != "none" and (c.reference not in kept or c.margin > kept[c.reference].margin):
            kept[c.reference] = c


class _FunctionFailed(BaseException):
    """Carries a FunctionUnderTestError out of Hypothesis, which passes a BaseException straight through
    instead of shrinking it: a fault of the function is reported where it happened."""


def _check_strategy(judge: Callable[[Problem], tuple[list[Comparison], _Evidence]], strategy: Any,
                    against: tuple[str, ...], returns: str, max_examples: int, seed: int | None,
                    bounds: dict[str, str], show_progress: bool | None = None) -> CheckResult:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed

    from hessverify.reports.progress import progress

    state: dict[str, Any] = {"n": 0, "last": None, "first": None, "first_problem": None}
    worst: dict[str, Comparison] = {}
    judged: list[str] = []

    class _Discrepancy(AssertionError):
        pass

    # No explain phase: it re-runs variations of the minimal failure after shrinking, and the
    # last failing call must be the shrunk example itself.
    @settings(max_examples=int(max_examples), deadline=None, database=None, report_multiple_bugs=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], print_blob=False)
    @given(strategy)
    def run(problem: Problem) -> None:
        state["n"] += 1
        try:
            comps, evidence = judge(problem)
        except FunctionUnderTestError as exc:
            raise _FunctionFailed(exc) from None
        if not all(c.passed for c in comps):
            # Hypothesis replays the shrunk example last, so this ends as the minimal failure
            state["last"] = (problem, comps, evidence)
            if state["first"] is None:
                state["first"], state["first_problem"] = state["n"], problem
                bar.describe(f"example {state['n']} failed; shrinking it")
                bar.restart(None)
            bar(f"(now W = {problem.n_params})")
            raise _Discrepancy(problem.id)
        if state["first"] is None:
            _keep_worst(worst, comps)
            judged.append(evidence.precision.name)
        bar("" if state["first"] is None else f"(now W = {state['last'][0].n_params})")

    if seed is not None:
        run = with_seed(int(seed))(run)
    with progress(max_examples, f"checking {returns} on random problems", enabled=show_progress) as bar:
        try:
            run()
        except _FunctionFailed as wrapped:
            raise wrapped.args[0] from None
        except _Discrepancy:
            problem, comps, evidence = state["last"]
            calls = state["n"]

            def compare_fn(candidate: Problem) -> list[Comparison]:
                out, seen = judge(candidate)
                if not all(c.passed for c in out):
                    state["last"] = (candidate, out, seen)
                bar(f"(now W = {state['last'][0].n_params})")
                return out

            # Hypothesis cannot move a value from one position to another, so it can stop at, say,
            # three inputs of which only the first matters; finish with structural reductions.
            problem, comps, extra = reduce_problem(problem, comps, compare_fn)
            if state["last"][0] is problem:
                evidence = state["last"][2]
            state["n"] = calls + extra
            # n_problems: examples tried up to the first failure; the calls made while shrinking are not examples
            return CheckResult(False, state["first"], returns, against, problem, comps, bounds,
                               next((c.note for c in comps if c.note), None), shrink_calls=state["n"] - state["first"],
                               precision=evidence.precision.name, localisations=_localise(evidence, comps),
                               shrunk_from=state["first_problem"])
    return CheckResult(True, state["n"], returns, against, None, list(worst.values()), bounds,
                       precision=_narrowest(judged))


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
                         precision: Precision | str | None = None,
                         case_dir: str | Path | None = None,
                         isolation: str = DEFAULT_ISOLATION) -> CheckResult:
    """:func:`check`, raising an :class:`AssertionError` that names the failure.

    The message is :meth:`CheckResult.summary`: the problem, where the error
    lives, each failing comparison with its worst entry by parameter names,
    both values, the error and the bound.  The minimal problem is written as
    a case file into ``case_dir`` (default: ``hessverify-cases`` in the
    temporary directory), named in the message rather than printed in it;
    the error's ``result`` attribute is the :class:`CheckResult`
    (``result.case_toml``).
    """
    result = check(fn, problems, against=against, returns=returns, max_examples=max_examples, seed=seed,
                   timeout=timeout, precision=precision, isolation=isolation)
    if not result.passed:
        written = _save_case(result, case_dir)
        error = AssertionError(result.summary(case_file=written))
        error.result = result  # type: ignore[attr-defined]
        raise error
    return result


def _save_case(result: CheckResult, case_dir: str | Path | None) -> str | None:
    """Write the failing problem as ``ID-HASH.toml`` into ``case_dir``; the path, or ``None`` if it cannot be written."""
    import hashlib
    import tempfile

    from hessverify.io.files import write_output

    text = result.case_toml
    if text is None or result.problem is None:
        return None
    folder = Path(case_dir) if case_dir is not None else Path(tempfile.gettempdir()) / "hessverify-cases"
    path = folder / f"{result.problem.id}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.toml"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_output(path, text, option="case_dir")
    except (OSError, UsageError):  # the message then points at result.case_toml instead
        return None
    return str(path)
