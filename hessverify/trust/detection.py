"""Detection power: how many planted bugs the shipped cases catch.

Run (see docs/trust.md)::

    python -m hessverify.trust.detection

For every mutant in :data:`hessverify.trust.mutants.MUTANTS` it compares the
mutant's Hessian with ``autograd`` on every shipped case, under the same
derived bounds ``hessverify verify`` uses, and prints which cases kill it and
the kill rate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hessverify.bounds import rounding_bound
from hessverify.cases import find_cases, load_case
from hessverify.compare import compare
from hessverify.references import autograd_ref
from hessverify.trust.mutants import MUTANTS

__all__ = ["kill_table"]


def kill_table(case_dir: str | Path = "cases") -> dict[str, list[str]]:
    """For each mutant, the ids of the shipped cases that catch it."""
    cases = [load_case(p) for p in find_cases([case_dir])]
    refs = [(c, autograd_ref.hessian(c), rounding_bound(c)) for c in cases]
    return {
        name: [c.id for c, R, B in refs if not compare(c, name, "autograd", m.fn(c), R, B, "rounding").passed]
        for name, m in MUTANTS.items()
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="kill rate of the bug catalogue on the shipped cases")
    ap.add_argument("--cases", default="cases")
    args = ap.parse_args(argv)
    table = kill_table(args.cases)
    n_cases = len(find_cases([args.cases]))
    print(f"| bug | caught by (of {n_cases} cases) | first case that catches it |")
    print("| --- | --- | --- |")
    for name, killers in table.items():
        print(f"| `{name}` | {len(killers)} | {killers[0] if killers else '**survives**'} |")
    killed = sum(bool(k) for k in table.values())
    print(f"\nkill rate: {killed}/{len(table)}")
    return 0 if killed == len(table) else 1


if __name__ == "__main__":
    sys.exit(main())
