"""Verify a problem: every method against every reference, within derived bounds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike

import numpy as np

from hessverify._typing import FloatArray
from hessverify.bounds import rounding_bound
from hessverify.budget import check_memory
from hessverify.compare import (
    BOUND_KEY,
    TOLERANCES,
    Comparison,
    WorstEntry,
    approximation_error,
    compare,
    compare_entries,
    pair_bound,
)
from hessverify.errors import OverflowReport, UsageError
from hessverify.model.forward import forward
from hessverify.model.problem import Problem
from hessverify.model.well_posed import ensure_well_posed
from hessverify.registry import METHODS, get_method, methods_with_role

__all__ = ["BOUND_KEY", "check_reference", "finite_rounding_bound", "hessian", "not_applicable_reason",
           "not_applicable_record", "plan", "reference_skips", "verify_problem"]




def hessian(problem: Problem, method: str = "backprop") -> FloatArray | list[FloatArray]:
    """The Hessian of ``problem`` by the named method (float64, public order).

    The form follows the method's ``kind``: ``"matrix"`` gives ``(W, W)``,
    ``"vector"`` the diagonal ``(W,)``, ``"blocks"`` a list with one square
    block per layer.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> H = hessverify.hessian(case)
    >>> bool(abs(H - hessverify.hessian(case, method="autograd")).max() < 1e-12)
    True
    """
    if not isinstance(problem, Problem):
        raise UsageError(f"hessian() takes a Problem, got {type(problem).__name__}"
                         + (" (read a case file with hessverify.load_case(path) first)"
                            if isinstance(problem, (str, PathLike)) else ""))
    if not isinstance(method, str):
        raise UsageError(f"hessian(): method must be a name such as 'backprop', got {type(method).__name__}")
    m = get_method(method)
    check_memory(problem, [m.name], kept=1)
    ensure_well_posed(problem)
    if m.kind == "blocks":
        return [np.asarray(b, dtype=np.float64) for b in m.fn(problem)]
    return np.asarray(m.fn(problem), dtype=np.float64)


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
        if m.applies is not None and not m.applies(problem):
            from hessverify.symbolic.reference import MAX_COST, estimated_cost

            if m.name == "symbolic":
                out.append(f"symbolic: skipped, estimated cost {estimated_cost(problem):.3g} above the limit "
                           f"{MAX_COST:.3g}; name it to force it (--reference symbolic)")
            else:
                out.append(f"{m.name}: skipped by default on this problem; name it to force it")
    return out


def not_applicable_reason(problem: Problem, name: str, value: FloatArray, error: FloatArray | None) -> str | None:
    """Why reference ``name`` cannot serve at this point, or ``None`` when it can.

    A reference that returns NaN or inf where the network's own values are
    finite (:func:`~hessverify.model.well_posed.ensure_well_posed` has passed) has
    broken down in its own arithmetic: the complex step's ``tanh`` and
    ``cosh`` of a complex net input overflow beyond about 355, autograd's
    ``1 / cosh^2`` likewise, a finite-difference step on a target near the
    float64 limit overflows the gradient.  Such a reference says nothing
    about the methods there; it is reported as not applicable, never as a
    discrepancy.
    """
    value = np.asarray(value, dtype=np.float64)
    bad = ~np.isfinite(value)
    fp = forward(problem, derivatives=False)
    largest_a = max((float(np.max(np.abs(a))) for a in fp.a[1:] if a.size), default=0.0)
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


def _evaluate(problem: Problem, name: str) -> tuple[FloatArray, FloatArray | None]:
    """A full matrix by ``name`` and its own error estimate, where it has one."""
    m = METHODS[name]
    if m.with_error is not None:
        value, err = m.with_error(problem)
        return np.asarray(value, dtype=np.float64), np.asarray(err, dtype=np.float64)
    return np.asarray(m.fn(problem), dtype=np.float64), None


def verify_problem(problem: Problem, methods: Sequence[str] | None = None,
                   references: Sequence[str] | None = None,
                   approximations: Sequence[str] | None = None, *,
                   matrices: dict[str, FloatArray] | None = None) -> list[Comparison]:
    """Compare each exact method with each reference on one problem.

    Exact methods of kind ``"vector"`` or ``"blocks"`` are compared on the
    entries they compute (the diagonal, the diagonal blocks), each entry
    held to the bound of that entry.  Each side of a comparison brings its
    own error (:func:`hessverify.compare.pair_bound`): ``fd`` named as a
    method is held to its own error estimate.  Approximations (role
    ``"approximation"``: every one when ``methods`` is ``None``, otherwise
    those named in ``methods`` or ``approximations``) are appended as
    records of their error against the exact Hessian (``backprop``), with
    ``passed=True`` and ``bound_kind="approximation"``: never failures.
    An approximation named as a reference is a :class:`~hessverify.errors.UsageError`.
    References that declare where they apply (``symbolic``: small enough
    cases) are used by default only there (:func:`reference_skips` says why).

    A reference that cannot serve at this point (NaN or inf where the
    network is finite: :func:`not_applicable_reason`) is not compared; one
    record with ``bound_kind="not_applicable"`` says why, and the methods
    are judged by the references that can serve.

    If ``matrices`` is given, every full matrix computed is also stored in
    it, keyed by method or reference name, its own error estimate under
    ``"<name>.error"``, and the entrywise bound that decided each comparison
    under ``BOUND_KEY.format(method=..., reference=...)``, so a report can
    draw and localise them without computing them again.

    Raises :class:`~hessverify.errors.NotDifferentiableError` where the
    Hessian does not exist and :class:`~hessverify.errors.OverflowReport`
    where the network overflows, before anything is compared.
    """
    if not isinstance(problem, Problem):
        raise UsageError(f"verify_problem() takes a Problem, got {type(problem).__name__}")
    method_names, ref_names, approx_names = plan(problem, methods, references, approximations)
    check_memory(problem, method_names + ref_names + approx_names)
    ensure_well_posed(problem)
    kept: dict[str, FloatArray] = {} if matrices is None else matrices
    rounding = finite_rounding_bound(problem)
    refs: dict[str, tuple[FloatArray, FloatArray | None]] = {}
    results = []
    for name in ref_names:
        value, err = _evaluate(problem, name)
        kept[name] = value
        if err is not None:
            kept[f"{name}.error"] = err
        reason = not_applicable_reason(problem, name, value, err)
        if reason is not None:
            results.append(not_applicable_record(problem, name, reason, value, err))
        else:
            refs[name] = (value, err)
    for name in method_names:
        kind_of_result = METHODS[name].kind
        own_err = None
        if kind_of_result == "matrix":
            A, own_err = _evaluate(problem, name)
            kept[name] = A
        else:
            value = METHODS[name].fn(problem)
        for ref_name, (R, err) in refs.items():
            if ref_name == name:
                continue
            bound, kind = pair_bound(problem, name, ref_name, method_error=own_err, reference_error=err,
                                     rounding=rounding)
            if matrices is not None:
                kept[BOUND_KEY.format(method=name, reference=ref_name)] = bound
            if kind_of_result == "matrix":
                results.append(compare(problem, name, ref_name, A, R, bound, kind))
            else:
                results.append(compare_entries(problem, name, ref_name, kind_of_result, value, R, bound, kind))
    results += _against_truth(problem, refs, rounding, kept if matrices is not None else None)
    if approx_names:
        exact = kept["backprop"] if "backprop" in kept else METHODS["backprop"].fn(problem)
        for name in approx_names:
            m = METHODS[name]
            results.append(approximation_error(problem, name, m.kind, m.fn(problem), exact))
    return results


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
    with np.errstate(all="ignore"):
        rounding = rounding_bound(problem, methods=2)
    if np.any(np.isnan(rounding)):
        raise OverflowReport("overflow in the Hessian's terms: they are not finite in float64 at this point "
                             "(the rounding bound is NaN)")
    return rounding


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
        m.name for m in methods_with_role("reference") if m.applies is None or m.applies(problem)]
    for name in ref_names:
        check_reference(name)
        if METHODS[name].kind != "matrix":
            form = "a diagonal" if METHODS[name].kind == "vector" else "diagonal blocks"
            can_serve = [m.name for m in METHODS.values() if m.kind == "matrix" and m.role != "approximation"]
            raise UsageError(f"--reference {name}: gives {form}, not the full matrix; only full-matrix references "
                             f"can serve (choose among {', '.join(can_serve)})")
    return method_names, ref_names, approx_names


def _against_truth(problem: Problem, refs: dict[str, tuple[FloatArray, FloatArray | None]],
                   rounding: FloatArray, kept: dict[str, FloatArray] | None = None) -> list[Comparison]:
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
            if kept is not None:
                kept[BOUND_KEY.format(method=name, reference=gold)] = bound
            out.append(compare(problem, name, gold, R, G, bound, kind))
    return out
