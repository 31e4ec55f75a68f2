"""A run: everything ``hessverify verify`` computes for one problem, computed once.

:func:`run_problem` plans what to compute for a problem (methods under test,
references, approximations, and why a default reference is left out),
checks once that the Hessian exists and is finite there, computes the
rounding bound once, evaluates every method and reference once with its
own error estimate, derives the entrywise bound of each comparison from that
one rounding bound, and keeps all of it in a :class:`Run`.  Whoever reads a
result -- the terminal output of ``hessverify verify``, ``results.json``,
``report.md`` and ``report.html``, a sweep's report -- reads it from the run;
nothing is recomputed and nothing is re-joined by magic keys.

:func:`run_cases` is the one loop over problems they all share.
:func:`hessverify.verify_problem` is a thin wrapper: ``run_problem(...).records``.

Examples
--------
>>> import hessverify
>>> from hessverify.engine.run import run_problem
>>> run = run_problem(hessverify.load_case("cases/xor-2-2-1-sigmoid.toml"), references=["autograd"])
>>> run.skip is None, all(c.passed for c in run.comparisons)
(True, True)
>>> sorted(run.bounds)[:2]
[('backprop', 'autograd'), ('block_diagonal', 'autograd')]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.bounds import UNDERFLOW_FLOOR
from hessverify.engine.budget import check_memory
from hessverify.engine.compare import (
    BOUND_KEY,
    TOLERANCES,
    Comparison,
    WorstEntry,
    approximation_error,
    compare,
    compare_entries,
    is_not_applicable,
    pair_bound,
)
from hessverify.engine.point import Point
from hessverify.engine.registry import METHODS, get_method, methods_with_role
from hessverify.errors import (
    FunctionUnderTestError,
    HessverifyError,
    NotDifferentiableError,
    OverflowReport,
    UsageError,
)
from hessverify.model.forward import ForwardPass
from hessverify.model.problem import Problem

__all__ = ["Plan", "Run", "Skip", "SkipReason", "Source", "check_reference", "finite_rounding_bound",
           "not_applicable_reason", "not_applicable_record", "plan", "reference_skips", "run_cases",
           "run_problem"]


class SkipReason(StrEnum):
    """Why a problem was not compared (``results.json``'s ``not_compared[].reason``)."""

    NOT_DIFFERENTIABLE = "not_differentiable"  # a relu unit exactly at its kink: no Hessian exists
    OVERFLOW = "overflow"  # the network's values, or the Hessian's terms, are not finite in float64
    FUNCTION_FAILED = "function_failed"  # a sweep's function under test raised or timed out


SKIPPED_BY = ((NotDifferentiableError, SkipReason.NOT_DIFFERENTIABLE), (OverflowReport, SkipReason.OVERFLOW),
              (FunctionUnderTestError, SkipReason.FUNCTION_FAILED))
"""Which error ends a problem's run with which reason (others propagate: they are the user's or ours)."""


@dataclass(frozen=True)
class Skip:
    """A problem that was not compared: the typed reason, the one-line message, and the error raised."""

    reason: SkipReason
    message: str
    error: HessverifyError = field(repr=False, compare=False)

    def record(self, case: str) -> dict[str, str]:
        """The ``results.json`` record ``{"case", "reason", "message"}``."""
        return {"case": case, "reason": self.reason.value, "message": self.message}


@dataclass(frozen=True)
class Source:
    """What a run knows about a name it computed, copied from the registry when it ran.

    ``role`` and ``kind`` as in :mod:`hessverify.engine.registry`; ``tolerance`` is
    the kind of the bound the name brings as a reference
    (:data:`hessverify.engine.compare.TOLERANCES`), ``""`` for an exact float64 method.
    """

    name: str
    role: str
    kind: str
    summary: str
    tolerance: str = ""


def _source(name: str) -> Source:
    m = METHODS[name]
    return Source(m.name, m.role, m.kind, m.summary, m.tolerance.kind)


@dataclass(frozen=True)
class Plan:
    """What a run computes: exact methods, references, approximations, and references left out (and why)."""

    methods: tuple[str, ...]
    references: tuple[str, ...]
    approximations: tuple[str, ...]
    left_out: tuple[str, ...] = ()  # one line per default reference not used here (reference_skips)

    @property
    def names(self) -> list[str]:
        """Every name the run computes, for the memory and time budgets."""
        return [*self.methods, *self.references, *self.approximations]


@dataclass
class Run:
    """Everything computed for one problem, once (module text).

    Attributes
    ----------
    problem, plan:
        The problem and what was planned for it.
    skip:
        Why it was not compared (a typed :class:`Skip`), or ``None``.
    forward:
        The forward pass the well-posedness check computed.
    rounding:
        ``rounding_bound(problem, methods=2)`` (``2 gamma_k M`` plus the
        underflow floor), computed once; every bound below is derived from it.
    values:
        Every result computed, by name, in its own form (a matrix, a
        diagonal, layer blocks): methods, references and approximations.
    errors:
        Each reference's (or method's) own error estimate, where it has one.
    bounds:
        The entrywise bound that decided each comparison, by ``(method, reference)``.
    records:
        The comparisons, not-applicable records and approximation records, in
        the order :func:`hessverify.verify_problem` returns them.
    sources:
        Role, kind and summary of every name computed or reportable.
    drawn:
        The results a report draws and localises: every full matrix computed
        (a diagonal or block method is judged by its comparisons alone).
    analysis:
        What a report adds (spectrum, localisations, approximation summaries),
        set once by :func:`hessverify.reports.analysis.analyse_case`.
    """

    problem: Problem
    plan: Plan
    skip: Skip | None = None
    forward: ForwardPass | None = None
    rounding: FloatArray | None = None
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, FloatArray] = field(default_factory=dict)
    bounds: dict[tuple[str, str], FloatArray] = field(default_factory=dict)
    records: list[Comparison] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    drawn: list[str] = field(default_factory=list)
    analysis: Any = None
    _fallback: Callable[[str], Any] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.problem.id

    @property
    def comparisons(self) -> list[Comparison]:
        """The verdicts: every record that is neither a not-applicable record nor an approximation's."""
        return [c for c in self.records if not is_not_applicable(c) and c.bound_kind != "approximation"]

    @property
    def not_applicable(self) -> list[Comparison]:
        """The records of references that could not serve at this point."""
        return [c for c in self.records if is_not_applicable(c)]

    @property
    def approximations(self) -> list[Comparison]:
        """The approximation-error records (never failures)."""
        return [c for c in self.records if c.bound_kind == "approximation"]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.records)

    @property
    def rounding_one(self) -> FloatArray | None:
        """``gamma_k M`` plus the underflow floor: one float64 computation's rounding (``rounding_bound(methods=1)``)."""
        if self.rounding is None:
            return None
        return (self.rounding - UNDERFLOW_FLOOR) / 2.0 + UNDERFLOW_FLOOR

    def release(self) -> None:
        """Let go of the matrices, keeping the plan, the skip reason and the records.

        ``hessverify verify`` without ``--report`` needs only the records once
        a case is printed, so memory holds one case's matrices at a time, as
        the budget assumes.
        """
        self.forward = self.rounding = None
        self.values, self.errors, self.bounds, self.drawn = {}, {}, {}, []

    def skipped(self) -> list[dict[str, str]]:
        """``results.json``'s ``not_compared`` records of this run (none or one)."""
        return [self.skip.record(self.id)] if self.skip is not None else []

    def approximation(self, name: str) -> Any:
        """An approximation's result: the one computed, else computed now and kept (raises as the method does)."""
        if name not in self.values:
            if self._fallback is None:
                raise KeyError(name)
            self.values[name] = self._fallback(name)
        return self.values[name]

    def report_approximations(self) -> list[Source]:
        """Every approximation a report summarises: the registered ones when the run was made."""
        return [s for s in self.sources.values() if s.role == "approximation"]

    def matrices(self) -> dict[str, Any]:
        """The run's results under the keys of ``verify_problem(..., matrices=)``.

        Full matrices by name (approximations are not in it), each error
        estimate under ``"<name>.error"`` and each deciding bound under
        :data:`~hessverify.compare.BOUND_KEY`.
        """
        out: dict[str, Any] = {n: v for n, v in self.values.items()
                               if n in self.sources and self.sources[n].role != "approximation"
                               and self.sources[n].kind == "matrix"}
        out.update({f"{n}.error": e for n, e in self.errors.items()})
        out.update({BOUND_KEY.format(method=m, reference=r): b for (m, r), b in self.bounds.items()})
        return out

    def fallback_exact(self) -> tuple[str, FloatArray] | None:
        """An exact Hessian when the run kept none (a run rebuilt from records only): autograd's, else backprop's."""
        if self._fallback is None:
            return None
        name = "autograd" if "autograd" in METHODS else "backprop"
        if name not in self.values:
            Point.of(self.problem).well_posed()
            self.values[name] = np.asarray(self._fallback(name), dtype=np.float64)
        self.sources.setdefault(name, _source(name))
        self.drawn.append(name)
        return name, self.values[name]

    @classmethod
    def from_matrices(cls, problem: Problem, records: Sequence[Comparison] = (),
                      matrices: Mapping[str, Any] | None = None, skipped: Mapping[str, str] | None = None) -> Run:
        """A run rebuilt from what an older caller kept: records and ``verify_problem(..., matrices=)``.

        Names the registry knows are results; ``"<name>.error"`` and
        :data:`~hessverify.compare.BOUND_KEY` entries are error estimates and
        bounds.  Bounds not kept are derived again from one rounding bound.
        """
        run = cls(problem, Plan((), (), ()), records=list(records), _fallback=_computer(problem))
        if skipped is not None:
            reason = SkipReason(skipped["reason"])
            run.skip = Skip(reason, skipped["message"], HessverifyError(skipped["message"]))
        run.sources = {m.name: _source(m.name) for m in methods_with_role("approximation")}
        for key, value in (matrices or {}).items():
            if key.startswith("bound:"):
                _, m, r = key.split(":", 2)
                run.bounds[(m, r)] = np.asarray(value, dtype=np.float64)
            elif key.endswith(".error") and key[: -len(".error")] in METHODS:
                run.errors[key[: -len(".error")]] = np.asarray(value, dtype=np.float64)
            elif key in METHODS:
                run.values[key] = value
                run.sources[key] = _source(key)
                if run.sources[key].role != "approximation":
                    run.drawn.append(key)
        if run.skip is None:
            run.rounding = Point.of(problem).rounding(2)
            for c in run.records:
                if (c.method, c.reference) in run.bounds or c.bound_kind in ("approximation", "not_applicable"):
                    continue
                if c.method not in run.values or c.reference not in run.values:
                    continue
                try:
                    run.bounds[(c.method, c.reference)], _ = pair_bound(
                        problem, c.method, c.reference, rounding=run.rounding,
                        method_error=run.errors.get(c.method), reference_error=run.errors.get(c.reference))
                except ValueError:  # an fd bound without fd's error estimate: drawn, not thresholded
                    continue
        return run


