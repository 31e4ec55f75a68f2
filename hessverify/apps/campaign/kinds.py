"""The kinds of campaign: what a unit is, how a worker runs a batch of them, how the results are told.

Each kind reuses the code that runs its measurement in one process, per
unit; nothing here computes a Hessian or a bound of its own.

* ``false-alarms``: unit ``i`` is problem ``i`` of the false-alarm study
  (:func:`hessverify.apps.trust.false_alarms.judge`);
* ``detection``: unit ``i`` is shipped case ``i`` under every planted bug
  (:func:`hessverify.apps.trust.detection.case_kills`), and with ``--sweep`` one
  unit per bug, a Hypothesis sweep of its own (:func:`hessverify.apps.trust.detection.sweep_bug`);
* ``conformance``: a unit is one library routine on one seed, a Hypothesis
  run with its own shrinking (:func:`hessverify.adapters.conformance.run_quantity`);
* ``sweep``: a unit is one seed of a sweep of the user's function, each its
  own Hypothesis run with its own shrinking (:func:`hessverify.checking.check.check`);
  the report leads with the smallest failing problem of all seeds.

Options that decide the units go into :attr:`hessverify.apps.campaign.Plan.options`
(a resume file must carry the same).  A unit that is a Hypothesis run of its
own takes seed ``S + i`` (``S``: ``--seed``), so its first unit is the
one-process command with ``--seed S``.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from hessverify.apps.campaign import Outcome, Plan
from hessverify.errors import EXIT_DISCREPANCY, EXIT_FUNCTION_FAILED, EXIT_OK, UsageError

__all__ = ["KINDS", "REPORT_PROBLEMS", "add_options", "conformance_work", "detection_work", "false_alarms_work",
           "lab_claims_work", "plan_for", "sweep_work"]


def _nonnegative(value: int, option: str) -> int:
    if value < 0:
        raise UsageError(f"{option} {value}: give a number at least 0")
    return value


# -- false-alarms -------------------------------------------------------------------------------------------


def false_alarms_work(options: dict[str, Any], indices: list[int]) -> list[Outcome]:
    """A worker's batch of the false-alarm study: :func:`~hessverify.trust.false_alarms.judge` per index."""
    from hessverify.apps.trust.false_alarms import judge

    out = []
    for i in indices:
        j = judge(options["seed"], i, special_share=options["special_share"], use_torch=options["torch"],
                  graph_share=options.get("graph_share", 0.5), saturated_share=options.get("saturated_share", 0.0))
        out.append(Outcome(j.index, j.id, j.records, j.not_compared, {"draw": j.draw, "graph": j.graph}))
    return out


def _false_alarms_finish(plan: Plan, outcomes: list[Outcome], seconds: float, out: TextIO,
                         err: TextIO) -> tuple[int, dict[str, Any]]:
    from hessverify.apps.trust.false_alarms import Judged, alarm_lines, print_summary, save_case, summarise

    judged = [Judged(o.index, o.id, o.extra["draw"], o.records, o.not_compared, o.extra.get("graph", False))
              for o in outcomes]
    save = plan.settings.get("save")
    for j in judged:
        for line in alarm_lines(j):
            print(line, file=out)
        if save and any(not c.passed for c in j.records):
            save_case(j, plan.options["seed"], plan.options["special_share"], Path(save),
                      plan.options.get("graph_share", 0.5), plan.options.get("saturated_share", 0.0))
    summary = summarise(judged, plan.options["torch"], seconds)
    print_summary(summary, out)
    return (EXIT_DISCREPANCY if summary["failures"] else EXIT_OK), summary


