"""Comparison of a method with a reference, against a derived bound.

Tolerances are data: :data:`TOLERANCES` says, for each reference, how the
entrywise bound is obtained and why.  The bound actually used is written
into every :class:`Comparison`.

A comparison passes when every entry satisfies ``|A_ij - R_ij| <= bound_ij``.
It reports the worst entry by the ratio ``|A_ij - R_ij| / bound_ij`` (the
entry closest to failing, or failing worst), named by its two parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hessverify._typing import FloatArray
from hessverify.bounds import rounding_bound
from hessverify.forms import form_named
from hessverify.model.problem import Problem
from hessverify.references.finite_differences import FD_SAFETY

__all__ = [
    "TOLERANCES", "Comparison", "Tolerance", "WorstEntry", "approximation_error", "compare", "bound_for",
    "compare_entries", "entries_of",
]


@dataclass(frozen=True)
class Tolerance:
    kind: str
    reason: str


TOLERANCES: dict[str, Tolerance] = {
    "autograd": Tolerance(
        "rounding",
        "both exact in float64: each within gamma_k * M of the truth, so they differ by at most "
        "2 gamma_k M entrywise (M: magnitudes of the terms summed; hessverify.bounds)",
    ),
    "backprop": Tolerance(
        "rounding",
        "both exact in float64: 2 gamma_k M entrywise, as for autograd (used when backprop is the reference)",
    ),
    "fd": Tolerance(
        "fd_estimate",
        f"central differences: {FD_SAFETY:g} x (Richardson truncation estimate + rounding of the gradient / h "
        "+ asymmetry), plus gamma_k M for the exact side",
    ),
    "complex_step": Tolerance(
        "rounding",
        "the complex step has no subtraction and a truncation term below 1e-60: exact to rounding, so "
        "2 gamma_k M entrywise as for two exact methods",
    ),
    "richardson": Tolerance(
        "fd_estimate",
        f"Richardson-extrapolated central differences: {FD_SAFETY:g} x (|R(h) - R(2h)| / 15 + 1.5 gamma_k G / h "
        "+ asymmetry), plus gamma_k M for the exact side",
    ),
    "symbolic": Tolerance(
        "high_precision",
        "the closed form in 50-digit mpmath (or exact rationals) is the truth to ~1e-48 M, so an exact float64 "
        "method is within gamma_k M of it (rounding_bound(methods=1)), plus the reference's own rounding to "
        "float64 (measured exactly)",
    ),
}
"""How each reference's bound is derived, with the reason."""


@dataclass
class WorstEntry:
    row: str
    col: str
    value: float
    reference_value: float
    abs_error: float
    bound: float


@dataclass
class Comparison:
    """One (case, method, reference) comparison."""

    case: str
    method: str
    reference: str
    passed: bool
    max_abs_error: float
    max_rel_error: float  # max |A - R| / max |R|
    frobenius_rel_error: float  # ||A - R||_F / ||R||_F
    bound: float  # the bound at the worst entry
    bound_kind: str
    margin: float  # max over entries of |A - R| / bound; passes when <= 1
    symmetry_error: float  # max |A - A^T| of the method's matrix
    worst_entry: WorstEntry
    failing_entries: int = 0
    unchecked_entries: int = 0  # entries whose bound is inf: the reference is not trusted there
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bound_for(problem: Problem, reference: str, *, reference_error: FloatArray | None = None,
              rounding: FloatArray | None = None) -> tuple[FloatArray, str]:
    """The entrywise bound for comparing an exact method with ``reference``."""
    tol = TOLERANCES.get(reference, Tolerance("rounding", "exact reference"))
    if rounding is None:
        rounding = rounding_bound(problem, methods=2)
    if tol.kind == "fd_estimate":
        if reference_error is None:
            raise ValueError("the fd bound needs the reference's error estimate")
        return FD_SAFETY * reference_error + rounding / 2.0, tol.kind
    if tol.kind == "high_precision":
        own = 0.0 if reference_error is None else reference_error
        return rounding_bound(problem, methods=1) + own, tol.kind
    return rounding, tol.kind


