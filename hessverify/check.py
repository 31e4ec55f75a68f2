"""Check your own Hessian code against hessverify's methods and references.

:func:`check` runs a user function on one problem, a list of problems or a
Hypothesis strategy of problems (:func:`hessverify.strategies.problems`),
compares what it returns with each named reference within the derived
bound of :func:`hessverify.compare.bound_for`, and returns a
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

from hessverify._typing import FloatArray
from hessverify.bounds import rounding_bound
from hessverify.compare import TOLERANCES, Comparison, WorstEntry, bound_for, compare
from hessverify.errors import UsageError
from hessverify.model.problem import Problem
from hessverify.registry import METHODS, get_method

__all__ = ["RETURNS", "CheckResult", "assert_hessian_close", "check", "check_problem", "describe", "reduce_problem"]

Returns = Literal["hessian", "hvp", "diagonal"]
RETURNS: tuple[str, ...] = ("hessian", "hvp", "diagonal")
"""What a user function may return (see the module text for each contract)."""

DEFAULT_AGAINST = ("backprop", "autograd", "fd")

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
        (:data:`hessverify.compare.TOLERANCES`).
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


def _user_matrix(fn: Callable[..., Any], problem: Problem, returns: str) -> FloatArray:
    """What the user function returns, as float64, with its shape checked against the contract."""
    n = problem.n_params
    if returns == "hvp":
        cols = []
        for j in range(n):
            e = np.zeros(n)
            e[j] = 1.0
            cols.append(np.asarray(fn(problem, e), dtype=np.float64).reshape(-1))
            if cols[-1].shape != (n,):
                raise ValueError(f"fn(problem, v) returned {cols[-1].size} numbers, expected H v of shape ({n},)")
        return np.stack(cols, axis=1)
    out = np.asarray(fn(problem), dtype=np.float64)
    expected = (n,) if returns == "diagonal" else (n, n)
    if out.shape != expected:
        raise ValueError(f"fn(problem) returned shape {out.shape}, expected {expected} "
                         f"({'the diagonal' if returns == 'diagonal' else 'the Hessian'} of {n} parameters)")
    return out


def _failed(problem: Problem, reference: str, note: str) -> Comparison:
    """A comparison that could not be made (the function raised or returned the wrong shape)."""
    nan = float("nan")
    return Comparison(problem.id, USER, reference, False, nan, nan, nan, nan, "none", float("inf"), nan,
                      WorstEntry("-", "-", nan, nan, nan, nan), note=note)


def check_problem(fn: Callable[..., Any], problem: Problem, *, against: Sequence[str] = DEFAULT_AGAINST,
                  returns: str = "hessian") -> list[Comparison]:
    """Compare ``fn`` on one problem with each reference in ``against``; one :class:`Comparison` each."""
    try:
        A = _user_matrix(fn, problem, returns)
    except Exception as exc:  # the user's code failing is a finding, reported, not a crash
        return [_failed(problem, ref, f"{type(exc).__name__}: {exc}") for ref in against]
    rounding = rounding_bound(problem, methods=2)
    out = []
    for ref_name in against:
        ref = METHODS[ref_name]
        with warnings.catch_warnings():
            # autograd warns when E is linear in some parameters (a constant Hessian): harmless here
            warnings.filterwarnings("ignore", "Output seems independent of input")
            if ref.with_error is not None:
                R, err = ref.with_error(problem)
            else:
                R, err = np.asarray(ref.fn(problem), dtype=np.float64), None
        bound, kind = bound_for(problem, ref_name, reference_error=err, rounding=rounding)
        if returns == "diagonal":
            R, bound = np.diag(R).copy(), np.diag(bound).copy()
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
        single pattern, input, unit or bias can be removed from it).
    against:
        Registered methods or references to compare with (``hessverify
        methods`` lists them).  Each comparison uses the bound of
        :func:`hessverify.compare.bound_for` for that name: the float64
        rounding bound ``2 gamma_k M`` for exact ones, the
        finite-difference error estimate for ``fd``.
    returns:
        ``"hessian"``, ``"hvp"`` or ``"diagonal"``.

    Returns
    -------
    CheckResult
        Truthy when everything passed; ``summary()`` says what failed.
    """
    if returns not in RETURNS:
        raise UsageError(f"returns={returns!r}: choose one of {', '.join(RETURNS)}")
    against = tuple([against] if isinstance(against, str) else against)
    if not against:
        raise UsageError("against: name at least one method or reference")
    for name in against:
        get_method(name)
        if METHODS[name].kind != "matrix":
            raise UsageError(f"against: {name!r} does not return a full matrix; choose exact methods or references")
    bounds = {name: TOLERANCES[name].reason if name in TOLERANCES else "exact: rounding bound" for name in against}
    if isinstance(problems, Problem):
        problems = [problems]
    if _is_strategy(problems):
        return _check_strategy(fn, problems, against, returns, max_examples, seed, bounds)
    comparisons: list[Comparison] = []
    n = 0
    for problem in problems:
        n += 1
        comps = check_problem(fn, problem, against=against, returns=returns)
        if not all(c.passed for c in comps):
            return CheckResult(False, n, returns, against, problem, comps, bounds,
                               next((c.note for c in comps if c.note), None))
        comparisons += comps
    return CheckResult(True, n, returns, against, None, comparisons, bounds)