def _false_alarms_report(plan: Plan, outcomes: list[Outcome], directory: Path, err: TextIO) -> None:
    """The usual report over the problems with an alarm (leading) and the first 20 of the campaign."""
    from hessverify.apps.trust.false_alarms import problem_at
    from hessverify.reports import report_problems

    def problem(o: Outcome) -> Any:
        return problem_at(plan.options["seed"], o.index, plan.options["special_share"],
                          plan.options.get("graph_share", 0.5), plan.options.get("saturated_share", 0.0))[0]

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
    p.add_argument("--graph-share", type=float, default=0.5, metavar="F",
                   help="share of the problems drawn as feed-forward graphs with skip connections (default 0.5)")
    p.add_argument("--saturated-share", type=float, default=0.0, metavar="F",
                   help="share of the problems drawn with a saturated output, as the strategies draw them "
                        "(default 0; at most 1 together with --special-share)")
    p.add_argument("--no-torch", action="store_true",
                   help="leave out the independent PyTorch implementation (default: used where torch is installed)")
    p.add_argument("--save", metavar="DIR", help="write every problem with an alarm as a case file into DIR")


def _false_alarms_plan(args: argparse.Namespace) -> Plan:
    from hessverify.apps.trust.false_alarms import candidate_names
    from hessverify.engine.budget import estimate, estimate_seconds
    from hessverify.model.network import Architecture, Layer
    from hessverify.model.problem import Problem

    _nonnegative(args.problems, "--problems")
    _nonnegative(args.seed, "--seed")
    if not 0.0 <= args.special_share <= 1.0:
        raise UsageError(f"--special-share {args.special_share}: must be between 0 and 1")
    graph_share = getattr(args, "graph_share", 0.5)
    if not 0.0 <= graph_share <= 1.0:
        raise UsageError(f"--graph-share {graph_share}: must be between 0 and 1")
    saturated_share = getattr(args, "saturated_share", 0.0)
    if not (0.0 <= saturated_share and args.special_share + saturated_share <= 1.0):
        raise UsageError(f"--saturated-share {saturated_share}: at least 0, and at most 1 with --special-share")
    # asked of the installation, not imported: torch takes seconds to load and only the workers compute with it
    use_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    # the largest problem the study draws: 4 inputs, three layers of 4 units each reading every earlier
    # output (a dense graph), 6 patterns
    arch = Architecture(4, tuple(Layer(4, "tanh", True, sources=tuple(range(l))) for l in range(1, 4)))
    largest = Problem(arch, "sse", np.zeros(arch.n_params), np.zeros((6, 4)), np.zeros((6, 4)), "sum", id="largest")
    names = [n for n in candidate_names(False)] + ["autograd", "complex_step"] + (["autograd"] * 2 if use_torch else [])
    options = {"seed": args.seed, "special_share": args.special_share, "graph_share": graph_share, "torch": use_torch}
    if saturated_share:  # only when asked: a campaign without it resumes one from before the option
        options["saturated_share"] = saturated_share
    return Plan("false-alarms", options,
                args.problems, false_alarms_work, _false_alarms_finish,
                unit_seconds=estimate_seconds(largest, names), unit_memory=estimate(largest, names),
                report=_false_alarms_report, settings={"save": args.save})


# -- detection ----------------------------------------------------------------------------------------------


def detection_work(options: dict[str, Any], indices: list[int]) -> list[Outcome]:
    """A worker's batch of the detection run: a shipped case under every bug, or one bug's sweep."""
    from hessverify.apps.trust.detection import case_kills, sweep_bug
    from hessverify.apps.trust.mutants import MUTANTS
    from hessverify.io.cases import load_case

    cases, bugs = options["cases"], list(MUTANTS)
    out = []
    for i in indices:
        if i < len(cases):
            case = load_case(Path(options["case_dir"]) / f"{cases[i]}.toml")
            records = case_kills(case)
            out.append(Outcome(i, case.id, records, [], {"caught": sorted(c.method for c in records if not c.passed)}))
        else:
            name = bugs[i - len(cases)]
            r, shrunk = sweep_bug(name, options["examples"], options["seed"])
            out.append(Outcome(i, f"sweep-{name}", list(r.comparisons), [],
                               {"bug": name, "caught": not r.passed, "examples": r.n_problems, "shrunk": shrunk}))
    return out


