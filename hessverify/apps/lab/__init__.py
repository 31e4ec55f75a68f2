"""A second-order lab: optimisers on a case, every iteration logged, and stationary points.

The claims a lecture makes for second-order backpropagation (Rojas 1996,
sec. 8.4.3) are measured here on small networks:

* :func:`run` runs one optimiser from a case's point and logs each iteration
  (``E``, ``|g|``, the step, the Hessian's inertia where the optimiser forms
  the Hessian, wall time); :func:`run_all` runs several and keeps them in a
  :class:`LabResult` that prints as a table, plots and renders as LaTeX;
* :func:`inertia` / :func:`spectrum` / :func:`classify` say what a symmetric
  matrix, and a stationary point, is;
* :func:`find_stationary` finds a stationary point near a case's point by
  Newton's method on the gradient with Levenberg-Marquardt damping, whatever
  its kind (a minimum, a saddle, a maximum).

The optimisers (``hessverify lab --help`` lists them, :data:`OPTIMIZERS` holds them):

========================  =========================================================================
name                      what it does
========================  =========================================================================
``gd``                    gradient descent, fixed step ``lr`` (default ``1 / lambda_max(H)`` at the start)
``gd-ls``                 gradient descent with a backtracking (Armijo) line search
``momentum``              heavy ball (Polyak 1964): ``v = beta v - lr g``, ``beta = 0.9``
``adam``                  Adam (Kingma & Ba 2015), ``lr = 0.01`` by default
``newton``                Newton's method, full steps ``-H^+ g`` (pseudo-inverse where ``H`` is singular)
``lm``                    damped Newton, Levenberg-Marquardt: ``(H + mu I) p = -g``, ``mu`` adapted
``sfn``                   saddle-free Newton (Dauphin et al. 2014): ``-|H|^-1 g`` with a line search
``gauss-newton``          generalised Gauss-Newton ``G = J^T H_loss J`` (Schraudolph 2002), line search
``cg``                    nonlinear conjugate gradient, Polak-Ribiere+ (Nocedal & Wright, alg. 5.4)
``cgfr``                  conjugate gradient, Fletcher-Reeves (1964), strong-Wolfe line search
``bfgs``                  BFGS with a Wolfe line search (Nocedal & Wright, alg. 6.1)
``lbfgs-M``               L-BFGS with ``M`` stored pairs (Nocedal & Wright, alg. 7.4), e.g. ``lbfgs-5``
``bp-ag``, ``cgfr-ag``,   ``gd``, ``cgfr``, ``bfgs`` with adaptive gain: one gain per logistic unit, learned
``bfgs-ag``               with the weights (Nawi et al.; :mod:`hessverify.apps.lab.objectives`)
``tfp-bfgs``,             TensorFlow Probability's ``bfgs_minimize`` / ``lbfgs_minimize``
``tfp-lbfgs``             (:mod:`hessverify.apps.lab.library`)
``psgd``                  psgd-torch's Newton-type preconditioned SGD (Li 2018)
========================  =========================================================================

Every optimiser minimises an :class:`~hessverify.apps.lab.objectives.Objective`
(the case's own error, or with gains over ``(w, b, c)``), whose evaluations
are counted.  A run computes with one BLAS thread, is warmed up once per
process before its clock starts, goes on past a saddle (``|g| < tol`` where
the Hessian has a negative eigenvalue), and ends with the inertia of the
Hessian where it stopped; :class:`LabResult` flags every run that stopped away
from a minimum.  :mod:`hessverify.apps.lab.claims` is the claims study
(``hessverify lab claims``).

``peak_memory`` is in bytes: the peak of what Python and NumPy allocate during
the run above what was allocated when it started (:mod:`tracemalloc`; NumPy
reports its buffers to it).  ``predicted_memory`` is the arithmetic of the
lecture: ``8 n^2`` bytes for a dense ``n x n`` matrix (Hessian, Gauss-Newton
matrix, BFGS's inverse), ``8 (2 m n)`` for L-BFGS's ``m`` pairs, a few
``8 n`` vectors for first-order methods.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hessverify.apps.lab.gains import GainRedundancy, gain_directions, gain_redundancy, with_gains
from hessverify.apps.lab.objectives import GainObjective, ModelObjective, Objective, objective_for
from hessverify.base.arguments import positive_number, whole_number
from hessverify.base.typing import FloatArray
from hessverify.engine.objective import as_params, error
from hessverify.errors import HessverifyError, UsageError
from hessverify.model.kernel import release_working_arrays
from hessverify.model.problem import Problem
from hessverify.reports.analysis import Inertia

__all__ = [
    "FAR",
    "FLAT",
    "GainObjective",
    "GainRedundancy",
    "INERTIA_MAX_PARAMS",
    "ModelObjective",
    "Objective",
    "DEFAULT_TOL",
    "EXIT_NOT_FOUND",
    "ALIASES",
    "MEMORY_LIMIT",
    "OPTIMIZERS",
    "Inertia",
    "IterationRecord",
    "LabResult",
    "NoStationaryPointError",
    "Optimizer",
    "Run",
    "Stationary",
    "check_budget",
    "classify",
    "find_stationary",
    "gain_directions",
    "gain_redundancy",
    "get_optimizer",
    "hessian_at",
    "inertia",
    "optimizer_names",
    "run",
    "run_all",
    "spectrum",
    "with_gains",
]

DEFAULT_TOL = 1e-8
"""Stop when ``|g|_2`` is below this (``hessverify lab --tol``)."""

MEMORY_LIMIT = 2 * 1024**3
"""Bytes an optimiser's dense matrices may need (predicted before any work); more is refused."""

FLAT = 1e-8
"""An eigenvalue within ``FLAT lambda_max`` of zero is a flat direction (inertia's zeros, left out of kappa)."""

FAR = 1e-3
"""A run's E is far above the best when it achieved less than ``1 - FAR`` of the best run's decrease."""

SADDLE_HELD = 1e-4
"""At a saddle, a run whose |g| falls below ``SADDLE_HELD tol`` is converging to it: it stops there (``"saddle"``)."""

INERTIA_MAX_PARAMS = 3000
"""Past this many parameters no Hessian is formed for the final inertia or the saddle check."""

EXIT_NOT_FOUND = 6
"""``hessverify stationary``: no stationary point found within the iterations allowed."""

_U = float(np.finfo(np.float64).eps) / 2.0
_FLOOR = 1e-14  # an sse error below this is 0 up to rounding (Stationary.describe)
_LOG_ROWS = 100_000  # iterations whose log is preallocated (module text: peak_memory)


class NoStationaryPointError(HessverifyError):
    """Newton's method on the gradient did not reach the tolerance (exit status 6)."""

    exit_code = EXIT_NOT_FOUND


# -- spectrum and inertia -------------------------------------------------------------------------


