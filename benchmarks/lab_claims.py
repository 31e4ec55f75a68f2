"""The claims about second-order backpropagation, measured: the tables of docs/lab.md.

Run from the repository root (a benchmark, not a test; it gates nothing):

    .venv/bin/python benchmarks/lab_claims.py                   # every table, 10-20 minutes on 2 cores
    .venv/bin/python benchmarks/lab_claims.py --quick           # the three smallest cases only
    .venv/bin/python benchmarks/lab_claims.py --json runs.json  # also every run, with its log

It prints Markdown: the tables docs/lab.md quotes.  ``--threads`` (default 1)
limits OpenBLAS/OpenMP before NumPy is imported, so that on a shared machine
no optimiser waits for a second BLAS thread; the load average is printed
with the tables (seconds on a loaded machine are noisy; iterations are not).

Claims and what is measured (``hessverify.apps.lab``):

1. iterations and seconds to ``|g| < 1e-8`` for every optimiser, on cases
   from 2 to 2128 weights (``--max-iter`` and ``--time-limit`` per run; a run
   that stops short says so);
2. the ratio of gradient-descent iterations (fixed step ``1/lambda_max``) to
   Newton iterations (damped: ``lm``) against ``n``, with the condition number
   ``kappa = lambda_max / lambda_min`` of the Hessian at the minimum ``lm``
   found: fixed-step gradient descent needs about ``kappa ln(|g_0| / tol)``
   iterations near a minimum (Nocedal & Wright, thm. 3.4), Newton a handful;
3. saddle escape: iterations to move ``0.1`` away from a genuine saddle
   (``|g| < 1e-12``), starting ``1e-6`` off it in a seeded random direction;
4. memory: ``8 n^2`` bytes for a dense Hessian against ``8 (2 m n)`` for
   L-BFGS's ``m`` pairs, predicted and measured (``tracemalloc`` peak).
"""

# ruff: noqa: E402 - the thread limits must be in the environment before NumPy is imported

from __future__ import annotations

import argparse
import os
import sys


def _threads_first() -> None:
    n = "1"
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            n = sys.argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = n


_threads_first()

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

import hessverify
from hessverify import lab
from hessverify.io.cases import seeded_data, seeded_params
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = ["gd", "gd-ls", "momentum", "adam", "newton", "lm", "sfn", "gauss-newton", "cg", "bfgs", "lbfgs-5",
              "lbfgs-20"]
TOL = 1e-8
FLAT = 1e-8  # an eigenvalue below FLAT * lambda_max counts as a flat direction in the kappa table


def generated(name: str, sizes: tuple[int, ...], patterns: int, seed: int) -> Problem:
    """A tanh network with an identity output, sse with the mean reduction, seeded data and point."""
    layers = tuple(Layer(u, "tanh") for u in sizes[1:-1]) + (Layer(sizes[-1], "identity"),)
    arch = Architecture(sizes[0], layers)
    x, t = seeded_data(arch, "sse", seed, patterns)
    return Problem(arch, "sse", seeded_params(arch, seed, 0.3), x, t, reduction="mean", id=name,
                   description=f"generated: {'-'.join(map(str, sizes))}, {patterns} patterns, seed {seed}")


def cases(quick: bool) -> list[Problem]:
    out = [hessverify.load_case(ROOT / "cases" / f"{c}.toml")
           for c in ("single-neuron-tanh", "xor-2-2-1-sigmoid-soft", "xor-2-2-1-sigmoid")]
    if quick:
        return out
    out += [generated("gen-3-6-1", (3, 6, 1), 40, 1), hessverify.load_case(ROOT / "cases" / "tanh-6-12-8-2.toml"),
            generated("gen-8-40-4", (8, 40, 4), 200, 2), generated("gen-16-64-16", (16, 64, 16), 256, 3)]
    return out


