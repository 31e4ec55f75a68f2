"""The symbolic reference's time estimate against its measured time, over shapes of network.

Each shape runs ``hessian_with_error`` (the 50-digit reference, as ``verify``
and ``hessverify hessian --method symbolic`` run it) in a fresh child
process, from building the closed form to the float64 value and its bound,
and prints the seconds measured beside :func:`hessverify.engine.budget.estimated_cost`.
``--fit`` also fits the four coefficients of the model
(:data:`hessverify.engine.budget.SYMBOLIC_SECONDS`: build, evaluate, sum,
fixed) to the measurements, by non-negative least squares on the
relative error, and prints them with each shape's ratio under the fit.

The shapes are chains and graphs of several depths and widths, two loss
kinds and N from 8 to 128 (W from about 100 to 2600).  Timings depend on the
machine and its load (printed first): this prints, it never gates anything;
the table recorded in ``tests/engine/test_budget.py`` is two such runs.

Usage::

    python benchmarks/symbolic_calibration.py           # measured beside estimated
    python benchmarks/symbolic_calibration.py --fit     # and a fit of the model
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from typing import Any

import numpy as np

SHAPES: list[tuple[str, tuple[int, ...], str, str, int, bool]] = [
    # (name, units, activation, loss, N, graph)
    ("4-8-8-1", (4, 8, 8, 1), "tanh", "sse", 32, False),
    ("4-16-16-1", (4, 16, 16, 1), "tanh", "sse", 32, False),
    ("4-16-16-1 N=128", (4, 16, 16, 1), "tanh", "sse", 128, False),
    ("4-24-24-1", (4, 24, 24, 1), "tanh", "sse", 32, False),
    ("4-32-32-1", (4, 32, 32, 1), "tanh", "sse", 32, False),
    ("4-32-32-1 N=8", (4, 32, 32, 1), "tanh", "sse", 8, False),
    ("8-12-12-12-12-3 softmax", (8, 12, 12, 12, 12, 3), "sigmoid", "cross_entropy", 32, False),
    ("4-16-16(from 1,0)-1(from 2,1)", (4, 16, 16, 1), "tanh", "sse", 32, True),
    ("10-40-5 softmax", (10, 40, 5), "gelu", "cross_entropy", 64, False),
    ("4-48-48-1", (4, 48, 48, 1), "tanh", "sse", 32, False),
]


def make_problem(units: tuple[int, ...], act: str, loss: str, n: int, graph: bool) -> Any:
    from hessverify.io.cases import seeded_data, seeded_params
    from hessverify.model.network import Architecture, Layer
    from hessverify.model.problem import Problem

    layers = [Layer(u, act) for u in units[1:-1]] + [Layer(units[-1], "identity")]
    if graph:  # skip connections: layer 2 also reads the inputs, the output also reads layer 1
        layers[1] = Layer(units[2], act, sources=(1, 0))
        layers[2] = Layer(units[3], "identity", sources=(2, 1))
    arch = Architecture(units[0], tuple(layers))
    x, t = seeded_data(arch, loss, seed=1, patterns=n)
    return Problem(arch, loss, seeded_params(arch, seed=1, scale=0.5), x, t, id="calibration")


def _child(shape: tuple[Any, ...], queue: Any) -> None:
    from hessverify.symbolic.reference import hessian_with_error

    problem = make_problem(*shape[1:])
    start = time.perf_counter()
    hessian_with_error(problem)
    queue.put(time.perf_counter() - start)


def measure(shape: tuple[Any, ...]) -> float:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(shape, queue))
    proc.start()
    proc.join()
    return float(queue.get())


def _features(problem: Any) -> np.ndarray:
    from hessverify.engine.budget import _program_size

    P, W, N = _program_size(problem), problem.n_params, problem.n_patterns
    return np.array([P, N * P, N * W * W, 1.0])


def main() -> None:
    from hessverify.engine.budget import estimated_cost

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fit", action="store_true", help="fit the model's coefficients to this run")
    args = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} cores")
    print(f"{'shape':32s} {'W':>5s} {'N':>4s} {'measured':>9s} {'estimated':>10s} {'ratio':>6s}")
    rows = []
    for shape in SHAPES:
        problem = make_problem(*shape[1:])
        seconds = measure(shape)
        est = estimated_cost(problem)
        rows.append((shape, problem, seconds))
        print(f"{shape[0]:32s} {problem.n_params:5d} {problem.n_patterns:4d} {seconds:8.2f}s {est:9.2f}s "
              f"{est / seconds:6.2f}", flush=True)
    if args.fit:
        from scipy.optimize import nnls

        X = np.array([_features(pr) / s for _, pr, s in rows])  # relative error: each row divided by its time
        coef, _ = nnls(X, np.ones(len(rows)))
        print("fit (build, evaluate, sum, fixed):", ", ".join(f"{c:.3g}" for c in coef))
        for shape, pr, s in rows:
            print(f"  {shape[0]:32s} ratio under the fit {float(_features(pr) @ coef) / s:.2f}")


if __name__ == "__main__":
    main()
