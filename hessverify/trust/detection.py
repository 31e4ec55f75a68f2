"""Detection power: how many planted bugs the shipped cases and random sweeps catch.

Run (see docs/trust.md)::

    python -m hessverify.trust.detection            # the shipped cases
    python -m hessverify.trust.detection --sweep    # and a sweep per bug, ci profile size

For every mutant in :data:`hessverify.trust.mutants.MUTANTS` it compares the
mutant's Hessian with ``autograd`` on every shipped case, under the same
derived bounds ``hessverify verify`` uses, and prints which cases kill it and
the kill rate.  With ``--sweep`` it also runs :func:`hessverify.check` over
:func:`hessverify.strategies.problems` (200 examples, the ``ci`` profile's
size, a fixed seed) for each mutant, and prints how many examples it took to
find the bug and the size of the shrunk problem.
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


def sweep_table(examples: int = 200, seed: int = 0) -> dict[str, tuple[bool, int, str]]:
    """For each mutant: caught?, examples until the first failure, the shrunk problem."""
    from hessverify.check import check
    from hessverify.strategies import problems

    out = {}
    for name, m in MUTANTS.items():
        r = check(m.fn, problems(), against=("autograd",), max_examples=examples, seed=seed)
        shrunk = "" if r.passed or r.problem is None else (
            f"{r.problem.architecture.describe()} {r.problem.loss} N={r.problem.n_patterns} W={r.problem.n_params}")
        out[name] = (not r.passed, r.n_problems, shrunk)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="kill rate of the bug catalogue on the shipped cases")
    ap.add_argument("--cases", default="cases")
    ap.add_argument("--sweep", action="store_true", help="also sweep random problems for each bug")
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    table = kill_table(args.cases)
    sweeps = sweep_table(args.examples, args.seed) if args.sweep else {}
    n_cases = len(find_cases([args.cases]))
    head = f"| bug | caught by (of {n_cases} cases) | first case that catches it |"
    rule = "| --- | --- | --- |"
    if sweeps:
        head += " sweep: examples to find | sweep: shrunk to |"
        rule += " --- | --- |"
    print(head)
    print(rule)
    for name, killers in table.items():
        row = f"| `{name}` | {len(killers)} | {killers[0] if killers else '**survives**'} |"
        if sweeps:
            caught, n, shrunk = sweeps[name]
            row += f" {n if caught else f'**not found in {n}**'} | {shrunk} |"
        print(row)
    killed = sum(bool(k) for k in table.values())
    print(f"\nkill rate on the shipped cases: {killed}/{len(table)}")
    if sweeps:
        found = sum(c for c, _, _ in sweeps.values())
        print(f"kill rate of the sweep alone ({args.examples} examples, seed {args.seed}): {found}/{len(sweeps)}")
        killed = sum(bool(table[n]) or sweeps[n][0] for n in table)
        print(f"kill rate, cases and sweep together: {killed}/{len(table)}")
    return 0 if killed == len(table) else 1


if __name__ == "__main__":
    sys.exit(main())
