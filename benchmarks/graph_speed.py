"""Speed of ``backprop`` on a feed-forward graph against a chain with the same W and N (issue 14).

Run from the repository root (a benchmark, not a test; it gates nothing)::

    .venv/bin/python benchmarks/graph_speed.py                 # the default pair, N = 256
    .venv/bin/python benchmarks/graph_speed.py --patterns 64 --repeats 5 --threads 1

The graph is a residual-and-dense MLP: ``16 inputs``, four tanh layers of 32
units where layer 3 reads ``[2, 1]``, layer 4 reads ``[3, 2]`` and the
identity output layer of 4 units reads ``[4, 0]`` (the inputs too).  The
chain has the same depth and the same number of parameters ``W`` exactly:
its input width and hidden widths are found by a small search, so that both
Hessians are ``W x W`` and the assembly (``about N W^2`` flops) is the same
size; what the graph adds are the sums over the layers that read each
output, the Jacobians along several paths and the layer pairs that do not
depend on each other.  Same loss (sse, mean), seeded data and parameters.

Each contender is timed in its own block (every repeat of the chain, then
every repeat of the graph; then both again in the other order), after a
warm-up call, so that a thread pool spinning after one contender's last call
does not slow the other; the ratio reported is of the medians over both
blocks of each.  ``--threads N`` limits BLAS before NumPy is imported.
"""

# ruff: noqa: E402 - the thread limits must be in the environment before NumPy is imported

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--patterns", type=int, default=256)
ap.add_argument("--repeats", type=int, default=7)
ap.add_argument("--threads", type=int, default=None)
args = ap.parse_args()
if args.threads:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

import numpy as np

from hessverify.io.cases import seeded_data, seeded_params
from hessverify.methods.backprop import hessian
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem


def graph() -> Architecture:
    return Architecture(16, (Layer(32, "tanh"), Layer(32, "tanh"), Layer(32, "tanh", sources=(2, 1)),
                             Layer(32, "tanh", sources=(3, 2)), Layer(4, "identity", sources=(4, 0))))


def chain_like(g: Architecture) -> Architecture:
    """A chain ``d-h1-h2-h3-h4-K`` (tanh, identity output) with exactly the graph's W and, among those,
    the per-layer parameter counts closest to the graph's (so the layer-pair blocks have similar sizes)."""
    sizes = np.array([blk.size for blk in g.blocks])
    K = g.outputs
    r = np.arange(24, 41)  # 7 M candidates: a few hundred MB at most, broadcast lazily
    d, h1, h2, h3, h4 = np.meshgrid(np.arange(4, 41), r, r, np.arange(40, 81), r, indexing="ij", sparse=True)
    blocks = [h1 * (d + 1), h2 * (h1 + 1), h3 * (h2 + 1), h4 * (h3 + 1), K * (h4 + 1)]
    W = sum(blocks)
    gap = sum(np.abs(b - s) for b, s in zip(blocks, sizes))
    gap = np.where(W == g.n_params, gap, np.iinfo(np.int64).max)
    i = np.unravel_index(int(np.argmin(gap)), gap.shape)
    if gap[i] == np.iinfo(np.int64).max:
        sys.exit(f"no chain of this shape has exactly {g.n_params} parameters")
    dd, *hs = (int(v.reshape(-1)[j]) for v, j in zip((d, h1, h2, h3, h4), i))
    return Architecture(dd, tuple(Layer(h, "tanh") for h in hs) + (Layer(K, "identity"),))


def problem(arch: Architecture, n: int) -> Problem:
    x, t = seeded_data(arch, "sse", 0, n)
    return Problem(arch, "sse", seeded_params(arch, 0, 0.5), x, t, "mean", id=arch.describe())


def block(p: Problem, repeats: int) -> list[float]:
    hessian(p)  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        hessian(p)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    g = problem(graph(), args.patterns)
    c = problem(chain_like(g.architecture), args.patterns)
    assert g.n_params == c.n_params
    times: dict[str, list[float]] = {"chain": [], "graph": []}
    for order in (("chain", "graph"), ("graph", "chain")):
        for name in order:
            times[name] += block(c if name == "chain" else g, args.repeats)
            time.sleep(1.0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"W = {g.n_params}, N = {args.patterns}, load {os.getloadavg()[0]:.2f}")
    print("layer sizes: chain", [b.size for b in c.architecture.blocks], "graph", [b.size for b in g.architecture.blocks])
    print(f"chain {c.architecture.describe()}: median {1e3 * med['chain']:.1f} ms")
    print(f"graph {g.architecture.describe()}: median {1e3 * med['graph']:.1f} ms")
    print(f"graph / chain = {med['graph'] / med['chain']:.2f} (issue 14 asks for at most 1.5)")


if __name__ == "__main__":
    main()
