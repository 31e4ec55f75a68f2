"""False alarms: correct methods over many random problems must never be flagged.

Run (not part of CI; see docs/trust.md)::

    python -m hessverify.apps.trust.false_alarms --problems 10000 --seed 0 --special-share 0.5

For each problem it computes every exact method in the registry (and
``torch.func.hessian`` of an independent PyTorch implementation, where torch
is installed, twice where the network has gelu: with a stable gelu and with
PyTorch's own ``F.gelu``) and compares each with ``autograd`` and
``complex_step``, and ``complex_step`` with ``autograd``, each side under its
own bound (:func:`hessverify.engine.compare.pair_bound`).  A reference that cannot
serve at a problem (NaN or inf where the network is finite) is counted as
not applicable there, never as an alarm.  It prints the number of failures
(the target is 0 for hessverify's own methods and references) and the
margin: the largest observed error divided by its bound.

Three kinds of problem; problem ``i`` is drawn from
``numpy.random.default_rng([seed, i])`` alone (:func:`problem_at`), so
``hessverify campaign false-alarms`` can spread the study over a cluster and
get the same records (docs/campaigns.md).  Every architecture has 1-3 layers of 1-4 units, 1-4 inputs, 1-6 patterns, every
activation and loss:

* log-uniform (:func:`random_problem`): weights ``10^U(-8, log10 50) *
  U(-1, 1)``, inputs ``10^U(-3, 3) * U(-1, 1)``;
* special values (:func:`special_problem`, a share ``--special-share`` of
  the problems): the values a shrinker goes to and a person writes by hand,
  which the log-uniform draw never produces: exact zeros in weights, biases,
  inputs and targets, whole zero layers, ``+-1``, halves, small integers,
  dead relu units and saturated sigmoid/tanh units, repeated patterns, one
  pattern with the mean;
* saturated outputs (:func:`saturated_problem`, a share ``--saturated-share``,
  default 0): the strategies' saturated draws (issue 24), output layers
  scaled to net inputs of 16 to 48, where logistic and softmax outputs are
  within 1e-7 of 0 or 1.

Half the problems (``--graph-share``) are feed-forward graphs: each layer
reads a random set of earlier layers and the inputs, in a random order
(:func:`rewire`), drawn from a stream of its own.

Points at a relu kink or that overflow are counted apart, never compared.
``--save DIR`` writes each problem with an alarm as a case file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from hessverify.adapters import torch_ref
from hessverify.engine.compare import Comparison, compare, compare_entries, is_not_applicable, pair_bound
from hessverify.engine.point import Point
from hessverify.engine.registry import METHODS, methods_with_role
from hessverify.engine.run import SkipReason, not_applicable_record
from hessverify.engine.verify import not_applicable_reason
from hessverify.errors import NotDifferentiableError, OverflowReport, UsageError
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.losses import LOSSES, valid_targets
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem

__all__ = ["DRAWS", "SPECIAL_VALUES", "Judged", "alarm_lines", "candidate_names", "judge", "print_summary", "problem_at",
           "random_problem", "rewire", "run", "saturated_problem", "save_case", "special_problem", "summarise"]

SPECIAL_VALUES = (0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 0.25, 4.0, -4.0)
"""The values a shrinker produces and people write: zero, units, halves, small integers."""

TORCH = "torch.func.hessian"
TORCH_BUILTIN_GELU = "torch.func.hessian (F.gelu)"


def _architecture(rng: np.random.Generator, no_bias: float) -> Architecture:
    n_in = int(rng.integers(1, 5))
    layers = tuple(Layer(int(rng.integers(1, 5)), str(rng.choice(sorted(ACTIVATIONS))), bool(rng.random() > no_bias))
                   for _ in range(int(rng.integers(1, 4))))
    return Architecture(n_in, layers)


def rewire(arch: Architecture, topology: np.random.Generator) -> Architecture:
    """``arch`` as a feed-forward graph: each layer reads, besides or instead of the previous one, a random
    set of earlier layers and the inputs, in a random order (skip connections, the case schema's ``from``)."""
    layers = []
    for index, layer in enumerate(arch.layers, start=1):
        earlier = [j for j in range(index) if topology.random() < 0.5]
        sources = earlier if earlier else [index - 1]
        layers.append(replace(layer, sources=tuple(int(j) for j in topology.permutation(sources))))
    return Architecture(arch.inputs, tuple(layers))


def random_problem(rng: np.random.Generator, index: int, topology: np.random.Generator | None = None) -> Problem:
    """A log-uniform problem (module text); a feed-forward graph when ``topology`` is given (:func:`rewire`)."""
    n_in = int(rng.integers(1, 5))
    layers = tuple(Layer(int(rng.integers(1, 5)), str(rng.choice(sorted(ACTIVATIONS))), bool(rng.integers(0, 2)))
                   for _ in range(int(rng.integers(1, 4))))
    arch = Architecture(n_in, layers)
    if topology is not None:
        arch = rewire(arch, topology)
    loss = str(rng.choice(sorted(LOSSES)))
    theta = 10.0 ** rng.uniform(-8, np.log10(50)) * rng.uniform(-1, 1, arch.n_params)
    n = int(rng.integers(1, 7))
    x = 10.0 ** rng.uniform(-3, 3) * rng.uniform(-1, 1, (n, n_in))
    t = valid_targets(loss, rng.random((n, arch.outputs)))
    return Problem(arch, loss, theta, x, t, str(rng.choice(["sum", "mean"])), id=f"random-{index}")


def _special(rng: np.random.Generator, shape: tuple[int, ...] | int, p: float) -> np.ndarray:
    """Special values with probability ``p`` each, else a plain draw from U(-2, 2)."""
    plain = rng.uniform(-2.0, 2.0, shape)
    special = rng.choice(np.array(SPECIAL_VALUES), shape)
    return np.where(rng.random(shape) < p, special, plain)


def special_problem(rng: np.random.Generator, index: int, topology: np.random.Generator | None = None) -> Problem:
    """A problem made of special values (module text): the false alarms' own ground; a graph with ``topology``."""
    arch = _architecture(rng, no_bias=0.6)  # no biases more often: what a shrinker leaves
    if topology is not None:
        arch = rewire(arch, topology)
    loss = str(rng.choice(sorted(LOSSES)))
    p = float(rng.choice([0.5, 0.8, 1.0]))
    parts = []
    for index_l, layer in enumerate(arch.layers, start=1):
        fan = arch.fan_in(index_l)
        W = _special(rng, (layer.units, fan), p)
        b = _special(rng, layer.units, p)
        r = rng.random()
        if r < 0.15:  # a whole layer of zeros
            W[:] = 0.0
            b[:] = 0.0
        elif r < 0.25 and layer.activation == "relu":  # dead units: a large negative bias
            b[:] = -float(rng.choice([10.0, 100.0]))
            W[:] = float(rng.choice([0.0, 0.5]))
        elif r < 0.35 and layer.activation in ("sigmoid", "tanh", "softplus", "silu", "gelu"):
            W *= float(rng.choice([10.0, 30.0]))  # saturated units
        parts.append(W.reshape(-1))
        if layer.bias:
            parts.append(b)
    theta = np.concatenate(parts)
    if rng.random() < 0.2:
        n, reduction = 1, "mean"  # one pattern with the mean
    else:
        n, reduction = int(rng.integers(1, 4)), str(rng.choice(["sum", "mean"]))
    x = _special(rng, (n, arch.inputs), p)
    if n > 1 and rng.random() < 0.3:
        x[1:] = x[0]  # repeated patterns
    k = arch.outputs
    if loss == "cross_entropy":
        t = np.zeros((n, k))
        one_hot = rng.random() < 0.5
        for row in range(n):
            if one_hot:
                t[row, int(rng.integers(k))] = 1.0
            else:
                t[row] = 1.0 / k
    elif loss == "binary_cross_entropy":
        t = rng.choice(np.array([0.0, 1.0, 0.5]), (n, k))
    else:
        t = _special(rng, (n, k), max(p, 0.8))
    return Problem(arch, loss, theta, x, t, reduction, id=f"special-{index}")


def saturated_problem(rng: np.random.Generator, index: int, topology: np.random.Generator | None = None) -> Problem:
    """A problem with a saturated output, as the strategies draw them (:func:`hessverify.checking.strategies.saturate`).

    Weights, biases and inputs uniform in ``[-2, 2]`` (the strategies' ranges), then the output layer scaled
    so that its largest net input (for cross-entropy, the widest spread of a pattern's logits) is a level
    drawn uniformly from :data:`hessverify.checking.strategies.SATURATION_LEVELS`.  Where nothing can
    saturate (an identity, relu or sin output under ``sse`` or ``output``) the problem stays as drawn.
    """
    from hessverify.checking.strategies import SATURATION_LEVELS, saturate

    arch = _architecture(rng, no_bias=0.5)
    if topology is not None:
        arch = rewire(arch, topology)
    loss = str(rng.choice(sorted(LOSSES)))
    n = int(rng.integers(1, 5))
    p = Problem(arch, loss, rng.uniform(-2.0, 2.0, arch.n_params), rng.uniform(-2.0, 2.0, (n, arch.inputs)),
                valid_targets(loss, rng.random((n, arch.outputs))), str(rng.choice(["sum", "mean"])),
                id=f"saturated-{index}")
    return saturate(p, float(rng.uniform(*SATURATION_LEVELS)))


DRAWS = ("log-uniform", "special", "saturated")
"""The kinds of problem of the study (module text)."""


def problem_at(seed: int, index: int, special_share: float = 0.5, graph_share: float = 0.5,
               saturated_share: float = 0.0) -> tuple[Problem, str]:
    """Problem number ``index`` of the study with ``seed``, and its kind (one of :data:`DRAWS`).

    Derived from ``(seed, index)`` alone, so a problem is the same whichever
    process draws it, in whatever order (``hessverify campaign false-alarms``
    spreads them over a cluster).  Which kind it is comes from a stream of its
    own, so problem ``index``'s log-uniform draw is the same for every
    ``special_share``; whether it is a graph (a share ``graph_share``) and its
    edges come from a third stream, so ``graph_share = 0`` gives its chain.
    A share ``saturated_share`` (default 0: the study as it was) has a
    saturated output (:func:`saturated_problem`), taken from the log-uniform
    share: with 0, problem ``index`` is what it always was.

    Examples
    --------
    >>> p, draw = problem_at(0, 17)
    >>> p.id == f"{'special' if draw == 'special' else 'random'}-17" and problem_at(0, 17)[0].id == p.id
    True
    """
    if seed < 0 or index < 0:
        raise UsageError(f"seed {seed} and index {index}: both must be at least 0")
    kind = np.random.default_rng([seed, index, 1]).random()
    topology = np.random.default_rng([seed, index, 2])
    graph = topology if topology.random() < graph_share else None
    rng = np.random.default_rng([seed, index])
    if kind < special_share:
        return special_problem(rng, index, graph), "special"
    if kind < special_share + saturated_share:
        return saturated_problem(rng, index, graph), "saturated"
    return random_problem(rng, index, graph), "log-uniform"


@dataclass
class Judged:
    """What the study found on one problem: its records as ``results.json`` holds them.

    ``records``: every comparison (:class:`hessverify.engine.compare.Comparison`) and
    a ``not_applicable`` record for a reference that could not serve there;
    ``not_compared``: the one ``{"case", "reason", "message"}`` record of a
    point at a kink or that overflows (then there are no comparisons).
    """

    index: int
    id: str
    draw: str
    records: list[Comparison] = field(default_factory=list)
    not_compared: list[dict[str, str]] = field(default_factory=list)
    graph: bool = False  # a feed-forward graph with skip connections, not a chain


def candidate_names(use_torch: bool) -> list[str]:
    """Every name the study holds to the references, in the order of its table."""
    return [m.name for m in methods_with_role("method")] + ["complex_step"] + (
        [TORCH, TORCH_BUILTIN_GELU] if use_torch else [])


def judge(seed: int, index: int, *, special_share: float = 0.5, use_torch: bool = False,
          graph_share: float = 0.5, saturated_share: float = 0.0) -> Judged:
    """Problem ``index`` of the study with ``seed`` (:func:`problem_at`), judged: every candidate
    against ``autograd`` and ``complex_step``, each side under its own bound.

    ``use_torch`` needs torch here (a worker without it raises rather than
    quietly judging fewer candidates than the campaign says).
    """
    if use_torch and not torch_ref.available():
        raise UsageError("the false-alarm study was asked to use torch, which is not installed here")
    p, draw = problem_at(seed, index, special_share, graph_share, saturated_share)
    out = Judged(index, p.id, draw, graph=not p.architecture.is_chain)
    point = Point.of(p)
    try:
        point.well_posed()
    except (NotDifferentiableError, OverflowReport) as exc:
        reason = SkipReason.NOT_DIFFERENTIABLE if isinstance(exc, NotDifferentiableError) else SkipReason.OVERFLOW
        out.not_compared.append({"case": p.id, "reason": reason.value, "message": str(exc)})
        return out
    B = point.rounding(2)
    refs: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for ref_name in ("autograd", "complex_step"):
        value, err = METHODS[ref_name].compute_with_error(point)
        why = not_applicable_reason(p, ref_name, value, err)
        if why is not None:
            out.records.append(not_applicable_record(p, ref_name, why, value, err))
            continue
        refs[ref_name] = (value, err)
    exact = [m.name for m in methods_with_role("method")]
    candidates = {name: (METHODS[name].kind, METHODS[name].compute(point), None) for name in exact}
    if "complex_step" in refs:
        candidates["complex_step"] = ("matrix", *refs["complex_step"])
    if use_torch and torch_ref.writes(p):  # a problem PyTorch's table has no row for is not a torch candidate
        candidates[TORCH] = ("matrix", torch_ref.hessian(p), None)
        if any(layer.activation == "gelu" for layer in p.architecture.layers):
            candidates[TORCH_BUILTIN_GELU] = ("matrix", torch_ref.hessian(p, builtin_gelu=True), None)
        else:
            candidates[TORCH_BUILTIN_GELU] = candidates[TORCH]
    for name, (kind, A, own) in candidates.items():
        for ref_name, (R, err) in refs.items():
            if ref_name == name:
                continue
            bound, bound_kind = pair_bound(p, name, ref_name, method_error=own, reference_error=err, rounding=B)
            if kind == "matrix":
                out.records.append(compare(p, name, ref_name, A, R, bound, bound_kind))
            else:
                out.records.append(compare_entries(p, name, ref_name, kind, A, R, bound, bound_kind))
    return out


def _margin(c: Comparison) -> float:
    # a margin read back from results.json is None where it was not finite (strict JSON)
    return float("inf") if c.margin is None else float(c.margin)


def alarm_lines(j: Judged) -> list[str]:
    """One ``FALSE ALARM`` line per failed comparison of a judged problem."""
    lines = []
    for c in j.records:
        if c.passed:
            continue
        w = c.worst_entry
        rel = w.abs_error / abs(w.reference_value) if w.reference_value else float("inf")
        lines.append(f"FALSE ALARM {j.id} ({j.draw}): {c.method} vs {c.reference} at {w.row} x {w.col}: "
                     f"{w.value:.17g} vs {w.reference_value:.17g}, |error| {w.abs_error:.3g} "
                     f"({rel:.3g} relative), bound {w.bound:.3g}")
    return lines


def summarise(judged: Sequence[Judged], use_torch: bool, seconds: float = 0.0) -> dict[str, Any]:
    """The study's summary (the figures of docs/trust.md) from its judged problems."""
    counts: Counter[str] = Counter()
    worst: dict[str, tuple[float, str]] = {}
    failures: Counter[str] = Counter()
    failed_problems: Counter[str] = Counter()
    not_applicable: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for j in judged:
        counts[f"drawn {j.draw}"] += 1
        counts["drawn graphs"] += j.graph
        for s in j.not_compared:
            skipped[s["reason"]] += 1
        if j.not_compared:
            continue
        counts["problems"] += 1
        counts[f"compared {j.draw}"] += 1
        alarmed = False
        for c in j.records:
            if is_not_applicable(c):
                not_applicable[c.reference] += 1
                continue
            counts["comparisons"] += 1
            if _margin(c) > worst.get(c.method, (0.0, ""))[0]:
                worst[c.method] = (_margin(c), f"{j.id} vs {c.reference} at {c.worst_entry.row} x {c.worst_entry.col}")
            if not c.passed:
                failures[c.method] += 1
                if c.method not in (TORCH, TORCH_BUILTIN_GELU):
                    counts["failures"] += 1
                alarmed = True
        if alarmed:
            failed_problems[j.draw] += 1
    return {"problems_drawn": len(judged), "drawn_special": counts["drawn special"],
            "drawn_graphs": counts["drawn graphs"],
            "drawn_log_uniform": counts["drawn log-uniform"], "drawn_saturated": counts["drawn saturated"],
            "compared": counts["problems"],
            "compared_special": counts["compared special"], "comparisons": counts["comparisons"],
            "failures": counts["failures"], "problems_with_an_alarm": dict(failed_problems),
            "not_differentiable": skipped[SkipReason.NOT_DIFFERENTIABLE.value],
            "overflow": skipped[SkipReason.OVERFLOW.value],
            "reference_not_applicable": dict(not_applicable), "seconds": round(seconds, 1),
            "per_method": {name: {"failures": failures[name], "largest_margin": worst.get(name, (0.0, ""))[0],
                                  "at": worst.get(name, (0.0, ""))[1]} for name in candidate_names(use_torch)}}


def print_summary(summary: dict[str, Any], out: TextIO) -> None:
    """The summary's figures, then the per-method table of docs/trust.md."""
    for k, v in summary.items():
        if k != "per_method":
            print(f"{k:26s} {v}", file=out)
    print("\n| method | false alarms | largest error / bound |", file=out)
    print("| --- | --- | --- |", file=out)
    for name, row in summary["per_method"].items():
        print(f"| {name} | {row['failures']} | {row['largest_margin']:.3g} |", file=out)


def save_case(j: Judged, seed: int, special_share: float, save: Path, graph_share: float = 0.5,
              saturated_share: float = 0.0) -> None:
    """Write the problem of a judged problem with an alarm as a case file into ``save``."""
    p, _ = problem_at(seed, j.index, special_share, graph_share, saturated_share)
    save.mkdir(parents=True, exist_ok=True)
    (save / f"{p.id}.toml").write_text(p.to_toml(), encoding="utf-8")


def run(problems: int, seed: int, use_torch: bool = True, out: TextIO = sys.stdout,
        special_share: float = 0.5, save: Path | None = None, graph_share: float = 0.5,
        saturated_share: float = 0.0) -> dict[str, Any]:
    """The study in this process: :func:`judge` on problems ``0 .. problems - 1``, then :func:`summarise`.

    ``hessverify campaign false-alarms`` runs the same :func:`judge` on a
    Dask cluster and gets the same records.
    """
    with_torch = use_torch and torch_ref.available()
    start = time.perf_counter()
    judged = []
    for i in range(problems):
        j = judge(seed, i, special_share=special_share, use_torch=with_torch, graph_share=graph_share,
                  saturated_share=saturated_share)
        for line in alarm_lines(j):
            print(line, file=out)
        if save is not None and any(not c.passed for c in j.records):
            save_case(j, seed, special_share, save, graph_share, saturated_share)
        judged.append(j)
    summary = summarise(judged, with_torch, time.perf_counter() - start)
    print_summary(summary, out)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--special-share", type=float, default=0.5, metavar="F",
                    help="share of the problems drawn from special values (default 0.5)")
    ap.add_argument("--graph-share", type=float, default=0.5, metavar="F",
                    help="share of the problems drawn as feed-forward graphs with skip connections (default 0.5)")
    ap.add_argument("--saturated-share", type=float, default=0.0, metavar="F",
                    help="share of the problems drawn with a saturated output, as the strategies draw them "
                         "(default 0; with --special-share, at most 1 together)")
    ap.add_argument("--save", type=Path, default=None, metavar="DIR",
                    help="write every problem with an alarm as a case file into DIR")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    if args.seed < 0 or args.problems < 0:
        ap.error("--seed and --problems must be at least 0")
    if not 0.0 <= args.special_share <= 1.0:
        ap.error(f"--special-share {args.special_share}: must be between 0 and 1")
    if not 0.0 <= args.graph_share <= 1.0:
        ap.error(f"--graph-share {args.graph_share}: must be between 0 and 1")
    if not (0.0 <= args.saturated_share and args.special_share + args.saturated_share <= 1.0):
        ap.error(f"--saturated-share {args.saturated_share}: at least 0, and at most 1 with --special-share")
    summary = run(args.problems, args.seed, not args.no_torch, special_share=args.special_share, save=args.save,
                  graph_share=args.graph_share, saturated_share=args.saturated_share)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