def zero_saddle(p: Problem) -> Problem:
    """Every weight and hidden bias zero, the output bias at its optimum: a saddle of a tanh net with sse.

    Hidden outputs tanh(0) are zero, so E depends on the output bias b alone; for an identity
    output the optimum is b = mean(targets), for tanh it is atanh(mean(targets)).
    """
    theta = np.zeros(p.n_params)
    last = p.architecture.blocks[-1]
    mean = p.targets.mean(axis=0)
    b = mean if p.architecture.layers[-1].activation == "identity" else np.arctanh(mean)
    theta[last.b_slice] = b
    return replace(p.with_params(theta), id=p.id + "-zero-saddle")


def fmt_run(r: lab.Run) -> str:
    if r.converged:
        return f"{r.iterations} / {r.seconds:.2g} s"
    return f"no ({r.reason} at {r.iterations}, \\|g\\| {r.final_grad_norm:.0e})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--only", choices=("iterations", "saddles", "memory"), default=None,
                    help="one table only (default: all)")
    ap.add_argument("--max-iter", type=int, default=20000, help="first-order runs (default 20000)")
    ap.add_argument("--max-iter-2nd", type=int, default=300,
                    help="runs that form and factorise a matrix each iteration: newton, lm, sfn, gauss-newton (default 300)")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per run (default 60)")
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores; "
          f"BLAS threads {args.threads}; tol {TOL:g}\n")
    every: list[dict] = []
    todo = cases(args.quick)

    if args.only in (None, "iterations"):
        iterations_tables(todo, args, every)
    if args.only in (None, "saddles"):
        saddle_table(todo, args, every)
    if args.only in (None, "memory"):
        memory_table(todo)
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(every, default=lambda v: None))
    return 0