def _computer(problem: Problem) -> Callable[[str], Any]:
    """``name -> result`` on ``problem``, for what a report needs that the run did not plan."""
    return lambda name: METHODS[name].compute(Point.of(problem))


def run_problem(problem: Problem, methods: Sequence[str] | str | None = None,
                references: Sequence[str] | str | None = None,
                approximations: Sequence[str] | str | None = None, *, budget: bool = True) -> Run:
    """Plan, check and compute everything for one problem, once (module text).

    Unknown names and unusable references raise
    :class:`~hessverify.errors.UsageError`, and a problem past the memory
    budget :class:`~hessverify.errors.BudgetError` (unless ``budget=False``:
    the caller checked it).  A point where the Hessian does not exist, an
    overflow, or a function under test that failed ends the run with a typed
    :attr:`Run.skip` instead of raising; :func:`hessverify.verify_problem`
    raises the same error from it.

    The semantics of every record are those of :func:`hessverify.verify_problem`.
    """
    if not isinstance(problem, Problem):
        raise UsageError(f"verify_problem() takes a Problem, got {type(problem).__name__}")
    method_names, ref_names, approx_names = plan(problem, methods, references, approximations)
    planned = Plan(tuple(method_names), tuple(ref_names), tuple(approx_names),
                   tuple(reference_skips(problem, None if references is None else list(ref_names))))
    if budget:
        check_memory(problem, planned.names)
    run = Run(problem, planned, _fallback=_computer(problem))
    run.sources = {m.name: _source(m.name) for m in methods_with_role("approximation")}
    run.sources.update({n: _source(n) for n in planned.names})
    try:
        _compute_run(run)
    except (NotDifferentiableError, OverflowReport, FunctionUnderTestError) as exc:
        reason = next(r for kind, r in SKIPPED_BY if isinstance(exc, kind))
        run.skip = Skip(reason, str(exc), exc)
    return run


