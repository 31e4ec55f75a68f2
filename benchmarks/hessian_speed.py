"""Speed of the exact Hessian: hessverify's methods against autograd, torch.func and JAX, on the same data.

Run from the repository root (a benchmark, not a test; it gates nothing):

    .venv/bin/python benchmarks/hessian_speed.py            # the full table, a few minutes on 2 cores
    .venv/bin/python benchmarks/hessian_speed.py --quick    # the smallest network only
    .venv/bin/python benchmarks/hessian_speed.py --threads 1  # every contender on one thread
    .venv/bin/python benchmarks/hessian_speed.py --net 32-50-24-4 --patterns 256   # one size only

``--threads N`` limits every contender alike before anything is imported:
OpenBLAS/OpenMP/MKL (NumPy, so backprop and autograd), ``torch.set_num_threads``
and, for N = 1, XLA's CPU thread pool.  On a machine shared with other busy
processes a multithreaded BLAS waits for its second thread at every call,
which can cost small problems an order of magnitude; one thread shows the
methods without that noise.

Each network is ``inputs-hidden-...-outputs`` with tanh hidden layers and an
identity output layer, the ``sse`` loss with the ``mean`` reduction, seeded
data (``hessverify.io.cases.seeded_data``, seed 0) and parameters
(``seeded_params``, seed 0, scale 0.5).  Every peer computes the same
``(W, W)`` matrix, checked entrywise against ``backprop`` within the derived
float64 rounding bound (``hessverify.engine.bounds.rounding_bound``), then timed:
medians of repeated calls, steady state.  ``jax.jit(jax.hessian)`` is
compiled by a first call whose time is reported apart.  Peers that are not
installed are skipped (``torch`` is meant to be ``torch==2.13.0``, CPU).

Contenders are timed in blocks: every run of one contender, then every run
of the next, never call against call.  A library's thread pool keeps
spinning for a while after a call returns (XLA's and OpenBLAS's workers
spin-wait for more work), and whatever runs next on the same cores pays for
it: timed round-robin, backprop after jax looked three times slower than it
is.  Each block runs in a fresh process of its own (``multiprocessing``,
spawn), after a pause and a warm-up call: in one process, the same backprop
call took 1.4-2.7 times as long right after the JAX, autograd and rop blocks
as minutes later, even after a 2 s pause (88 ms fresh, 160 ms after three
autograd calls, in one test).  The children inherit the thread limits.

The yardstick ``matmul (W x N)(N x W)`` is one float64 product of the size of
the naive assembly (``2 N W^2`` flops, two distinct operands so NumPy cannot
turn it into a symmetric rank-k update), timed in its own block like the rest.

GFLOP/s: every full-Hessian method is credited with the same nominal work,
``2 N W^2`` flops (one multiply-add per pattern per entry), and compared
with a float64 ``matmul`` measured in the same run.  Peak memory of
``backprop`` is measured with ``tracemalloc`` (NumPy reports its buffers to
it) and given as a multiple of the Hessian's own ``8 W^2`` bytes.
"""

# ruff: noqa: E402 - the thread limits must be in the environment before NumPy is imported

from __future__ import annotations

import argparse
import os
import sys


def _limit_threads(argv: list[str]) -> int | None:
    """Apply ``--threads N`` through the environment, before NumPy, torch or JAX start their pools."""
    for i, arg in enumerate(argv):
        if arg.startswith("--threads"):
            value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            if not value.isdigit() or int(value) < 1:
                raise SystemExit(f"--threads needs a positive whole number, got {value!r}")
            n = int(value)
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = str(n)
            if n == 1:
                os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                           + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
            return n
    return None


THREADS = _limit_threads(sys.argv[1:]) if __name__ == "__main__" else None

import multiprocessing
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from hessverify.engine.bounds import rounding_bound
from hessverify.io.cases import seeded_data, seeded_params
from hessverify.methods import backprop, block_diagonal, diagonal, rop
from hessverify.model import kernel
from hessverify.model.forward import gradient
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.references import autograd_ref

NETWORKS = [(6, 12, 8, 2), (16, 32, 16, 4), (32, 50, 24, 4)]
PATTERNS = [32, 256]


