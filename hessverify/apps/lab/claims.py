"""The claims study (``hessverify lab claims``): the lecture's claims for second-order methods, measured.

One unit of the study is one optimiser from one seeded start on one data
set (or one start off a saddle, or one memory measurement); the campaign
engine (:mod:`hessverify.apps.campaign`, kind ``lab-claims``) runs the units
on its workers, resumably, and this module says what a unit is
(:func:`units`, :func:`run_unit`), summarises them (:func:`summarise`) and
writes the tables, verdicts and plots of docs/lab.md (:func:`markdown`,
:func:`plots`).

Data sets: scikit-learn's bundled iris, wine and breast_cancer (no download;
the extra ``hessverify[lab]``), inputs standardised per feature; 7-bit
parity (all 128 patterns) and XOR.  Networks: one hidden layer of logistic
units, logistic outputs (one per class; one for two classes), the sum of
squares with the mean over patterns, ``E = (1/N) sum_n 1/2 |y_n - t_n|^2``,
as in the adaptive-gain papers (Nawi et al.).  Starts: weights uniform in
``[-0.5, 0.5]`` from ``(data set, seed)``.  A run succeeds when
``E <= target`` within its budget of epochs (an epoch is an iteration: every
optimiser here is full batch) and wall seconds.

Statistics: per (data set, optimiser) the success rate, and the median of
epochs, evaluations and CPU seconds over *every* start, a failed start
counted as above every budget (so the median is finite while more than half
succeed); its 95 % interval is the distribution-free order-statistic interval
``[x_(j), x_(n-j+1)]`` with ``P(Binomial(n, 1/2) < j) <= 0.025`` (Conover,
*Practical nonparametric statistics*, 3rd ed., sec. 3.2; 95.9 % for 20 starts).
Ratios of medians between optimisers (paired: the same starts) get a
percentile bootstrap interval over the starts (2000 resamples, seeded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.errors import UsageError
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem

__all__ = ["DATASETS", "Dataset", "Unit", "dataset_problem", "markdown", "median_interval", "plots", "ratio_interval",
           "run_unit", "start_params", "summarise", "units"]


@dataclass(frozen=True)
class Dataset:
    """A data set of the study: its network and the error a run must reach."""

    name: str
    hidden: int
    target_error: float
    description: str


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("xor", 2, 1e-3, "XOR, 4 patterns, targets 0/1 (2-2-1)"),
    Dataset("parity-7", 7, 1e-2, "7-bit parity, all 128 patterns, targets 0/1 (7-7-1)"),
    Dataset("iris", 5, 1e-2, "scikit-learn's iris, 150 patterns, 3 classes (4-5-3)"),
    Dataset("wine", 5, 1e-3, "scikit-learn's wine, 178 patterns, 3 classes (13-5-3)"),
    Dataset("breast-cancer", 5, 1e-2, "scikit-learn's breast_cancer, 569 patterns, 2 classes (30-5-1)"),
)}
"""The data sets, their hidden units and target errors (module text)."""


def _data(name: str) -> tuple[FloatArray, FloatArray]:
    """Inputs ``(N, d)`` and 0/1 targets ``(N, K)`` of data set ``name``."""
    if name == "xor":
        x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        return x, np.array([[0.0], [1.0], [1.0], [0.0]])
    if name == "parity-7":
        x = ((np.arange(128)[:, None] >> np.arange(7)[None, :]) & 1).astype(np.float64)
        return x, (x.sum(axis=1) % 2)[:, None]
    try:
        from sklearn import datasets
    except ImportError:
        raise UsageError("the claims study's iris, wine and breast-cancer need scikit-learn; "
                         "pip install 'hessverify[lab]'") from None
    loader = {"iris": datasets.load_iris, "wine": datasets.load_wine, "breast-cancer": datasets.load_breast_cancer}
    X, y = loader[name](return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    classes = np.unique(y)
    T = (y[:, None] == classes[None, :]).astype(np.float64)
    if classes.size == 2:
        T = T[:, 1:]
    return X.astype(np.float64), T


def dataset_problem(name: str, hidden: int | None = None) -> Problem:
    """The study's network on data set ``name`` at the zero point (``hidden`` overrides the units).

    Examples
    --------
    >>> p = dataset_problem("xor")
    >>> p.n_params, p.n_patterns, p.architecture.describe()
    (9, 4, '2-2(sigmoid)-1(sigmoid)')
    """
    if name not in DATASETS:
        raise UsageError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    d = DATASETS[name]
    x, t = _data(name)
    h = d.hidden if hidden is None else hidden
    arch = Architecture(x.shape[1], (Layer(h, "sigmoid"), Layer(t.shape[1], "sigmoid")))
    return Problem(arch, "sse", np.zeros(arch.n_params), x, t, reduction="mean", id=f"claims-{name}-{h}",
                   description=d.description)


def start_params(problem: Problem, dataset: str, seed: int) -> FloatArray:
    """Start ``seed`` on ``dataset``: every parameter uniform in ``[-0.5, 0.5]``, from ``(data set, seed)`` alone."""
    key = list(DATASETS).index(dataset) if dataset in DATASETS else 99
    return np.random.default_rng([key, problem.n_params, seed]).uniform(-0.5, 0.5, problem.n_params)


# -- statistics -----------------------------------------------------------------------------------------------


def _order_ranks(n: int, level: float = 0.95) -> tuple[int, int, float]:
    """``(j, k, coverage)``, 1-based: ``[x_(j), x_(k)]`` covers the median with probability ``coverage >= level``."""
    from scipy.stats import binom

    alpha = 1.0 - level
    j = 0
    while j + 1 <= n and binom.cdf(j, n, 0.5) <= alpha / 2:  # P(B <= j) = P(B < j + 1)
        j += 1
    if j == 0:
        return 1, n, 1.0 - 2 * 0.5**n
    return j, n - j + 1, float(1.0 - 2 * binom.cdf(j - 1, n, 0.5))


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """``(median, low, high, coverage)`` of ``values`` (``inf``: a censored value, above every budget).

    Examples
    --------
    >>> m, lo, hi, cov = median_interval(range(1, 21))
    >>> m, lo, hi, round(cov, 3)
    (10.5, 6.0, 15.0, 0.959)
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0:
        return (math.nan,) * 4  # type: ignore[return-value]
    j, k, cov = _order_ranks(n, level)
    med = float(x[(n - 1) // 2]) if n % 2 else float(0.5 * (x[n // 2 - 1] + x[n // 2]))
    if n % 2 == 0 and math.isinf(x[n // 2]):
        med = math.inf
    return med, float(x[j - 1]), float(x[k - 1]), cov


def _median(x: FloatArray) -> float:
    s = np.sort(x)
    n = s.size
    if n % 2:
        return float(s[n // 2])
    hi = s[n // 2]
    return math.inf if math.isinf(hi) else float(0.5 * (s[n // 2 - 1] + hi))


def ratio_interval(a: tuple[Sequence[float], Sequence[float]], b: tuple[Sequence[float], Sequence[float]], *,
                   resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """``median(a) / median(b)``, the starts paired, with a censoring-aware percentile bootstrap interval.

    ``a`` and ``b`` are ``(low, high)``: per start, the value where it reached the
    target (``low == high``), or for a start that did not, what it had used
    (``low``, a lower bound) and ``inf`` (``high``).  The estimate is the range
    ``[median(a_low) / median(b_high), median(a_high) / median(b_low)]`` (one
    number when nothing is censored); the interval's lower end is the
    ``(1 - level) / 2`` quantile of the first over 2000 paired resamples, its
    upper end the ``(1 + level) / 2`` quantile of the second.

    Examples
    --------
    >>> r = ratio_interval(([1.0, 2.0] * 10, [1.0, 2.0] * 10), ([2.0, 4.0] * 10, [2.0, 4.0] * 10))
    >>> r["estimate"], r["interval"]
    ([0.5, 0.5], [0.5, 0.5])
    """
    A0, A1 = (np.asarray(v, dtype=np.float64) for v in a)
    B0, B1 = (np.asarray(v, dtype=np.float64) for v in b)
    est = [_ratio(_median(A0), _median(B1)), _ratio(_median(A1), _median(B0))]
    idx = np.random.default_rng(seed).integers(0, A0.size, size=(resamples, A0.size))
    low = np.array([_ratio(_median(A0[i]), _median(B1[i])) for i in idx])
    high = np.array([_ratio(_median(A1[i]), _median(B0[i])) for i in idx])
    lo = float(np.quantile(np.where(np.isnan(low), 0.0, low), (1 - level) / 2, method="inverted_cdf"))
    hi = float(np.quantile(np.where(np.isnan(high), math.inf, high), (1 + level) / 2, method="inverted_cdf"))
    return {"estimate": est, "interval": [lo, hi]}


def _ratio(x: float, y: float) -> float:
    if math.isinf(x) and math.isinf(y):
        return math.nan
    if math.isinf(x):
        return math.inf
    if math.isinf(y):
        return 0.0
    return x / y if y > 0 else (math.nan if x == 0 else math.inf)


# -- the units ------------------------------------------------------------------------------------------------

SPEED = ("gd", "bp-ag", "momentum", "adam", "cgfr", "cgfr-ag", "bfgs", "bfgs-ag", "lm")
"""Optimisers run to the target error: the gain pairs, gradient descent against Newton, momentum and Adam."""

SADDLE = ("gd", "momentum", "adam", "cgfr", "bfgs", "newton", "lm", "sfn")
"""Optimisers started next to a saddle."""

SADDLE_DATASETS = ("iris", "wine", "breast-cancer")
"""Where the zero point (:func:`zero_saddle`) is a genuine saddle.  On XOR and parity it is not: their inputs
are uncorrelated with their targets, so the Hessian's coupling of hidden and output weights vanishes there and
no eigenvalue is negative (the summary gives every data set's inertia there)."""

MEMORY = ("gd", "lbfgs-5", "lbfgs-20", "bfgs", "lm")
"""Optimisers whose peak memory is measured, on breast-cancer with ``MEMORY_HIDDEN`` hidden units."""

MEMORY_HIDDEN = (5, 20, 60)

GAIN_PAIRS = (("gd", "bp-ag"), ("cgfr", "cgfr-ag"), ("bfgs", "bfgs-ag"))
SECOND_ORDER = ("lm", "newton", "sfn")  # a Hessian per iteration: their own, smaller budget of iterations

ESCAPE_RADIUS = 0.1
SADDLE_PERTURBATION = 1e-6


@dataclass(frozen=True)
class Unit:
    """One unit of the study: ``experiment`` (speed, saddle, memory), data set, optimiser, seed, hidden units."""

    experiment: str
    dataset: str
    optimizer: str
    seed: int
    hidden: int | None = None

    @property
    def id(self) -> str:
        h = f"-h{self.hidden}" if self.hidden is not None else ""
        return f"{self.experiment}-{self.dataset}{h}-{self.optimizer}-s{self.seed}"


def default_options(quick: bool = False) -> dict[str, Any]:
    """The study's options (they decide every unit); ``quick``: the tiny configuration CI runs."""
    if quick:
        return {"datasets": ["xor", "iris"], "starts": 3, "speed": ["gd", "bp-ag", "bfgs", "bfgs-ag", "lm"],
                "saddle": ["gd", "lm"], "saddle_datasets": ["iris"], "memory": ["lbfgs-5", "lm"], "memory_hidden": [5],
                "max_epochs": 300,
                "max_epochs_second": 50, "time_limit": 10.0, "saddle_max_iter": 300, "saddle_max_iter_second": 50}
    return {"datasets": list(DATASETS), "starts": 20, "speed": list(SPEED), "saddle": list(SADDLE),
            "saddle_datasets": list(SADDLE_DATASETS),
            "memory": list(MEMORY), "memory_hidden": list(MEMORY_HIDDEN), "max_epochs": 5000,
            "max_epochs_second": 500, "time_limit": 15.0, "saddle_max_iter": 2000, "saddle_max_iter_second": 200}


def units(options: dict[str, Any]) -> list[Unit]:
    """Every unit the options decide, in a fixed order (unit ``i`` is the same wherever it runs)."""
    out = [Unit("speed", d, o, s) for d in options["datasets"] for o in options["speed"]
           for s in range(options["starts"])]
    memory_set = "breast-cancer" if "breast-cancer" in options["datasets"] else options["datasets"][-1]
    out += [Unit("memory", memory_set, o, 0, h) for h in options["memory_hidden"] for o in options["memory"]]
    out += [Unit("saddle", d, o, s) for d in options["saddle_datasets"] if d in options["datasets"]
            for o in options["saddle"] for s in range(options["starts"])]
    return out


def zero_saddle(problem: Problem) -> Problem:
    """Hidden weights and biases zero, output weights zero, output biases at their optimum ``logit(mean t)``.

    The hidden outputs are ``f(0)`` for every pattern, so ``E`` depends on the
    output biases alone, and the gradient vanishes: by the output weights
    because the output errors sum to zero over the patterns at the optimal
    bias, by the hidden weights because the output weights are zero.
    """
    arch = problem.architecture
    theta = np.zeros(arch.n_params)
    mean = np.clip(problem.targets.mean(axis=0), 1e-12, 1 - 1e-12)
    theta[arch.blocks[-1].b_slice] = np.log(mean / (1 - mean))
    return problem.with_params(theta)


def run_unit(options: dict[str, Any], unit: Unit) -> dict[str, Any]:
    """Run one unit; what the study keeps of it (JSON values only)."""
    from hessverify.apps import lab
    from hessverify.engine.objective import error, gradient

    p = dataset_problem(unit.dataset, unit.hidden)
    d = DATASETS[unit.dataset]
    rec: dict[str, Any] = {"experiment": unit.experiment, "dataset": unit.dataset, "optimizer": unit.optimizer,
                           "seed": unit.seed, "hidden": p.architecture.layers[0].units}
    if unit.experiment == "memory":
        its = lab.get_optimizer(unit.optimizer)[1] + 2 if unit.optimizer.startswith("lbfgs") else 3
        r = lab.run(p, unit.optimizer, params=start_params(p, unit.dataset, 0), tol=1e-30, max_iter=its,
                    saddle_check=False)
        return rec | {"n": r.n_params, "iterations": r.iterations, "peak_memory": r.peak_memory,
                      "predicted_memory": r.predicted_memory}
    second = unit.optimizer in SECOND_ORDER
    cap = options["max_epochs_second"] if second else options["max_epochs"]
    if unit.experiment == "saddle":
        s = zero_saddle(p)
        direction = np.random.default_rng([7, unit.seed]).standard_normal(s.n_params)
        start = s.params + SADDLE_PERTURBATION * direction / np.linalg.norm(direction)
        E_s = error(s)
        its = options["saddle_max_iter_second" if second else "saddle_max_iter"]
        r = lab.run(s, unit.optimizer, params=start, tol=1e-30, max_iter=its,
                    escape_radius=ESCAPE_RADIUS, stop_on_escape=True, time_limit=options["time_limit"],
                    saddle_check=False)
        inert = lab.inertia(lab.hessian_at(s)) if unit.seed == 0 else None
        return rec | {"n": r.n_params, "saddle_error": E_s, "left_at": r.left_at, "reason": r.reason,
                      "final_error": r.final_error, "escaped": r.left_at is not None and r.final_error < E_s,
                      "saddle_inertia": None if inert is None else [inert.negative, inert.zero, inert.positive],
                      "saddle_grad_norm": float(np.linalg.norm(gradient(s))) if unit.seed == 0 else None}
    r = lab.run(p, unit.optimizer, params=start_params(p, unit.dataset, unit.seed), tol=1e-10, max_iter=cap,
                target_error=d.target_error, time_limit=options["time_limit"], saddle_check=False)
    success = r.reason == "target"
    y = _outputs(p, r)
    return rec | {"n": r.n_params, "success": success, "reason": r.reason, "epochs": r.iterations,
                  "evaluations": r.evaluations, "gradients": r.gradients, "hessians": r.hessians,
                  "cpu_seconds": round(r.cpu_seconds, 6), "seconds": round(r.seconds, 6),
                  "final_error": r.final_error, "accuracy": _accuracy(y, p.targets),
                  "final_inertia": list(r.final_inertia) if r.final_inertia else None,
                  "final_kappa": r.final_kappa, "final_flat": r.final_flat,
                  "trace": _trace(r, cap)}


def _outputs(p: Problem, r: Any) -> FloatArray:
    from hessverify.apps.lab.objectives import objective_for
    from hessverify.model.forward import forward

    theta = objective_for(p, r.param_names is not None).model_params(r.final_params)
    with np.errstate(all="ignore"):
        return forward(p, theta, derivatives=False).y


def _accuracy(y: FloatArray, t: FloatArray) -> float:
    """The share of patterns classified right (the largest output, or the one output above 1/2)."""
    if t.shape[1] == 1:
        return float(np.mean((y[:, 0] > 0.5) == (t[:, 0] > 0.5)))
    return float(np.mean(np.argmax(y, axis=1) == np.argmax(t, axis=1)))


def trace_grid(cap: int) -> list[int]:
    """The epochs at which a run's E is kept for the convergence plots: 0, 1, 2, ..., then about 12 per decade."""
    grid = sorted({int(round(v)) for v in np.logspace(0, math.log10(max(cap, 1)), 60)} | {0})
    return [g for g in grid if g <= cap]


def _trace(r: Any, cap: int) -> list[float]:
    """E at the epochs of :func:`trace_grid` (after a run stops, its last E: it stays where it stopped)."""
    E = [x.error for x in r.log]
    return [float(E[min(k, len(E) - 1)]) for k in trace_grid(cap)]


# -- the summary and the verdicts -----------------------------------------------------------------------------

FASTER = 0.6  # "40 % faster": the gain variant's median at most 0.6 of the plain one's
ABOUT = 3.0  # "about n": within a factor 3 either way


def _censored(recs: list[dict[str, Any]], key: str) -> list[float]:
    """``key`` of each start, ``inf`` for a start that did not reach the target (above every budget)."""
    return [float(r[key]) if r["success"] else math.inf for r in sorted(recs, key=lambda r: r["seed"])]


def _bounds(recs: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Per start, ``(low, high)`` of ``key`` to the target: what it used and ``inf`` where it did not get there."""
    rr = sorted(recs, key=lambda r: r["seed"])
    return [float(r[key]) for r in rr], [float(r[key]) if r["success"] else math.inf for r in rr]


def _cell(values: list[float]) -> dict[str, float]:
    m, lo, hi, cov = median_interval(values)
    return {"median": m, "low": lo, "high": hi, "coverage": cov}


def summarise(records: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
    """Tables and verdicts from the units' records (JSON values only; infinities as the string ``"inf"``)."""
    speed = [r for r in records if r["experiment"] == "speed"]
    table: dict[str, dict[str, Any]] = {}
    for d in options["datasets"]:
        table[d] = {}
        for o in options["speed"]:
            recs = [r for r in speed if r["dataset"] == d and r["optimizer"] == o]
            if not recs:
                continue
            ok = [r for r in recs if r["success"]]
            table[d][o] = {"n": recs[0]["n"], "starts": len(recs), "successes": len(ok),
                           "epochs": _cell(_censored(recs, "epochs")),
                           "evaluations": _cell(_censored(recs, "evaluations")),
                           "cpu_seconds": _cell(_censored(recs, "cpu_seconds")),
                           "accuracy": float(np.median([r["accuracy"] for r in recs]))}
    out: dict[str, Any] = {"table": table, "targets": {d: DATASETS[d].target_error for d in options["datasets"]},
                           "verdicts": {}}
    out["verdicts"]["gain"] = _gain_verdict(speed, options)
    out["verdicts"]["newton"] = _newton_verdict(speed, options)
    out["verdicts"]["momentum_adam"] = _momentum_verdict(speed, options)
    out["verdicts"]["memory"] = _memory_verdict([r for r in records if r["experiment"] == "memory"])
    out["verdicts"]["saddle"] = _saddle_verdict([r for r in records if r["experiment"] == "saddle"], options)
    out["zero_points"] = {d: _zero_point(d) for d in options["datasets"]}
    return _jsonable(out)


def _zero_point(d: str) -> dict[str, Any]:
    """The inertia of the Hessian, ``|g|`` and ``E`` at data set ``d``'s zero point (:func:`zero_saddle`)."""
    from hessverify.apps import lab
    from hessverify.engine.objective import error, gradient

    s = zero_saddle(dataset_problem(d))
    i = lab.inertia(lab.hessian_at(s))
    return {"inertia": [i.negative, i.zero, i.positive], "grad_norm": float(np.linalg.norm(gradient(s))),
            "error": error(s)}


def _paired(speed: list[dict[str, Any]], d: str, a: str, b: str, key: str) -> dict[str, list[float]] | None:
    ra = [r for r in speed if r["dataset"] == d and r["optimizer"] == a]
    rb = [r for r in speed if r["dataset"] == d and r["optimizer"] == b]
    if not ra or not rb or len(ra) != len(rb):
        return None
    return ratio_interval(_bounds(ra, key), _bounds(rb, key))


def _gain_verdict(speed: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
    """Adaptive gain >= 40 % faster: median(ag) / median(plain) <= 0.6, in epochs and in CPU seconds."""
    rows, said = [], {"yes": 0, "no": 0, "undecided": 0}
    for d in options["datasets"]:
        for plain, ag in GAIN_PAIRS:
            if plain not in options["speed"] or ag not in options["speed"]:
                continue
            ep, cpu = _paired(speed, d, ag, plain, "epochs"), _paired(speed, d, ag, plain, "cpu_seconds")
            if ep is None or cpu is None:
                continue
            acc = [float(np.median([r["accuracy"] for r in speed if r["dataset"] == d and r["optimizer"] == o]))
                   for o in (plain, ag)]
            v = "yes" if cpu["interval"][1] <= FASTER else ("no" if cpu["interval"][0] > FASTER else "undecided")
            said[v] += 1
            rows.append({"dataset": d, "plain": plain, "gain": ag, "epochs_ratio": ep, "cpu_ratio": cpu,
                         "accuracy": acc, "verdict": v})
    overall = ("supported" if said["yes"] and not said["no"] and said["yes"] >= said["undecided"] else
               "refuted" if said["no"] > said["yes"] + said["undecided"] else "mixed")
    return {"claim": "adaptive gain (BP-AG, CGFR-AG, BFGS-AG) is at least 40 % faster than the same method without",
            "criterion": f"per data set and pair: the 95 % interval of median CPU seconds (gain / plain) below {FASTER}"
                         f" (yes), above it (no), or across it (undecided)",
            "rows": rows, "counts": said, "verdict": overall}


def _newton_verdict(speed: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
    """One Newton step ~ n GD steps: median(gd epochs) / median(lm iterations) against n, with kappa."""
    rows, consistent = [], []
    for d in options["datasets"]:
        r = _paired(speed, d, "gd", "lm", "epochs")
        if r is None:
            continue
        n = next(x["n"] for x in speed if x["dataset"] == d and x["optimizer"] == "lm")
        kappas = [x["final_kappa"] for x in speed if x["dataset"] == d and x["optimizer"] == "lm"
                  and x["success"] and x.get("final_kappa")]
        lo, hi = r["interval"]
        ok = "yes" if (lo >= n / ABOUT and hi <= n * ABOUT) else ("no" if (hi < n / ABOUT or lo > n * ABOUT)
                                                                   else "undecided")
        consistent.append(ok)
        rows.append({"dataset": d, "n": n, "ratio": r, "interval_over_n": [lo / n, hi / n],
                     "kappa_median": float(np.median(kappas)) if kappas else None, "about_n": ok})
    verdict = ("supported" if consistent and all(v == "yes" for v in consistent) else
               "refuted" if consistent and all(v == "no" for v in consistent) else
               "mixed: " + ", ".join(f"{consistent.count(v)} {v}" for v in ("yes", "no", "undecided")
                                     if consistent.count(v)))
    return {"claim": "one Newton iteration reduces the error about as much as n gradient-descent iterations",
            "criterion": f"the 95 % interval of median(gd epochs) / median(lm iterations) inside [n/{ABOUT:g}, "
                         f"{ABOUT:g} n] (yes), outside it (no), across its edge (undecided); gd: fixed step "
                         "1/lambda_max at the start; lm: damped Newton",
            "rows": rows, "verdict": verdict}


def _momentum_verdict(speed: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
    """Momentum and Adam close the gap: their epochs over Newton's, against gradient descent's."""
    rows, closes = [], []
    for d in options["datasets"]:
        gap = _paired(speed, d, "gd", "lm", "epochs")
        if gap is None:
            continue
        for o in ("momentum", "adam"):
            rem = _paired(speed, d, o, "lm", "epochs")
            if rem is None:
                continue
            v = ("closes" if rem["interval"][1] <= ABOUT else
                 "narrows" if rem["interval"][1] < gap["interval"][0] else
                 "no" if rem["interval"][0] >= gap["interval"][0] else "undecided")
            closes.append(v)
            rows.append({"dataset": d, "optimizer": o, "gd_over_lm": gap, "over_lm": rem, "verdict": v})
    verdict = ("not measured" if not closes else
               "supported" if all(v == "closes" for v in closes) else
               "refuted" if closes and all(v == "no" for v in closes) else "partly: " + ", ".join(
                   f"{closes.count(v)} {v}" for v in ("closes", "narrows", "no", "undecided") if closes.count(v)))
    return {"claim": "momentum and Adam close the gap between gradient descent and Newton's method",
            "criterion": f"closes: the 95 % interval of median(epochs) / median(lm iterations) below {ABOUT:g}; "
                         "narrows: its interval below gradient descent's; no: its lower end at or above gradient descent's "
                         "lower end; undecided: otherwise",
            "rows": rows, "verdict": verdict}


def _memory_verdict(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """L-BFGS stores 2mn numbers, a Hessian n^2: measured peaks against the predictions."""
    rows = []
    for h in sorted({r["hidden"] for r in recs}):
        at = {r["optimizer"]: r for r in recs if r["hidden"] == h}
        n = next(iter(at.values()))["n"]
        row: dict[str, Any] = {"hidden": h, "n": n, "hessian_bytes": 8 * n * n, "pairs_5": 8 * 2 * 5 * n,
                               "pairs_20": 8 * 2 * 20 * n, "peak": {o: r["peak_memory"] for o, r in at.items()}}
        if "lbfgs-5" in at and "lbfgs-20" in at:
            row["lbfgs_growth"] = at["lbfgs-20"]["peak_memory"] - at["lbfgs-5"]["peak_memory"]
            row["lbfgs_growth_predicted"] = 8 * 2 * 15 * n
        rows.append(row)
    dense_ok = all(r["peak"].get(o, math.inf) >= r["hessian_bytes"] for r in rows for o in ("lm", "bfgs")
                   if o in r["peak"])
    growth = [r["lbfgs_growth"] / r["lbfgs_growth_predicted"] for r in rows if "lbfgs_growth" in r]
    pairs_ok = bool(growth) and 0.5 <= growth[-1] <= 2.0
    verdict = "not measured" if not rows else "supported" if dense_ok and pairs_ok else "mixed"
    return {"claim": "L-BFGS needs memory 2mn against n^2 for a method that stores the Hessian",
            "criterion": "the dense methods' peak is at least 8 n^2 bytes; L-BFGS's peak grows from m = 5 to "
                         "m = 20 by 8 (2 x 15 n) bytes within a factor 2 at the largest n",
            "rows": rows, "growth_over_predicted": growth, "verdict": verdict}


def _saddle_verdict(recs: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
    """Saddle escape: iterations to leave a 0.1-ball around a saddle with E below it, per optimiser."""
    rows, saddles = [], {}
    for d in options["datasets"]:
        first = next((r for r in recs if r["dataset"] == d and r["saddle_inertia"] is not None), None)
        if first is None:
            continue
        inert = first["saddle_inertia"]
        saddles[d] = {"inertia": inert, "grad_norm": first["saddle_grad_norm"], "error": first["saddle_error"],
                      "is_saddle": inert[0] > 0}
        for o in options["saddle"]:
            rr = sorted((r for r in recs if r["dataset"] == d and r["optimizer"] == o), key=lambda r: r["seed"])
            if not rr:
                continue
            its = [float(r["left_at"]) if r["escaped"] else math.inf for r in rr]
            rows.append({"dataset": d, "optimizer": o, "escaped": sum(r["escaped"] for r in rr), "starts": len(rr),
                         "iterations": _cell(its)})
    genuine = [d for d, s in saddles.items() if s["is_saddle"]]

    def med(d: str, o: str) -> float:
        return next((r["iterations"]["median"] for r in rows if r["dataset"] == d and r["optimizer"] == o), math.nan)

    faster = [d for d in genuine if med(d, "sfn") < med(d, "gd") or med(d, "lm") < med(d, "gd")]
    newton_stuck = [d for d in genuine if not med(d, "newton") < math.inf]
    verdict = ("supported" if genuine and len(faster) == len(genuine) else "mixed" if faster else "refuted"
               if genuine else "not measured (no genuine saddle)")
    return {"claim": "the Hessian tells a saddle from a minimum, and second-order steps leave a saddle sooner",
            "criterion": f"on each genuine saddle (a negative eigenvalue), started {SADDLE_PERTURBATION:g} off it: "
                         f"iterations until {ESCAPE_RADIUS:g} away with E below the saddle's; sfn or lm below gd",
            "saddles": saddles, "rows": rows, "faster_than_gd": faster, "newton_never_leaves": newton_stuck,
            "verdict": verdict}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return "inf" if v == math.inf else "-inf" if v == -math.inf else None if math.isnan(v) else v
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# -- docs/lab.md: tables, verdicts, plots ---------------------------------------------------------------------


def _num(v: Any, fmt: str = ".3g") -> str:
    if v == "inf" or v == math.inf:
        return "∞"
    if v is None:
        return "-"
    return format(float(v), fmt)


def _med(c: dict[str, Any], fmt: str = ".3g") -> str:
    """``median [low, high]``; a median past the budget is "not reached"."""
    m = "not reached" if c["median"] in ("inf", math.inf) else _num(c["median"], fmt)
    return f"{m} [{_num(c['low'], fmt)}, {_num(c['high'], fmt)}]"


def _ratio_text(r: dict[str, Any]) -> str:
    lo_e, hi_e = r["estimate"]
    est = _num(lo_e) if lo_e == hi_e else f"{_num(lo_e)} to {_num(hi_e)}"
    return f"{est} [{_num(r['interval'][0])}, {_num(r['interval'][1])}]"


def markdown(summary: dict[str, Any], options: dict[str, Any]) -> str:
    """The tables and verdicts of the study as Markdown (docs/lab.md's claims section)."""
    L: list[str] = []
    L.append(f"Budgets: {options['max_epochs']} epochs (first-order and quasi-Newton), {options['max_epochs_second']} "
             f"iterations (lm, newton, sfn), {options['time_limit']:g} s of wall time per run; {options['starts']} "
             "seeded starts per data set and optimiser. Cells: median [95 % interval], over every start (a start "
             "that did not reach the target counts as above the budget; order-statistic interval, coverage "
             f"{_cov(summary):.1%}). Ratios: median over median, paired starts, censoring-aware bootstrap interval.")
    L.append("")
    for d, rows in summary["table"].items():
        L.append(f"**{d}** ({DATASETS[d].description}; target E <= {summary['targets'][d]:g})")
        L.append("")
        L.append("| optimiser | n | reached | epochs | evaluations | CPU seconds | accuracy |")
        L.append("| --- | ---: | ---: | --- | --- | --- | ---: |")
        for o, c in rows.items():
            L.append(f"| `{o}` | {c['n']} | {c['successes']}/{c['starts']} | {_med(c['epochs'])} | "
                     f"{_med(c['evaluations'])} | {_med(c['cpu_seconds'], '.2g')} | {c['accuracy']:.3f} |")
        L.append("")
        L.append(f"![E against epochs on {d}: median and 95 % band](lab/claims-{d}.png)")
        L.append("")
    v = summary["verdicts"]
    g = v["gain"]
    L += [f"### Claim: {g['claim']}: **{g['verdict']}**", "", f"Criterion: {g['criterion']}.", "",
          "| data set | plain | with gain | epochs ratio | CPU ratio | accuracy plain / gain | 40 % faster? |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in g["rows"]:
        L.append(f"| {r['dataset']} | `{r['plain']}` | `{r['gain']}` | {_ratio_text(r['epochs_ratio'])} | "
                 f"{_ratio_text(r['cpu_ratio'])} | {r['accuracy'][0]:.3f} / {r['accuracy'][1]:.3f} | {r['verdict']} |")
    nv = v["newton"]
    L += ["", f"### Claim: {nv['claim']}: **{nv['verdict']}**", "", f"Criterion: {nv['criterion']}.", "",
          "| data set | n | gd epochs / lm iterations | over n | kappa at lm's end (median) | about n? |",
          "| --- | ---: | --- | --- | ---: | --- |"]
    for r in nv["rows"]:
        L.append(f"| {r['dataset']} | {r['n']} | {_ratio_text(r['ratio'])} | [{_num(r['interval_over_n'][0])}, "
                 f"{_num(r['interval_over_n'][1])}] | {_num(r['kappa_median'])} | {r['about_n']} |")
    mv = v["momentum_adam"]
    L += ["", f"### Claim: {mv['claim']}: **{mv['verdict']}**", "", f"Criterion: {mv['criterion']}.", "",
          "| data set | optimiser | its epochs / lm's | gd's / lm's | verdict |", "| --- | --- | --- | --- | --- |"]
    for r in mv["rows"]:
        L.append(f"| {r['dataset']} | `{r['optimizer']}` | {_ratio_text(r['over_lm'])} | "
                 f"{_ratio_text(r['gd_over_lm'])} | {r['verdict']} |")
    me = v["memory"]
    L += ["", f"### Claim: {me['claim']}: **{me['verdict']}**", "", f"Criterion: {me['criterion']}.", "",
          "| hidden | n | 8 n^2 | 8 (2 m n), m = 5 / 20 | " + " | ".join(f"peak {o}" for o in options["memory"])
          + " | L-BFGS growth 5 to 20 (predicted) |",
          "| ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in options["memory"]) + " | ---: |"]
    for r in me["rows"]:
        grow = (f"{_kib(r['lbfgs_growth'])} ({_kib(r['lbfgs_growth_predicted'])})" if "lbfgs_growth" in r else "-")
        L.append(f"| {r['hidden']} | {r['n']} | {_kib(r['hessian_bytes'])} | {_kib(r['pairs_5'])} / "
                 f"{_kib(r['pairs_20'])} | " + " | ".join(_kib(r["peak"].get(o)) for o in options["memory"])
                 + f" | {grow} |")
    sv = v["saddle"]
    L += ["", f"### Claim: {sv['claim']}: **{sv['verdict']}**", "", f"Criterion: {sv['criterion']}.", "",
          "| data set | \\|g\\| there | E there | inertia -/0/+ | " + " | ".join(f"`{o}`" for o in options["saddle"]) + " |",
          "| --- | ---: | ---: | --- | " + " | ".join("---" for _ in options["saddle"]) + " |"]
    for d, s in sv["saddles"].items():
        cells = []
        for o in options["saddle"]:
            r = next((x for x in sv["rows"] if x["dataset"] == d and x["optimizer"] == o), None)
            cells.append("-" if r is None else f"{r['escaped']}/{r['starts']}: {_med(r['iterations'])}")
        L.append(f"| {d} | {_num(s['grad_norm'], '.1e')} | {_num(s['error'], '.4g')} | "
                 f"{'/'.join(map(str, s['inertia']))} | " + " | ".join(cells) + " |")
    L += ["", "Cells: starts that left / starts, then the iterations to leave: median [95 % interval]."]
    return "\n".join(L)


def _cov(summary: dict[str, Any]) -> float:
    for rows in summary["table"].values():
        for c in rows.values():
            return float(c["epochs"]["coverage"])
    return math.nan


def _kib(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    return f"{v / 1024:.1f} KiB" if v < 1024**2 else f"{v / 1024**2:.1f} MiB"


def plots(records: list[dict[str, Any]], options: dict[str, Any], directory: Any) -> list[Any]:
    """One PNG per data set: E against epochs, the median over the starts and its 95 % band, per optimiser."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for d in options["datasets"]:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for o in options["speed"]:
            rr = [r for r in records if r["experiment"] == "speed" and r["dataset"] == d and r["optimizer"] == o]
            if not rr:
                continue
            cap = options["max_epochs_second"] if o in SECOND_ORDER else options["max_epochs"]
            grid = np.array(trace_grid(cap), dtype=np.float64)
            T = np.array([r["trace"] for r in rr], dtype=np.float64)
            j, k, _ = _order_ranks(T.shape[0])
            S = np.sort(T, axis=0)
            med = np.median(T, axis=0)
            x = np.maximum(grid, 0.5)  # epoch 0 drawn at 1/2 on the log axis
            (line,) = ax.plot(x, med, lw=1.3, label=o)
            ax.fill_between(x, S[j - 1], S[k - 1], color=line.get_color(), alpha=0.15, lw=0)
        ax.axhline(DATASETS[d].target_error, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("epochs (iterations; epoch 0 at 1/2)")
        ax.set_ylabel("E")
        ax.set_title(f"{d}: median of {len(rr)} starts and its 95 % band; dashed: the target")
        ax.legend(fontsize=7, ncol=3)
        fig.tight_layout()
        path = out_dir / f"claims-{d}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
