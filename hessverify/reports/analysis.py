"""What a report says about one case, beyond the comparisons: computed once, drawn twice.

:func:`analyse_case` gathers, for one run (:class:`hessverify.engine.run.Run`: a
problem's matrices, bounds and records, computed once), and keeps on it,

* the localisation (:mod:`hessverify.reports.localise`) of every failing
  comparison, thresholded by the comparison's own entrywise bound;
* the eigenvalue spectrum of the exact Hessian and its *inertia*: how many
  eigenvalues are positive, negative and zero, so that a saddle point shows;
* how each registered approximation (registry role ``"approximation"``:
  Gauss-Newton, Fisher, diagonals, ...) compares with the exact Hessian,
  from the results the run computed.

The zero threshold
------------------
An eigenvalue counts as zero when ``|lambda| <= tau`` with

.. math::

   \\tau = \\max\\bigl(\\lVert \\gamma_k M \\rVert_2,\\; W\\,u\\,\\max_i |\\lambda_i|\\bigr).

The first term is the rounding error of the computed Hessian
(:func:`hessverify.engine.bounds.rounding_bound` for one method: each entry is
within ``gamma_k M_ij`` of the truth).  By Weyl's inequality a symmetric
perturbation ``E`` moves every eigenvalue by at most ``||E||_2``, and
``||E||_2 <= || |E| ||_2 <= ||gamma_k M||_2``, so the sign of an eigenvalue
below it is not determined by the computation.  The second term is the
backward error of the symmetric eigensolver (LAPACK ``syevd``, the usual
``W u ||H||_2`` allowance, as in ``numpy.linalg.matrix_rank``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.bounds import UNIT_ROUNDOFF
from hessverify.engine.point import Point
from hessverify.engine.compare import Comparison
from hessverify.errors import HessverifyError
from hessverify.engine.forms import form_named
from hessverify.model.problem import Problem
from hessverify.reports.localise import Localisation, localise

if TYPE_CHECKING:
    from hessverify.engine.run import Run, Source

__all__ = ["MAX_SPECTRUM_PARAMS", "STATIONARY_TOL", "ApproximationSummary", "CaseAnalysis", "Inertia", "analyse_case",
           "as_matrix", "exact_dense", "inertia", "is_approximation", "point_words", "zero_threshold"]

MAX_SPECTRUM_PARAMS = 3000
"""Above this many parameters the report skips eigenvalues and approximations.

