"""Comparison of a method with a reference, against a derived bound.

Tolerances are data: :data:`TOLERANCES` says, for each reference, how the
entrywise bound is obtained and why.  The bound actually used is written
into every :class:`Comparison`.

A comparison passes when every entry satisfies ``|A_ij - R_ij| <= bound_ij``.
It reports the worst entry by the ratio ``|A_ij - R_ij| / bound_ij`` (the
entry closest to failing, or failing worst), named by its two parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.bounds import UNDERFLOW_FLOOR
from hessverify.engine.components import EXACT, BoundKind, Tolerance
from hessverify.engine.forms import form_named
from hessverify.engine.point import Point
from hessverify.engine.registry import METHODS, tolerance_of
from hessverify.model.problem import Problem

__all__ = [
    "BOUND_KEY", "EXACT", "TOLERANCES", "BoundKind",
    "Comparison", "Tolerance", "WorstEntry", "approximation_error",
    "bound_for", "compare", "compare_at", "compare_entries", "entries_of", "is_not_applicable", "margin_text",
    "pair_bound",
]


class _Tolerances(Mapping[str, Tolerance]):
    """Each registered component's :class:`~hessverify.engine.components.Tolerance`, by name (a view of the
    registry: a component declares its own)."""

    def __getitem__(self, name: str) -> Tolerance:
        return METHODS[name].tolerance

    def __iter__(self) -> Iterator[str]:
        return iter(METHODS)

    def __len__(self) -> int:
        return len(METHODS)


TOLERANCES: Mapping[str, Tolerance] = _Tolerances()
"""How each method's and reference's side of a bound is derived, with the reason (declared by its component)."""

BOUND_KEY = "bound:{method}:{reference}"
"""Where ``verify_problem(..., matrices=)`` keeps the entrywise bound that decided a comparison."""



def pair_bound(problem: Problem, method: str, reference: str, *, method_error: FloatArray | None = None,
               reference_error: FloatArray | None = None, rounding: FloatArray | None = None
               ) -> tuple[FloatArray, str]:
    """The entrywise bound on ``|method - reference|``: each side brings its own error.

    A float64 side held to the rounding model brings ``gamma_k M``; a side
    with an error estimate (``fd``, ``richardson``, ``complex_step``,
    ``symbolic``) brings its estimate times its safety factor.  So
    ``--method fd --reference autograd`` is held to fd's estimate plus
    autograd's rounding, and an exact method against ``autograd`` to
    ``2 gamma_k M``.  The underflow allowance (:data:`hessverify.engine.bounds.UNDERFLOW_FLOOR`)
    is added once.  ``rounding`` is ``rounding_bound(problem, methods=2)``,
    passed to save computing it again.

    Returns the bound and its kind: the reference's kind, or the method's
    when the method is the approximate side (``fd`` against ``autograd``).
    """
    if rounding is None:
        rounding = Point.of(problem).rounding(2)
    one = (rounding - UNDERFLOW_FLOOR) / 2.0  # gamma_k M
    bound: FloatArray = np.full_like(rounding, UNDERFLOW_FLOOR)
    kinds = []
    for name, err in ((method, method_error), (reference, reference_error)):
        tol = tolerance_of(name)
        if tol.estimates_itself and err is None and tol.kind is not BoundKind.HIGH_PRECISION:
            raise ValueError(f"the {name} bound needs its own error estimate")
        if tol.rounding_sides:
            bound = bound + tol.rounding_sides * one
        if err is not None:
            bound = bound + tol.safety * np.asarray(err, dtype=np.float64)
        kinds.append(tol.kind)
    kind = kinds[1] if kinds[1] != "rounding" or kinds[0] == "rounding" else kinds[0]
    return bound, kind


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

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Comparison:
        """The comparison a ``results.json`` record was written from (:meth:`to_dict`, inverted).

        Numbers that were not finite come back as ``None``: strict JSON wrote them as ``null``.
        """
        fields = dict(record)
        fields.pop("localisation", None)  # a report's analysis, not part of the comparison
        fields["worst_entry"] = WorstEntry(**fields["worst_entry"])
        return cls(**fields)


def bound_for(problem: Problem, reference: str, *, reference_error: FloatArray | None = None,
              rounding: FloatArray | None = None) -> tuple[FloatArray, str]:
    """The entrywise bound for comparing an exact method with ``reference`` (:func:`pair_bound`)."""
    return pair_bound(problem, "", reference, reference_error=reference_error, rounding=rounding)


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


def compare_at(problem: Problem, method: str, reference: str, A: FloatArray, R: FloatArray, bound: FloatArray,
               bound_kind: str, mask: np.ndarray) -> Comparison:
    """:func:`compare` on the entries where ``mask`` is true: a result that computes only some of them.

    For a library routine that returns, say, one block per parameter tensor
    (BackPACK's Kronecker factors) or a diagonal: ``A``, ``R``, ``bound`` and
    ``mask`` are ``(W, W)``; entries outside the mask take no part.
    """
    rows, cols = np.nonzero(mask)
    A, R = np.asarray(A, dtype=np.float64), np.asarray(R, dtype=np.float64)
    b = np.broadcast_to(np.asarray(bound, dtype=np.float64), A.shape)
    c = _flat_comparison(problem, method, reference, A[rows, cols], R[rows, cols], b[rows, cols], rows, cols,
                         bound_kind)
    with np.errstate(invalid="ignore", over="ignore"):
        sym = np.where(mask & mask.T, np.abs(A - A.T), 0.0)
    c.symmetry_error = float(np.nanmax(sym)) if sym.size else 0.0
    c.extra["compared_entries"] = int(rows.size)
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
        why = (f"{reference} is not trusted there (a step crosses a kink or leaves the range where its "
               "error estimate holds, or its bound overflows float64)"
               if bound_kind == "fd_estimate"
               else "their bound overflows float64 (the entry's terms are near the float64 limit)")
        notes.append(f"{int(np.count_nonzero(untrusted))} entries not checked: {why}")
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


def is_not_applicable(c: Comparison) -> bool:
    """A record of a reference that could not serve at a point: not a comparison, never a failure."""
    return c.bound_kind == "not_applicable"


def margin_text(c: Comparison) -> str:
    """The margin for people: ``"reference is exactly 0"`` where a margin would only measure the floor.

    Where the reference entry is exactly 0 and the method's is not, the
    bound there can be as small as the underflow allowance, and the ratio
    (4e+295, say) says nothing a reader can use: the words do.
    """
    if not c.passed and c.worst_entry.reference_value == 0.0:
        return "reference is exactly 0"
    return f"{c.margin:.1e}"
