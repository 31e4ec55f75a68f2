"""A false-alarm campaign on one process, one local worker, two local workers, and a hand-started cluster.

    .venv/bin/python benchmarks/campaign_speedup.py            # 600 problems, seed 0
    .venv/bin/python benchmarks/campaign_speedup.py --problems 100 --no-torch

Each contender is its own process, timed end to end (start-up of the
cluster and of its workers included) in a block of its own, one after the
other: ``hessverify campaign false-alarms`` with ``--workers 1``, with
``--workers 2``, and with ``--scheduler`` on a ``dask scheduler`` with two
``dask worker`` processes started by hand (their start-up not counted, as on
a cluster that is already there); and the one-process run
(:meth:`hessverify.apps.campaign.Plan.run_here` in a fresh interpreter).  It
checks that all four give the same records for every problem, bit for bit,
and prints the speed-up of two local workers over one, with the load
average before and after (the machine may be shared: say it with the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.campaign.cluster import hand_started  # noqa: E402 - the repository's root on the path first

ONE_PROCESS = """
import sys
from hessverify.apps.campaign.kinds import plan_for
from hessverify.cli import _build_parser
from hessverify.io.files import strict_json

args = _build_parser().parse_args(["campaign", *sys.argv[1:]])
units = plan_for(args.kind, args).run_here()
print(strict_json({str(o.index): [[c.to_dict() for c in o.records], o.not_compared] for o in units}))
"""


def by_unit(doc: dict[str, Any]) -> dict[str, Any]:
    out, at, skip_at = {}, 0, 0
    for u in doc["campaign"]["units"]:
        n, m = u["records"], u["not_compared"]
        out[str(u["index"])] = [doc["results"][at:at + n], doc["not_compared"][skip_at:skip_at + m]]
        at, skip_at = at + n, skip_at + m
    return out


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if r.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr}")
    return seconds, r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    kind = ["false-alarms", "--problems", str(args.problems), "--seed", str(args.seed)] + \
        (["--no-torch"] if args.no_torch else [])
    hv = [sys.executable, "-m", "hessverify", "campaign", *kind]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, extra in (("one local worker", ["--workers", "1"]), ("two local workers", ["--workers", "2"])):
            seconds[name], _ = timed([*hv, *extra, "--json", str(d / "out.json")])
            results[name] = by_unit(json.loads((d / "out.json").read_text()))
            print(f"{name:34s} {seconds[name]:7.1f} s")
        with hand_started(d, 2) as cluster:
            name = "two hand-started dask workers"
            seconds[name], _ = timed([*hv, "--scheduler", cluster.address, "--json", str(d / "out.json")])
            results[name] = by_unit(json.loads((d / "out.json").read_text()))
            print(f"{name:34s} {seconds[name]:7.1f} s")
        name = "one process (Plan.run_here)"
        seconds[name], r = timed([sys.executable, "-c", ONE_PROCESS, *kind])
        results[name] = json.loads(r.stdout)
        print(f"{name:34s} {seconds[name]:7.1f} s")
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    reference = results["one process (Plan.run_here)"]
    same = all(r == reference for r in results.values())
    assert len(reference) == args.problems
    print(f"\nper-problem records identical in all four: {same} ({args.problems} problems, "
          f"{sum(len(v[0]) for v in reference.values())} records)")
    ratio = seconds["one local worker"] / seconds["two local workers"]
    print(f"speed-up, two local workers over one: {ratio:.2f}x")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
