"""Verify a problem: every method against every reference, within derived bounds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hessverify._typing import FloatArray
from hessverify.bounds import rounding_bound
from hessverify.compare import Comparison, approximation_error, bound_for, compare, compare_entries
from hessverify.model.forward import check_point
from hessverify.problem import Problem
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
    check_point(problem)
    if m.kind == "blocks":
        return [np.asarray(b, dtype=np.float64) for b in m.fn(problem)]
    return np.asarray(m.fn(problem), dtype=np.float64)


def verify_problem(problem: Problem, methods: Sequence[str] | None = None,
                   references: Sequence[str] | None = None,
                   approximations: Sequence[str] | None = None) -> list[Comparison]:
    """Compare each exact method with each reference on one problem.

    Exact methods of kind ``"vector"`` or ``"blocks"`` are compared on the
    entries they compute (the diagonal, the diagonal blocks), each entry
    held to the bound of that entry.  Approximations (role
    ``"approximation"``: every one when ``methods`` is ``None``, otherwise
    those named in ``methods`` or ``approximations``) are appended as
    records of their error against the exact Hessian (``backprop``), with
    ``passed=True`` and ``bound_kind="approximation"``: never failures.

    Raises :class:`~hessverify.errors.NotDifferentiableError` where the
    Hessian does not exist and :class:`~hessverify.errors.OverflowReport`
    where the network overflows, before anything is compared.
    """
    check_point(problem)
    method_names = list(methods) if methods is not None else [m.name for m in methods_with_role("method")]
    approx_names = [n for n in method_names if n in METHODS and METHODS[n].role == "approximation"]
    method_names = [n for n in method_names if n not in approx_names]
    if approximations is not None:
        approx_names += [n for n in approximations if n not in approx_names]
    elif methods is None:
        approx_names = [m.name for m in methods_with_role("approximation")]
    ref_names = list(references) if references is not None else [m.name for m in methods_with_role("reference")]
    for name in method_names + ref_names + approx_names:
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
    results = []
    matrices: dict[str, FloatArray] = {}
    for name in method_names:
        kind_of_result = METHODS[name].kind
        if kind_of_result == "matrix":
            A = matrices[name] = np.asarray(METHODS[name].fn(problem), dtype=np.float64)
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
    if approx_names:
        exact = matrices["backprop"] if "backprop" in matrices else METHODS["backprop"].fn(problem)
        for name in approx_names:
            m = METHODS[name]
            results.append(approximation_error(problem, name, m.kind, m.fn(problem), exact))
    return results