An eigendecomposition and the 2-norm of the rounding bound cost ``O(W^3)``:
seconds at 3000 parameters, most of an hour at the 20000 a case may have."""


@dataclass(frozen=True)
class Inertia:
    """Eigenvalues of a symmetric matrix and how many are positive, negative, zero."""

    eigenvalues: FloatArray  # ascending
    threshold: float  # |lambda| <= threshold counts as zero
    positive: int
    negative: int
    zero: int

    @property
    def kind(self) -> str:
        """``"positive definite"``, ``"indefinite"``, ... in words: the matrix, not the point.

        Whether the point is a saddle or an extremum also needs the gradient
        to vanish there (:func:`point_words`).
        """
        if self.negative and self.positive:
            return "indefinite"
        if self.negative:
            return "negative definite" if not self.zero else "negative semidefinite"
        if self.positive:
            return "positive definite" if not self.zero else "positive semidefinite"
        return "zero"

    def to_dict(self) -> dict[str, Any]:
        ev = self.eigenvalues
        return {"positive": self.positive, "negative": self.negative, "zero": self.zero,
                "zero_threshold": self.threshold, "kind": self.kind,
                "min": float(ev[0]) if ev.size else 0.0, "max": float(ev[-1]) if ev.size else 0.0}


STATIONARY_TOL = 1e-8
"""A point counts as stationary when ``|g|_2 <= STATIONARY_TOL`` (the lab's default tolerance)."""


def point_words(s: Inertia, grad_norm: float | None) -> str:
    """The spectrum's kind and what it says about the point: a saddle only where the gradient vanishes.

    An indefinite Hessian at a point where ``|g| > STATIONARY_TOL`` says how
    ``E`` curves there, not that the point is a saddle; nor is a positive
    definite one a minimum.
    """
    if grad_norm is None:
        return s.kind
    g = f"|g| = {grad_norm:.2g}"
    if grad_norm > STATIONARY_TOL:
        what = {"indefinite": "so not a saddle"}.get(s.kind, "so not a minimum or maximum")
        return f"{s.kind}; not a stationary point ({g}), {what}"
    if s.negative and s.positive:
        return f"indefinite at a stationary point ({g}): a saddle"
    if s.zero:
        return f"{s.kind} at a stationary point ({g}): degenerate, the second-order test cannot decide"
    return f"{s.kind} at a stationary point ({g}): a {'maximum' if s.negative else 'minimum'}"


def zero_threshold(problem: Problem, eigenvalues: FloatArray, rounding_one: FloatArray | None = None) -> float:
    """``tau``: below it the sign of an eigenvalue is not determined (module text).

    ``rounding_one`` is ``rounding_bound(problem, methods=1)``, when the run has it already.
    """
    if rounding_one is None:
        rounding_one = Point.of(problem).rounding(1)
    rounding = float(np.linalg.norm(rounding_one, 2))
    solver = problem.n_params * UNIT_ROUNDOFF * float(np.max(np.abs(eigenvalues), initial=0.0))
    return max(rounding, solver)


def inertia(H: FloatArray, threshold: float, eigenvalues: FloatArray | None = None) -> Inertia:
    """Eigenvalues of ``(H + H^T) / 2`` and the counts either side of ``+-threshold``.

    ``eigenvalues``: those of ``(H + H^T) / 2`` (ascending), when already computed.
    """
    ev = np.linalg.eigvalsh((H + H.T) / 2.0) if eigenvalues is None else eigenvalues
    return Inertia(ev, threshold, int(np.sum(ev > threshold)), int(np.sum(ev < -threshold)),
                   int(np.sum(np.abs(ev) <= threshold)))


def as_matrix(problem: Problem, kind: str, value: Any) -> FloatArray:
    """An approximation's result as a dense ``(W, W)`` matrix.

    ``"matrix"`` is taken as is, ``"vector"`` (a diagonal) becomes a diagonal
    matrix and ``"blocks"`` (one square block per layer, in layer order) a
    block-diagonal one (registry ``kind``, :mod:`hessverify.engine.registry`).
    """
    return form_named(kind)(value).dense(problem.architecture)


def is_approximation(c: Comparison) -> bool:
    """An approximation's error record, not a verdict on an exact method (:func:`~hessverify.compare.approximation_error`)."""
    return c.bound_kind == "approximation" or bool(c.extra.get("approximation"))


def exact_dense(problem: Problem, kind: str, value: Any) -> FloatArray:
    """An exact method's result as ``(W, W)``, NaN where it computes nothing.

    A ``"vector"`` method computes the diagonal and a ``"blocks"`` method the
    layer blocks, exactly; unlike an approximation it claims nothing about
    the other entries, so they are NaN (left out of localisation, grey in
    the pictures) rather than zero.
    """
    return form_named(kind)(value).dense(problem.architecture, fill=np.nan)


@dataclass(frozen=True)
class ApproximationSummary:
    """How one approximation compares with the exact Hessian."""

    name: str
    kind: str
    summary: str
    rel_frobenius_error: float = float("nan")  # ||A - H||_F / ||H||_F
    rel_diagonal_error: float = float("nan")  # ||diag A - diag H|| / ||diag H||
    cosine: float = float("nan")  # <A, H>_F / (||A||_F ||H||_F)
    inertia: Inertia | None = None
    error: str = ""  # why it could not be computed, if it could not

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "summary": self.summary}
        if self.error:
            d["error"] = self.error
        else:
            d.update(rel_frobenius_error=self.rel_frobenius_error, rel_diagonal_error=self.rel_diagonal_error,
                     cosine=self.cosine, inertia=self.inertia.to_dict() if self.inertia else None)
        return d


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def summarise_approximation(problem: Problem, m: Source, value: Any, H: FloatArray,
                            threshold: float) -> ApproximationSummary:
    """Compare one approximation's result with the exact Hessian ``H`` (a wrong shape is recorded, not raised)."""
    name = m.name
    try:
        A = as_matrix(problem, m.kind, value)
    except ValueError as exc:
        return ApproximationSummary(name, m.kind, m.summary, error=f"unusable result: {exc}")
    dA, dH = np.diag(A), np.diag(H)
    nA, nH = float(np.linalg.norm(A)), float(np.linalg.norm(H))
    return ApproximationSummary(
        name, m.kind, m.summary,
        rel_frobenius_error=_ratio(float(np.linalg.norm(A - H)), nH),
        rel_diagonal_error=_ratio(float(np.linalg.norm(dA - dH)), float(np.linalg.norm(dH))),
        cosine=float(np.sum(A * H) / (nA * nH)) if nA > 0 and nH > 0 else float("nan"),
        inertia=inertia(A, threshold),
    )