def spectrum(H: FloatArray) -> FloatArray:
    """The eigenvalues of the symmetric part ``(H + H^T) / 2``, ascending.

    Examples
    --------
    >>> spectrum(np.array([[2.0, 0.0], [0.0, -1.0]]))
    array([-1.,  2.])
    """
    A = np.asarray(H, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise UsageError(f"a spectrum needs a square matrix, got shape {A.shape}")
    return np.linalg.eigvalsh((A + A.T) / 2.0)


def inertia(H: FloatArray, tol: float | None = None) -> Inertia:
    """How many eigenvalues of ``H`` are negative, zero and positive (Sylvester's inertia).

    An eigenvalue counts as zero when ``|lambda| <= tol``.  The default
    ``tol = n u max|lambda|`` is the backward error of the symmetric
    eigensolver (as :func:`numpy.linalg.matrix_rank` uses); for a computed
    Hessian pass the larger threshold of its rounding error
    (:func:`hessverify.reports.analysis.zero_threshold`), as
    :func:`find_stationary` does.

    Examples
    --------
    >>> i = inertia(np.diag([3.0, -1.0, 0.0]))
    >>> (i.negative, i.zero, i.positive)
    (1, 1, 1)
    """
    ev = spectrum(H)
    if tol is not None and not tol >= 0:
        raise UsageError(f"tol must be a number >= 0, got {tol}")
    return _count(ev, tol)


def _count(ev: FloatArray, tol: float | None = None) -> Inertia:
    """The inertia of ascending eigenvalues ``ev``; ``tol`` defaults to the eigensolver's backward error."""
    if tol is None:
        tol = ev.size * _U * float(np.max(np.abs(ev), initial=0.0))
    return Inertia(ev, float(tol), int(np.sum(ev > tol)), int(np.sum(ev < -tol)), int(np.sum(np.abs(ev) <= tol)))


def classify(i: Inertia) -> str:
    """What a stationary point with Hessian inertia ``i`` is, by the second-order test.

    ``"minimum"`` (every eigenvalue positive), ``"maximum"`` (every one
    negative), ``"saddle"`` (both signs: a direction of descent and one of
    ascent, whatever the zeros), ``"degenerate"`` (zeros and one sign only:
    the second-order test cannot decide).  Only meaningful where the gradient
    vanishes; elsewhere the inertia describes the curvature, not the point.

    Examples
    --------
    >>> classify(inertia(np.diag([3.0, -1.0, 0.0])))
    'saddle'
    >>> classify(inertia(np.diag([3.0, 0.0])))
    'degenerate'
    """
    if i.negative and i.positive:
        return "saddle"
    if i.zero:
        return "degenerate"
    return "maximum" if i.negative else "minimum"


def hessian_at(problem: Problem, params: FloatArray | None = None) -> FloatArray:
    """The exact Hessian at ``params`` by second-order backpropagation (method ``backprop``)."""
    return ModelObjective(problem).hessian(as_params(problem, params))


# -- results ----------------------------------------------------------------------------------------


@dataclass
class IterationRecord:
    """One iterate: the state after ``iteration`` steps."""

    iteration: int
    error: float
    grad_norm: float
    step_size: float | None  # the scalar the optimiser chose: lr, line-search alpha, damping mu for lm
    step_norm: float | None  # |theta_k - theta_{k-1}|_2
    seconds: float  # wall time since the run started
    inertia: tuple[int, int, int] | None = None  # (negative, zero, positive) of H at theta_{k-1}, where formed

    def to_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "error": self.error, "grad_norm": self.grad_norm,
                "step_size": self.step_size, "step_norm": self.step_norm, "seconds": self.seconds,
                "inertia": list(self.inertia) if self.inertia is not None else None}


@dataclass
class Run:
    """One optimiser's run on one problem (:func:`run`).

    ``iterations`` are the optimiser's steps (epochs: every step sees every
    pattern); ``evaluations`` the points at which ``E`` or its gradient was
    computed (``E`` and ``g`` at one point count once), ``gradients`` and
    ``hessians`` the gradients and dense curvature matrices computed.  For a
    library's optimiser (``tfp-*``, ``psgd``) ``iterations`` and
    ``evaluations`` are the library's own counts (``library`` holds what it
    returned) and the log has one row per evaluation (``log_unit``).
    ``final_inertia`` is the inertia of the exact Hessian at the final point
    (``None`` past :data:`INERTIA_MAX_PARAMS`); ``at_saddle`` says the run
    stopped where the Hessian has a negative eigenvalue.
    """

    optimizer: str
    case: str
    n_params: int
    iterations: int
    converged: bool
    reason: str  # "converged", "target", "max-iter", "time-limit", "stalled", "diverged", "left", "saddle"
    final_error: float
    final_grad_norm: float
    final_params: FloatArray
    seconds: float
    peak_memory: int  # bytes (tracemalloc, above the start)
    predicted_memory: int  # bytes, the lecture's arithmetic (module text)
    tol: float
    log: list[IterationRecord] = field(default_factory=list)
    left_at: int | None = None  # first iteration at distance > escape radius from the start
    cpu_seconds: float = 0.0  # process CPU time of the run (every thread)
    evaluations: int = 0
    gradients: int = 0
    hessians: int = 0
    final_inertia: tuple[int, int, int] | None = None
    final_kappa: float | None = None  # lambda_max / lambda_min over the eigenvalues above FLAT lambda_max
    final_flat: int | None = None  # eigenvalues within FLAT lambda_max of zero
    saddles_passed: int = 0  # times |g| < tol was reached at a point with negative curvature, and the run went on
    log_unit: str = "iteration"
    library: dict[str, Any] | None = None
    memory_traced: bool = True  # False: the library allocates outside Python's tracemalloc (peak_memory is a floor)
    param_names: tuple[str, ...] | None = None  # when they differ from the case's (the gain network's, c1 after b1)

    @property
    def negative_curvature(self) -> bool:
        """The Hessian at the final point has a negative eigenvalue: whatever the point is, not a minimum."""
        return self.final_inertia is not None and self.final_inertia[0] > 0

    @property
    def at_saddle(self) -> bool:
        """The run stopped at (or stuck next to) a stationary point with negative curvature: a saddle or maximum."""
        return self.negative_curvature and self.reason in ("saddle", "stalled", "converged")

    def to_dict(self, *, log: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "optimizer": self.optimizer, "case": self.case, "n_params": self.n_params,
            "iterations": self.iterations, "converged": self.converged, "reason": self.reason,
            "final_error": self.final_error, "final_grad_norm": self.final_grad_norm,
            "final_params": [float(v) for v in self.final_params], "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds, "evaluations": self.evaluations, "gradients": self.gradients,
            "hessians": self.hessians, "peak_memory": self.peak_memory, "memory_traced": self.memory_traced,
            "predicted_memory": self.predicted_memory, "tol": self.tol, "left_at": self.left_at,
            "final_inertia": list(self.final_inertia) if self.final_inertia is not None else None,
            "final_kappa": self.final_kappa, "final_flat": self.final_flat,
            "at_saddle": self.at_saddle, "saddles_passed": self.saddles_passed, "log_unit": self.log_unit,
            "library": self.library,
        }
        if self.param_names is not None:
            d["param_names"] = list(self.param_names)
        if log:
            d["log"] = [r.to_dict() for r in self.log]
        return d

    def __repr__(self) -> str:
        return f"Run({self.summary().strip()})"

    def state(self) -> str:
        """``converged``, ``target`` or ``not converged (why)``; a saddle is said, never just "converged"."""
        if self.at_saddle:
            what = "maximum" if self.final_inertia is not None and self.final_inertia[2] == 0 else "saddle"
            return f"{self.reason} AT A {what.upper()}"
        if self.reason in ("converged", "target"):
            return self.reason
        return f"not converged ({self.reason})"

    def summary(self) -> str:
        """One line: iterations, how it ended, final E and |g|, seconds, peak memory."""
        mem = _bytes(self.peak_memory) if self.memory_traced else "n/a"
        return (f"{self.optimizer:14s} {self.iterations:6d} it  {self.state():28s} E {self.final_error:11.4e}  "
                f"|g| {self.final_grad_norm:9.2e}  {self.seconds:8.3f} s  peak {mem:>10s}")

    def _repr_latex_(self) -> str:
        return LabResult(self.case, self.n_params, [self])._repr_latex_()


