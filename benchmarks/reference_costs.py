"""Seconds and peak memory of the difference references (fd, richardson) against their declared cost models.

Each size runs in a fresh process (``multiprocessing``, spawn) so that its
peak resident memory is its own; the table prints the measured seconds and
peak RSS growth beside :class:`hessverify.engine.components.Cost`'s figures
and their ratios (estimate / measured).  The cost models are meant to stay
within 3x of measurement and on the safe side in memory.

    .venv/bin/python benchmarks/reference_costs.py                 # the default grid
    .venv/bin/python benchmarks/reference_costs.py --sizes 40-20-2:5000 10-30-30-3:64
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time

DEFAULT = ["4-8-8-1:32", "6-12-8-2:64", "10-30-30-3:64", "20-40-20-2:256", "40-20-2:5000", "30-60-40-4:128"]


def _measure(name: str, spec: str, out: mp.Queue) -> None:
    import numpy as np

    from hessverify.engine.point import Point
    from hessverify.engine.registry import get_method
    from hessverify.io.cases import seeded_data, seeded_params
    from hessverify.model.network import Architecture, Layer
    from hessverify.model.problem import Problem

    sizes, n = spec.split(":")
    units = [int(u) for u in sizes.split("-")]
    arch = Architecture(units[0], tuple([Layer(u, "tanh") for u in units[1:-1]] + [Layer(units[-1], "identity")]))
    x, t = seeded_data(arch, "sse", 0, int(n))
    problem = Problem(arch, "sse", seeded_params(arch, 0, 0.5), x, t, id=spec)
    point = Point.of(problem, "float64")
    point.magnitude_gradient, point.magnitude_hessian  # noqa: B018  (the point's own work, not the reference's)
    component = get_method(name)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    component.compute_with_error(point)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    cost = component.cost
    out.put((problem.n_params, int(n), seconds, cost.seconds_for(problem), max(peak, 0), cost.peak_bytes(problem),
             float(np.log10(max(seconds, 1e-9)))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", default=DEFAULT, metavar="UNITS:N")
    ap.add_argument("--methods", nargs="*", default=["fd", "richardson"])
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("| method | network | W | N | seconds | estimate | est / measured | peak MB | estimate MB | est / peak |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.methods:
        for spec in args.sizes:
            q: mp.Queue = ctx.Queue()
            p = ctx.Process(target=_measure, args=(name, spec, q))
            p.start()
            W, n, s, est, peak, est_mem, _ = q.get()
            p.join()
            print(f"| {name} | {spec.split(':')[0]} | {W} | {n} | {s:.3f} | {est:.3f} | {est / s:.2f} | "
                  f"{peak / 1e6:.1f} | {est_mem / 1e6:.1f} | {est_mem / max(peak, 1):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