def _check_strategy(fn: Callable[..., Any], strategy: Any, against: tuple[str, ...], returns: str,
                    max_examples: int, seed: int | None, bounds: dict[str, str]) -> CheckResult:
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
        comps = check_problem(fn, problem, against=against, returns=returns)
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
    except _Discrepancy:
        problem, comps = state["last"]
        calls = state["n"]
        # Hypothesis cannot move a value from one position to another, so it can stop at, say,
        # three inputs of which only the first matters; finish with structural reductions.
        problem, comps, extra = reduce_problem(problem, comps, lambda p: check_problem(
            fn, p, against=against, returns=returns))
        state["n"] = calls + extra
        # n_problems: examples tried up to the first failure; the calls made while shrinking are not examples
        return CheckResult(False, state["first"], returns, against, problem, comps, bounds,
                           next((c.note for c in comps if c.note), None), shrink_calls=state["n"] - state["first"])
    return CheckResult(True, state["n"], returns, against, None, [], bounds)


def _smaller(problem: Problem) -> Iterator[Problem]:
    """Every problem one step smaller: a pattern, an input, a unit, a layer's bias or an output fewer."""
    from hessverify.model.network import Architecture, Layer
    from hessverify.strategies import _case_id

    arch = problem.architecture
    Ws = [w.copy() for w in problem.weights]
    bs = [b.copy() if b is not None else np.zeros(w.shape[0]) for b, w in zip(problem.biases, Ws, strict=True)]
    layers = list(arch.layers)

    def build(n_in: int, lay: list[Layer], W: list[FloatArray], b: list[FloatArray], x: FloatArray,
              t: FloatArray) -> Problem:
        new = Architecture(n_in, tuple(lay))
        return replace(problem, architecture=new, params=new.pack(list(zip(W, b, strict=True))),
                       inputs=x, targets=t, id=_case_id(new))

    x, t = problem.inputs, problem.targets
    for n in range(problem.n_patterns if problem.n_patterns > 1 else 0):
        yield build(arch.inputs, layers, Ws, bs, np.delete(x, n, axis=0), np.delete(t, n, axis=0))
    for j in range(arch.inputs if arch.inputs > 1 else 0):
        yield build(arch.inputs - 1, layers, [np.delete(Ws[0], j, axis=1)] + Ws[1:], bs, np.delete(x, j, axis=1), t)
    for l, layer in enumerate(layers):  # 0-based here
        last = l == len(layers) - 1
        for k in range(layer.units if layer.units > 1 else 0):
            W = list(Ws)
            W[l] = np.delete(W[l], k, axis=0)
            b = list(bs)
            b[l] = np.delete(b[l], k)
            if not last:
                W[l + 1] = np.delete(W[l + 1], k, axis=1)
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


def reduce_problem(problem: Problem, comparisons: list[Comparison],
                   compare_fn: Callable[[Problem], list[Comparison]]) -> tuple[Problem, list[Comparison], int]:
    """Greedily remove patterns, inputs, units and biases while the problem still fails.

    A problem one step smaller replaces the current one when it is well posed
    (no relu net input near the kink, nothing overflows) and some comparison
    still fails.  Returns the reduced problem, its comparisons and the number
    of calls made.
    """
    from hessverify.errors import HessverifyError
    from hessverify.model.well_posed import ensure_well_posed
    from hessverify.strategies import near_kink

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
            comps = compare_fn(candidate)
            if not all(c.passed for c in comps):
                problem, comparisons, improved = candidate, comps, True
                break
    return problem, comparisons, calls


def assert_hessian_close(fn: Callable[..., Any], problems: Problem | Iterable[Problem] | Any, *,
                         against: Sequence[str] = DEFAULT_AGAINST, returns: Returns = "hessian",
                         max_examples: int = 100, seed: int | None = None) -> CheckResult:
    """:func:`check`, raising an :class:`AssertionError` that names the failure.

    The message gives the problem, each failing comparison with its worst
    entry by parameter names, both values, the error and the bound, and the
    minimal problem as a case file to save into ``cases/``.
    """
    result = check(fn, problems, against=against, returns=returns, max_examples=max_examples, seed=seed)
    if not result.passed:
        toml = result.problem.to_toml() if result.problem is not None else ""
        raise AssertionError(result.summary() + "\n\nthe failing problem as a case file:\n\n" + toml)
    return result
