"""Verify a problem: every method against every reference, within derived bounds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hessverify._typing import FloatArray
from hessverify.bounds import rounding_bound
from hessverify.compare import TOLERANCES, Comparison, approximation_error, bound_for, compare, compare_entries
from hessverify.model.problem import Problem
from hessverify.model.well_posed import ensure_well_posed
from hessverify.references.finite_differences import FD_SAFETY
from hessverify.registry import METHODS, get_method, methods_with_role

__all__ = ["hessian", "verify_problem"]


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
    m = get_method(method)
    ensure_well_posed(problem)
    if m.kind == "blocks":
        return [np.asarray(b, dtype=np.float64) for b in m.fn(problem)]
    return np.asarray(m.fn(problem), dtype=np.float64)


def verify_problem(problem: Problem, methods: Sequence[str] | None = None,
                   references: Sequence[str] | None = None,
                   approximations: Sequence[str] | None = None, *,
                   matrices: dict[str, FloatArray] | None = None) -> list[Comparison]:
    """Compare each exact method with each reference on one problem.

    Exact methods of kind ``"vector"`` or ``"blocks"`` are compared on the
    entries they compute (the diagonal, the diagonal blocks), each entry
    held to the bound of that entry.  Approximations (role
    ``"approximation"``: every one when ``methods`` is ``None``, otherwise
    those named in ``methods`` or ``approximations``) are appended as
    records of their error against the exact Hessian (``backprop``), with
    ``passed=True`` and ``bound_kind="approximation"``: never failures.
    References that declare where they apply (``symbolic``: small enough
    cases) are used by default only there.

    If ``matrices`` is given, every full matrix computed is also stored in
    it, keyed by method or reference name, and a reference's own error
    estimate (fd's) under ``"<name>.error"``, so a report can draw and
    localise them without computing them again.

    Raises :class:`~hessverify.errors.NotDifferentiableError` where the
    Hessian does not exist and :class:`~hessverify.errors.OverflowReport`
    where the network overflows, before anything is compared.
    """
    ensure_well_posed(problem)
    method_names = list(methods) if methods is not None else [m.name for m in methods_with_role("method")]
    approx_names = [n for n in method_names if n in METHODS and METHODS[n].role == "approximation"]
    method_names = [n for n in method_names if n not in approx_names]
    if approximations is not None:
        approx_names += [n for n in approximations if n not in approx_names]
    elif methods is None:
        approx_names = [m.name for m in methods_with_role("approximation")]
    ref_names = list(references) if references is not None else [
        m.name for m in methods_with_role("reference") if m.applies is None or m.applies(problem)]
    for name in method_names + ref_names + approx_names:
        get_method(name)
    kept: dict[str, FloatArray] = {} if matrices is None else matrices
    rounding = rounding_bound(problem, methods=2)
    refs: dict[str, tuple[FloatArray, FloatArray | None]] = {}
    for name in ref_names:
        ref = METHODS[name]
        if ref.with_error is not None:
            value, err = ref.with_error(problem)
            refs[name] = (value, err)
            kept[f"{name}.error"] = np.asarray(err, dtype=np.float64)
        else:
            refs[name] = (np.asarray(ref.fn(problem), dtype=np.float64), None)
        kept[name] = refs[name][0]
    results = []
    for name in method_names:
        kind_of_result = METHODS[name].kind
        if kind_of_result == "matrix":
            A = kept[name] = np.asarray(METHODS[name].fn(problem), dtype=np.float64)
        else:
            value = METHODS[name].fn(problem)
        for ref_name, (R, err) in refs.items():
            if ref_name == name:
                continue
            bound, kind = bound_for(problem, ref_name, reference_error=err, rounding=rounding)
            if kind_of_result == "matrix":
                results.append(compare(problem, name, ref_name, A, R, bound, kind))
            else:
                results.append(compare_entries(problem, name, ref_name, kind_of_result, value, R, bound, kind))
    results += _against_truth(problem, refs, rounding)
    if approx_names:
        exact = kept["backprop"] if "backprop" in kept else METHODS["backprop"].fn(problem)
        for name in approx_names:
            m = METHODS[name]
            results.append(approximation_error(problem, name, m.kind, m.fn(problem), exact))
    return results


def _against_truth(problem: Problem, refs: dict[str, tuple[FloatArray, FloatArray | None]],
                   rounding: FloatArray) -> list[Comparison]:
    """Each other reference against a high-precision one: its true error, not a disagreement.

    The bound is the high-precision reference's (gamma_k M plus its own
    rounding), plus the reference's own error estimate where it has one (fd).
    """
    out = []
    for gold, (G, gold_err) in refs.items():
        if TOLERANCES.get(gold) is None or TOLERANCES[gold].kind != "high_precision":
            continue
        for name, (R, err) in refs.items():
            if name == gold:
                continue
            bound, kind = bound_for(problem, gold, reference_error=gold_err, rounding=rounding)
            if err is not None:
                bound = bound + FD_SAFETY * err
            out.append(compare(problem, name, gold, R, G, bound, kind))
    return out
