"""``backprop``'s full Hessian in two source trees, timed alternately, each block in a fresh process.

Run from the repository root (a benchmark, not a test; it gates nothing):

    .venv/bin/python benchmarks/backprop_ab.py OLD_TREE NEW_TREE [--reps 8] [--net 32-50-24-4] [--patterns 256]
    .venv/bin/python benchmarks/backprop_ab.py . . --env NEW:MALLOC_MMAP_THRESHOLD_=33554432   # one tree, two settings

A tree is a checkout of hessverify (``git worktree add /tmp/main main``); its
``hessverify`` package is imported first (``PYTHONPATH``), with this venv's
NumPy and BLAS.  Each repetition times one block of the float64 matmul
``(W x N)(N x W)`` (in the first tree's process) and one block of
``backprop`` per tree, every block with ``hessian_speed.blocks``: a process of
its own, a 2 s pause, a warm-up call, the median of the calls that fit in the
budget.  The trees alternate, so a burst of load on a shared machine falls on
both; the medians over the repetitions, and each tree's ratio to the matmul
of the same repetitions, are printed at the end.

Why: on the 2-core machine the matmul's median was steady (81-94 ms) while
``backprop``'s, the same code, moved between 93 and 131 ms from one repetition to the next;
a candidate kernel timed in one run and the old one in another said nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[4])
import hessian_speed as hs
sizes = tuple(int(s) for s in sys.argv[2].split("-"))
print(json.dumps(hs.blocks(sys.argv[1].split(","), sizes, int(sys.argv[3]), 6.0)))
"""


def _block(tree: Path, names: str, net: str, patterns: int, env: dict[str, str]) -> dict[str, float]:
    benchmarks = Path(__file__).resolve().parent
    out = subprocess.run([sys.executable, "-c", CHILD, names, net, str(patterns), str(benchmarks)],
                         env={**os.environ, "PYTHONPATH": str(tree), **env}, cwd=tree,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs=2, type=Path, metavar="TREE", help="two checkouts of hessverify: old, new")
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--net", default="32-50-24-4")
    ap.add_argument("--patterns", type=int, default=256)
    ap.add_argument("--env", action="append", default=[], metavar="OLD|NEW:NAME=VALUE",
                    help="an environment variable for one side's processes")
    args = ap.parse_args(argv)
    envs: dict[str, dict[str, str]] = {"OLD": {}, "NEW": {}}
    for item in args.env:
        side, _, assignment = item.partition(":")
        name, _, value = assignment.partition("=")
        if side not in envs or not name:
            ap.error(f"--env wants OLD:NAME=VALUE or NEW:NAME=VALUE, got {item!r}")
        envs[side][name] = value
    sides = list(zip(("old", "new"), [t.resolve() for t in args.trees], (envs["OLD"], envs["NEW"]), strict=True))
    for _, tree, _ in sides:
        if not (tree / "hessverify" / "__init__.py").is_file():
            ap.error(f"{tree}: not a hessverify checkout (no hessverify/__init__.py)")
    times: dict[str, list[float]] = {name: [] for name, _, _ in sides}
    matmul: list[float] = []
    for rep in range(args.reps):
        for i, (name, tree, env) in enumerate(sides):
            got = _block(tree, "matmul,backprop" if i == 0 else "backprop", args.net, args.patterns, env)
            times[name].append(got["backprop"])
            if "matmul" in got:
                matmul.append(got["matmul"])
        print(f"rep {rep + 1}: matmul {matmul[-1] * 1e3:.1f} ms, "
              + ", ".join(f"{name} {t[-1] * 1e3:.1f} ms" for name, t in times.items()), flush=True)
    mm = statistics.median(matmul)
    print(f"medians over {args.reps}: matmul {mm * 1e3:.1f} ms, "
          + ", ".join(f"{name} {statistics.median(t) * 1e3:.1f} ms ({statistics.median(t) / mm:.2f} x matmul)"
                      for name, t in times.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