@dataclass
class LabResult:
    """Several runs on one problem (:func:`run_all`): a table, a plot, LaTeX for slides.

    The table says at a glance what the lecture asks of it: ``n``; ``kappa``,
    the condition number of the Hessian at the best minimum the runs found
    (over its eigenvalues above :data:`FLAT` of the largest; those below are
    flat directions, counted apart); gradient descent's predicted iterations
    there, ``kappa ln(|g_0| / tol)`` (Nocedal & Wright, thm. 3.4); per run the
    ratio of gradient descent's iterations to its own, the final inertia, and
    a flag on every run that stops away from a minimum (:meth:`flags`).
    """

    case: str
    n_params: int
    runs: list[Run]

    def to_dict(self) -> dict[str, Any]:
        best = self.best()
        return {"case": self.case, "n_params": self.n_params,
                "best": None if best is None else {"optimizer": best.optimizer, "final_error": best.final_error,
                                                   "kappa": best.final_kappa, "flat": best.final_flat},
                "runs": [r.to_dict() | {"flags": self.flags(r), "ratio_to_gd": self.ratio_to_gd(r)}
                         for r in self.runs]}

    def best(self) -> Run | None:
        """The run with the lowest final E among those that did not stop where H has negative curvature."""
        ok = [r for r in self.runs if not r.negative_curvature and math.isfinite(r.final_error)]
        return min(ok, key=lambda r: r.final_error, default=None)

    def flags(self, r: Run) -> list[str]:
        """Why ``r`` stopped away from a minimum, if it did: at a saddle or maximum, or E far above the best.

        "Far above": ``E - E_best > FAR (E_0 - E_best)``, the run achieved less than
        ``1 - FAR`` of the decrease the best run achieved from the same start.
        """
        out = []
        if r.negative_curvature and r.final_inertia is not None:
            where = "at a saddle" if r.at_saddle else "where"
            out.append(f"stopped {where}: H has {r.final_inertia[0]} negative eigenvalue(s), not a minimum")
        best = self.best()
        if best is not None and r is not best and r.log and math.isfinite(r.final_error):
            drop = r.log[0].error - best.final_error
            if drop > 0 and r.final_error - best.final_error > FAR * drop:
                out.append(f"E {r.final_error:.3g} far above the best, {best.final_error:.3g} ({best.optimizer})")
        elif not math.isfinite(r.final_error):
            out.append("E is not finite")
        return out

    def ratio_to_gd(self, r: Run) -> str | None:
        """Gradient descent's iterations over ``r``'s, both to the same stop (``"> x"`` if gd did not get there)."""
        gd = next((x for x in self.runs if ALIASES.get(x.optimizer, x.optimizer) == "gd"), None)
        if gd is None or r.reason not in ("converged", "target") or r.at_saddle or r.log_unit != "iteration":
            return None
        if gd.reason not in ("converged", "target") or gd.at_saddle:
            return f"> {gd.iterations / max(r.iterations, 1):.3g}"
        return f"{gd.iterations / max(r.iterations, 1):.3g}"

    def header(self) -> str:
        """``n``, ``kappa`` at the best minimum and gradient descent's prediction there."""
        line = f"{self.case}: n = {self.n_params} parameters"
        best = self.best()
        if best is None:
            return line + "; no run ended at a minimum"
        kappa, flat = best.final_kappa, best.final_flat
        if kappa is None:
            return line + f"; best E {best.final_error:.3g} ({best.optimizer}), Hessian not formed (n too large)"
        line += (f"; best E {best.final_error:.3g} ({best.optimizer}), where kappa = {kappa:.3g}"
                 f" ({flat} flat direction(s) left out)")
        g0 = self.runs[0].log[0].grad_norm if self.runs and self.runs[0].log else float("nan")
        tol = self.runs[0].tol
        if math.isfinite(kappa) and g0 > tol:
            line += f"; gd needs about kappa ln(|g0|/tol) = {kappa * math.log(g0 / tol):.3g} iterations near it"
        return line

    def table(self) -> str:
        head = (f"{self.header()}\n"
                f"{'optimizer':14s} {'iters':>9s}  {'how it ended':28s} {'final E':>13s}  {'final |g|':>13s} "
                f"{'time':>10s}  {'memory':>14s}  {'vs gd':>7s}  inertia -/0/+")
        rows = []
        for r in self.runs:
            ratio = self.ratio_to_gd(r) or "-"
            inert = "-" if r.final_inertia is None else "/".join(map(str, r.final_inertia))
            flags = self.flags(r)
            notes = [f"left {r.saddles_passed} saddle(s): |g| < tol there, H with negative eigenvalues; went on"
                     ] if r.saddles_passed and not r.at_saddle else []
            rows.append(f"{r.summary()}  {ratio:>7s}  {inert}" + "".join(f"\n{'':16s}! {f}" for f in flags)
                        + "".join(f"\n{'':16s}  {x}" for x in notes))
        return "\n".join([head] + rows)

    def __str__(self) -> str:
        return self.table()

    __repr__ = __str__

    def _repr_latex_(self) -> str:
        rows = []
        for r in self.runs:
            it = str(r.iterations) if r.converged else rf"{r.iterations}\ (\text{{{r.reason}}})"
            rows.append(rf"\text{{{r.optimizer}}} & {it} & {_tex_num(r.final_error)} & {_tex_num(r.final_grad_norm)}"
                        rf" & {r.seconds:.3g} \\")
        return ("$$\\begin{array}{lrrrr}\n"
                r"\text{optimiser} & \text{iterations} & E & \lVert g \rVert & \text{seconds} \\ \hline" "\n"
                + "\n".join(rows) + "\n\\end{array}$$")

    def plot(self, path: str | Path | None = None) -> Any:
        """E and |g| against iterations and against seconds, log scale; saved to ``path`` if given."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 2, figsize=(10, 7))
        for r in self.runs:
            it = [x.iteration for x in r.log]
            sec = [max(x.seconds, 1e-6) for x in r.log]
            E = [max(x.error, 1e-300) for x in r.log]
            g = [max(x.grad_norm, 1e-300) for x in r.log]
            for ax, xs, ys in ((axes[0, 0], it, E), (axes[0, 1], sec, E), (axes[1, 0], it, g), (axes[1, 1], sec, g)):
                ax.plot(xs, ys, label=r.optimizer, lw=1.2)
        for ax in axes.flat:
            ax.set_yscale("log")
        for ax in axes[:, 1]:
            ax.set_xscale("log")
        axes[0, 0].set_ylabel("E")
        axes[1, 0].set_ylabel("|g|")
        axes[1, 0].set_xlabel("iteration")
        axes[1, 1].set_xlabel("seconds (wall)")
        tol = self.runs[0].tol if self.runs else DEFAULT_TOL
        for ax in axes[1]:
            ax.axhline(tol, color="grey", lw=0.8, ls="--")
        axes[0, 1].legend(fontsize=7, loc="best")
        fig.suptitle(f"{self.case}: {self.n_params} parameters")
        fig.tight_layout()
        if path is not None:
            try:
                fig.savefig(path, dpi=110)
            except OSError as exc:
                raise UsageError(f"--plot {path}: cannot write: {exc.strerror}") from None
            finally:
                plt.close(fig)
            return None
        return fig


def _tex_num(v: float) -> str:
    if not math.isfinite(v):
        return r"\text{" + str(v) + "}"
    m, e = f"{v:.2e}".split("e")
    return rf"{m} \times 10^{{{int(e)}}}"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


# -- the optimisers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Optimizer:
    """An optimiser's name, one line for ``--help``, and the memory it is predicted to need.

    ``memory(n, m)`` is the bytes of the dense state the lecture counts;
    ``forms_hessian`` says whether each iteration forms the exact Hessian
    (and so logs its inertia); ``base`` is the optimiser an adaptive-gain
    variant runs on, over ``(w, b, c)`` of the case's network with gain layers (``gains``,
    :class:`~hessverify.apps.lab.objectives.GainObjective`); ``library`` names
    the package whose own optimiser it runs (:mod:`hessverify.apps.lab.library`).
    """

    name: str
    summary: str
    memory: Callable[[int, int], int]
    forms_hessian: bool = False
    base: str | None = None
    gains: bool = False
    library: str | None = None


def _vectors(k: int) -> Callable[[int, int], int]:
    return lambda n, m: 8 * k * n


def _dense(n: int, m: int) -> int:
    return 8 * n * n


def _lbfgs_memory(n: int, m: int) -> int:
    return 8 * (2 * m * n + 4 * n)


OPTIMIZERS: dict[str, Optimizer] = {
    o.name: o for o in (
        Optimizer("gd", "gradient descent, fixed step lr (default 1/lambda_max(H) at the start); also 'bp'", _vectors(2)),
        Optimizer("gd-ls", "gradient descent with a backtracking (Armijo) line search", _vectors(3)),
        Optimizer("momentum", "heavy ball (Polyak 1964), beta 0.9, lr as gd", _vectors(3)),
        Optimizer("adam", "Adam (Kingma & Ba 2015), lr 0.01 unless --lr", _vectors(4)),
        Optimizer("newton", "Newton, full steps -H^+ g (no damping, no line search)", _dense, True),
        Optimizer("lm", "damped Newton, Levenberg-Marquardt: (H + mu I) p = -g, mu adapted", _dense, True),
        Optimizer("sfn", "saddle-free Newton -|H|^-1 g (Dauphin et al. 2014) with a line search", _dense, True),
        Optimizer("gauss-newton", "generalised Gauss-Newton J^T H_loss J (Schraudolph 2002), line search", _dense),
        Optimizer("cg", "nonlinear conjugate gradient, Polak-Ribiere+ with a Wolfe line search", _vectors(4)),
        Optimizer("cgfr", "conjugate gradient, Fletcher-Reeves (1964) with a strong-Wolfe line search, c2 0.1",
                  _vectors(4)),
        Optimizer("bfgs", "BFGS with a Wolfe line search (Nocedal & Wright alg. 6.1)", _dense),
        Optimizer("lbfgs-M", "L-BFGS with M stored pairs, e.g. lbfgs-5, lbfgs-20, lbfgs-100 (N&W alg. 7.4)",
                  _lbfgs_memory),
        Optimizer("bp-ag", "gd with adaptive gain: one gain per logistic unit, f(c a), learned with w (Nawi et al.)",
                  _vectors(2), base="gd", gains=True),
        Optimizer("cgfr-ag", "cgfr with adaptive gain (CGFR/AG, Nawi, Ransing & Ransing)", _vectors(4), base="cgfr",
                  gains=True),
        Optimizer("bfgs-ag", "bfgs with adaptive gain (BFGS-AG, Nawi et al.)", _dense, base="bfgs", gains=True),
        Optimizer("tfp-bfgs", "TensorFlow Probability's bfgs_minimize (float64; hessverify[tensorflow])", _dense,
                  library="tensorflow_probability"),
        Optimizer("tfp-lbfgs", "TensorFlow Probability's lbfgs_minimize, num_correction_pairs 10 "
                  "(hessverify[tensorflow])", _lbfgs_memory, library="tensorflow_probability"),
        Optimizer("psgd", "preconditioned SGD (Li 2018), psgd-torch's Newton-type preconditioner, full batch "
                  "(hessverify[psgd])", _dense, library="psgd_torch"),
    )
}

DEFAULT_OPTIMIZERS = ("gd", "gd-ls", "momentum", "adam", "newton", "lm", "sfn", "gauss-newton", "cg", "bfgs",
                      "lbfgs-5", "lbfgs-20")


ALIASES = {
    "gradient-descent": "gd", "bp": "gd", "gd-line-search": "gd-ls", "damped-newton": "lm",
    "levenberg-marquardt": "lm", "saddle-free-newton": "sfn", "gn": "gauss-newton", "conjugate-gradient": "cg",
    "fletcher-reeves": "cgfr", "lbfgs": "lbfgs-10",
}
"""Longer names accepted for the short ones (``lbfgs`` alone is ``lbfgs-10``; ``bp``, backpropagation, is ``gd``)."""


def optimizer_names() -> list[str]:
    """The names ``--optimizers`` accepts (``lbfgs-M`` for any whole ``M >= 1``; also :data:`ALIASES`)."""
    return list(OPTIMIZERS)


def get_optimizer(name: str) -> tuple[Optimizer, int]:
    """The optimiser called ``name`` (or an alias) and its memory ``m`` (L-BFGS pairs; 0 otherwise).

    Examples
    --------
    >>> get_optimizer("damped-newton")[0].name, get_optimizer("lbfgs-20")[1]
    ('lm', 20)
    >>> get_optimizer("bfgs-ag")[0].base
    'bfgs'
    """
    name = ALIASES.get(name, name)
    if name in OPTIMIZERS and name != "lbfgs-M":
        return OPTIMIZERS[name], (10 if name == "tfp-lbfgs" else 0)
    if name.startswith("lbfgs-") and name[6:].isdigit() and int(name[6:]) >= 1:
        return OPTIMIZERS["lbfgs-M"], int(name[6:])
    raise UsageError(f"unknown optimizer {name!r}; choose from {', '.join(optimizer_names())} "
                     "(lbfgs-M with a whole number M, e.g. lbfgs-20)")


def _armijo(obj: Objective, theta: FloatArray, E0: float, g: FloatArray, p: FloatArray, alpha: float,
            c1: float = 1e-4, tries: int = 60) -> tuple[float, float] | None:
    """Backtracking until the sufficient-decrease condition holds (Nocedal & Wright alg. 3.1)."""
    slope = float(g @ p)
    if not slope < 0:
        return None
    for _ in range(tries):
        E1 = obj.E(theta + alpha * p)
        if math.isfinite(E1) and E1 <= E0 + c1 * alpha * slope:
            return alpha, E1
        alpha *= 0.5
    return None


def _wolfe(obj: Objective, theta: FloatArray, E0: float, g: FloatArray, p: FloatArray, E_prev: float | None,
           c2: float) -> tuple[float, float] | None:
    """A strong-Wolfe step (scipy's line search, Nocedal & Wright alg. 3.5), else backtracking."""
    import warnings

    from scipy.optimize import line_search

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alpha, _, _, E1, _, _ = line_search(obj.E, obj.g, theta, p, gfk=g, old_fval=E0, old_old_fval=E_prev, c2=c2)
    if alpha is not None and E1 is not None and math.isfinite(E1) and E1 <= E0:
        return float(alpha), float(E1)
    return _armijo(obj, theta, E0, g, p, 1.0)


def _wolfe_step(obj: Objective, theta: FloatArray, E: float, g: FloatArray, p: FloatArray, E_prev: float | None,
                c2: float) -> tuple[FloatArray, float, float, None]:
    """One step along ``p`` by :func:`_wolfe`, as an optimiser returns it: (new point, its E, step, no inertia).

    No acceptable step is a stall (:class:`_Stalled`, raised where the optimisers catch it).
    """
    found = _wolfe(obj, theta, E, g, p, E_prev, c2)
    if found is None:
        raise _Stalled
    return theta + found[0] * p, found[1], found[0], None


def _lambda_max(obj: Objective, theta: FloatArray, iters: int = 30) -> float:
    """The largest |eigenvalue| of H at theta by power iteration on exact Hessian-vector products."""
    v = np.random.default_rng(0).standard_normal(theta.size)
    v /= np.linalg.norm(v)
    lam = 0.0
    for _ in range(iters):
        w = obj.hvp(theta, v)
        lam = float(np.linalg.norm(w))
        if lam == 0 or not math.isfinite(lam):
            return 0.0
        v = w / lam
    return lam


def _eig_solve(H: FloatArray, g: FloatArray, transform: Callable[[FloatArray], FloatArray]
               ) -> tuple[FloatArray, Inertia]:
    """``p = -V diag(1 / transform(lambda)) V^T g`` and the inertia of H (zero: ``1/0`` taken as 0)."""
    ev, V = np.linalg.eigh((H + H.T) / 2.0)
    i = _count(ev)
    d = transform(ev)
    with np.errstate(divide="ignore"):
        inv = np.where(np.abs(d) > i.threshold, 1.0 / np.where(d == 0, 1.0, d), 0.0)
    return -(V @ (inv * (V.T @ g))), i


def _triple(i: Inertia) -> tuple[int, int, int]:
    return (i.negative, i.zero, i.positive)


Step = Callable[[FloatArray, float, FloatArray], tuple[FloatArray, float, float | None, tuple[int, int, int] | None]]
"""(theta, E, g) -> (new theta, new E, step size, inertia or None); raises _Stalled when no step can be made."""


class _Stalled(Exception):
    pass


def _make_step(name: str, m: int, obj: Objective, theta0: FloatArray, lr: float | None) -> Step:
    """The optimiser's step as a closure over its state (momentum, memory pairs, damping)."""
    n = theta0.size
    if name in ("gd", "momentum"):
        if lr is None:
            L = _lambda_max(obj, theta0)
            lr = 1.0 / L if L > 0 else 1e-2
        step_lr = float(lr)
        velocity = np.zeros(n)

        def gd(theta: FloatArray, E: float, g: FloatArray):  # type: ignore[no-untyped-def]
            nonlocal velocity
            if name == "gd":
                new = theta - step_lr * g
            else:
                velocity = 0.9 * velocity - step_lr * g
                new = theta + velocity
            return new, obj.E(new), step_lr, None
        return gd

    if name == "gd-ls":
        alpha = [1.0]

        def gd_ls(theta: FloatArray, E: float, g: FloatArray):  # type: ignore[no-untyped-def]
            found = _armijo(obj, theta, E, g, -g, alpha[0] * 2.0)
            if found is None:
                raise _Stalled
            alpha[0] = found[0]
            return theta - found[0] * g, found[1], found[0], None
        return gd_ls

    if name == "adam":
        # Kingma & Ba 2015, alg. 1, with their defaults beta1 0.9, beta2 0.999, eps 1e-8
        a = 0.01 if lr is None else float(lr)
        mom, vel, t = np.zeros(n), np.zeros(n), [0]

        def adam(theta: FloatArray, E: float, g: FloatArray):  # type: ignore[no-untyped-def]
            nonlocal mom, vel
            t[0] += 1
            mom = 0.9 * mom + 0.1 * g
            vel = 0.999 * vel + 0.001 * g * g
            mhat, vhat = mom / (1 - 0.9 ** t[0]), vel / (1 - 0.999 ** t[0])
            new = theta - a * mhat / (np.sqrt(vhat) + 1e-8)
            return new, obj.E(new), a, None
        return adam

    if name == "newton":
        def newton(theta: FloatArray, E: float, g: FloatArray):  # type: ignore[no-untyped-def]
            p, i = _eig_solve(obj.hessian(theta), g, lambda ev: ev)
            new = theta + p
            return new, obj.E(new), 1.0, _triple(i)
        return newton

    if name == "lm":
        # Levenberg 1944, Marquardt 1963 on the exact Hessian; mu from the gain ratio (Nielsen 1999)
        mu = [None]

        def lm(theta: FloatArray, E: float, g: FloatArray):  # type: ignore[no-untyped-def]
            H = obj.hessian(theta)
            ev, V = np.linalg.eigh((H + H.T) / 2.0)
            i = _count(ev)
            if mu[0] is None:
                mu[0] = 1e-3 * max(float(np.max(np.abs(ev))), 1e-12)
            Vg = V.T @ g
            for _ in range(60):
                shift = max(mu[0], -float(ev[0]) + mu[0])  # H + shift I positive definite
                p = -(V @ (Vg / (ev + shift)))
                new = theta + p
                E1 = obj.E(new)
                predicted = -(g @ p + 0.5 * p @ (V @ (ev * (V.T @ p))))
                if math.isfinite(E1) and E1 < E:
                    rho = (E - E1) / predicted if predicted > 0 else 0.0
                    mu[0] *= max(1 / 3, 1 - (2 * rho - 1) ** 3) if rho > 0 else 2.0
                    return new, E1, shift, _triple(i)
                mu[0] *= 4.0
            raise _Stalled
        return lm

    if name == "sfn":
        def sfn(theta: FloatArray, E: float, g: FloatArray):  # type: ignore[no-untyped-def]
            H = obj.hessian(theta)
            # |H| = V |Lambda| V^T, floored at a small damping so flat directions do not blow up (Dauphin et al. 2014, sec. 5)
            p, i = _eig_solve(H, g, lambda ev: np.maximum(np.abs(ev), 1e-8 * float(np.max(np.abs(ev), initial=0.0))))
            found = _armijo(obj, theta, E, g, p, 1.0)
            if found is None:
                raise _Stalled
            return theta + found[0] * p, found[1], found[0], _triple(i)
        return sfn

    if name == "gauss-newton":
        def gauss_newton(theta: FloatArray, E: float, g: FloatArray):  # type: ignore[no-untyped-def]
            p, _ = _eig_solve(obj.gauss_newton(theta), g, lambda ev: ev)
            if not float(g @ p) < 0:  # G singular along g: fall back to the gradient
                p = -g
            found = _armijo(obj, theta, E, g, p, 1.0)
            if found is None:
                raise _Stalled
            return theta + found[0] * p, found[1], found[0], None
        return gauss_newton

    if name == "cg":
        state: dict[str, Any] = {"p": None, "g": None, "E_prev": None}

        def cg(theta: FloatArray, E: float, g: FloatArray):  # type: ignore[no-untyped-def]
            if state["p"] is None:
                p = -g
            else:
                beta = max(0.0, float(g @ (g - state["g"])) / float(state["g"] @ state["g"]))  # PR+
                p = -g + beta * state["p"]
                if not float(g @ p) < 0:
                    p = -g
            step = _wolfe_step(obj, theta, E, g, p, state["E_prev"], c2=0.1)
            state.update(p=p, g=g, E_prev=E)
            return step
        return cg

    if name == "cgfr":
        # Fletcher & Reeves 1964: beta = |g_k|^2 / |g_k-1|^2; with a strong-Wolfe line search of c2 < 1/2 every
        # direction is a descent direction (Nocedal & Wright, lemma 5.6); restarted along -g every n steps
        # (N&W sec. 5.2) and whenever the direction is not one of descent
        fr: dict[str, Any] = {"p": None, "gg": None, "E_prev": None, "k": 0}

        def cgfr(theta: FloatArray, E: float, g: FloatArray):  # type: ignore[no-untyped-def]
            gg = float(g @ g)
            if fr["p"] is None or fr["k"] % n == 0:
                p = -g
            else:
                p = -g + (gg / fr["gg"]) * fr["p"]
                if not float(g @ p) < 0:
                    p = -g
            step = _wolfe_step(obj, theta, E, g, p, fr["E_prev"], c2=0.1)
            fr.update(p=p, gg=gg, E_prev=E, k=fr["k"] + 1)
            return step
        return cgfr

    if name == "bfgs":
        Hinv: list[FloatArray | None] = [None]
        prev: dict[str, Any] = {"theta": None, "g": None, "E": None}

        def bfgs(theta: FloatArray, E: float, g: FloatArray):  # type: ignore[no-untyped-def]
            if prev["theta"] is not None:
                s, y = theta - prev["theta"], g - prev["g"]
                sy = float(s @ y)
                if sy > 1e-12 * np.linalg.norm(s) * np.linalg.norm(y):
                    if Hinv[0] is None:  # N&W eq. 6.20: scale the first guess
                        Hinv[0] = (sy / float(y @ y)) * np.eye(n)
                    rho = 1.0 / sy
                    Hy = Hinv[0] @ y
                    # N&W eq. 6.17, expanded so no n x n product of two matrices is formed
                    Hinv[0] = (Hinv[0] - rho * (np.outer(s, Hy) + np.outer(Hy, s))
                               + (rho * rho * float(y @ Hy) + rho) * np.outer(s, s))
            p = -g if Hinv[0] is None else -(Hinv[0] @ g)
            if not float(g @ p) < 0:
                Hinv[0], p = None, -g
            step = _wolfe_step(obj, theta, E, g, p, prev["E"], c2=0.9)
            prev.update(theta=theta, g=g, E=E)
            return step
        return bfgs

    # lbfgs-M: N&W alg. 7.4 (two-loop recursion) with the scaling of eq. 7.20
    pairs: list[tuple[FloatArray, FloatArray, float]] = []
    last: dict[str, Any] = {"theta": None, "g": None, "E": None}

    def lbfgs(theta: FloatArray, E: float, g: FloatArray):  # type: ignore[no-untyped-def]
        if last["theta"] is not None:
            s, y = theta - last["theta"], g - last["g"]
            sy = float(s @ y)
            if sy > 1e-12 * np.linalg.norm(s) * np.linalg.norm(y):
                pairs.append((s, y, 1.0 / sy))
                if len(pairs) > m:
                    pairs.pop(0)
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(pairs):
            a_ = rho * float(s @ q)
            alphas.append(a_)
            q -= a_ * y
        if pairs:
            s, y, _ = pairs[-1]
            q *= float(s @ y) / float(y @ y)
        for (s, y, rho), a_ in zip(pairs, reversed(alphas)):
            b = rho * float(y @ q)
            q += (a_ - b) * s
        p = -q
        if not float(g @ p) < 0:
            pairs.clear()
            p = -g
        step = _wolfe_step(obj, theta, E, g, p, last["E"], c2=0.9)
        last.update(theta=theta, g=g, E=E)
        return step
    return lbfgs


# -- running ----------------------------------------------------------------------------------------


def predicted_memory(name: str, n: int) -> int:
    """The bytes the lecture's arithmetic predicts for optimiser ``name`` on ``n`` parameters."""
    opt, m = get_optimizer(name)
    return int(opt.memory(n, m))


def check_budget(name: str, n: int) -> None:
    """Refuse, in one line and before any work, an optimiser whose dense matrices would exceed :data:`MEMORY_LIMIT`."""
    need = predicted_memory(name, n)
    # a few matrices of that size live at once (H, its eigenvectors, a product)
    if 3 * need > MEMORY_LIMIT:
        raise UsageError(f"{name} on {n} parameters needs about {_bytes(3 * need)} for its dense n x n matrices, "
                         f"more than the {_bytes(MEMORY_LIMIT)} allowed; use lbfgs-M, cg or a first-order method")


_WARMED: set[str] = set()  # optimisers run once in this process (their one-off imports done)


def run(problem: Problem, optimizer: str, *, tol: float = DEFAULT_TOL, max_iter: int = 1000,
        lr: float | None = None, params: FloatArray | None = None, time_limit: float | None = None,
        escape_radius: float | None = None, stop_on_escape: bool = False, target_error: float | None = None,
        saddle_check: bool = True, warm_up: bool = True) -> Run:
    """Run one optimiser from ``params`` (default the problem's point) until ``|g| < tol`` at a minimum.

    Parameters
    ----------
    problem:
        The case; its error is :func:`hessverify.error`, its gradient :func:`hessverify.gradient`.
    optimizer:
        A name from :data:`OPTIMIZERS` (``lbfgs-M`` as ``lbfgs-5``, ``lbfgs-20``, ...).
    tol:
        Converged when ``|g|_2 < tol`` (checked at the start too: 0 iterations) where the Hessian has
        no negative eigenvalue: with ``saddle_check`` (the default, up to :data:`INERTIA_MAX_PARAMS`
        parameters) a point with ``|g| < tol`` and negative curvature is a saddle, counted in
        ``saddles_passed``, and the run goes on (to leave it, if the optimiser can); it ends there,
        ``reason`` ``"saddle"``, if its step no longer moves the point or ``|g|`` falls below
        ``SADDLE_HELD tol`` (it is converging to the saddle).  The curvature is looked at again
        after 1, 2, 4, ... iterations while ``|g| < tol``.
    max_iter:
        At most this many steps; ``reason`` is then ``"max-iter"``.
    lr:
        The fixed step of ``gd`` and ``momentum`` (default ``1 / lambda_max`` of the
        Hessian at the start, by power iteration on exact products) and of ``adam`` (default 0.01).
    time_limit:
        Stop after this many seconds (``reason`` ``"time-limit"``).
    escape_radius:
        Record in ``left_at`` the first iteration at distance more than this from the start
        (saddle escape); with ``stop_on_escape`` the run ends there (``reason`` ``"left"``).
    target_error:
        Stop as soon as ``E <= target_error`` (``reason`` ``"target"``).
    warm_up:
        Before the first timed run of an optimiser in this process, run it for one
        iteration untimed, so that its one-off imports and caches are not charged to it.

    Every run computes with one BLAS thread, so that its iterates, and its
    iteration count, do not depend on the number of threads (a multithreaded
    BLAS sums in another order, and undamped Newton amplifies a difference of
    one rounding error into another path).

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid-soft.toml")
    >>> r = run(case, "lm", max_iter=200)
    >>> r.converged, bool(r.final_grad_norm < 1e-8)
    (True, True)
    """
    from threadpoolctl import threadpool_limits

    tol = positive_number("tol", tol)
    max_iter = whole_number("max_iter", max_iter)
    lr = None if lr is None else positive_number("lr", lr)
    time_limit = None if time_limit is None else positive_number("time_limit", time_limit)
    escape_radius = None if escape_radius is None else positive_number("escape_radius", escape_radius, zero=True)
    if not isinstance(stop_on_escape, bool):
        raise UsageError(f"stop_on_escape must be True or False, got {stop_on_escape!r}")
    if not isinstance(optimizer, str):
        raise UsageError(f"optimizer must be a name such as 'lm' (see OPTIMIZERS), got {optimizer!r}")
    opt, m = get_optimizer(optimizer)
    obj = objective_for(problem, opt.gains)
    theta = obj.start(params)
    check_budget(optimizer, obj.n)
    if opt.library is not None:
        from hessverify.apps.lab.library import ensure_library

        ensure_library(opt.name)
    options = {"tol": tol, "max_iter": max_iter, "lr": lr, "time_limit": time_limit, "escape_radius": escape_radius,
               "stop_on_escape": stop_on_escape, "target_error": target_error, "saddle_check": saddle_check}
    with threadpool_limits(limits=1):
        if warm_up and opt.name not in _WARMED and max_iter > 0:
            _run(problem, optimizer, objective_for(problem, opt.gains), theta.copy(), opt, m,
                 options | {"max_iter": 1, "time_limit": None, "saddle_check": False})
        _WARMED.add(opt.name)
        r = _run(problem, optimizer, obj, theta, opt, m, options)
        _final_curvature(r, obj)
    return r


def _run(problem: Problem, optimizer: str, obj: Objective, theta: FloatArray, opt: Optimizer, m: int,
         o: dict[str, Any]) -> Run:
    """One timed run (:func:`run`), with its log and counts; the final curvature is added after the clock stops."""
    if opt.library is not None:
        from hessverify.apps.lab.library import run_library

        return run_library(problem, optimizer, obj, theta, opt, m, o)
    n = theta.size
    tol, max_iter = o["tol"], o["max_iter"]
    # the log lives in arrays allocated before the baseline, so peak_memory is the optimiser's, not the log's
    rows = min(max_iter, _LOG_ROWS) + 1
    buf = np.full((rows, 8), np.nan)  # error, |g|, step size, step norm, seconds, negative, zero, positive
    extra: list[np.ndarray] = []  # rows beyond the preallocated ones (counted in peak_memory)
    from contextlib import ExitStack

    from hessverify.reports.progress import progress

    shown = ExitStack()  # a bar over the iterations, on a terminal (hessverify.reports.progress)
    bar = shown.enter_context(progress(max_iter, f"{optimizer} on {problem.id}"))
    release_working_arrays()  # the kernel's kept arrays are allocated again in the run, and counted
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    start, cpu0 = time.perf_counter(), time.process_time()

    def record(k: int, E: float, gn: float, size: float | None, norm: float | None,
               inert: tuple[int, int, int] | None) -> None:
        row = buf[k] if k < rows else np.full(8, np.nan)
        row[:5] = (E, gn, np.nan if size is None else size, np.nan if norm is None else norm, time.perf_counter() - start)
        if inert is not None:
            row[5:] = inert
        if k >= rows:
            extra.append(row)

    saddles, gap, next_check, E_saddle, k_saddle = 0, 1, 0, math.inf, 0
    at_saddle = False  # |g| < tol at a point with negative curvature, and not above tol since
    try:
        step = _make_step(opt.base or opt.name, m, obj, theta, o["lr"])
        E, g = obj.E(theta), obj.g(theta)
        gn = float(np.linalg.norm(g))
        record(0, E, gn, None, None, None)
        theta0 = theta.copy()
        left_at: int | None = None
        reason = "max-iter"
        k = 0
        step_norm = float("inf")
        while True:
            if not (math.isfinite(E) and math.isfinite(gn)):
                reason = "diverged"
                break
            if o["target_error"] is not None and E <= o["target_error"]:
                reason = "target"
                break
            if gn < tol:
                if not at_saddle or k >= next_check:  # at a saddle, looked at again after 1, 2, 4, ... iterations
                    if not (o["saddle_check"] and _negative_curvature(obj, theta)):
                        reason = "converged"
                        break
                    if not at_saddle:
                        saddles, gap, E_saddle, k_saddle = saddles + 1, 1, E, k
                    else:
                        gap *= 2
                    at_saddle, next_check = True, k + gap
                stuck = step_norm <= 8 * _U * max(1.0, float(np.linalg.norm(theta)))
                held = E >= E_saddle - 1e-6 * abs(E_saddle) and k >= k_saddle + 2  # E did not fall since it was found
                if stuck or (held and gn <= SADDLE_HELD * tol):  # it does not move, or it converges to the saddle
                    reason = "saddle" if _negative_curvature(obj, theta) else "converged"
                    break
                if k >= k_saddle + 2 and not held:  # it is leaving: look again when |g| < tol next
                    at_saddle = False
            else:
                at_saddle = False
            if k >= max_iter:
                break
            if o["time_limit"] is not None and time.perf_counter() - start > o["time_limit"]:
                reason = "time-limit"
                break
            try:
                new, E_new, size, inert = step(theta, E, g)
            except (_Stalled, np.linalg.LinAlgError):
                reason = "stalled"
                break
            k += 1
            step_norm = float(np.linalg.norm(new - theta))
            theta, E = new, E_new
            g = obj.g(theta) if math.isfinite(E) else np.full(n, np.nan)
            gn = float(np.linalg.norm(g))
            record(k, E, gn, size, step_norm, inert)
            bar(f"|g| {gn:.1e}")
            if o["escape_radius"] is not None and left_at is None and np.linalg.norm(theta - theta0) > o["escape_radius"]:
                left_at = k
                if o["stop_on_escape"]:
                    reason = "left"
                    break
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
        peak = max(0, tracemalloc.get_traced_memory()[1] - base)
    finally:
        shown.close()
        if not tracing:
            tracemalloc.stop()
    table = np.vstack([buf[:min(k + 1, rows)]] + extra) if extra else buf[:k + 1]
    log = [IterationRecord(j, float(r[0]), float(r[1]), None if np.isnan(r[2]) else float(r[2]),
                           None if np.isnan(r[3]) else float(r[3]), float(r[4]),
                           None if np.isnan(r[5]) else (int(r[5]), int(r[6]), int(r[7])))
           for j, r in enumerate(table)]
    c = obj.counts
    return Run(optimizer, problem.id, n, k, reason == "converged", reason, float(E), gn, theta, seconds, int(peak),
               predicted_memory(optimizer, n), tol, log, left_at, cpu_seconds=cpu, evaluations=c.evaluations,
               gradients=c.gradients, hessians=c.hessians, saddles_passed=saddles,
               param_names=obj.names if opt.gains else None)


def _flat_threshold(ev: FloatArray) -> float:
    """Eigenvalues within this of zero are flat: the eigensolver's backward error, or FLAT of the largest."""
    top = float(np.max(np.abs(ev), initial=0.0))
    return max(ev.size * _U * top, FLAT * top)


def _negative_curvature(obj: Objective, theta: FloatArray) -> bool:
    """Whether the Hessian at ``theta`` has an eigenvalue below ``-FLAT lambda_max`` (not checked past the limit)."""
    if obj.n > INERTIA_MAX_PARAMS:
        return False
    ev = spectrum(obj.hessian(theta))
    return bool(ev[0] < -_flat_threshold(ev))


def _final_curvature(r: Run, obj: Objective) -> None:
    """``final_inertia``, ``final_kappa`` and ``final_flat`` at the run's end point (after its clock stopped)."""
    if obj.n > INERTIA_MAX_PARAMS or not (math.isfinite(r.final_error) and np.all(np.isfinite(r.final_params))):
        return
    with np.errstate(all="ignore"):
        H = obj.hessian(r.final_params)
    if not np.all(np.isfinite(H)):
        return
    ev = spectrum(H)
    i = _count(ev, _flat_threshold(ev))
    r.final_inertia = _triple(i)
    r.final_flat = i.zero
    big = ev[ev > i.threshold]
    if not i.negative and big.size:
        r.final_kappa = float(big[-1] / big[0])


def run_all(problem: Problem, optimizers: Sequence[str] | None = None, **options: Any) -> LabResult:
    """:func:`run` for each optimiser (default: all but L-BFGS beyond m = 20), from the same point."""
    names = list(optimizers) if optimizers else list(DEFAULT_OPTIMIZERS)
    for name in names:  # every name checked, every budget too, before any work
        opt, _ = get_optimizer(name)
        check_budget(name, objective_for(problem, opt.gains).n)
    from hessverify.reports.progress import track

    return LabResult(problem.id, problem.n_params,
                     [run(problem, name, **options) for name in track(names, "optimisers")])


# -- stationary points ------------------------------------------------------------------------------


@dataclass
class Stationary:
    """A stationary point found by :func:`find_stationary`."""

    problem: Problem  # the case at the stationary point
    iterations: int
    error: float
    grad_norm: float
    inertia: Inertia
    redundancy: GainRedundancy | None = None  # with gain layers: the gain/weight-scale redundancy there

    @property
    def kind(self) -> str:
        """``minimum``, ``saddle``, ``maximum`` or ``degenerate`` (:func:`classify`)."""
        return classify(self.inertia)

    @property
    def kind_across(self) -> str | None:
        """With gain layers, what the point is across the redundancy: :func:`classify` of ``H`` on the
        directions orthogonal to every ``v_j`` (a minimum there is a minimum up to the redundancy)."""
        return None if self.redundancy is None else classify(self.redundancy.across)

    def inertia_line(self) -> str:
        i = self.inertia
        return f"inertia: {i.negative} negative, {i.zero} zero, {i.positive} positive"

    def redundancy_lines(self) -> list[str]:
        """With gain layers: per gain unit ``|H v_j| / (|H| |v_j|)``, the zeros forced, the inertia across."""
        r = self.redundancy
        if r is None:
            return []
        out = [f"gain redundancy (Thimm et al. 1996): {len(r.units)} gain unit(s), v_j = (w_j, b_j, -c_j), "
               f"force {r.forced} zero eigenvalue(s); {r.near_zero} eigenvalue(s) lie within "
               f"{max(r.radius, self.inertia.threshold):.1e} of 0"]
        width = max(len(u) for u in r.units)
        for u, res in zip(r.units, r.residuals):
            out.append(f"  {u:{width}s}  |H v|/(|H| |v|) = " + ("n/a (v = 0)" if not np.isfinite(res) else f"{res:.1e}"))
        a = r.across
        out.append(f"across the redundancy (H on the {a.eigenvalues.size} directions orthogonal to every v_j): "
                   f"{a.negative} negative, {a.zero} zero, {a.positive} positive")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The point's numbers, for ``hessverify stationary --json``."""
        i = self.inertia
        return {"case": self.problem.id, "iterations": self.iterations, "error": self.error,
                "grad_norm": self.grad_norm, "kind": self.kind, "kind_across": self.kind_across,
                "inertia": {"negative": i.negative, "zero": i.zero, "positive": i.positive,
                            "zero_threshold": i.threshold},
                "eigenvalues": [float(v) for v in i.eigenvalues], "param_names": list(self.problem.param_names),
                "params": [float(v) for v in self.problem.params],
                "gain_redundancy": None if self.redundancy is None else self.redundancy.to_dict()}

    def describe(self) -> str:
        """What the point is, in a sentence that starts with its kind."""
        i = self.inertia
        r = self.redundancy
        if r is not None and r.forced and self.kind_across in ("minimum", "maximum"):
            # H definite across the v_j: at most `forced` eigenvalues of H are not of that sign (interlacing)
            what = self.kind_across
            sign = "positive" if what == "minimum" else "negative"
            return (f"{what} up to the gain redundancy: the {r.forced} eigenvalue(s) along the v_j are forced to 0 "
                    f"(E is constant along each v_j; here they lie within {max(r.radius, i.threshold):.1e} of 0) and "
                    f"every eigenvalue across them is {sign}: a local {what}, not a strict one (one point of a "
                    f"{r.forced}-dimensional set of equal {'minima' if what == 'minimum' else 'maxima'})")
        if self.kind == "saddle":
            return "saddle: the Hessian has eigenvalues of both signs (E falls along some directions, rises along others)"
        if self.kind == "minimum":
            return "minimum: every eigenvalue of the Hessian is positive (a strict local minimum)"
        if self.kind == "maximum":
            return "maximum: every eigenvalue of the Hessian is negative (a strict local maximum)"
        sign = "positive" if i.positive else "negative"
        words = (f"degenerate: {i.zero} zero eigenvalue(s), the others {sign}; "
                 "the second-order test cannot decide what the point is")
        if not i.negative and self.problem.loss == "sse" and self.error < _FLOOR:
            # E >= 0 for sse, so E within rounding of 0 is the least it can be
            words += (f"; but E = {self.error:.2g} and an sse error is never below 0, so it is a global minimum "
                      "(one point of a valley of minima)")
        return words


def find_stationary(problem: Problem, *, tol: float = 1e-12, max_iter: int = 200,
                    params: FloatArray | None = None) -> Stationary:
    """A point near ``params`` where the gradient vanishes, of any kind.

    Newton's method on the system ``g(theta) = 0``, whose Jacobian is the
    Hessian ``H``, with Levenberg-Marquardt damping on ``|g|^2``: the step
    solves ``(H^2 + mu I) p = -H g`` and is taken when it lowers ``|g|``
    (Levenberg 1944, Marquardt 1963; Nocedal & Wright sec. 10.3).  Unlike a
    minimiser it is drawn to saddles and maxima as well as minima.

    Raises :class:`NoStationaryPointError` (exit status 6) when ``|g| < tol``
    is not reached within ``max_iter`` iterations.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/saddle-2-3-1-tanh-zero.toml")
    >>> s = find_stationary(case)
    >>> s.kind, bool(s.grad_norm < 1e-12)
    ('saddle', True)
    """
    from threadpoolctl import threadpool_limits

    if not tol > 0:
        raise UsageError(f"tol must be > 0, got {tol}")
    check_budget("newton", problem.n_params)
    with threadpool_limits(limits=1):  # the same iterates whatever the BLAS threads (run's text)
        return _find_stationary(problem, tol, max_iter, params)


def _find_stationary(problem: Problem, tol: float, max_iter: int, params: FloatArray | None) -> Stationary:
    from hessverify.reports.analysis import zero_threshold

    theta = as_params(problem, params).copy()
    obj = ModelObjective(problem)
    g = obj.g(theta)
    gn = float(np.linalg.norm(g))
    mu: float | None = None
    k = 0
    while not gn < tol:
        if k >= max_iter or not math.isfinite(gn):
            raise NoStationaryPointError(
                f"no stationary point found near {problem.id}'s point within {max_iter} iterations "
                f"(|g| = {gn:.3g} at the best point, tolerance {tol:g})")
        H = hessian_at(problem, theta)
        ev, V = np.linalg.eigh((H + H.T) / 2.0)
        if mu is None:
            mu = 1e-6 * max(float(np.max(ev * ev)), 1e-300)
        Vg = V.T @ g
        accepted = False
        for _ in range(80):
            p = -(V @ (ev * Vg / (ev * ev + mu)))
            g1 = obj.g(theta + p)
            g1n = float(np.linalg.norm(g1))
            if math.isfinite(g1n) and g1n < gn:
                theta, g, gn = theta + p, g1, g1n
                mu = max(mu / 10.0, 1e-300)
                accepted = True
                break
            mu *= 10.0
        k += 1
        if not accepted:
            raise NoStationaryPointError(
                f"no stationary point found near {problem.id}'s point: no damped Newton step lowers |g| "
                f"below {gn:.3g} (tolerance {tol:g})")
    at = problem.with_params(theta)
    H = hessian_at(problem, theta)
    ev = spectrum(H)
    tau = zero_threshold(at, ev)
    return Stationary(at, k, error(problem, theta), gn, inertia(H, tau), gain_redundancy(at, H, tau))