def _compute_run(run: Run) -> None:
    """Fill ``run``: the one well-posedness check, the one rounding bound, every result, bound and record."""
    problem, planned = run.problem, run.plan
    point = Point.of(problem)
    run.forward = point.well_posed()
    run.rounding = rounding = point.finite_rounding
    refs: dict[str, tuple[FloatArray, FloatArray | None]] = {}
    records = run.records
    for name in planned.references:
        value, err = _evaluate(point, name)
        run.values[name] = value
        run.drawn.append(name)
        if err is not None:
            run.errors[name] = err
        reason = not_applicable_reason(problem, name, value, err, run.forward)
        if reason is not None:
            records.append(not_applicable_record(problem, name, reason, value, err))
        else:
            refs[name] = (value, err)
    for name in planned.methods:
        kind = METHODS[name].kind
        own_err = None
        if kind == "matrix":
            value, own_err = _evaluate(point, name)
            if own_err is not None:
                run.errors[name] = own_err
        else:
            value = METHODS[name].compute(point)
        run.values[name] = value
        if kind == "matrix":
            run.drawn.append(name)
        for ref_name, (R, err) in refs.items():
            if ref_name == name:
                continue
            bound, bound_kind = pair_bound(problem, name, ref_name, method_error=own_err, reference_error=err,
                                           rounding=rounding)
            run.bounds[(name, ref_name)] = bound
            if kind == "matrix":
                records.append(compare(problem, name, ref_name, value, R, bound, bound_kind))
            else:
                records.append(compare_entries(problem, name, ref_name, kind, value, R, bound, bound_kind))
    records += _against_truth(problem, refs, rounding, run.bounds)
    if planned.approximations:
        exact = run.values["backprop"] if "backprop" in run.values else METHODS["backprop"].compute(point)
        for name in planned.approximations:
            m = METHODS[name]
            run.values[name] = value = m.compute(point)
            records.append(approximation_error(problem, name, m.kind, value, exact))