def iterations_tables(todo: list[Problem], args: argparse.Namespace, every: list[dict]) -> None:
    """Claims 1 and 2: iterations and seconds for every optimiser; gd against lm, with kappa."""
    print("| case | n | " + " | ".join(OPTIMIZERS) + " |")
    print("| --- | ---: | " + " | ".join("---" for _ in OPTIMIZERS) + " |")
    ratio_rows = []
    for p in todo:
        runs = {}
        for name in OPTIMIZERS:
            second = lab.get_optimizer(name)[0].forms_hessian or name == "gauss-newton"  # a matrix per iteration
            r = lab.run(p, name, tol=TOL, max_iter=args.max_iter_2nd if second else args.max_iter,
                        time_limit=args.time_limit)
            runs[name] = r
            every.append(r.to_dict(log=bool(args.json)))
        print(f"| `{p.id}` | {p.n_params} | " + " | ".join(fmt_run(runs[n]) for n in OPTIMIZERS) + " |", flush=True)
        # kappa at lm's end point, where lm converged
        # kappa over the eigenvalues above FLAT * lambda_max; those below are the flat directions of a valley
        kappa, E_end = float("nan"), runs["lm"].final_error
        if runs["lm"].converged:
            ev = lab.spectrum(lab.hessian_at(p, runs["lm"].final_params))
            top = float(np.abs(ev).max())
            big = ev[ev > FLAT * top]
            kappa = float(big.max() / big.min()) if big.size else float("nan")
            kind = f"{int(np.sum(ev < -FLAT * top))}/{int(np.sum(np.abs(ev) <= FLAT * top))}/{big.size}"
            E_end = runs["lm"].final_error
            kind += f", E {E_end:.2g}, \\|θ\\| {np.linalg.norm(runs['lm'].final_params):.3g}"
        else:
            kind = "-"
        g0 = runs["gd"].log[0].grad_norm
        ratio_rows.append((p, runs["gd"], runs["lm"], runs["newton"], kappa, kind, g0, runs["gd-ls"]))

    print("\n| case | n | gd iterations | gd-ls iterations | lm iterations | gd / lm | newton iterations | "
          "lm's end: eigenvalues -/flat/+ , E, \\|θ\\| | kappa (non-flat) | kappa ln(g0/tol) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for p, gd, lm_, nt, kappa, kind, g0, gdls in ratio_rows:
        gd_it = f"{gd.iterations}" if gd.converged else f"> {gd.iterations} ({gd.reason})"
        lm_it = f"{lm_.iterations}" if lm_.converged else f"> {lm_.iterations} ({lm_.reason})"
        ratio = f"{gd.iterations / max(lm_.iterations, 1):.0f}" if gd.converged and lm_.converged else (
            f"> {gd.iterations / max(lm_.iterations, 1):.0f}" if lm_.converged else "-")
        nt_it = f"{nt.iterations} (E {nt.final_error:.3g})" if nt.converged else f"> {nt.iterations} ({nt.reason})"
        pred = f"{kappa * math.log(g0 / TOL):.3g}" if math.isfinite(kappa) and g0 > TOL else "-"
        ls_it = f"{gdls.iterations}" if gdls.converged else f"> {gdls.iterations} ({gdls.reason})"
        print(f"| `{p.id}` | {p.n_params} | {gd_it} | {ls_it} | {lm_it} | {ratio} | {nt_it} | {kind} | {kappa:.3g} | {pred} |")



def saddle_table(todo: list[Problem], args: argparse.Namespace, every: list[dict]) -> None:
    """Claim 3: iterations to move 0.1 away from a genuine saddle, starting 1e-6 off it."""
    saddles = [hessverify.load_case(ROOT / "cases" / "saddle-2-3-1-tanh-zero.toml")]
    if not args.quick:
        saddles += [zero_saddle(p) for p in todo if p.id in ("gen-3-6-1", "gen-8-40-4")]
    escapers = ["gd", "gd-ls", "momentum", "adam", "newton", "lm", "sfn", "bfgs", "lbfgs-20"]
    print("\n| saddle | n | \\|g\\| there | inertia (-/0/+) | " + " | ".join(escapers) + " |")
    print("| --- | ---: | ---: | --- | " + " | ".join("---:" for _ in escapers) + " |")
    for s in saddles:
        g = float(np.linalg.norm(hessverify.gradient(s)))
        i = lab.inertia(lab.hessian_at(s))
        d = np.random.default_rng(0).standard_normal(s.n_params)
        start = s.params + 1e-6 * d / np.linalg.norm(d)
        cells = []
        for name in escapers:
            r = lab.run(s, name, params=start, tol=1e-30, max_iter=5000, escape_radius=0.1, stop_on_escape=True,
                        time_limit=args.time_limit)
            every.append(r.to_dict(log=bool(args.json)) | {"experiment": "saddle-escape"})
            if r.left_at is not None:
                cells.append(f"{r.left_at} (E {r.final_error - hessverify.error(s):+.2g})")
            else:
                cells.append(f"stays ({r.reason} at {r.iterations})")
        print(f"| `{s.id}` | {s.n_params} | {g:.1e} | {i.negative}/{i.zero}/{i.positive} | " + " | ".join(cells) + " |",
              flush=True)



def memory_table(todo: list[Problem]) -> None:
    """Claim 4: 8 n^2 against 8 (2 m n), predicted and measured (tracemalloc peak, bytes)."""
    print("\n| case | n | 8 n^2 (Hessian) | 8 (2 m n), m = 5 / 20 | peak lm | peak bfgs | peak lbfgs-5 | "
          "peak lbfgs-20 | peak gd |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for p in todo:
        n = p.n_params
        peaks = {}
        for name in ("lm", "bfgs", "lbfgs-5", "lbfgs-20", "gd"):
            # lm, bfgs, gd: their state is complete after 3 iterations; L-BFGS needs m + 2 to hold m pairs
            its = lab.get_optimizer(name)[1] + 2 if name.startswith("lbfgs") else 3
            r = lab.run(p, name, tol=1e-30, max_iter=its)
            peaks[name] = r.peak_memory
        print(f"| `{p.id}` | {n} | {_b(8 * n * n)} | {_b(80 * n)} / {_b(320 * n)} | "
              + " | ".join(_b(peaks[k]) for k in ("lm", "bfgs", "lbfgs-5", "lbfgs-20", "gd")) + " |", flush=True)


def _b(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


if __name__ == "__main__":
    raise SystemExit(main())
