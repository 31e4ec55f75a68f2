"""How large a network each symbolic approach differentiates within a time budget.

Approaches, each timed from nothing (building the SymPy expressions) to the
evaluated ``(W, W)`` Hessian at the network's point:

* ``naive``: the whole error ``E(w) = sum_n e(w; x_n, t_n)`` with the data
  substituted, ``sympy.hessian(E, w)``, then ``lambdify(cse=True)``;
* ``structured-f64``: :mod:`hessverify.symbolic` -- the straight-line program
  of named per-layer quantities and the block formula per pair of layers,
  evaluated in float64 (``lambdify`` with ``cse``), all patterns at once;
* ``structured-mp``: the 50-digit reference as ``verify`` runs it
  (``hessian_with_error``): the same closed form evaluated in :mod:`decimal`
  at 50 digits, pattern by pattern, the sums over patterns exact on float64
  BLAS (:mod:`hessverify.symbolic.assembly`), the float64 value and its
  error bound (the magnitude Hessian included).

The networks are one family, ``4-h-h-1`` tanh with sse over ``N`` seeded
patterns (W = h^2 + 7h + 1), for growing ``h``.  Each attempt runs in a child
process that is killed at the budget; an approach stops at its first
attempt that does not finish.  The table gives each time and, per row, the
ratio to ``structured-f64`` measured in the same run.  Timings depend on the
machine and its load: this prints, it never gates anything.

``--graph`` runs the same family with skip connections (layer 2 also reads
the inputs, the output also reads layer 1), so the two tables show whether
the derivation scales on graphs as it does on chains.

``--conv`` runs a family of convolutional networks instead: input ``[2, 16]``,
``conv1d(c, k3, tanh) - conv1d(c, k3, tanh) - avg_pool1d(2) - flatten - 1``
(W = 3c^2 + 14c + 1, ``h`` is ``c``), with the approaches of other layer
kinds: ``kinds-50`` (:mod:`hessverify.symbolic.kinds`, the program of the
kinds' array forms, 50 digits, with its error bound: what ``verify`` uses) and
``autograd`` (float64, the peer the ratios are taken against).

Usage::

    python benchmarks/symbolic_scaling.py --budget 60 --patterns 32
    python benchmarks/symbolic_scaling.py --budget 60 --patterns 32 --graph
    python benchmarks/symbolic_scaling.py --budget 60 --patterns 8 --conv
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from typing import Any

import numpy as np

WIDTHS = (1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 32, 40, 44, 48, 56, 64)
CONV_WIDTHS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12)


def make_problem(h: int, patterns: int) -> Any:
    from hessverify.io.cases import seeded_data, seeded_params
    from hessverify.model.network import Architecture, Layer
    from hessverify.model.problem import Problem

    if CONV:
        arch = Architecture(32, (Layer(kind="conv1d", options={"channels": h, "kernel": 3}, activation="tanh"),
                                 Layer(kind="conv1d", options={"channels": h, "kernel": 3}, activation="tanh"),
                                 Layer(kind="avg_pool1d", options={"kernel": 2}), Layer(kind="flatten"),
                                 Layer(1, "identity")), input_shape=(2, 16))
        x, t = seeded_data(arch, "sse", seed=1, patterns=patterns)
        return Problem(arch, "sse", seeded_params(arch, seed=1, scale=0.5), x, t, id=f"conv-{h}")
    if GRAPH:  # skip connections: layer 2 also reads the inputs, the output also reads layer 1
        arch = Architecture(4, (Layer(h, "tanh"), Layer(h, "tanh", sources=(1, 0)),
                                Layer(1, "identity", sources=(2, 1))))
    else:
        arch = Architecture(4, (Layer(h, "tanh"), Layer(h, "tanh"), Layer(1, "identity")))
    x, t = seeded_data(arch, "sse", seed=1, patterns=patterns)
    return Problem(arch, "sse", seeded_params(arch, seed=1, scale=0.5), x, t, id=f"4-{h}-{h}-1")


GRAPH = False
"""``--graph``: the same family with skip connections (set before the children are forked)."""
CONV = False
"""``--conv``: the convolutional family (set before the children are forked)."""


def naive(problem: Any) -> np.ndarray:
    import sympy

    from hessverify.symbolic.expressions import NetworkSymbols, explicit_error

    s = NetworkSymbols(problem.architecture)
    e = explicit_error(s, problem.loss)
    data = list(s.x) + list(s.t)
    E = sum((e.xreplace(dict(zip(data, map(sympy.Float, list(x) + list(t)), strict=True)))
             for x, t in zip(problem.inputs, problem.targets, strict=True)), sympy.S.Zero)
    H = sympy.hessian(E, s.params)
    f = sympy.lambdify(s.params, H, modules="numpy", cse=True)
    return np.asarray(f(*problem.params), dtype=np.float64)


def structured_f64(problem: Any) -> np.ndarray:
    from hessverify.symbolic.reference import hessian_float64

    return hessian_float64(problem)


def structured_mp(problem: Any) -> np.ndarray:
    from hessverify.symbolic.reference import hessian_with_error

    return hessian_with_error(problem, digits=50)[0]


def kinds_50(problem: Any) -> np.ndarray:
    from hessverify.symbolic.kinds import hessian_with_error

    return hessian_with_error(problem, 50)[0]


def autograd_f64(problem: Any) -> np.ndarray:
    from hessverify.references.autograd_ref import hessian

    return hessian(problem)


APPROACHES = {"naive": naive, "structured-f64": structured_f64, "structured-mp": structured_mp}
CONV_APPROACHES = {"autograd": autograd_f64, "kinds-50": kinds_50}


def _child(name: str, h: int, patterns: int, queue: Any) -> None:
    from hessverify.methods.backprop import hessian

    problem = make_problem(h, patterns)
    start = time.perf_counter()
    H = {**APPROACHES, **CONV_APPROACHES}[name](problem)
    elapsed = time.perf_counter() - start
    ref = hessian(problem)  # a sanity check that the approach computed the Hessian, outside the timing
    queue.put((elapsed, float(np.max(np.abs(H - ref)) / max(float(np.max(np.abs(ref))), 1e-300))))


def attempt(name: str, h: int, patterns: int, budget: float) -> tuple[float, float] | None:
    """``(seconds, relative difference from backprop)`` or ``None`` if over the budget."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, h, patterns, queue))
    proc.start()
    proc.join(budget * 1.5 + 30)  # the child also runs backprop after its timed part
    if proc.is_alive():
        proc.kill()
        proc.join()
        return None
    if queue.empty():
        return None
    elapsed, rel = queue.get()
    return (elapsed, rel) if elapsed <= budget else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=60.0, help="seconds per attempt (default 60)")
    p.add_argument("--patterns", type=int, default=32, help="patterns N (default 32)")
    p.add_argument("--approach", action="append", choices=list(APPROACHES) + list(CONV_APPROACHES),
                   help="default: all of the family's")
    p.add_argument("--graph", action="store_true",
                   help="skip connections: 4-h-h(from 1, 0)-1(from 2, 1), W = h^2 + 12h + 1")
    p.add_argument("--conv", action="store_true", help="the convolutional family (module text), h channels")
    args = p.parse_args()
    global GRAPH, CONV
    GRAPH, CONV = args.graph, args.conv
    names = args.approach or list(CONV_APPROACHES if CONV else APPROACHES)
    results: dict[str, dict[int, tuple[float, float] | None]] = {n: {} for n in names}
    family = ("2x16-conv1d(h,k3,tanh)-conv1d(h,k3,tanh)-avg_pool1d(2)-flatten-1" if CONV else
              "4-h-h(from=1+0)-1(from=2+1)" if GRAPH else "4-h-h-1")
    import os

    print(f"{family} tanh, sse, N = {args.patterns}, budget {args.budget:g} s per attempt; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'h':>3s} {'W':>5s}  " + "  ".join(f"{n:>22s}" for n in names))
    alive = set(names)
    for h in (CONV_WIDTHS if CONV else WIDTHS):
        W = make_problem(h, 1).n_params
        for n in names:
            if n in alive:
                results[n][h] = attempt(n, h, args.patterns, args.budget)
                if results[n][h] is None:
                    alive.discard(n)
        base = results.get("autograd" if CONV else "structured-f64", {}).get(h)
        cells = []
        for n in names:
            r = results[n].get(h)
            if r is None:
                cells.append(f"{'over budget' if h in results[n] else '-':>22s}")
            else:
                ratio = f" ({r[0] / base[0]:.1f}x)" if base else ""
                cells.append(f"{r[0]:9.2f} s{ratio:>11s}")
        print(f"{h:3d} {W:5d}  " + "  ".join(cells), flush=True)
        if not alive:
            break
    print()
    print(f"largest W within {args.budget:g} s (N = {args.patterns}):")
    for n in names:
        done = [h for h, r in results[n].items() if r is not None]
        best = max(done, default=None)
        W = "none" if best is None else str(make_problem(best, 1).n_params)
        worst_rel = max((r[1] for r in results[n].values() if r is not None), default=float("nan"))
        reached_end = n in alive
        print(f"  {n:16s} W = {W}{' (the largest tried)' if reached_end else ''}; "
              f"largest relative difference from backprop {worst_rel:.1e}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
