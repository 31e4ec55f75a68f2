"""Detection power: how many planted bugs the shipped cases and random sweeps catch.

Run (see docs/trust.md)::

    python -m hessverify.apps.trust.detection            # the shipped cases
    python -m hessverify.apps.trust.detection --sweep    # and a sweep per bug, ci profile size
    hessverify campaign detection --sweep           # the same, on a Dask cluster (docs/campaigns.md)

For every mutant in :data:`hessverify.apps.trust.mutants.MUTANTS` it compares the
mutant's Hessian with ``autograd`` on every shipped case, under the same
derived bounds ``hessverify verify`` uses, and prints which cases kill it and
the kill rate.  With ``--sweep`` it also runs :func:`hessverify.checking.check` over
:func:`hessverify.checking.strategies.problems` (200 examples, the ``ci`` profile's
size, a fixed seed) for each mutant, and prints how many examples it took to
find the bug and the size of the shrunk problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from hessverify.apps.trust.mutants import MUTANTS
from hessverify.engine.compare import Comparison, compare
from hessverify.engine.point import Point
from hessverify.io.cases import find_cases, load_case
from hessverify.references import autograd_ref

if TYPE_CHECKING:
    from hessverify.checking.check import CheckResult
    from hessverify.model.problem import Problem

__all__ = ["case_kills", "kill_table", "sweep_bug", "sweep_table"]


def case_kills(case: Problem) -> list[Comparison]:
    """Every planted bug's Hessian on ``case`` against ``autograd``, under ``verify``'s rounding bound.

    A comparison that fails is a bug caught (``comparison.method`` names it).
    """
    R, B = autograd_ref.hessian(case), Point.of(case).rounding(2)
    return [compare(case, name, "autograd", m.fn(case), R, B, "rounding") for name, m in MUTANTS.items()]


def kill_table(case_dir: str | Path = "cases") -> dict[str, list[str]]:
    """For each mutant, the ids of the shipped cases that catch it."""
    killed: dict[str, list[str]] = {name: [] for name in MUTANTS}
    for path in find_cases([case_dir]):
        for c in case_kills(load_case(path)):
            if not c.passed:
                killed[c.method].append(c.case)
    return killed


def sweep_bug(name: str, examples: int = 200, seed: int = 0) -> tuple[CheckResult, str]:
    """:func:`hessverify.checking.check` of bug ``name`` over :func:`hessverify.checking.strategies.problems`, and the shrunk
    problem in words (``""`` when it was not caught)."""
    from hessverify.checking.check import check
    from hessverify.checking.strategies import problems

    r = check(MUTANTS[name].fn, problems(kinds=False), against=("autograd",), max_examples=examples, seed=seed)
    shrunk = "" if r.passed or r.problem is None else (
        f"{r.problem.architecture.describe()} {r.problem.loss} N={r.problem.n_patterns} W={r.problem.n_params}")
    return r, shrunk


def sweep_table(examples: int = 200, seed: int = 0) -> dict[str, tuple[bool, int, str]]:
    """For each mutant: caught?, examples until the first failure, the shrunk problem."""
    out = {}
    for name in MUTANTS:
        r, shrunk = sweep_bug(name, examples, seed)
        out[name] = (not r.passed, r.n_problems, shrunk)
    return out


def print_table(table: dict[str, list[str]], sweeps: dict[str, tuple[bool, int, str]], n_cases: int,
                examples: int, seed: int, out: TextIO = sys.stdout) -> int:
    """The kill table of docs/trust.md; returns 0 when every bug is caught, else 1."""
    head = f"| bug | caught by (of {n_cases} cases) | first case that catches it |"
    rule = "| --- | --- | --- |"
    if sweeps:
        head += " sweep: examples to find | sweep: shrunk to |"
        rule += " --- | --- |"
    print(head, file=out)
    print(rule, file=out)
    for name, killers in table.items():
        row = f"| `{name}` | {len(killers)} | {killers[0] if killers else '**survives**'} |"
        if sweeps:
            caught, n, shrunk = sweeps[name]
            row += f" {n if caught else f'**not found in {n}**'} | {shrunk} |"
        print(row, file=out)
    killed = sum(bool(k) for k in table.values())
    print(f"\nkill rate on the shipped cases: {killed}/{len(table)}", file=out)
    if sweeps:
        found = sum(c for c, _, _ in sweeps.values())
        print(f"kill rate of the sweep alone ({examples} examples, seed {seed}): {found}/{len(sweeps)}", file=out)
        killed = sum(bool(table[n]) or sweeps[n][0] for n in table)
        print(f"kill rate, cases and sweep together: {killed}/{len(table)}", file=out)
    return 0 if killed == len(table) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="kill rate of the bug catalogue on the shipped cases")
    ap.add_argument("--cases", default="cases")
    ap.add_argument("--sweep", action="store_true", help="also sweep random problems for each bug")
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    table = kill_table(args.cases)
    sweeps = sweep_table(args.examples, args.seed) if args.sweep else {}
    return print_table(table, sweeps, len(find_cases([args.cases])), args.examples, args.seed)


if __name__ == "__main__":
    sys.exit(main())
