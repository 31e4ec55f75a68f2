"""Speed of the full Hessian of a small CNN: hessverify's backprop over the layer graph against torch.func.hessian.

Run from the repository root (a benchmark, not a test; it gates nothing):

    .venv/bin/python benchmarks/conv_speed.py                   # W = 1967, N = 64, three runs each
    .venv/bin/python benchmarks/conv_speed.py --patterns 16 --repeats 1

The network (issue 22's "conv net, W about 2000, N = 64"): input ``[3, 16]``,
``conv1d(8, kernel 3) + tanh``, ``conv1d(16, kernel 3, stride 2) + tanh``,
``flatten``, ``dense(15) + tanh``, ``dense(2)``; ``sse``; seeded data and
parameters (scale 0.3).  PyTorch's model is written here with
``torch.nn.functional`` (``conv1d``, ``tanh``, a matrix product) on the same
flat parameter vector, so both compute the same ``(W, W)`` matrix; they are
checked against each other first.

Contenders are timed in blocks, each in a fresh process of its own (spawn),
after a warm-up call: every run of one, then every run of the next (a
library's thread pool left spinning slows whatever runs next).  Reported:
the median seconds of each and their ratio, with the load average.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

SHAPE = (3, 16)


def _problem(patterns: int):  # type: ignore[no-untyped-def]
    import numpy as np

    from hessverify.model.network import Architecture, Layer
    from hessverify.model.problem import Problem

    arch = Architecture(48, (Layer(kind="conv1d", options={"channels": 8, "kernel": 3}, activation="tanh"),
                             Layer(kind="conv1d", options={"channels": 16, "kernel": 3, "stride": 2}, activation="tanh"),
                             Layer(kind="flatten"), Layer(15, "tanh"), Layer(2)), input_shape=SHAPE)
    rng = np.random.default_rng(0)
    return Problem(arch, "sse", 0.3 * rng.standard_normal(arch.n_params), rng.standard_normal((patterns, arch.inputs)),
                   rng.standard_normal((patterns, arch.outputs)), id="conv-bench")


def _torch_loss(problem):  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    n = problem.n_patterns
    x = torch.tensor(problem.inputs, dtype=torch.float64).reshape((n,) + SHAPE)
    t = torch.tensor(problem.targets, dtype=torch.float64)
    shapes = [t_.shape for t_ in problem.architecture.tensors]

    def E(theta):  # type: ignore[no-untyped-def]
        parts, i = [], 0
        for s in shapes:
            k = int(np.prod(s))
            parts.append(theta[i:i + k].reshape(s))
            i += k
        W1, b1, W2, b2, W3, b3, W4, b4 = parts
        h = torch.tanh(torch.nn.functional.conv1d(x, W1, b1))
        h = torch.tanh(torch.nn.functional.conv1d(h, W2, b2, stride=2))
        h = torch.tanh(h.reshape(n, -1) @ W3.T + b3)
        y = h @ W4.T + b4
        return 0.5 * ((y - t) ** 2).sum()

    return E


def _block(name: str, patterns: int, repeats: int, queue) -> None:  # type: ignore[no-untyped-def]
    problem = _problem(patterns)
    if name in ("backprop", "rop"):
        import hessverify

        def call():  # type: ignore[no-untyped-def]
            from hessverify.engine.point import Point

            Point.forget(problem)  # every run from scratch: no cached forward pass
            return hessverify.hessian(problem, name)
    else:
        import torch

        E = _torch_loss(problem)
        theta = torch.tensor(problem.params, dtype=torch.float64)

        def call():  # type: ignore[no-untyped-def]
            return torch.func.hessian(E)(theta).numpy()

    H = call()  # warm-up, and the value checked against the others
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    queue.put((name, statistics.median(times), H))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between blocks")
    args = parser.parse_args()
    import numpy as np

    problem = _problem(args.patterns)
    print(f"conv net W = {problem.n_params}, N = {args.patterns}; load average {os.getloadavg()[0]:.1f}")
    ctx = multiprocessing.get_context("spawn")
    results = {}
    for name in ("backprop", "torch.func.hessian"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_block, args=(name, args.patterns, args.repeats, queue))
        proc.start()
        results[name] = queue.get()
        proc.join()
        time.sleep(args.pause)
    H, Ht = results["backprop"][2], results["torch.func.hessian"][2]
    print(f"agree: max |backprop - torch| / max |H| = {np.abs(H - Ht).max() / np.abs(Ht).max():.2e}")
    for name, (_, seconds, _) in results.items():
        print(f"{name:22s} {seconds:8.2f} s (median of {args.repeats})")
    ratio = results["backprop"][1] / results["torch.func.hessian"][1]
    print(f"backprop / torch.func.hessian = {ratio:.3f}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