def run_cases(problems: Iterable[Problem], methods: Sequence[str] | str | None = None,
              references: Sequence[str] | str | None = None, *, budget: bool = True) -> Iterator[Run]:
    """:func:`run_problem` for each problem in turn, as each is done (so a caller can print as it goes).

    The one loop ``hessverify verify``, :func:`hessverify.reports.report_problems`
    and a sweep's report share.
    """
    for problem in problems:
        yield run_problem(problem, methods, references, budget=budget)


# -- planning, and what a reference that cannot serve says ---------------------------------------


def reference_skips(problem: Problem, references: Sequence[str] | None = None) -> list[str]:
    """Why a reference is left out of a problem by default, one line each (none when named).

    >>> import hessverify
    >>> reference_skips(hessverify.load_case("cases/xor-2-2-1-sigmoid.toml"))
    []
    """
    if references is not None:
        return []
    out = []
    for m in methods_with_role("reference"):
        if m.by_default and not m.serves_by_default(problem):
            out.append(m.why_left_out(problem))
    return out


def not_applicable_reason(problem: Problem, name: str, value: FloatArray, error: FloatArray | None,
                          fp: ForwardPass | None = None) -> str | None:
    """Why reference ``name`` cannot serve at this point, or ``None`` when it can.

    A reference that returns NaN or inf where the network's own values are
    finite (:func:`~hessverify.model.well_posed.ensure_well_posed` has passed) has
    broken down in its own arithmetic: the complex step's ``tanh`` and
    ``cosh`` of a complex net input overflow beyond about 355, autograd's
    ``1 / cosh^2`` likewise, a finite-difference step on a target near the
    float64 limit overflows the gradient.  Such a reference says nothing
    about the methods there; it is reported as not applicable, never as a
    discrepancy.  ``fp``: the forward pass at the point, if already computed.
    """
    value = np.asarray(value, dtype=np.float64)
    bad = ~np.isfinite(value)
    fp = Point.of(problem).forward if fp is None else fp
    arrays = fp.a[1:] if hasattr(fp, "a") else [v for v in fp.v if v is not None and np.ndim(v)]  # a graph's nodes
    largest_a = max((float(np.max(np.abs(a))) for a in arrays if np.size(a)), default=0.0)
    largest_t = float(np.max(np.abs(problem.targets))) if problem.targets.size else 0.0
    if error is not None:
        err = np.asarray(error, dtype=np.float64)
        bad |= np.isnan(err)
        stepping = name in TOLERANCES and TOLERANCES[name].kind == "fd_estimate"
        if stepping and max(largest_a, largest_t) > 1e150 and np.isinf(err).any():
            # an infinite estimate here is overflow, not a step across a kink
            return (f"{name}'s error estimate overflows float64 at {int(np.isinf(err).sum())} of {err.size} "
                    f"entries (its steps meet values up to {max(largest_a, largest_t):.3g})")
    if not bad.any():
        return None
    why = f"{name} returned NaN or inf at {int(bad.sum())} of {bad.size} entries while the network's values are finite"
    if name == "complex_step" and largest_a > 300:
        why += f" (net inputs up to {largest_a:.3g}: complex tanh/cosh overflow near 355)"
    elif name == "autograd" and largest_a > 300:
        why += f" (net inputs up to {largest_a:.3g}: its float64 arithmetic overflows near 710)"
    elif largest_t > 1e150 or largest_a > 1e150:
        why += f" (values up to {max(largest_a, largest_t):.3g}: its steps or products overflow float64)"
    return why