def make_problem(sizes: tuple[int, ...], n: int) -> Problem:
    layers = tuple(Layer(u, "tanh") for u in sizes[1:-1]) + (Layer(sizes[-1], "identity"),)
    arch = Architecture(sizes[0], layers)
    x, t = seeded_data(arch, "sse", 0, n)
    return Problem(arch, "sse", seeded_params(arch, 0, 0.5), x, t, reduction="mean",
                   id="bench-" + "-".join(map(str, sizes)))


SETTLE = 2.0
"""Seconds of pause before a contender's block: the previous one's thread pool stops spinning."""


def median_time(fn: Callable[[], Any], budget: float, min_repeats: int = 3, max_repeats: int = 25) -> float:
    """Median wall time of ``fn``; repeats as many as fit in ``budget`` seconds (after one warm-up call)."""
    time.sleep(SETTLE)
    t0 = time.perf_counter()
    fn()  # warm-up, and an estimate of the cost of one call
    first = time.perf_counter() - t0
    repeats = int(min(max_repeats, max(min_repeats, budget // max(first, 1e-9))))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def contender(name: str, problem: Problem) -> Callable[[], Any]:
    """The call timed for contender ``name`` on ``problem`` (built again in each child process)."""
    W, n = problem.n_params, problem.n_patterns
    if name in ("backprop", "backprop_again"):
        return lambda: backprop.hessian(problem)
    if name == "matmul":  # (W x N)(N x W): the naive assembly's 2 N W^2 flops, two distinct operands
        rng = np.random.default_rng(2)
        a, b = rng.standard_normal((W, n)), rng.standard_normal((n, W))
        return lambda: a @ b
    if name == "jax":
        peer = jax_peer(problem)
        assert peer is not None
        return peer[0]
    if name == "torch":
        tpeer = torch_peer(problem)
        assert tpeer is not None
        return tpeer[0]
    v = np.random.default_rng(1).standard_normal(W)
    calls: dict[str, Callable[[], Any]] = {
        "rop": lambda: rop.hessian(problem),
        "autograd": lambda: autograd_ref.hessian(problem),
        "gradient": lambda: gradient(problem),
        "hvp": lambda: rop.hvp(problem, v),
        "diagonal": lambda: diagonal.diagonal(problem),
        "block_diagonal": lambda: block_diagonal.blocks(problem),
    }
    return calls[name]


def _child(name: str, sizes: tuple[int, ...], n: int, threads: int | None, budget: float, min_repeats: int,
           queue: Any) -> None:
    """In a fresh interpreter: build the problem and the contender, time one block, send the median back."""
    global THREADS
    THREADS = threads
    queue.put(median_time(contender(name, make_problem(sizes, n)), budget, min_repeats))


def blocks(names: list[str], sizes: tuple[int, ...], n: int, budget: float, min_repeats: int = 3) -> dict[str, float]:
    """Median wall time of each contender, timed in blocks, each block in a fresh process of its own.

    ``budget`` is shared out equally.  Not round-robin: a thread pool left
    spinning by one contender (module text) would slow the next call.  A
    process of its own: what a library leaves behind in a process (its
    threads, the allocator's state after gigabytes of autograd temporaries)
    measurably slowed the contender timed after it in the same process
    (backprop: 88 ms fresh, 160 ms after three autograd calls, in one test).
    The thread limits are in the environment, which the children inherit.
    """
    ctx = multiprocessing.get_context("spawn")
    share = budget / max(len(names), 1)
    out = {}
    for name in names:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, sizes, n, THREADS, share, min_repeats, queue))
        proc.start()
        out[name] = queue.get()
        proc.join()
    return out


def matmul_gflops(n: int = 2000) -> float:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    return 2 * n**3 / median_time(lambda: a @ b, 3.0) / 1e9


# -- peers: the same E written in each framework -----------------------------------------


def _layer_specs(problem: Problem) -> list[tuple[int, int, str]]:
    arch = problem.architecture
    return [(layer.units, arch.fan_in(i), layer.activation) for i, layer in enumerate(arch.layers, start=1)]


def _sse_error(problem: Problem, x: Any, t: Any, tanh: Callable[[Any], Any],
               total: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """E(theta) for a tanh/identity network with sse, in whichever framework ``tanh``/``total`` come from."""
    specs = _layer_specs(problem)
    scale = problem.scale

    def E(th: Any) -> Any:
        h, pos = x, 0
        for units, fan_in, act in specs:
            w = th[pos:pos + units * fan_in].reshape(units, fan_in)
            pos += units * fan_in
            h = h @ w.T + th[pos:pos + units]
            pos += units
            if act == "tanh":
                h = tanh(h)
        return scale * 0.5 * total((h - t) ** 2)

    return E


def torch_peer(problem: Problem) -> tuple[Callable[[], np.ndarray], str] | None:
    try:
        import torch
        from torch.func import hessian
    except ImportError:
        return None
    torch.set_num_threads(THREADS or os.cpu_count() or 1)
    x = torch.tensor(problem.inputs, dtype=torch.float64)
    t = torch.tensor(problem.targets, dtype=torch.float64)
    theta = torch.tensor(problem.params, dtype=torch.float64)
    H = hessian(_sse_error(problem, x, t, torch.tanh, torch.sum))
    return (lambda: H(theta).numpy()), f"torch {torch.__version__}"


def jax_peer(problem: Problem) -> tuple[Callable[[], np.ndarray], str, float] | None:
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    x = jnp.asarray(problem.inputs, dtype=jnp.float64)
    t = jnp.asarray(problem.targets, dtype=jnp.float64)
    theta = jnp.asarray(problem.params, dtype=jnp.float64)
    H = jax.jit(jax.hessian(_sse_error(problem, x, t, jnp.tanh, jnp.sum)))
    t0 = time.perf_counter()
    H(theta).block_until_ready()
    compile_time = time.perf_counter() - t0
    return (lambda: np.asarray(H(theta).block_until_ready())), f"jax {jax.__version__}", compile_time


# -- the run ---------------------------------------------------------------------------------


def peak_memory_ratio(problem: Problem) -> float:
    # the kernel's kept working arrays count: a call allocates them afresh here (an older tree timed by
    # backprop_ab.py keeps none)
    getattr(kernel, "release_working_arrays", lambda: None)()
    tracemalloc.start()
    backprop.hessian(problem)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / (8.0 * problem.n_params**2)


def run(networks: list[tuple[int, ...]], patterns: list[int], budget: float) -> int:
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} core(s); "
          f"threads per contender: {THREADS or 'all'}; contenders timed in blocks (all runs of one, then the next)")
    peak = matmul_gflops()
    print(f"float64 matmul (2000 x 2000): {peak:.1f} GFLOP/s\n")
    rows = []
    disagreements = []
    for sizes in networks:
        for n in patterns:
            p = make_problem(sizes, n)
            W = p.n_params
            bound = rounding_bound(p, methods=2)
            H = backprop.hessian(p)
            flops = 2.0 * n * W * W
            row: dict[str, Any] = {"net": "-".join(map(str, sizes)), "W": W, "N": n}
            # the frameworks with their own thread pools first, then the long autograd and rop, then the
            # yardstick and backprop: a pool still spinning from the block before falls on a slow contender
            fns: dict[str, Callable[[], np.ndarray]] = {}
            jp = jax_peer(p)
            if jp is not None:
                fns["jax"] = jp[0]
                row["jax_compile"] = jp[2]
            tp = torch_peer(p)
            if tp is not None:
                fns["torch"] = tp[0]
            fns["autograd"] = lambda p=p: autograd_ref.hessian(p)
            fns["rop"] = lambda p=p: rop.hessian(p)
            for name, fn in fns.items():
                margin = float(np.max(np.abs(np.asarray(fn()) - H) / bound))
                row[f"{name}_margin"] = margin
                if not margin <= 1.0:
                    disagreements.append(f"{row['net']} N={n}: {name} differs from backprop, margin {margin:.3g}")
            names = [*fns, "matmul", "backprop"]
            del fns  # the parent's peers (and JAX's compiled function) are not timed: each block has a process
            row.update(blocks(names, sizes, n, budget * len(names) / 2, min_repeats=5))
            # the cheap ones in blocks of their own, with backprop again for the ratios
            cheap = ["backprop_again", "gradient", "hvp", "diagonal", "block_diagonal"]
            row.update(blocks(cheap, sizes, n, budget * len(cheap) / 2, min_repeats=5))
            for name in [*names, *cheap]:
                margin = row.get(f"{name}_margin")
                print(f"  {row['net']:>12s} N={n:<4d} {name:14s} {row[name]:9.4f} s"
                      + ("" if margin is None else f"  (error / bound vs backprop {margin:.1e})"), flush=True)
            row["memory"] = peak_memory_ratio(p)
            row["gflops"] = flops / row["backprop"] / 1e9
            rows.append(row)
    print_tables(rows, peak)
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for d in disagreements:
        print("DISAGREEMENT:", d)
    return 1 if disagreements else 0


