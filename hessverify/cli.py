"""The ``hessverify`` command line.

Exit statuses (also in ``hessverify --help`` and the README):

* 0: every comparison agrees within its bound;
* 1: a discrepancy;
* 2: invalid input or usage (a case file, an option, a name);
* 3: the Hessian does not exist at a case's point (a relu net input exactly at its kink);
* 4: overflow: the network's values are not finite at a case's point;
* 5: the function under test failed (it raised, called ``sys.exit`` or ``os._exit``, was killed or
  crashed, hung past ``--timeout`` or returned no usable array): a fault, not a discrepancy;
* 130: interrupted (SIGINT); 143: terminated (SIGTERM); no partial output is left.

Memory is estimated from the case before anything is allocated, and work past
``--max-memory`` is refused with status 2 and the estimated figure
(:mod:`hessverify.engine.budget`).

Errors meant for people are printed as one line, ``hessverify: error: ...``,
never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hessverify.checking.sandbox import DEFAULT_TIMEOUT
from hessverify.engine.registry import METHODS, get_method
from hessverify.errors import (
    EXIT_DISCREPANCY,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_NOT_DIFFERENTIABLE,
    EXIT_OK,
    EXIT_OVERFLOW,
    EXIT_TERMINATED,
    HessverifyError,
    OverflowReport,
    Terminated,
    UsageError,
    signal_behind,
)
from hessverify.io.cases import find_cases, load_case
from hessverify.model.well_posed import ensure_well_posed
from hessverify.symbolic.lecture import MAX_DIGITS, check_digits

if TYPE_CHECKING:
    from hessverify.engine.run import Run
    from hessverify.model.problem import Problem
    from hessverify.reports.html import Drawing

__all__ = ["main"]

EPILOG = """exit status:
  0  every comparison agrees within its bound
  1  a discrepancy: some method disagrees with some reference
  2  invalid input or usage
  3  the Hessian does not exist at a case's point (relu net input exactly at its kink)
  4  overflow: the network's values are not finite at a case's point
  5  the function under test failed: it raised, called sys.exit or os._exit,
     was killed or crashed, hung past --timeout or returned no usable array
     (not a discrepancy)
  6  stationary: no stationary point found within --max-iter
  130  interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM); no partial output is left
"""


HESSIAN_FORMS = """Compute a Hessian by one method and save it in the public parameter order.

What is saved depends on the method's kind ('hessverify methods' lists them):
  matrix  FILE.npy holds the (W, W) matrix
  vector  FILE.npy holds the (W,) diagonal
  blocks  FILE.npy holds the (W, W) matrix with the per-layer diagonal blocks
          on its diagonal and zeros elsewhere; FILE.npz holds one array per
          layer, named layer1, layer2, ..., each (size_l, size_l)
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors leave with status 2 through our own path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _budget_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--max-memory", metavar="SIZE", default=None,
                        help="refuse work estimated to need more memory than SIZE (e.g. 4G, 512M); default: a safe "
                             "share of this machine (a quarter of its memory, within ulimit and cgroup limits)")
    common.add_argument("--max-time", metavar="SECONDS", type=float, default=None,
                        help="refuse work estimated to take longer (default 600; 0: no limit)")
    return common