def not_applicable_record(problem: Problem, reference: str, reason: str, value: FloatArray,
                    error: FloatArray | None = None) -> Comparison:
    """The record of a reference that cannot serve here: not a comparison, never a failure.

    Its worst entry is the first where the reference broke down (NaN or inf
    in its value or its error estimate).
    """
    nan = float("nan")
    broken = ~np.isfinite(np.asarray(value, dtype=np.float64))
    if error is not None:
        broken |= ~np.isfinite(np.asarray(error, dtype=np.float64))
    i, j = np.argwhere(broken)[0] if broken.any() else (0, 0)
    names = problem.param_names
    return Comparison(problem.id, "(all)", reference, True, nan, nan, nan, nan, "not_applicable", 0.0, 0.0,
                      WorstEntry(names[i], names[j], nan, float(value[i, j]), nan, nan),
                      note=f"not applicable: {reason}", extra={"not_applicable": True})


def _evaluate(point: Point, name: str) -> tuple[FloatArray, FloatArray | None]:
    """A full matrix by ``name`` and its own error estimate, where it has one."""
    value, err = METHODS[name].compute_with_error(point)
    return np.asarray(value, dtype=np.float64), err



def check_reference(name: str) -> None:
    """Raise a :class:`~hessverify.errors.UsageError` if ``name`` cannot be a reference (an approximation)."""
    m = get_method(name)
    if m.role == "approximation":
        raise UsageError(f"{name} cannot be a reference: it is an approximation ({m.summary}), not the Hessian, "
                         f"so disagreeing with it says nothing about a method; name it with --method to see "
                         "its approximation error")


