"""Verify a problem: every method against every reference, within derived bounds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hessverify._typing import FloatArray
from hessverify.bounds import rounding_bound
from hessverify.compare import TOLERANCES, Comparison, bound_for, compare
from hessverify.model.forward import check_point
from hessverify.problem import Problem
from hessverify.references.finite_differences import FD_SAFETY
from hessverify.registry import METHODS, get_method, methods_with_role

__all__ = ["hessian", "verify_problem"]


def hessian(problem: Problem, method: str = "backprop") -> FloatArray:
    """The ``(W, W)`` Hessian of ``problem`` by the named method (float64, public order).

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> H = hessverify.hessian(case)
    >>> bool(abs(H - hessverify.hessian(case, method="autograd")).max() < 1e-12)
    True
    """
    m = get_method(method)
    check_point(problem)
    return np.asarray(m.fn(problem), dtype=np.float64)


def verify_problem(problem: Problem, methods: Sequence[str] | None = None,
                   references: Sequence[str] | None = None, *,
                   matrices: dict[str, FloatArray] | None = None) -> list[Comparison]:
    """Compare each exact method with each reference on one problem.

    If ``matrices`` is given, every matrix computed is also stored in it,
    keyed by method or reference name, and a reference's own error estimate
    (fd's) under ``"<name>.error"``, so a report can draw and localise them
    without computing them again (the finite-difference reference is slow).

    Raises :class:`~hessverify.errors.NotDifferentiableError` where the
    Hessian does not exist and :class:`~hessverify.errors.OverflowReport`
    where the network overflows, before anything is compared.
    """
    check_point(problem)
    method_names = list(methods) if methods is not None else [m.name for m in methods_with_role("method")]
    ref_names = list(references) if references is not None else [
        m.name for m in methods_with_role("reference") if m.applies is None or m.applies(problem)]
    for name in method_names + ref_names:
        get_method(name)
    rounding = rounding_bound(problem, methods=2)
    refs: dict[str, tuple[FloatArray, FloatArray | None]] = {}
    for name in ref_names:
        ref = METHODS[name]
        if ref.with_error is not None:
            value, err = ref.with_error(problem)
            refs[name] = (value, err)
        else:
            refs[name] = (np.asarray(ref.fn(problem), dtype=np.float64), None)
        if matrices is not None:
            matrices[name] = refs[name][0]
            if refs[name][1] is not None:
                matrices[f"{name}.error"] = np.asarray(refs[name][1], dtype=np.float64)
    results = []
    for name in method_names:
        A = np.asarray(METHODS[name].fn(problem), dtype=np.float64)
        if matrices is not None:
            matrices[name] = A
        for ref_name, (R, err) in refs.items():
            if ref_name == name:
                continue
            bound, kind = bound_for(problem, ref_name, reference_error=err, rounding=rounding)
            results.append(compare(problem, name, ref_name, A, R, bound, kind))
    results += _against_truth(problem, refs, rounding)
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