def compare(problem: Problem, method: str, reference: str, A: FloatArray, R: FloatArray,
            bound: FloatArray, bound_kind: str) -> Comparison:
    """Compare ``A`` (the method's Hessian) with ``R`` (the reference's).

    Entries where the method is NaN or inf fail.  Entries where the reference
    is NaN or inf, or where its bound is inf (a finite-difference step across
    a kink), are not checked, and the comparison says how many.
    """
    A = np.asarray(A, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    if A.shape != R.shape:
        raise ValueError(f"{method} returned shape {A.shape}, {reference} returned {R.shape}")
    rows, cols = (idx.ravel() for idx in np.indices(A.shape)) if A.ndim == 2 else (np.arange(A.size),) * 2
    c = _flat_comparison(problem, method, reference, A.ravel(), R.ravel(), np.asarray(bound).ravel(),
                         rows, cols, bound_kind)
    with np.errstate(invalid="ignore", over="ignore"):
        c.symmetry_error = float(np.max(np.abs(A - A.T))) if A.ndim == 2 and A.size else 0.0
    return c


def entries_of(problem: Problem, kind: str, value: Any) -> tuple[FloatArray, np.ndarray, np.ndarray]:
    """A method's result as ``(values, rows, cols)``: the entries it computes and where they sit."""
    return form_named(kind)(value).entries(problem.architecture)


def _symmetry(kind: str, value: Any) -> float:
    return form_named(kind)(value).symmetry_error()


def compare_entries(problem: Problem, method: str, reference: str, kind: str, value: Any, R: FloatArray,
                    bound: FloatArray, bound_kind: str) -> Comparison:
    """Compare a method of any kind with the full matrices ``R`` (reference) and ``bound``.

    Only the entries the method computes take part (the diagonal for
    ``"vector"``, the layer blocks for ``"blocks"``); each is held to the
    bound of that same entry.
    """
    a, rows, cols = entries_of(problem, kind, value)
    r = np.asarray(R, dtype=np.float64)[rows, cols]
    b = np.asarray(bound, dtype=np.float64)[rows, cols]
    c = _flat_comparison(problem, method, reference, a, r, b, rows, cols, bound_kind)
    c.symmetry_error = _symmetry(kind, value)
    if kind != "matrix":
        c.extra["compared_entries"] = "diagonal" if kind == "vector" else "diagonal blocks"
    return c


def _flat_comparison(problem: Problem, method: str, reference: str, a: FloatArray, r: FloatArray,
                     bound: FloatArray, rows: np.ndarray, cols: np.ndarray, bound_kind: str) -> Comparison:
    """The comparison of entries ``a`` against ``r``, entry ``i`` being ``(rows[i], cols[i])``."""
    names = problem.param_names
    method_bad = ~np.isfinite(a)
    ref_bad = ~np.isfinite(r) & ~method_bad
    untrusted = np.isinf(bound) & ~method_bad & ~ref_bad
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        diff = np.abs(a - r)
        diff[method_bad] = np.inf
        diff[ref_bad] = 0.0
        ratio = diff / bound
    ratio[method_bad] = np.inf
    ratio[ref_bad | untrusted] = 0.0
    failing = int(np.count_nonzero(method_bad | (ratio > 1.0)))
    worst = int(np.argmax(ratio)) if ratio.size else 0
    checked = ~(ref_bad | untrusted)
    max_abs = float(np.max(diff[checked])) if np.any(checked) else 0.0
    max_ref = float(np.max(np.abs(r[checked]))) if np.any(checked) else 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        norm_r = float(np.linalg.norm(np.where(checked, r, 0.0)))
        norm_d = float(np.linalg.norm(np.where(checked, diff, 0.0)))
    fro = norm_d / norm_r if norm_r > 0 else (0.0 if norm_d == 0 else float("inf"))
    we = WorstEntry(row=names[rows[worst]], col=names[cols[worst]], value=float(a[worst]),
                    reference_value=float(r[worst]), abs_error=float(diff[worst]), bound=float(bound[worst]))
    notes = []
    if np.any(method_bad):
        notes.append(f"{method} returned NaN or inf at {int(np.count_nonzero(method_bad))} entries")
    if np.any(ref_bad):
        notes.append(f"{int(np.count_nonzero(ref_bad))} entries not checked: {reference} returned NaN or inf there")
    if np.any(untrusted):
        notes.append(f"{int(np.count_nonzero(untrusted))} entries not checked: {reference} is not trusted there "
                     "(a step crosses a kink)")
    return Comparison(
        case=problem.id, method=method, reference=reference, passed=failing == 0, max_abs_error=max_abs,
        max_rel_error=(max_abs / max_ref if max_ref > 0 else (0.0 if max_abs == 0 else float("inf"))),
        frobenius_rel_error=fro, bound=we.bound, bound_kind=bound_kind, margin=float(ratio[worst]),
        symmetry_error=0.0, worst_entry=we, failing_entries=failing,
        unchecked_entries=int(np.count_nonzero(ref_bad | untrusted)), note="; ".join(notes),
    )


APPROXIMATION_NOTE = "approximation error against the exact Hessian; reported, never a failure"


def approximation_error(problem: Problem, method: str, kind: str, value: Any, exact: FloatArray,
                        exact_name: str = "backprop") -> Comparison:
    """How far a curvature approximation is from the exact Hessian, as a record that always passes.

    The record has ``passed=True``, ``bound_kind="approximation"``, an
    infinite ``bound`` and ``margin = 0``: an approximation is not held to a
    bound.  Its errors (``max_abs_error``, ``max_rel_error``,
    ``frobenius_rel_error``) are measured on the entries it computes, its
    worst entry is the one farthest from the exact value, and
    ``extra["approximation"]`` is true so reports can tell it apart.
    """
    a, rows, cols = entries_of(problem, kind, value)
    r = np.asarray(exact, dtype=np.float64)[rows, cols]
    # rank the entries by absolute error: a unit bound makes ratio == |error|
    c = _flat_comparison(problem, method, exact_name, a, r, np.ones_like(a), rows, cols, "approximation")
    c.bound = c.worst_entry.bound = float("inf")
    c.passed, c.margin, c.failing_entries = True, 0.0, 0
    c.symmetry_error = _symmetry(kind, value)
    c.note = APPROXIMATION_NOTE if not c.note else f"{APPROXIMATION_NOTE}; {c.note}"
    c.extra.update(approximation=True, compared_entries={"matrix": "all", "vector": "diagonal",
                                                         "blocks": "diagonal blocks"}[kind])
    return c