def _fmt(t: float | None) -> str:
    if t is None:
        return "-"
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}"


def print_tables(rows: list[dict[str, Any]], peak: float) -> None:
    print("\n### Full Hessian (medians; ratios are backprop time / peer time)\n")
    print("| network | W | N | backprop | GFLOP/s | rop | autograd | torch.func | jax.jit (compile) "
          "| matmul (WxN)(NxW) | bp/autograd | bp/torch | bp/jax | bp/matmul | peak mem / H |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        jax = f"{_fmt(r.get('jax'))} ({_fmt(r.get('jax_compile'))})" if "jax" in r else "-"
        print(f"| {r['net']} | {r['W']} | {r['N']} | {_fmt(r['backprop'])} | {r['gflops']:.1f} | {_fmt(r['rop'])} "
              f"| {_fmt(r['autograd'])} | {_fmt(r.get('torch'))} | {jax} | {_fmt(r['matmul'])} "
              f"| {_ratio(r['backprop'], r['autograd'])} | {_ratio(r['backprop'], r.get('torch'))} "
              f"| {_ratio(r['backprop'], r.get('jax'))} | {_ratio(r['backprop'], r['matmul'])} | {r['memory']:.2f} |")
    print(f"\nfloat64 matmul in the same run: {peak:.1f} GFLOP/s; GFLOP/s of backprop counts 2 N W^2 flops.")
    print("\n### Products and partial Hessians (medians; timed in blocks, with backprop again)\n")
    print("| network | W | N | gradient | hvp (rop) | hvp / gradient | backprop | diagonal | full / diagonal "
          "| block_diagonal | full / block_diagonal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        full = r["backprop_again"]
        print(f"| {r['net']} | {r['W']} | {r['N']} | {_fmt(r['gradient'])} | {_fmt(r['hvp'])} "
              f"| {_ratio(r['hvp'], r['gradient'])} | {_fmt(full)} | {_fmt(r['diagonal'])} "
              f"| {_ratio(full, r['diagonal'])} | {_fmt(r['block_diagonal'])} | {_ratio(full, r['block_diagonal'])} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the smallest network only")
    ap.add_argument("--threads", type=int, default=None, help="threads for every contender (default: all cores)")
    ap.add_argument("--budget", type=float, default=10.0,
                    help="seconds of repeats per contender pair, network and N (default 10; at least 5 runs each)")
    ap.add_argument("--net", action="append", default=None, metavar="SIZES",
                    help="a network as inputs-hidden-...-outputs, e.g. 32-50-24-4 (repeatable; default: the table's)")
    ap.add_argument("--patterns", type=int, action="append", default=None, metavar="N",
                    help="a number of patterns (repeatable; default: 32 and 256)")
    args = ap.parse_args(argv)
    networks = NETWORKS[:1] if args.quick else NETWORKS
    if args.net:
        try:
            networks = [tuple(int(x) for x in spec.split("-")) for spec in args.net]
        except ValueError:
            ap.error(f"--net: write sizes as inputs-hidden-...-outputs, e.g. 32-50-24-4; got {args.net}")
        if any(len(sizes) < 2 or min(sizes) < 1 for sizes in networks):
            ap.error("--net: at least an input and an output size, each positive")
    patterns = args.patterns or PATTERNS
    if min(patterns) < 1:
        ap.error("--patterns: a positive number of patterns")
    return run(networks, patterns, args.budget)


if __name__ == "__main__":
    sys.exit(main())
