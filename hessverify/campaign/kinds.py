"""The kinds of campaign: what a unit is, how a worker runs a batch of them, how the results are told.

Each kind reuses the code that runs its measurement in one process, per
unit; nothing here computes a Hessian or a bound of its own.

* ``false-alarms``: unit ``i`` is problem ``i`` of the false-alarm study
  (:func:`hessverify.trust.false_alarms.judge`);
* ``detection``: unit ``i`` is shipped case ``i`` under every planted bug
  (:func:`hessverify.trust.detection.case_kills`), and with ``--sweep`` one
  unit per bug, a Hypothesis sweep of its own (:func:`hessverify.trust.detection.sweep_bug`);
* ``conformance``: a unit is one library routine on one seed, a Hypothesis
  run with its own shrinking (:func:`hessverify.conformance.run_quantity`);
* ``sweep``: a unit is one seed of a sweep of the user's function, each its
  own Hypothesis run with its own shrinking (:func:`hessverify.check.check`);
  the report leads with the smallest failing problem of all seeds.

Options that decide the units go into :attr:`hessverify.campaign.Plan.options`
(a resume file must carry the same); seeds of the units are derived from
``(seed, index)`` by :func:`unit_seed`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from hessverify.campaign import Outcome, Plan
from hessverify.errors import EXIT_DISCREPANCY, EXIT_OK, UsageError

__all__ = ["KINDS", "add_options", "false_alarms_work", "plan_for", "unit_seed"]


def unit_seed(seed: int, index: int) -> int:
    """The seed of unit ``index`` of a campaign with ``seed``: independent streams, from ``(seed, index)`` alone.

    Examples
    --------
    >>> unit_seed(0, 3) == unit_seed(0, 3) != unit_seed(0, 4)
    True
    """
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _nonnegative(value: int, option: str) -> int:
    if value < 0:
        raise UsageError(f"{option} {value}: give a number at least 0")
    return value


# -- false-alarms -------------------------------------------------------------------------------------------


def false_alarms_work(options: dict[str, Any], indices: list[int]) -> list[Outcome]:
    """A worker's batch of the false-alarm study: :func:`~hessverify.trust.false_alarms.judge` per index."""
    from hessverify.trust.false_alarms import judge

    out = []
    for i in indices:
        j = judge(options["seed"], i, special_share=options["special_share"], use_torch=options["torch"])
        out.append(Outcome(j.index, j.id, j.records, j.not_compared, {"draw": j.draw}))
    return out


def _false_alarms_finish(plan: Plan, outcomes: list[Outcome], seconds: float, out: TextIO,
                         err: TextIO) -> tuple[int, dict[str, Any]]:
    from hessverify.trust.false_alarms import Judged, alarm_lines, print_summary, save_case, summarise

    judged = [Judged(o.index, o.id, o.extra["draw"], o.records, o.not_compared) for o in outcomes]
    save = plan.settings.get("save")
    for j in judged:
        for line in alarm_lines(j):
            print(line, file=out)
        if save and any(not c.passed for c in j.records):
            save_case(j, plan.options["seed"], plan.options["special_share"], Path(save))
    summary = summarise(judged, plan.options["torch"], seconds)
    print_summary(summary, out)
    return (EXIT_DISCREPANCY if summary["failures"] else EXIT_OK), summary


def _false_alarms_report(plan: Plan, outcomes: list[Outcome], directory: Path, err: TextIO) -> None:
    """The usual report over the problems with an alarm (leading) and the first 20 of the campaign."""
    from hessverify.reports import report_problems
    from hessverify.trust.false_alarms import problem_at

    def problem(o: Outcome) -> Any:
        return problem_at(plan.options["seed"], o.index, plan.options["special_share"])[0]

    alarmed = [problem(o) for o in outcomes if any(not c.passed for c in o.records)]
    first = [problem(o) for o in outcomes[:REPORT_PROBLEMS]]
    written = report_problems(directory, first, leading=alarmed)
    print(f"report written to {', '.join(str(p) for p in written)}", file=err)


REPORT_PROBLEMS = 20
"""How many of a campaign's problems its ``--report`` verifies in full, besides those that failed."""


def _false_alarms_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", type=int, default=10_000, metavar="N", help="problems to draw (default 10000)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="problem i is drawn from (S, i) (default 0)")
    p.add_argument("--special-share", type=float, default=0.5, metavar="F",
                   help="share of the problems drawn from special values (default 0.5)")
    p.add_argument("--no-torch", action="store_true",
                   help="leave out the independent PyTorch implementation (default: used where torch is installed)")
    p.add_argument("--save", metavar="DIR", help="write every problem with an alarm as a case file into DIR")


def _false_alarms_plan(args: argparse.Namespace) -> Plan:
    from hessverify.budget import estimate, estimate_seconds
    from hessverify.model.network import Architecture, Layer
    from hessverify.model.problem import Problem
    from hessverify.references import torch_ref
    from hessverify.trust.false_alarms import candidate_names

    _nonnegative(args.problems, "--problems")
    _nonnegative(args.seed, "--seed")
    if not 0.0 <= args.special_share <= 1.0:
        raise UsageError(f"--special-share {args.special_share}: must be between 0 and 1")
    use_torch = not args.no_torch and torch_ref.available()
    # the largest problem the study draws: 4 inputs, three layers of 4 units, 6 patterns
    arch = Architecture(4, tuple(Layer(4, "tanh", True) for _ in range(3)))
    largest = Problem(arch, "sse", np.zeros(arch.n_params), np.zeros((6, 4)), np.zeros((6, 4)), "sum", id="largest")
    names = [n for n in candidate_names(False)] + ["autograd", "complex_step"] + (["autograd"] * 2 if use_torch else [])
    return Plan("false-alarms", {"seed": args.seed, "special_share": args.special_share, "torch": use_torch},
                args.problems, false_alarms_work, _false_alarms_finish,
                unit_seconds=estimate_seconds(largest, names), unit_memory=estimate(largest, names),
                report=_false_alarms_report, settings={"save": args.save})


# -- the table of kinds -------------------------------------------------------------------------------------

KINDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], Plan]]] = {
    "false-alarms": ("the false-alarm study: correct methods on random and special-value problems (docs/trust.md)",
                     _false_alarms_options, _false_alarms_plan),
}
"""Every kind: its one-line help, its options, and its plan from the parsed options."""


def add_options(kind: str, parser: argparse.ArgumentParser) -> None:
    """Add ``kind``'s own options to its parser."""
    KINDS[kind][1](parser)


def plan_for(kind: str, args: argparse.Namespace) -> Plan:
    """The :class:`~hessverify.campaign.Plan` of ``kind`` from the parsed options (one-line errors for bad ones)."""
    if kind not in KINDS:
        raise UsageError(f"campaign {kind!r}: choose from {', '.join(KINDS)}")
    return KINDS[kind][2](args)
