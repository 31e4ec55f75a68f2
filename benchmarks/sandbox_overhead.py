"""What running the function under test in a child process costs (hessverify.checking.sandbox).

    .venv/bin/python benchmarks/sandbox_overhead.py                # 2000 calls, a 300-example sweep
    .venv/bin/python benchmarks/sandbox_overhead.py --calls 500 --examples 100

Three measurements, each contender timed in a block of its own, one after the other, in one run:

* per call: a function that returns a 9 x 9 array at once, called ``--calls`` times on one problem (sent
  once) and on a new problem each call, in a child process (``isolation="process"``, forked) and in this
  process (``"thread"``: an alarm per call; ``"none"``: a plain call);
* the start of a child: forked, and spawned (a fresh interpreter that imports hessverify);
* a default sweep (``check`` over ``problems()`` against backprop, autograd and fd, ``--examples``
  examples, seed 0) of a correct function, in a child process and in this process, ``--repeats``
  times each, interleaved; the best of each is compared.

Prints the figures and the load average before and after (the machine may be shared: say it with them).
CPU seconds of this process (``process_time``) are printed beside the wall-clock ones: the child's own
work is not in them.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hessverify  # noqa: E402
from hessverify.checking.check import check  # noqa: E402
from hessverify.checking.sandbox import Sandbox  # noqa: E402
from hessverify.checking.strategies import problems  # noqa: E402

CASE = hessverify.load_case(Path(__file__).resolve().parent.parent / "cases" / "xor-2-2-1-sigmoid.toml")
ZEROS = np.zeros((CASE.n_params, CASE.n_params))


def instant(problem: hessverify.Problem) -> np.ndarray:
    return ZEROS


def correct(problem: hessverify.Problem) -> np.ndarray:
    return hessverify.hessian(problem, "autograd")


def per_call(isolation: str, calls: int, fresh: bool) -> tuple[float, float]:
    problems_ = [hessverify.load_case(CASE.source) for _ in range(calls)] if fresh else [CASE] * calls
    with Sandbox(instant, isolation=isolation, timeout=60) as box:
        box(CASE)  # the child started, not timed
        wall, cpu = time.perf_counter(), time.process_time()
        for p in problems_:
            box(p)
        return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def start(spawn: bool) -> float:
    out: dict[str, float] = {}

    def go() -> None:
        wall = time.perf_counter()
        with Sandbox(instant, timeout=60) as box:
            box.start()
            out["s"] = time.perf_counter() - wall

    if spawn:  # a second thread running: forking is not safe, the child is spawned
        t = threading.Thread(target=go)
        t.start()
        t.join()
    else:
        go()
    return out["s"]


def sweep(isolation: str, examples: int) -> float:
    wall = time.perf_counter()
    r = check(correct, problems(), max_examples=examples, seed=0, isolation=isolation)
    assert r.passed, r.summary()
    return time.perf_counter() - wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--examples", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    print("| what | isolation | wall per call | CPU here per call |")
    print("| --- | --- | --- | --- |")
    for fresh in (False, True):
        for isolation in ("process", "thread", "none"):
            wall, cpu = per_call(isolation, args.calls, fresh)
            what = "a new problem each call" if fresh else "one problem, sent once"
            print(f"| {what} | {isolation} | {wall * 1e6:.0f} us | {cpu * 1e6:.0f} us |", flush=True)
    forks = [start(False) for _ in range(5)]
    spawns = [start(True) for _ in range(3)]
    print(f"\nstart of a child: fork {min(forks) * 1e3:.0f} ms (median {np.median(forks) * 1e3:.0f}), "
          f"spawn {min(spawns):.2f} s (median {np.median(spawns):.2f})", flush=True)
    seconds: dict[str, list[float]] = {"process": [], "none": []}
    for _ in range(args.repeats):  # interleaved, so that a change of load hits both
        for iso in ("process", "none"):
            seconds[iso].append(sweep(iso, args.examples))
    best = {iso: min(v) for iso, v in seconds.items()}
    print(f"\na default sweep of {args.examples} examples (seed 0), best of {args.repeats} interleaved: "
          f"process {best['process']:.1f} s, in this process {best['none']:.1f} s, "
          f"ratio {best['process'] / best['none']:.3f} (all: {seconds})")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