def _detection_finish(plan: Plan, outcomes: list[Outcome], seconds: float, out: TextIO,
                      err: TextIO) -> tuple[int, dict[str, Any]]:
    from hessverify.apps.trust.detection import print_table
    from hessverify.apps.trust.mutants import MUTANTS

    n_cases = len(plan.options["cases"])
    table: dict[str, list[str]] = {name: [] for name in MUTANTS}
    for o in outcomes[:n_cases]:
        for name in o.extra["caught"]:
            table[name].append(o.id)
    sweeps = {o.extra["bug"]: (o.extra["caught"], o.extra["examples"], o.extra["shrunk"]) for o in outcomes[n_cases:]}
    status = print_table(table, sweeps, n_cases, plan.options["examples"], plan.options["seed"], out)
    summary = {"bugs": len(table), "caught_by_cases": sum(bool(k) for k in table.values()),
               "caught_by_sweep": sum(c for c, _, _ in sweeps.values()) if sweeps else None,
               "seconds": round(seconds, 1)}
    return (EXIT_OK if status == 0 else EXIT_DISCREPANCY), summary


def _detection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", default="cases", metavar="DIR", help="the case files each bug is run on (default cases/)")
    p.add_argument("--sweep", action="store_true", help="also sweep random problems for each bug (one unit per bug)")
    p.add_argument("--examples", type=int, default=200, metavar="N", help="examples of each bug's sweep (default 200)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="Hypothesis seed of every bug's sweep (default 0)")


def _detection_plan(args: argparse.Namespace) -> Plan:
    from hessverify.apps.trust.mutants import MUTANTS
    from hessverify.engine.budget import estimate, estimate_seconds
    from hessverify.io.cases import find_cases, load_case

    _nonnegative(args.seed, "--seed")
    if args.examples < 1:
        raise UsageError(f"--examples {args.examples}: give at least 1")
    folder = Path(args.cases)
    if not folder.is_dir():
        raise UsageError(f"--cases {folder}: not a directory of case files")
    cases = [load_case(p) for p in find_cases([folder])]  # every fault of a case file now, in one line
    if not cases:
        raise UsageError(f"--cases {folder}: holds no *.toml case files")
    names = ["autograd", "backprop"] + ["backprop"] * len(MUTANTS)
    largest = max(cases, key=lambda c: c.n_params * c.n_params * c.n_patterns)
    sweep_seconds = 0.2 * args.examples if args.sweep else 0.0  # a sweep example: a small problem, two Hessians
    return Plan("detection", {"case_dir": str(folder.resolve()), "cases": [c.id for c in cases], "sweep": args.sweep,
                              "examples": args.examples, "seed": args.seed},
                len(cases) + (len(MUTANTS) if args.sweep else 0), detection_work, _detection_finish,
                unit_seconds=max(estimate_seconds(largest, names), sweep_seconds),
                unit_memory=estimate(largest, names), noun="units", batch=1)


# -- conformance ------------------------------------------------------------------------------------------


def _quantities(libraries: list[str], networks: list[str] | None = None) -> list[tuple[str, int]]:
    from hessverify.adapters.conformance import selected

    return [(lib, k) for lib in libraries for k in selected(lib, networks)]


def conformance_work(options: dict[str, Any], indices: list[int]) -> list[Outcome]:
    """A worker's batch of conformance: unit ``i`` is quantity ``i // seeds`` on seed ``seed + i % seeds``."""
    from hessverify.adapters.conformance import run_one

    quantities, seeds = _quantities(options["library"], options.get("networks")), options["seeds"]
    out = []
    for i in indices:
        lib, k = quantities[i // seeds]
        seed = options["seed"] + i % seeds
        row = run_one(lib, k, examples=options["examples"], seed=seed, precision=options["precision"])
        out.append(Outcome(i, f"{row.quantity} seed {seed}", [], [], {"seed": seed, "row": row.to_record()}))
    return out


def _conformance_rows(plan: Plan, outcomes: list[Outcome]) -> list[Any]:
    """One row per quantity, its seeds merged (:func:`hessverify.adapters.conformance.merge`)."""
    from hessverify.adapters.conformance import Row, merge

    seeds = plan.options["seeds"]
    return [merge([Row.from_record(o.extra["row"]) for o in outcomes[q * seeds:(q + 1) * seeds]])
            for q in range(len(outcomes) // seeds)]


def _conformance_finish(plan: Plan, outcomes: list[Outcome], seconds: float, out: TextIO,
                        err: TextIO) -> tuple[int, dict[str, Any]]:
    from hessverify.adapters.conformance import rows_markdown

    rows = _conformance_rows(plan, outcomes)
    print(rows_markdown(rows), end="", file=out)
    failed = [r for r in rows if r.failures]
    for r in failed:
        print(f"\n{r.library} {r.quantity}: {r.failure_summary}", file=out)
    summary = {"quantities": len(rows), "failed": len(failed), "problems": sum(r.tried for r in rows),
               "seconds": round(seconds, 1)}
    return (EXIT_DISCREPANCY if failed else EXIT_OK), summary


def _conformance_report(plan: Plan, outcomes: list[Outcome], directory: Path, err: TextIO) -> None:
    from hessverify.adapters.conformance import write_report

    o = plan.options
    command = (f"hessverify campaign conformance --library {' '.join(o['library'])} --precision {o['precision']} "
               f"--examples {o['examples']} --seed {o['seed']} --seeds {o['seeds']} --report {directory}")
    written = write_report(directory, _conformance_rows(plan, outcomes), command=command, seed=o["seed"],
                           examples=o["examples"], precision=o["precision"])
    print(f"report written to {directory} ({len(written)} files)", file=err)


def _conformance_options(p: argparse.ArgumentParser) -> None:
    from hessverify.adapters.conformance import add_library_options

    add_library_options(p)
    p.add_argument("--examples", type=int, default=100, metavar="N", help="problems per quantity and seed (default 100)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="Hypothesis seed of the first run (default 0)")
    p.add_argument("--seeds", type=int, default=1, metavar="K",
                   help="independent Hypothesis runs per quantity, on seeds S, S+1, ..., S+K-1 (default 1)")


def _conformance_plan(args: argparse.Namespace) -> Plan:
    from hessverify.adapters.conformance import check_libraries

    _nonnegative(args.seed, "--seed")
    for option, value in (("--examples", args.examples), ("--seeds", args.seeds)):
        if value < 1:
            raise UsageError(f"{option} {value}: give at least 1")
    check_libraries(args.library, args.precision)
    libraries = list(dict.fromkeys(args.library))
    return Plan("conformance", {"library": libraries, "precision": args.precision, "examples": args.examples,
                                "seed": args.seed, "seeds": args.seeds,
                                **({"networks": args.networks} if args.networks else {})},
                len(_quantities(libraries, args.networks)) * args.seeds, conformance_work, _conformance_finish,
                unit_seconds=2.0 * args.examples, unit_memory=2**30, noun="runs", batch=1,
                report=_conformance_report)


# -- sweep ------------------------------------------------------------------------------------------------


def sweep_work(options: dict[str, Any], indices: list[int]) -> list[Outcome]:
    """A worker's batch of a sweep: unit ``i`` is :func:`hessverify.checking.check` of the function on seed ``seed + i``.

    Each is a Hypothesis run of its own, with its own shrinking; a function
    that fails is that seed's finding (``function_failed``), not the end of the campaign.
    """
    import contextlib
    import io
    import os
    import sys

    from hessverify.checking.check import check
    from hessverify.checking.strategies import problems
    from hessverify.checking.sweep import load_function
    from hessverify.errors import FunctionUnderTestError

    if options["cwd"] not in sys.path:  # a dotted MODULE is found where the campaign was started, as by sweep
        sys.path.append(options["cwd"])
    fn = load_function(options["spec"])
    kwargs = {} if options["against"] is None else {"against": tuple(options["against"])}
    out = []
    for i in indices:
        seed = options["seed"] + i
        extra: dict[str, Any] = {"seed": seed}
        records = []
        try:
            with contextlib.redirect_stdout(io.StringIO()), _cwd(options["cwd"], os):
                chains = options.get("chains_only", False)
                strategy = problems(graphs=not chains, kinds=not (chains or options.get("dense_only", False)))
                r = check(fn, strategy, returns=options["returns"], max_examples=options["examples"], seed=seed,
                          timeout=options["timeout"], isolation=options.get("isolation", "process"), **kwargs)
            d = r.to_dict()
            records = list(r.comparisons)
            extra.update({k: d[k] for k in ("passed", "n_problems", "shrink_calls", "problem_toml")})
        except FunctionUnderTestError as exc:
            p = exc.problem
            extra.update({"passed": False, "function_failed": str(exc),
                          "problem_toml": p.to_toml() if p is not None else None})  # type: ignore[attr-defined]
        out.append(Outcome(i, f"seed-{seed}", records, [], extra))
    return out


@contextmanager
def _cwd(path: str, os: Any) -> Any:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _smallest(outcomes: list[Outcome], key: str = "problem_toml") -> tuple[Outcome, Any] | None:
    """The outcome whose failing problem is smallest (fewest parameters, then patterns, then the lowest seed)."""
    from hessverify.io.cases import parse_case

    failing = [(o, parse_case(o.extra[key])) for o in outcomes
               if not o.extra.get("passed", True) and o.extra.get(key)]
    return min(failing, key=lambda x: (x[1].n_params, x[1].n_patterns, x[0].index), default=None)


def _sweep_finish(plan: Plan, outcomes: list[Outcome], seconds: float, out: TextIO,
                  err: TextIO) -> tuple[int, dict[str, Any]]:
    from hessverify.checking.check import describe

    spec = plan.options["spec"]
    disagreed = [o for o in outcomes if not o.extra["passed"] and "function_failed" not in o.extra]
    failed = [o for o in outcomes if "function_failed" in o.extra]
    tried = sum(o.extra.get("n_problems", 0) for o in outcomes)
    summary = {"seeds": len(outcomes), "examples_tried": tried, "disagreed": [o.extra["seed"] for o in disagreed],
               "function_failed": [o.extra["seed"] for o in failed], "seconds": round(seconds, 1)}
    leading = _smallest(disagreed) or _smallest(failed)
    if leading is None:
        print(f"hessverify campaign sweep: {spec} agrees with the references on {tried} random problem(s) over "
              f"{len(outcomes)} seed(s) ({plan.options['seed']} to {plan.options['seed'] + len(outcomes) - 1})",
              file=out)
        return EXIT_OK, summary
    o, problem = leading
    summary["smallest"] = {"seed": o.extra["seed"], "n_params": problem.n_params, "n_patterns": problem.n_patterns}
    what = "DISAGREES" if disagreed else "FAILED"
    print(f"hessverify campaign sweep: {spec} {what} on {len(disagreed) or len(failed)} of {len(outcomes)} seed(s); "
          f"the smallest problem (seed {o.extra['seed']}, {problem.architecture.describe()}, {problem.loss}, "
          f"{problem.n_params} parameter(s)) follows on standard output", file=err)
    print(f"# found by hessverify campaign sweep --method-under-test {spec} (seed {o.extra['seed']})", file=out)
    for line in ([describe(c) for c in o.records if not c.passed] or [o.extra.get("function_failed", "")]):
        print("# " + line, file=out)
    out.write(problem.to_toml())
    return (EXIT_DISCREPANCY if disagreed else EXIT_FUNCTION_FAILED), summary


def _sweep_report(plan: Plan, outcomes: list[Outcome], directory: Path, err: TextIO) -> None:
    """The sweep's report: led by the smallest failing problem, then every other seed's minimal problem."""
    from dataclasses import replace

    from hessverify.checking.sweep import load_function, write_report
    from hessverify.io.cases import parse_case

    failing = [(o, parse_case(o.extra["problem_toml"])) for o in outcomes
               if not o.extra["passed"] and o.extra.get("problem_toml")]
    failing.sort(key=lambda x: (x[1].n_params, x[1].n_patterns, x[0].index))
    problems = [replace(p, id=f"seed-{o.extra['seed']}") for o, p in failing]
    write_report(directory, plan.options["spec"], load_function(plan.options["spec"]), plan.options["returns"],
                  plan.options["against"], problems[1:], problems[:1], err, plan.options["timeout"],
                  plan.options.get("isolation", "process"))


def _sweep_options(p: argparse.ArgumentParser) -> None:
    from hessverify.checking.sandbox import DEFAULT_TIMEOUT

    p.add_argument("--method-under-test", required=True, metavar="MODULE:FUNCTION",
                   help="FUNCTION(problem) -> Hessian; MODULE is dotted or a path to a .py file")
    p.add_argument("--examples", type=int, default=100, metavar="N", help="random problems per seed (default 100)")
    p.add_argument("--seeds", type=int, default=None, metavar="K",
                   help="independent Hypothesis runs, on seeds S, S+1, ..., S+K-1 (default: 4 per worker)")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="the first seed (default: random, printed)")
    p.add_argument("--returns", choices=("hessian", "hvp", "diagonal"), default="hessian",
                   help="what FUNCTION returns (hvp: FUNCTION(problem, v) -> H v); default hessian")
    p.add_argument("--against", action="append", metavar="NAME",
                   help="a method or reference to compare with (repeatable; default backprop, autograd, fd)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"longest one call of FUNCTION may take (default {DEFAULT_TIMEOUT:g}; 0: no limit)")
    p.add_argument("--chains-only", action="store_true",
                   help="draw dense chains only, for a function that does not handle skip connections")
    p.add_argument("--dense-only", action="store_true",
                   help="draw dense networks only, for a function that handles no other layer kind")
    p.add_argument("--in-process", action="store_true",
                   help="run FUNCTION in the worker's own process, for a debugger (default: a child process of "
                        "the worker, where a timeout is a kill and any exit of FUNCTION is its failure)")


def _sweep_plan(args: argparse.Namespace) -> Plan:
    import os
    import random

    from hessverify.checking.sweep import load_function
    from hessverify.engine.registry import get_method

    if args.examples < 1:
        raise UsageError(f"--examples {args.examples}: give at least 1")
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: give at least 1")
    from hessverify.checking.sandbox import check_timeout

    check_timeout(args.timeout, "--timeout")
    for name in args.against or ():
        get_method(name)
    spec = args.method_under_test
    module, _, name = spec.rpartition(":")
    if module.endswith(".py") or "/" in module:  # a path: the workers find it from anywhere on this file system
        spec = f"{os.path.abspath(module)}:{name}"
    load_function(spec)  # every fault of the spec now, in one line
    seed = _nonnegative(args.seed, "--seed") if args.seed is not None else random.SystemRandom().randrange(2**31)
    seeds = args.seeds or 4 * (args.workers or (1 if args.scheduler else _cores()))
    options = {"spec": spec, "cwd": os.getcwd(), "examples": args.examples, "seed": seed, "returns": args.returns,
               "against": args.against, "timeout": args.timeout or None,
               "chains_only": bool(getattr(args, "chains_only", False)),
               "dense_only": bool(getattr(args, "dense_only", False))}
    if getattr(args, "in_process", False):  # only when asked: a campaign run without it resumes one from before
        options["isolation"] = "thread"
    return Plan("sweep", options,
                seeds, sweep_work, _sweep_finish, unit_seconds=1.0 * args.examples, unit_memory=2**28,
                noun="seeds", batch=1, report=_sweep_report if args.returns != "hvp" else None)


def _cores() -> int:
    from hessverify.apps.campaign import default_workers

    return default_workers()


# -- lab-claims ---------------------------------------------------------------------------------------------


def lab_claims_work(options: dict[str, Any], indices: list[int]) -> list[Outcome]:
    """A worker's batch of the claims study: :func:`hessverify.apps.lab.claims.run_unit` per index."""
    from hessverify.apps.lab.claims import Unit, run_unit, units

    every = units(options)
    out = []
    for i in indices:
        u: Unit = every[i]
        out.append(Outcome(i, u.id, [], [], {"unit": run_unit(options, u)}))
    return out


def _lab_claims_finish(plan: Plan, outcomes: list[Outcome], seconds: float, out: TextIO,
                       err: TextIO) -> tuple[int, dict[str, Any]]:
    import os

    from hessverify.apps.lab.claims import markdown, summarise

    summary = summarise([o.extra["unit"] for o in outcomes], plan.options)
    load = os.getloadavg()
    summary["machine"] = {"cores": os.cpu_count(), "load_at_end": [round(v, 2) for v in load],
                          "seconds": round(seconds, 1)}
    print(markdown(summary, plan.options), file=out)
    return EXIT_OK, summary


def _lab_claims_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="the tiny configuration (2 data sets, 3 starts, small budgets) that CI runs")
    p.add_argument("--starts", type=int, default=None, metavar="N",
                   help="seeded starts per data set and optimiser (default 20; --quick 3)")
    p.add_argument("--datasets", default=None, metavar="A,B,...",
                   help="data sets (default xor,parity-7,iris,wine,breast-cancer)")


def _lab_claims_plan(args: argparse.Namespace) -> Plan:
    from hessverify.apps.lab.claims import DATASETS, default_options, units

    options = default_options(args.quick)
    if args.starts is not None:
        if args.starts < 1:
            raise UsageError(f"--starts {args.starts}: give at least 1")
        options["starts"] = args.starts
    if args.datasets:
        names = [d.strip() for d in args.datasets.split(",") if d.strip()]
        bad = [d for d in names if d not in DATASETS]
        if bad or not names:
            raise UsageError(f"--datasets {args.datasets!r}: choose from {', '.join(DATASETS)}")
        options["datasets"] = names
    if any(d in options["datasets"] for d in ("iris", "wine", "breast-cancer")) \
            and importlib.util.find_spec("sklearn") is None:
        raise UsageError("the claims study's iris, wine and breast-cancer need scikit-learn; pip install "
                         "'hessverify[lab]' (or --datasets xor,parity-7)")
    every = units(options)
    return Plan("lab-claims", options, len(every), lab_claims_work, _lab_claims_finish,
                unit_seconds=options["time_limit"] + 5.0, unit_memory=2**28, noun="runs", batch=5)


# -- the table of kinds -------------------------------------------------------------------------------------

KINDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], Plan]]] = {
    "false-alarms": ("the false-alarm study: correct methods on random and special-value problems (docs/trust.md)",
                     _false_alarms_options, _false_alarms_plan),
    "detection": ("the bug catalogue: every planted bug on every shipped case, and with --sweep a sweep per bug",
                  _detection_options, _detection_plan),
    "conformance": ("the libraries' own second-order code on random problems, held to hessverify (docs/conformance.md)",
                    _conformance_options, _conformance_plan),
    "sweep": ("your Hessian function on random problems: independent seeds, merged, led by the smallest failure",
              _sweep_options, _sweep_plan),
    "lab-claims": ("the lab's claims study: optimisers from seeded starts on five data sets, a verdict per claim "
                   "(docs/lab.md; also 'hessverify lab claims')", _lab_claims_options, _lab_claims_plan),
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
