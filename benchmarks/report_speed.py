"""``hessverify verify CASES --report DIR``: two installations timed in alternating pairs, and their results compared.

Issue 12 asks the report command to take at most half of the time it took at
commit 42ec761, with ``results.json`` unchanged up to rounding.  Each pair runs
both installations once on the same case files, the first of the pair
alternating (old-new, new-old, ...) so that a drift in the machine's load
falls on both; each run's wall time and CPU time (user + system, its drawing
processes included) are printed, then the medians and their ratios, and the
load average before and after (the machine may be shared: the CPU ratio is the
steadier number when it is).  Last, the two ``results.json`` of the final pair
are compared with ``benchmarks/compare_results.py --verdicts`` (same records,
verdicts, counts and inertia; the Hessian at each worst entry within a
relative 1e-12): the methods of 42ec761 round differently from today's, so
their errors differ in the last bits; ``compare_results.py`` without
``--verdicts`` holds two builds of the same methods to every number.

Usage (an installation is a venv directory or its ``hessverify`` executable)::

    git worktree add --detach ../orig 42ec761 && make -C ../orig venv
    python benchmarks/report_speed.py ../orig/.venv .venv --cases ../orig/cases --pairs 5
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def executable(path: str) -> Path:
    """``VENV/bin/hessverify`` for a venv directory, else the path itself; exits with one line if missing."""
    p = Path(path)
    exe = p / "bin" / "hessverify" if p.is_dir() else p
    if not os.access(exe, os.X_OK):
        sys.exit(f"report_speed: {path}: no hessverify executable there (give a venv directory or the executable)")
    return exe


def timed(exe: Path, cases: str, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, children included) of one ``verify CASES --report OUT``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([str(exe), "verify", cases, "--report", str(out)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"report_speed: {exe} exited with {proc.returncode}:\n{proc.stdout[-800:]}{proc.stderr[-800:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the installation to compare against (venv directory or hessverify executable)")
    parser.add_argument("new", help="the installation under test")
    parser.add_argument("--cases", default="cases", help="case directory both understand (default cases)")
    parser.add_argument("--pairs", type=int, default=5, help="alternating pairs (default 5)")
    args = parser.parse_args()
    exes = {"old": executable(args.old), "new": executable(args.new)}
    print(f"before: {load()}")
    times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.pairs):
            order = ("old", "new") if k % 2 == 0 else ("new", "old")
            for name in order:
                times[name].append(timed(exes[name], args.cases, Path(tmp) / name))
            (ow, oc), (nw, nc) = times["old"][-1], times["new"][-1]
            print(f"pair {k + 1} ({order[0]} first): old {ow:6.2f} s wall {oc:6.2f} s cpu | "
                  f"new {nw:6.2f} s wall {nc:6.2f} s cpu | ratio wall {nw / ow:.2f} cpu {nc / oc:.2f}")
        med = {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
               for name, t in times.items()}
        print(f"median: old {med['old'][0]:.2f} s wall {med['old'][1]:.2f} s cpu | new {med['new'][0]:.2f} s wall "
              f"{med['new'][1]:.2f} s cpu | ratio wall {med['new'][0] / med['old'][0]:.2f} "
              f"cpu {med['new'][1] / med['old'][1]:.2f}")
        print(f"after: {load()}")
        print("results.json (last pair), old against new:")
        check = subprocess.run([sys.executable, str(HERE / "compare_results.py"), str(Path(tmp) / "old" / "results.json"),
                                str(Path(tmp) / "new" / "results.json"), "--verdicts"])
    return check.returncode


if __name__ == "__main__":
    sys.exit(main())
