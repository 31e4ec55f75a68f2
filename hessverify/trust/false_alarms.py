"""False alarms: correct methods over many random problems must never be flagged.

Run (not part of CI; see docs/trust.md)::

    python -m hessverify.trust.false_alarms --problems 10000 --seed 0

For each problem it computes every exact method in the registry (and
``torch.func.hessian`` of an independent PyTorch implementation, where torch
is installed) and compares each with ``autograd`` and ``complex_step`` under
the derived bounds.  It prints the number of failures (the target is 0) and
the margin: the largest observed error divided by its bound.

The random problems: 1-3 layers of 1-4 units, 1-4 inputs, 1-6 patterns,
every activation and loss, weights ``10^U(-8, log10 50) * U(-1, 1)``, inputs
``10^U(-3, 3) * U(-1, 1)``, drawn from ``numpy.random.default_rng(seed)``.
Points at a relu kink or that overflow are counted apart, never compared.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import numpy as np

from hessverify.bounds import rounding_bound
from hessverify.compare import compare, compare_entries
from hessverify.errors import NotDifferentiableError, OverflowReport
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.losses import LOSSES, valid_targets
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.model.well_posed import ensure_well_posed
from hessverify.references import torch_ref
from hessverify.registry import METHODS, methods_with_role

__all__ = ["random_problem", "run"]


def random_problem(rng: np.random.Generator, index: int) -> Problem:
    n_in = int(rng.integers(1, 5))
    layers = tuple(Layer(int(rng.integers(1, 5)), str(rng.choice(sorted(ACTIVATIONS))), bool(rng.integers(0, 2)))
                   for _ in range(int(rng.integers(1, 4))))
    arch = Architecture(n_in, layers)
    loss = str(rng.choice(sorted(LOSSES)))
    theta = 10.0 ** rng.uniform(-8, np.log10(50)) * rng.uniform(-1, 1, arch.n_params)
    n = int(rng.integers(1, 7))
    x = 10.0 ** rng.uniform(-3, 3) * rng.uniform(-1, 1, (n, n_in))
    t = valid_targets(loss, rng.random((n, arch.outputs)))
    return Problem(arch, loss, theta, x, t, str(rng.choice(["sum", "mean"])), id=f"random-{index}")


def run(problems: int, seed: int, use_torch: bool = True, out=sys.stdout) -> dict:  # type: ignore[no-untyped-def, type-arg]
    rng = np.random.default_rng(seed)
    exact = [m.name for m in methods_with_role("method")]
    with_torch = use_torch and torch_ref.available()
    candidates_names = exact + (["torch.func.hessian"] if with_torch else [])
    counts: Counter[str] = Counter()
    worst: dict[str, tuple[float, str]] = {}
    failures: Counter[str] = Counter()
    start = time.perf_counter()
    for i in range(problems):
        p = random_problem(rng, i)
        try:
            ensure_well_posed(p)
        except NotDifferentiableError:
            counts["not_differentiable"] += 1
            continue
        except OverflowReport:
            counts["overflow"] += 1
            continue
        B = rounding_bound(p)
        refs = {"autograd": METHODS["autograd"].fn(p), "complex_step": METHODS["complex_step"].fn(p)}
        candidates = {name: (METHODS[name].kind, METHODS[name].fn(p)) for name in exact}
        if with_torch:
            candidates["torch.func.hessian"] = ("matrix", torch_ref.hessian(p))
        counts["problems"] += 1
        for name, (kind, A) in candidates.items():
            for ref_name, R in refs.items():
                if kind == "matrix":
                    c = compare(p, name, ref_name, A, R, B, "rounding")
                else:
                    c = compare_entries(p, name, ref_name, kind, A, R, B, "rounding")
                counts["comparisons"] += 1
                if c.margin > worst.get(name, (0.0, ""))[0]:
                    worst[name] = (c.margin, f"{p!r} vs {ref_name} at {c.worst_entry.row} x {c.worst_entry.col}")
                if not c.passed:
                    counts["failures"] += 1
                    failures[name] += 1
                    print(f"FALSE ALARM {p!r}: {name} vs {ref_name}: {c.worst_entry}", file=out)
    elapsed = time.perf_counter() - start
    summary = {"problems_drawn": problems, "compared": counts["problems"], "comparisons": counts["comparisons"],
               "failures": counts["failures"], "not_differentiable": counts["not_differentiable"],
               "overflow": counts["overflow"], "seconds": round(elapsed, 1),
               "per_method": {name: {"failures": failures[name], "largest_margin": worst.get(name, (0.0, ""))[0],
                                     "at": worst.get(name, (0.0, ""))[1]} for name in candidates_names}}
    for k, v in summary.items():
        if k != "per_method":
            print(f"{k:20s} {v}", file=out)
    print("\n| method | false alarms | largest error / bound |", file=out)
    print("| --- | --- | --- |", file=out)
    for name, row in summary["per_method"].items():
        print(f"| {name} | {row['failures']} | {row['largest_margin']:.3g} |", file=out)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    summary = run(args.problems, args.seed, not args.no_torch)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