def finite_rounding_bound(problem: Problem) -> FloatArray:
    """The rounding bound, or :class:`~hessverify.errors.OverflowReport` where the Hessian's terms overflow.

    The network's values can be finite while products of them in the
    Hessian are not (an input of 1e308): a NaN in the bound comes from such
    an overflow (inf times 0 or inf minus inf), and then no comparison means
    anything.  An infinite bound entry alone is not that: the entry itself
    can be finite while the magnitudes of its terms sum past the float64
    range (a target of 1e308); such entries cannot be vouched for and are
    reported as unchecked by :func:`~hessverify.compare.compare`.
    """
    return Point.of(problem).finite_rounding


def _names(value: Sequence[str] | str | None, what: str) -> list[str] | None:
    """A name or a sequence of names; a lone string is one name, not a list of letters."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{what}: give a name or a sequence of names, got {value!r}")
    return list(value)


def plan(problem: Problem, methods: Sequence[str] | str | None = None, references: Sequence[str] | str | None = None,
         approximations: Sequence[str] | str | None = None) -> tuple[list[str], list[str], list[str]]:
    """The exact methods, references and approximations :func:`verify_problem` will compute.

    Raises :class:`~hessverify.errors.UsageError` for an unknown name and for
    a reference that does not give the full matrix: only full-matrix
    references can serve as the truth every entry is held to.
    """
    methods, references = _names(methods, "methods"), _names(references, "references")
    approximations = _names(approximations, "approximations")
    for name in (methods or []) + (references or []) + (approximations or []):
        get_method(name)
    method_names = list(methods) if methods is not None else [m.name for m in methods_with_role("method")]
    approx_names = [n for n in method_names if METHODS[n].role == "approximation"]
    method_names = [n for n in method_names if n not in approx_names]
    if approximations is not None:
        approx_names += [n for n in approximations if n not in approx_names]
    elif methods is None:
        approx_names = [m.name for m in methods_with_role("approximation")]
    ref_names = list(references) if references is not None else [
        m.name for m in methods_with_role("reference") if m.serves_by_default(problem)]
    for name in ref_names:
        check_reference(name)
        if METHODS[name].kind != "matrix":
            form = "a diagonal" if METHODS[name].kind == "vector" else "diagonal blocks"
            can_serve = [m.name for m in METHODS.values() if m.kind == "matrix" and m.role != "approximation"]
            raise UsageError(f"--reference {name}: gives {form}, not the full matrix; only full-matrix references "
                             f"can serve (choose among {', '.join(can_serve)})")
    return method_names, ref_names, approx_names


def _against_truth(problem: Problem, refs: dict[str, tuple[FloatArray, FloatArray | None]],
                   rounding: FloatArray, bounds: dict[tuple[str, str], FloatArray]) -> list[Comparison]:
    """Each other reference against a high-precision one: its true error, not a disagreement.

    The bound is the high-precision reference's own error plus the other
    reference's: ``gamma_k M`` for a float64 one, its own error estimate
    times its safety factor where it has one (fd, richardson, complex_step).
    """
    out = []
    for gold, (G, gold_err) in refs.items():
        if TOLERANCES.get(gold) is None or TOLERANCES[gold].kind != "high_precision":
            continue
        for name, (R, err) in refs.items():
            if name == gold:
                continue
            bound, kind = pair_bound(problem, name, gold, method_error=err, reference_error=gold_err,
                                     rounding=rounding)
            bounds[(name, gold)] = bound
            out.append(compare(problem, name, gold, R, G, bound, kind))
    return out