@dataclass
class CaseAnalysis:
    """Everything a report shows about one case."""

    problem: Problem
    comparisons: list[Comparison]
    skipped: dict[str, str] | None = None  # {"case", "reason", "message"} when not compared
    matrices: dict[str, FloatArray] = field(default_factory=dict)
    exact_name: str | None = None  # whose matrix the spectrum is of
    spectrum: Inertia | None = None
    spectrum_note: str = ""  # why there is no spectrum, when there is none
    approximations: list[ApproximationSummary] = field(default_factory=list)
    localisations: dict[tuple[str, str], Localisation] = field(default_factory=dict)
    bounds: dict[tuple[str, str], FloatArray] = field(default_factory=dict)
    grad_norm: float | None = None  # |g|_2 at the point: a saddle needs it to vanish

    @property
    def point(self) -> str:
        """The spectrum's kind and what the point is (:func:`point_words`)."""
        return point_words(self.spectrum, self.grad_norm) if self.spectrum is not None else ""

    @property
    def exact(self) -> FloatArray | None:
        return self.matrices.get(self.exact_name) if self.exact_name else None

    def to_dict(self) -> dict[str, Any]:
        p = self.problem
        return {
            "case": p.id, "network": p.architecture.describe(), "loss": p.loss, "reduction": p.reduction,
            "n_params": p.n_params, "n_patterns": p.n_patterns,
            "spectrum_of": self.exact_name,
            "inertia": self.spectrum.to_dict() if self.spectrum else None,
            "grad_norm": self.grad_norm,
            "point": self.point or None,
            "approximations": [a.to_dict() for a in self.approximations],
        }


def _exact_name(run: Run, drawn: Mapping[str, FloatArray]) -> str | None:
    """The matrix to take as the exact Hessian: an exact reference first, else a method that passed."""
    sources = run.sources
    for name in drawn:
        if sources[name].role == "reference" and sources[name].tolerance == "rounding":
            return name
    full = [n for n in drawn if sources[n].kind == "matrix" and sources[n].role != "approximation"]
    for name in full:
        mine = [c for c in run.records if c.method == name]
        if mine and all(c.passed for c in mine):
            return name
    return full[0] if full else None


def analyse_case(run: Run) -> CaseAnalysis:
    """Localise the failures, take the spectrum, compare the approximations (module text), once per run.

    Everything is read from the run (:class:`hessverify.engine.run.Run`): the
    matrices, the bound that decided each comparison, the rounding bound,
    the approximations' results.  The analysis is kept on the run
    (``run.analysis``), so a second report of the same run computes nothing.
    """
    if run.analysis is not None:
        return run.analysis
    problem = run.problem
    out = CaseAnalysis(problem, list(run.records), run.skip.record(problem.id) if run.skip is not None else None)
    run.analysis = out
    if run.skip is not None:
        return out  # no Hessian exists at this point, or the network overflows
    mats = out.matrices
    for name in run.drawn:
        try:
            mats[name] = exact_dense(problem, run.sources[name].kind, run.values[name])
        except ValueError:
            continue  # a result of the wrong shape: its comparison says so; nothing to draw
    if not mats:
        try:
            fallback = run.fallback_exact()
        except HessverifyError:
            return out
        if fallback is None:
            return out
        mats[fallback[0]] = fallback[1]
    for name, err in run.errors.items():
        mats[f"{name}.error"] = err
    for c in run.records:
        A, R = mats.get(c.method), mats.get(c.reference)
        bound = run.bounds.get((c.method, c.reference))
        if A is None or R is None or is_approximation(c) or bound is None:
            continue
        out.bounds[(c.method, c.reference)] = bound  # the bound that decided the comparison
        if not c.passed:
            # entries a diagonal or block method does not compute are not its errors
            filled = np.where(np.isnan(A), R, A) if run.sources[c.method].kind != "matrix" else A
            out.localisations[(c.method, c.reference)] = localise(problem, filled, R, bound)
    out.exact_name = _exact_name(run, {n: m for n, m in mats.items() if n in run.sources})
    H = out.exact
    if H is None:
        return out
    if problem.n_params > MAX_SPECTRUM_PARAMS:
        out.spectrum_note = (f"no spectrum: {problem.n_params} parameters is more than the {MAX_SPECTRUM_PARAMS} "
                             "an eigendecomposition in a report is allowed (hessverify.reports.analysis)")
        return out
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            ev = np.linalg.eigvalsh((H + H.T) / 2.0)
    except np.linalg.LinAlgError:  # entries near the float64 limit (a target of 1e308): no spectrum to draw
        out.spectrum_note = "no spectrum: the eigenvalues of this Hessian do not converge in float64"
        return out
    tau = zero_threshold(problem, ev, run.rounding_one)
    if not np.isfinite(tau):  # the rounding bound overflows: no sign of an eigenvalue can be vouched for
        out.spectrum_note = "no spectrum: the rounding bound of this Hessian overflows float64"
        return out
    out.spectrum = inertia(H, tau, ev)
    from hessverify.model.forward import gradient

    with np.errstate(all="ignore"):
        out.grad_norm = float(np.linalg.norm(gradient(problem)))
    for m in run.report_approximations():
        try:
            value = run.approximation(m.name)
        except HessverifyError as exc:
            out.approximations.append(ApproximationSummary(m.name, m.kind, m.summary, error=str(exc)))
            continue
        try:
            out.approximations.append(summarise_approximation(problem, m, value, H, tau))
        except np.linalg.LinAlgError:
            out.approximations.append(ApproximationSummary(m.name, m.kind, m.summary,
                                                           error="its eigenvalues do not converge in float64"))
    return out