def _build_parser() -> argparse.ArgumentParser:
    budget = _budget_options()
    p = _Parser(prog="hessverify", description="Verify second-order backpropagation.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from hessverify.base.version import VERSION

    p.add_argument("--version", action="version", version=f"hessverify {VERSION}",
                   help="print the installed version and exit")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars (they are drawn on standard "
                   "error, only when it is a terminal)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    v = sub.add_parser("verify", help="compare every method with every reference on cases", parents=[budget],
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("paths", nargs="*", default=["cases"], metavar="CASE_OR_DIR",
                   help="case files or directories of *.toml (default: cases/)")
    v.add_argument("--method", action="append", dest="methods", metavar="NAME",
                   help="a method to verify (repeatable; default: every exact method)")
    v.add_argument("--reference", action="append", dest="references", metavar="NAME",
                   help="a reference to hold the methods to (repeatable; default: every reference)")
    v.add_argument("--json", metavar="PATH", help="write the results as JSON")
    v.add_argument("--report", metavar="DIR", help="write results.json, report.md and report.html into DIR")
    v.add_argument("--verbose", "-v", action="store_true",
                   help="one line per comparison (default: one line per case, plus any failure)")
    v.set_defaults(func=_cmd_verify)

    h = sub.add_parser("hessian", help="compute a Hessian (or its diagonal, blocks, approximation) and save it",
                       parents=[budget], description=HESSIAN_FORMS, formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("case", metavar="CASE")
    h.add_argument("--method", default="backprop", help=f"one of: {', '.join(METHODS)}")
    h.add_argument("--out", required=True, metavar="FILE.npy",
                   help="where to save: .npy for every method; .npz also for block methods")
    h.set_defaults(func=_cmd_hessian)

    pa = sub.add_parser("params", help="print the parameter names in the public order")
    pa.add_argument("case", metavar="CASE")
    pa.set_defaults(func=_cmd_params)

    d = sub.add_parser("derive", help="closed form of a gradient or Hessian entry, and its value at the case's point",
                       parents=[budget])
    d.add_argument("case", metavar="CASE", nargs="?", help="the case file (before or after --entry)")
    d.add_argument("--entry", nargs="+", required=True, metavar="PARAM",
                   help="one name (a gradient entry) or two (a Hessian entry), e.g. --entry 'W1[0,1]' 'b2[0]'")
    d.add_argument("--latex", action="store_true", help="print LaTeX instead of plain text")
    d.add_argument("--explicit", action="store_true", help="also the closed form written out in the weights")
    d.add_argument("--digits", type=int, default=50,
                   help=f"significant digits of the value (16 to {MAX_DIGITS}; default 50)")
    d.add_argument("--form", choices=("a", "z", "rojas"), default="a",
                   help="f' and f'' in the net input a (default), textbook forms in the output z "
                        "(sigmoid' = z(1 - z), tanh' = 1 - z^2), or Rojas's o(1 - o)")
    d.set_defaults(func=_cmd_derive)

    ls = sub.add_parser("methods", help="list the registered methods and references")
    ls.set_defaults(func=_cmd_methods)

    sw = sub.add_parser("sweep", help="check your own Hessian function on random problems (Hypothesis)",
                        parents=[budget],
                        epilog="exit status: 0 nothing found, 1 a discrepancy (the minimal problem is printed "
                               "as a case file), 2 invalid usage, 5 the function under test failed (the problem "
                               "it failed on is printed as a case file)")
    sw.add_argument("--method-under-test", required=True, metavar="MODULE:FUNCTION",
                    help="FUNCTION(problem) -> Hessian; MODULE is dotted or a path to a .py file")
    sw.add_argument("--examples", type=int, default=100, metavar="N", help="random problems to try (default 100)")
    sw.add_argument("--seed", type=int, default=None, metavar="S", help="Hypothesis seed (default: random, printed)")
    sw.add_argument("--json", metavar="PATH", help="write the result as JSON")
    sw.add_argument("--returns", choices=("hessian", "hvp", "diagonal"), default="hessian",
                    help="what FUNCTION returns (hvp: FUNCTION(problem, v) -> H v); default hessian")
    sw.add_argument("--against", action="append", metavar="NAME",
                    help="a method or reference to compare with (repeatable; default backprop, autograd, fd)")
    sw.add_argument("--report", metavar="DIR",
                    help="write results.json, report.md and report.html over the minimal failing problem and "
                         "the first 20 examples tried (--returns hessian or diagonal)")
    sw.add_argument("--chains-only", action="store_true",
                    help="draw dense chains only (each layer reads the previous one), for a function that does not "
                         "handle skip connections; default: graphs and chains, and every layer kind")
    sw.add_argument("--dense-only", action="store_true",
                    help="draw dense networks only (no convolution, norm, attention, ...), for a function that "
                         "handles only those; default: every layer kind")
    sw.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                    help=f"longest one call of FUNCTION may take; past it the function has failed (exit 5); "
                         f"0: no limit (default {DEFAULT_TIMEOUT:g})")
    sw.add_argument("--in-process", action="store_true",
                    help="run FUNCTION in this process, for a debugger (default: in a child process, where a "
                         "timeout is a kill and any exit or crash of FUNCTION is reported as its failure, exit 5)")
    sw.set_defaults(func=_cmd_sweep)
    _add_check_module_command(sub)
    _add_lab_commands(sub)
    _add_conformance_command(sub)
    _add_campaign_command(sub)
    _add_quiet(sub)
    return p


def _add_quiet(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``--quiet`` after any command too (``hessverify verify --quiet``), without overriding one given before it."""
    for command in dict.fromkeys(sub.choices.values()):
        command.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                             help="no progress bars")
        for action in command._subparsers._group_actions if command._subparsers else ():
            if isinstance(action, argparse._SubParsersAction):
                _add_quiet(action)


def _cmd_params(args: argparse.Namespace) -> int:
    case = load_case(args.case)
    sys.stdout.write("\n".join(case.param_names) + "\n")
    return EXIT_OK


def _cmd_derive(args: argparse.Namespace) -> int:
    from hessverify.symbolic.lecture import derive

    _entry_and_case(args)
    check_digits(args.digits)  # before reading the case
    case = load_case(args.case)
    ensure_well_posed(case)  # at a relu kink there is no second derivative to derive (exit 3)
    print(derive(case, args.entry, latex=args.latex, explicit=args.explicit, digits=args.digits, form=args.form))
    return EXIT_OK


def _entry_and_case(args: argparse.Namespace) -> None:
    """``derive --entry A B CASE``: ``--entry`` takes every word up to the next option, the case file included;
    a last word that is no parameter name is the case."""
    from hessverify.model.network import parse_param_name

    if args.case is None and len(args.entry) > 1:
        try:
            parse_param_name(args.entry[-1])
        except KeyError:
            args.case = args.entry.pop()
    if args.case is None:
        raise UsageError("the following arguments are required: CASE (see 'hessverify derive --help')")
    if len(args.entry) > 2:
        raise UsageError(f"--entry: give one parameter name (a gradient entry) or two (a Hessian entry), "
                         f"got {len(args.entry)}: {' '.join(args.entry)}")


def _cmd_methods(args: argparse.Namespace) -> int:
    for m in METHODS.values():
        print(f"{m.name:16s} {m.role:14s} {m.kind:8s} {m.summary}")
    return EXIT_OK


def _cmd_hessian(args: argparse.Namespace) -> int:
    import io

    from hessverify.io.files import check_output_path, write_output

    method = get_method(args.method)
    out = Path(args.out)
    allowed = (".npy", ".npz") if method.kind == "blocks" else (".npy",)
    if out.suffix not in allowed and not _special_file(out):
        raise UsageError(f"--out {args.out}: for {method.name} (kind {method.kind}) the file must end in "
                         + " or ".join(allowed))
    check_output_path(out, "--out")  # before any work
    _hold(args, args.out, "--out")
    case = load_case(args.case)
    from hessverify.engine.budget import check_seconds

    _announce(check_seconds([(case, [method.name])], args.max_time))
    from hessverify.engine.verify import hessian

    result = hessian(case, method.name)
    values = result if method.kind != "blocks" else result
    if any(not np.all(np.isfinite(b)) for b in (values if isinstance(values, list) else [values])):
        raise OverflowReport(f"{case.id}: {method.name} gives NaN or inf entries (overflow in the Hessian's "
                             "terms); nothing written")
    buffer = io.BytesIO()
    if method.kind == "blocks" and out.suffix == ".npz":
        np.savez(buffer, **{f"layer{i}": b for i, b in enumerate(result, start=1)})
        what = f"{len(result)} diagonal block(s) " + ", ".join(f"{b.shape[0]}x{b.shape[1]}" for b in result)
    else:
        if method.kind == "blocks":
            from hessverify.methods.block_diagonal import embed

            result = embed(case, result)
        np.save(buffer, result)
        what = "x".join(str(n) for n in result.shape)
    write_output(out, buffer.getvalue(), option="--out")
    print(f"{case.id}: {method.name} ({method.kind}) {what} written to {out}")
    return EXIT_OK


def _announce(seconds: float) -> None:
    """Say so on standard error before work estimated to take more than half a minute."""
    if seconds > 30:
        print(f"hessverify: about {seconds / 60:.1f} min of work estimated", file=sys.stderr)


def _special_file(path: Path) -> bool:
    """An existing device or FIFO (``/dev/null``, ``/dev/stdout``): written into, whatever its name."""
    import stat

    try:
        return not stat.S_ISREG(path.stat().st_mode) and not path.is_dir()
    except OSError:
        return False


def _cmd_sweep(args: argparse.Namespace) -> int:
    from hessverify.checking.sweep import run_sweep

    return run_sweep(args.method_under_test, examples=args.examples, seed=args.seed, json_path=args.json,
                     returns=args.returns, against=args.against, report_dir=args.report, timeout=args.timeout,
                     chains_only=args.chains_only, dense_only=args.dense_only,
                     isolation="thread" if args.in_process else "process")


def _add_check_module_command(sub: Any) -> None:
    cm = sub.add_parser(
        "check-module", help="check your curvature code on your own PyTorch or Keras model",
        description="BUILD:FUNCTION returns (model, loss_fn, inputs, targets); the function under test gets the "
                    "same four (and v for --returns hvp) and returns the Hessian, H v, ... in model.parameters() order "
                    "(a Keras model: model.trainable_variables order, hessverify.tensorflow.check_module)",
        epilog="exit status: 0 passed, 1 a discrepancy, 2 invalid usage (an unsupported model with --returns ggn), "
               "5 the function under test failed")
    cm.add_argument("build", metavar="BUILD:FUNCTION", help="e.g. build.py:make; MODULE is dotted or a .py path")
    cm.add_argument("--method-under-test", required=True, metavar="MODULE:FUNCTION",
                    help="your curvature code, e.g. mine.py:hvp")
    cm.add_argument("--returns", choices=("hessian", "hvp", "diagonal", "blocks", "ggn"), default="hessian",
                    help="what FUNCTION returns (default hessian)")
    cm.add_argument("--probes", type=int, default=None, metavar="K",
                    help="with --returns hvp: matrix-free, K random probes plus one per layer (never forms H)")
    cm.add_argument("--report", metavar="DIR", help="write results.json and report.md into DIR")
    cm.set_defaults(func=_cmd_check_module)


def _cmd_check_module(args: argparse.Namespace) -> int:
    import json

    from hessverify.checking.sweep import load_function

    if args.probes is not None and (args.returns != "hvp" or args.probes < 0):
        raise UsageError("--probes K: with --returns hvp only, K at least 0")
    if args.report:
        from hessverify.reports import check_directory

        check_directory(Path(args.report))
    build = load_function(args.build)
    fn = load_function(args.method_under_test)
    try:
        made = build()
    except Exception as exc:
        raise UsageError(f"{args.build}: raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                         ) from None
    if not isinstance(made, tuple) or len(made) != 4:
        raise UsageError(f"{args.build}: must return (model, loss_fn, inputs, targets), got {type(made).__name__}")
    if any(c.__module__.split(".")[0] == "keras" for c in type(made[0]).__mro__):  # a Keras model
        if args.probes is not None:
            raise UsageError("--probes K: matrix-free checking is for PyTorch models only")
        import hessverify.adapters.tensorflow as hvt
    else:
        import hessverify.adapters.torch as hvt  # type: ignore[no-redef]

    if args.probes is not None:
        result: Any = hvt.check_hvp(fn, *made, probes=args.probes)
        record = {"passed": result.passed, "n_params": result.n_params, "estimate": result.estimate,
                  "measured": result.measured, "probes": [vars(p) for p in result.probes]}
    else:
        result = hvt.check_module(fn, *made, returns=args.returns)
        record = {**result.to_dict(), "route": result.route, "served": list(result.served),
                  "not_served": result.not_served}
    print(result.summary())
    if args.report:
        out = Path(args.report)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(record, indent=1, default=str))
        (out / "report.md").write_text(f"# check-module {args.build} {args.method_under_test}\n\n```\n"
                                       f"{result.summary()}\n```\n")
    return EXIT_OK if result.passed else EXIT_DISCREPANCY


MARGIN_HEADER = ("margin = |error| / bound at the worst entry (the bound derived for that entry: "
                 "hessverify.engine.compare.TOLERANCES); a comparison passes when margin <= 1")


def _failure_line(c: Any) -> str:
    w = c.worst_entry
    if c.worst_entry.reference_value == 0.0:
        against = (f"reference is exactly 0, |error| {w.abs_error:.3g} > bound {w.bound:.3g} ({c.bound_kind})")
    else:
        against = (f"|error| {w.abs_error:.3g} > bound {w.bound:.3g} ({c.bound_kind}), margin {c.margin:.3g}")
    return (f"    FAIL {w.row} x {w.col}: {c.method} vs {c.reference}, {c.failing_entries} entries over the bound; "
            f"{c.method} {w.value:.17g}, {c.reference} {w.reference_value:.17g}; {against}")


def _case_line(case_id: str, comps: list[Any], width: int = 34) -> str:
    """One line for a case: comparisons passed and failed, the worst margin and where (ids padded to ``width``)."""
    from hessverify.engine.compare import is_not_applicable, margin_text

    judged = [c for c in comps if c.bound_kind != "approximation" and not is_not_applicable(c)]
    n_fail = sum(not c.passed for c in judged)
    line = f"{case_id:{width}s} {len(judged) - n_fail:3d} passed {n_fail:3d} failed"
    worst = max(judged, key=lambda c: c.margin, default=None)
    if worst is not None:
        w = worst.worst_entry
        line += f"  worst margin {margin_text(worst):>9s}  {worst.method} vs {worst.reference} at {w.row} x {w.col}"
    return line


def _cmd_verify(args: argparse.Namespace) -> int:
    from hessverify.engine.budget import check_memory, check_seconds
    from hessverify.engine.run import SkipReason, check_reference, plan, run_cases
    from hessverify.reports import check_directory, check_json_path
    from hessverify.reports.analysis import analyse_case
    from hessverify.reports.html import Drawing
    from hessverify.reports.progress import track

    for name in (args.methods or []) + (args.references or []):
        get_method(name)
    for name in args.references or []:
        check_reference(name)
    if args.json:
        check_json_path(Path(args.json))  # fail now, not after the whole run
        _hold(args, args.json, "--json")
    if args.report:
        check_directory(Path(args.report))
        _hold(args, args.report, "--report", directory=True)
    paths = find_cases(args.paths)
    cases = [load_case(p) for p in paths]  # every file validated before any work
    seen: dict[str, str] = {}
    for path, case in zip(paths, cases, strict=True):
        if case.id in seen:
            raise UsageError(f"{path}: id {case.id!r} is also the id of {seen[case.id]}; every case needs its own id")
        seen[case.id] = str(path)
    planned = [(case, [n for names in plan(case, args.methods, args.references) for n in names]) for case in cases]
    for case, names in planned:  # the memory and time each case will need, before any is computed
        check_memory(case, names)
    _announce(check_seconds(planned, args.max_time))
    print(MARGIN_HEADER)
    width = max([34, *(len(case.id) for case in cases)])  # the longest id keeps the columns in line
    if args.verbose:
        header = (f"{'case':{width}s} {'method':14s} {'reference':12s} {'max abs err':>11s} {'rel err':>9s} "
                  f"{'margin':>9s}  worst entry")
    else:
        header = f"{'case':{width}s} comparisons        worst margin and where"
    print(header)
    print("-" * len(header))
    approximations: list[str] = []
    runs = []
    # with --report, each case's pictures are drawn in the background while the next cases are verified
    with Drawing(cases=len(cases) if args.report else 0) as drawing:
        # each case is run once; the lines below, the JSON and the report all read from its run
        for run in run_cases(track(cases, "verifying", label=lambda case: case.id), args.methods, args.references,
                             budget=False):  # every case's budget was checked above, before any work
            runs.append(run)
            if run.skip is not None:
                if run.skip.reason is SkipReason.FUNCTION_FAILED:
                    raise run.skip.error
                label = "NOT DIFFERENTIABLE" if run.skip.reason is SkipReason.NOT_DIFFERENTIABLE else "OVERFLOW"
                print(f"{run.id:{width}s} {label}: {run.skip.message}")
                continue
            _print_run(run, args.verbose, approximations, width)
            if args.report:
                drawing.start(analyse_case(run))
            else:
                run.release()  # only the report draws the matrices: hold one case's at a time
        return _verify_summary(args, cases, runs, approximations, drawing)


def _verify_summary(args: argparse.Namespace, cases: list[Problem], runs: list[Run], approximations: list[str],
                    drawing: Drawing) -> int:
    """The totals line, the JSON and the report of ``hessverify verify``, from the runs; the exit status."""
    from hessverify.engine.compare import APPROXIMATION_NOTE, is_not_applicable
    from hessverify.reports import flatten, write_json, write_report

    results, skipped, _ = flatten(runs)
    n_fail = sum(not c.passed for c in results)
    n_approx = sum(c.bound_kind == "approximation" for c in results)
    n_na = sum(is_not_applicable(c) for c in results)
    n_comp = len(results) - n_approx - n_na
    if approximations:
        print(f"\napproximations ({', '.join(dict.fromkeys(approximations))}): {APPROXIMATION_NOTE}"
              + ("" if args.verbose else " (--verbose shows them)"))
    print(f"\n{len(cases)} case(s), {n_comp} comparison(s): {n_comp - n_fail} passed, {n_fail} failed"
          + (f"; {n_approx} approximation record(s)" if n_approx else "")
          + (f"; {n_na} reference(s) not applicable" if n_na else "")
          + (f"; {len(skipped)} case(s) not compared" if skipped else ""))
    if args.json:
        write_json(Path(args.json), results, skipped)
    if args.report:
        written = write_report(Path(args.report), runs, drawing=drawing)
        print(f"report written to {', '.join(str(p) for p in written)}")
    return _verify_status(results, skipped)


def _print_run(run: Run, verbose: bool, approximations: list[str], width: int = 34) -> None:
    """The terminal lines of one case's run: its summary (or every record with ``--verbose``), failures, skips."""
    from hessverify.engine.compare import APPROXIMATION_NOTE, is_not_applicable, margin_text

    if not verbose:
        print(_case_line(run.id, run.records, width))
    for c in run.records:
        if c.bound_kind == "approximation":
            approximations.append(c.method)
        if is_not_applicable(c):
            print(f"    {c.reference}: {c.note}")
            continue
        if verbose:
            mark = ("approx" if c.bound_kind == "approximation" else "ok ") if c.passed else "FAIL"
            w = c.worst_entry
            print(f"{c.case:{width}s} {c.method:14s} {c.reference:12s} {c.max_abs_error:11.2e} "
                  f"{c.max_rel_error:9.1e} {margin_text(c):>9s}  {mark} {w.row} x {w.col}")
            note = c.note.replace(APPROXIMATION_NOTE, "").strip("; ")
            if note:
                print(f"    note: {note}")
        if not c.passed:
            print(_failure_line(c))
    for line in run.plan.left_out:
        print(f"    {line}")


def _verify_status(results: list, skipped: list[dict[str, str]]) -> int:  # type: ignore[type-arg]
    """A discrepancy outranks overflow, which outranks a point that is not differentiable."""
    if any(not c.passed for c in results):
        return EXIT_DISCREPANCY
    reasons = {s["reason"] for s in skipped}
    if "overflow" in reasons:
        return EXIT_OVERFLOW
    if "not_differentiable" in reasons:
        return EXIT_NOT_DIFFERENTIABLE
    return EXIT_OK


LAB_EPILOG = """The table's first line: n, kappa of the Hessian at the best minimum the runs found (flat directions
left out) and gradient descent's predicted iterations there; per run: 'vs gd' (gradient descent's iterations over
its own), the inertia -/0/+ of the Hessian where it stopped, and a line '!' for every run that stopped away from
a minimum (where H has negative eigenvalues, or with E far above the best run's). A run is 'converged' only
where |g| < --tol and H has no negative eigenvalue: at a saddle it goes on. Times and memory exclude one-off
imports (each optimiser runs once untimed first); every run uses one BLAS thread, so iteration counts do not
depend on the machine's thread settings. 'hessverify lab claims' runs the claims study (docs/lab.md).
exit status: 0 every run done (converged or not: see the table), 2 invalid input or usage,
3 the Hessian does not exist at the case's point, 4 overflow at the case's point.
peak memory is in bytes (tracemalloc: what Python and NumPy allocate during the run; n/a for libraries
that allocate outside it).
"""

STATIONARY_EPILOG = """prints 'inertia: N negative, Z zero, P positive' and what the point is: minimum, saddle,
maximum or degenerate (zero eigenvalues and one sign only: the second-order test cannot decide).
exit status: 0 found and written, 2 invalid input or usage, 3 not differentiable, 4 overflow,
6 no stationary point found within --max-iter (one line on stderr, nothing written).
"""


def _add_lab_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from hessverify.apps.lab import ALIASES, DEFAULT_OPTIMIZERS, DEFAULT_TOL, OPTIMIZERS

    listing = ("optimizers:\n" + "\n".join(f"  {o.name:14s} {o.summary}" for o in OPTIMIZERS.values())
               + "\nalso accepted: " + ", ".join(f"{a} ({n})" for a, n in ALIASES.items()))
    lab = sub.add_parser("lab", help="run optimisers on a case and log every iteration (hessverify.lab)",
                         description="Run optimisers from a case's point until |g| < --tol; log E, |g|, step, "
                                     "the Hessian's inertia where formed, wall time.\n\n" + listing,
                         epilog=LAB_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    lab.add_argument("case", metavar="CASE")
    lab.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS), metavar="A,B,...",
                     help=f"comma-separated names (default {','.join(DEFAULT_OPTIMIZERS)})")
    lab.add_argument("--tol", type=float, default=DEFAULT_TOL, help=f"stop when |g|_2 < TOL (default {DEFAULT_TOL:g})")
    lab.add_argument("--max-iter", type=int, default=1000, help="at most this many iterations per run (default 1000)")
    lab.add_argument("--lr", type=float, default=None,
                     help="fixed step of gd and momentum (default 1/lambda_max(H) at the start) and of adam (0.01)")
    lab.add_argument("--time-limit", type=float, default=None, metavar="SECONDS", help="stop each run after this long")
    lab.add_argument("--perturb", type=float, default=0.0, metavar="EPS",
                     help="start at the case's point plus EPS times a random unit vector (to leave a saddle)")
    lab.add_argument("--seed", type=int, default=0, help="seed of --perturb's direction (default 0)")
    lab.add_argument("--json", metavar="FILE", help="write one record per run (with its log) as JSON")
    lab.add_argument("--plot", metavar="FILE.png", help="E and |g| against iterations and seconds, log scale")
    lab.add_argument("--log", action="store_true", help="print every iteration")
    lab.set_defaults(func=_cmd_lab)

    st = sub.add_parser("stationary", help="find a stationary point near a case's point and write it as a case",
                        epilog=STATIONARY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    st.add_argument("case", metavar="CASE")
    st.add_argument("--out", required=True, metavar="FILE.toml", help="where to write the case at the point found")
    st.add_argument("--tol", type=float, default=1e-12, help="a stationary point has |g|_2 < TOL (default 1e-12)")
    st.add_argument("--max-iter", type=int, default=200, help="damped Newton iterations allowed (default 200)")
    st.add_argument("--id", default=None, help="the new case's id (default CASE-ID-stationary)")
    st.set_defaults(func=_cmd_stationary)


CONFORMANCE_EPILOG = """prints the table (library, version, quantity, precision, problems tried, failures, worst margin;
approximations with their distance to the exact GGN) and each failure's minimal problem; --report DIR writes
DIR/results.json, DIR/report.md and DIR/report.html (as verify --report does, led by the table) and
DIR/cases/LIBRARY-N.toml. --precision float32 runs the libraries in float32 and judges them at float32's
rounding. Conventions and diagnoses: docs/conformance.md.
exit status: 0 every quantity agreed on every problem, 1 some library disagreed (or raised), 2 invalid usage
(unknown or not installed library; a precision not measured yet).
"""


def _add_conformance_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from hessverify.adapters.conformance import add_library_options

    c = sub.add_parser("conformance", help="run the libraries' own second-order code on random problems, "
                                           "held to hessverify", epilog=CONFORMANCE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_library_options(c)
    c.add_argument("--examples", type=int, default=100, metavar="N", help="problems per quantity (default 100)")
    c.add_argument("--seed", type=int, default=0, metavar="S", help="Hypothesis seed (default 0)")
    c.add_argument("--report", metavar="DIR", help="write results.json, report.md, report.html and the failing cases")
    c.set_defaults(func=_cmd_conformance)


def _cmd_conformance(args: argparse.Namespace) -> int:
    from hessverify import conformance
    from hessverify.reports import check_directory

    if args.examples < 1:
        raise UsageError(f"--examples {args.examples}: give at least 1")
    conformance.check_libraries(args.library, args.precision)
    out = Path(args.report) if args.report else None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--report {out}: exists and is not a directory")
        check_directory(out)
        _hold(args, args.report, "--report", directory=True)
    rows = conformance.run(args.library, examples=args.examples, seed=args.seed, precision=args.precision,
                           networks=args.networks)
    print(conformance.rows_markdown(rows), end="")
    failed = [r for r in rows if r.failures]
    for r in failed:
        print(f"\n{r.library}: {r.failure_summary}")
    if out is not None:
        command = (f"hessverify conformance --library {' '.join(args.library)} --precision {args.precision} "
                   f"--examples {args.examples} --seed {args.seed} --report {out}")
        written = conformance.write_report(out, rows, command=command, seed=args.seed, examples=args.examples,
                                           precision=args.precision)
        print(f"report written to {', '.join(str(p) for p in written)}")
    return EXIT_DISCREPANCY if failed else EXIT_OK


CAMPAIGN_EPILOG = """Dask is the extra hessverify[distributed]. Unit i is derived from (--seed, i) alone: the results do
not depend on the workers and equal a one-process run. --json FILE is written every --checkpoint seconds;
an interrupted campaign goes on with --resume FILE, which skips what FILE holds (docs/campaigns.md).
exit status: 0 nothing found, 1 a discrepancy (a false alarm, a bug not caught, a library or function that
disagreed), 2 invalid usage (Dask missing, a bad --scheduler, an unreachable scheduler, a foreign --resume
file), 5 the function under test failed (sweep), 130 interrupted, 143 terminated (the partial --json is kept).
"""


def _add_campaign_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from hessverify.apps.campaign.kinds import KINDS, add_options

    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, metavar="N",
                       help="start a local Dask cluster of N worker processes (default: the number of cores)")
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="use the existing Dask scheduler there")
    common.add_argument("--json", metavar="FILE", help="write the results (and, while it runs, those so far)")
    common.add_argument("--report", metavar="DIR", help="write results.json, report.md and report.html into DIR")
    common.add_argument("--resume", metavar="FILE",
                        help="go on from the --json FILE of an interrupted campaign: skip the units it holds "
                             "(results go back into FILE unless --json names another)")
    common.add_argument("--checkpoint", type=float, default=10.0, metavar="SECONDS",
                        help="write --json at least this often while the campaign runs (default 10)")
    common.add_argument("--batch", type=int, default=None, metavar="N",
                        help="units per task sent to a worker (default: a few tasks per worker)")
    common.add_argument("--max-memory", metavar="SIZE", default=None,
                        help="refuse a campaign whose largest unit is estimated to need more memory than SIZE "
                             "(default: a safe share of this machine)")
    common.add_argument("--max-time", metavar="SECONDS", type=float, default=None,
                        help="refuse a campaign estimated to take longer (default: no limit, a campaign is long by "
                             "intent; the estimate is printed before work)")
    c = sub.add_parser("campaign", help="run a measurement (false alarms, detection, conformance, sweep) on a "
                                        "Dask cluster", epilog=CAMPAIGN_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = c.add_subparsers(dest="kind", metavar="KIND", parser_class=_Parser)
    kinds.required = True
    for kind, (summary, _, _) in KINDS.items():
        k = kinds.add_parser(kind, help=summary, description=summary, parents=[common], epilog=CAMPAIGN_EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        add_options(kind, k)
        k.set_defaults(func=_cmd_campaign)


def _cmd_campaign(args: argparse.Namespace) -> int:
    from hessverify.apps.campaign import need_dask, run_campaign
    from hessverify.apps.campaign.kinds import plan_for

    need_dask()  # before anything else: without Dask nothing below can run
    plan = plan_for(args.kind, args)
    return run_campaign(plan, workers=args.workers, scheduler=args.scheduler,
                        json_path=Path(args.json) if args.json else None,
                        report_dir=Path(args.report) if args.report else None,
                        resume=Path(args.resume) if args.resume else None, checkpoint=args.checkpoint,
                        batch=args.batch, max_time=args.max_time)


def _writable(path: Path, option: str, suffixes: tuple[str, ...]) -> None:
    """A one-line UsageError now, rather than a lost run later, if ``path`` cannot be written."""
    from hessverify.io.files import check_output_path

    if path.suffix.lower() not in suffixes and not _special_file(path):
        raise UsageError(f"{option} {path}: the file must end in {' or '.join(suffixes)}")
    check_output_path(path, option)


def _write_text(path: Path, option: str, text: str) -> None:
    """Through a symlink to its target, into a device or FIFO, else atomically (:mod:`hessverify.io.files`)."""
    from hessverify.io.files import write_output

    write_output(path, text, option=option)


def _cmd_lab(args: argparse.Namespace) -> int:
    from hessverify.apps.lab import LabResult, get_optimizer, run
    from hessverify.apps.lab.library import ensure_library
    from hessverify.io.files import strict_json

    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    if not names:
        raise UsageError("--optimizers: give at least one name (see 'hessverify lab --help')")
    for name in names:
        if get_optimizer(name)[0].library is not None:
            ensure_library(get_optimizer(name)[0].name)
    for option, value in (("--tol", args.tol), ("--time-limit", args.time_limit)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise UsageError(f"{option} must be a number > 0, got {value}")
    if args.max_iter < 0:
        raise UsageError(f"--max-iter must be >= 0, got {args.max_iter}")
    if args.lr is not None and not (np.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a number > 0, got {args.lr}")
    if not (np.isfinite(args.perturb) and args.perturb >= 0):
        raise UsageError(f"--perturb must be a number >= 0, got {args.perturb}")
    if args.json:
        _writable(Path(args.json), "--json", (".json",))
        _hold(args, args.json, "--json")
    if args.plot:
        _writable(Path(args.plot), "--plot", (".png",))
        _hold(args, args.plot, "--plot")
    case = load_case(args.case)
    ensure_well_posed(case)
    start = case.params.copy()
    if args.perturb:
        d = np.random.default_rng(args.seed).standard_normal(case.n_params)
        start = start + args.perturb * d / np.linalg.norm(d)
    from hessverify.apps.lab import check_budget
    from hessverify.apps.lab.objectives import objective_for

    for name in names:
        check_budget(name, objective_for(case, get_optimizer(name)[0].gains).n)
    from hessverify.reports.progress import track

    runs = []
    for name in track(names, "optimisers"):
        r = run(case, name, tol=args.tol, max_iter=args.max_iter, lr=args.lr, params=start, time_limit=args.time_limit)
        if args.log:
            for x in r.log:
                inert = "" if x.inertia is None else \
                    f"  inertia {x.inertia[0]} negative, {x.inertia[1]} zero, {x.inertia[2]} positive"
                size = "" if x.step_size is None else f"  step {x.step_size:.3g}"
                print(f"{name:14s} {x.iteration:6d}  E {x.error:.6e}  |g| {x.grad_norm:.3e}{size}  "
                      f"{x.seconds:.4f} s{inert}")
        runs.append(r)
    result = LabResult(case.id, case.n_params, runs)
    print(result.table())
    if args.json:
        doc = {"tol": args.tol, "max_iter": args.max_iter, "param_names": list(case.param_names),
               "peak_memory_unit": "bytes", "header": result.header()} | result.to_dict()
        _write_text(Path(args.json), "--json", strict_json(doc, indent=1))
        print(f"runs written to {args.json}")
    if args.plot:
        result.plot(args.plot)
        print(f"plot written to {args.plot}")
    return EXIT_OK



def _cmd_stationary(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hessverify.apps.lab import find_stationary
    from hessverify.io.cases import ID_PATTERN

    if not (np.isfinite(args.tol) and args.tol > 0):
        raise UsageError(f"--tol must be a number > 0, got {args.tol}")
    if args.max_iter < 0:
        raise UsageError(f"--max-iter must be >= 0, got {args.max_iter}")
    if args.id is not None and not ID_PATTERN.match(args.id):
        raise UsageError(f"--id {args.id!r}: an id is lower-case letters and digits joined by single hyphens")
    out = Path(args.out)
    _writable(out, "--out", (".toml",))
    _hold(args, args.out, "--out")
    case = load_case(args.case)
    ensure_well_posed(case)
    s = find_stationary(case, tol=args.tol, max_iter=args.max_iter)
    new_id = args.id or (case.id if case.id.endswith("-stationary") else f"{case.id}-stationary")
    written = replace(s.problem, id=new_id, description=(
        f"A stationary point ({s.kind}) found by 'hessverify stationary' from {case.id}: |g| = {s.grad_norm:.1e}, "
        f"{s.inertia.negative} negative, {s.inertia.zero} zero, {s.inertia.positive} positive eigenvalues"))
    print(f"{case.id}: stationary point after {s.iterations} iteration(s): E = {s.error:.17g}, |g| = {s.grad_norm:.3e}")
    print(s.inertia_line())
    print(s.describe())
    _write_text(out, "--out", written.to_toml())
    print(f"written to {out} (id {new_id})")
    return EXIT_OK


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


OUTPUTS = ("report", "json", "out", "plot", "save", "resume")
"""Options that name a path hessverify writes: resolved against the working directory once, at the start."""


def _hold(args: argparse.Namespace, path: str, option: str, *, directory: bool = False) -> None:
    """Hold ``path`` for the rest of the command (:func:`hessverify.io.files.claim_output`): a second run on it is
    refused in one line (exit 2)."""
    from hessverify.io.files import claim_output

    args.held.enter_context(claim_output(Path(path), option, directory=directory))


def _run(args: argparse.Namespace) -> int:
    import contextlib

    from hessverify.engine.budget import limit, parse_size, time_limit

    for option in ("report", "json", "out"):  # an empty path would silently write nothing
        value = getattr(args, option, None)
        if value is not None and not value.strip():
            raise UsageError(f"--{option} '': name a {'directory' if option == 'report' else 'file'}")
    for option in OUTPUTS:  # once, now: nothing later (a chdir in a function under test) can move them
        value = getattr(args, option, None)
        if isinstance(value, str) and value not in ("", "-"):
            setattr(args, option, os.path.abspath(value))
    budget = parse_size(args.max_memory) if getattr(args, "max_memory", None) is not None else None
    max_time = getattr(args, "max_time", None)
    if max_time is not None and not max_time >= 0:
        raise UsageError(f"--max-time {max_time}: give seconds, at least 0 (0: no limit)")
    from hessverify.reports.progress import quiet

    # overflow is found and reported as such (exit 4); NumPy's warnings about it would be noise
    with limit(budget), time_limit(max_time), np.errstate(all="ignore"), warnings.catch_warnings(), \
            quiet(getattr(args, "quiet", False)), contextlib.ExitStack() as held:
        warnings.simplefilter("ignore", RuntimeWarning)
        args.held = held  # the outputs the command claims, released when it ends
        return int(args.func(args))


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    if sys.stdout is None:  # started with standard output closed: print() must still work
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        parser = _build_parser()
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv[:2] == ["lab", "claims"]:  # 'hessverify lab claims' is the campaign kind lab-claims
            argv = ["campaign", "lab-claims"] + argv[2:]
        args = parser.parse_args(argv)
        return _run(args)
    except HessverifyError as exc:
        _say(f"hessverify: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("hessverify: interrupted")
        return EXIT_INTERRUPTED
    except Terminated:
        _say("hessverify: terminated")
        return EXIT_TERMINATED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    except OSError as exc:  # standard output on a full disk (/dev/full), an output file gone bad mid-write
        _quiet_stdout()
        where = f" {exc.filename}" if exc.filename else ""
        _say(f"hessverify: error: cannot write{where}: {exc.strerror or exc}")
        return EXIT_INVALID
    except SystemExit as exc:  # --help, and argparse's own exits
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_INVALID
    except MemoryError:  # the budget's estimate fell short: still one line, never a traceback
        _say("hessverify: error: out of memory; give a smaller case or a lower --max-memory")
        return EXIT_INVALID
    except RecursionError:
        _say("hessverify: error: the input is nested or chained too deeply to process")
        return EXIT_INVALID
    except Exception as exc:
        # A signal that lands while an extension module initialises (SciPy's, loaded lazily by a
        # reference) comes out as that import's failure, with the interrupt as its cause.
        signalled = signal_behind(exc)
        if isinstance(signalled, KeyboardInterrupt):
            _say("hessverify: interrupted")
            return EXIT_INTERRUPTED
        if isinstance(signalled, Terminated):
            _say("hessverify: terminated")
            return EXIT_TERMINATED
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _say(line: str) -> None:
    """One line on standard error, if there is one."""
    try:
        print(line, file=sys.stderr)
    except (OSError, ValueError, AttributeError):
        pass


def _quiet_stdout() -> None:
    # the reader went away: send what is left to /dev/null so the interpreter's final flush is silent
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
