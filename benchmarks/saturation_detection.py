"""Does a default sweep meet saturated outputs?  The saturation bugs of the catalogue, before and after.

    .venv/bin/python benchmarks/saturation_detection.py                  # 300 examples, seeds 0-4
    .venv/bin/python benchmarks/saturation_detection.py --seeds 10 --examples 300

For each seed, the examples of a default sweep (:func:`hessverify.checking.strategies.problems` drawn
as ``check`` draws them, with its settings and seed, each compared with ``backprop``, ``autograd`` and
``fd`` as ``hessverify sweep`` compares them; the shrinking that follows a failure is left out, it
finds nothing more) of each bug of
:data:`hessverify.apps.trust.mutants.SATURATION_BUGS`, with the strategies' saturated draws off
(``saturation=False``: the draws of the strategies before issue 24, value for value) and on (the
default), and of a correct implementation (the catalogue's ``hessian`` without a bug) with them on:
caught or not, and after how many examples.  Prints a table and the load average (the machine may be
shared: say it with the figures).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as with_seed  # noqa: E402

from hessverify.apps.trust.mutants import MUTANTS, SATURATION_BUGS, hessian  # noqa: E402
from hessverify.checking.check import check_problem  # noqa: E402
from hessverify.checking.strategies import problems  # noqa: E402


class _Found(Exception):
    pass


def sweep(fn: object, seed: int, examples: int, saturation: bool) -> tuple[bool, int, float]:
    """Caught?, at which example, seconds: ``check``'s generation (same settings, same seed), no shrinking."""
    start = time.perf_counter()
    n, first = [0], []

    @with_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, report_multiple_bugs=False,
              phases=[Phase.explicit, Phase.generate], print_blob=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(problems(saturation=saturation))
    def run(p: object) -> None:
        n[0] += 1
        # the catalogue is hessverify's own code: no child process needed to measure it
        if not all(c.passed for c in check_problem(fn, p, isolation="none")):  # type: ignore[arg-type]
            first.append(n[0])  # Hypothesis replays the failing example once more before it raises
            raise _Found

    try:
        run()
    except _Found:
        return True, first[0], time.perf_counter() - start
    return False, n[0], time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--examples", type=int, default=300)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    print(f"| function | saturated draws | caught (of {args.seeds} seeds) | examples to the first failure |")
    print("| --- | --- | --- | --- |")
    rows = [(name, MUTANTS[name].fn, flag) for name in SATURATION_BUGS for flag in (False, True)]
    rows.append(("correct (no bug)", partial(hessian, bug=None), True))
    for name, fn, flag in rows:
        found = [sweep(fn, seed, args.examples, flag) for seed in range(args.seeds)]
        caught = [n for c, n, _ in found if c]
        print(f"| `{name}` | {'on' if flag else 'off'} | {len(caught)} | "
              f"{', '.join(map(str, caught)) or '-'} | ({sum(s for _, _, s in found):.0f} s)", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
