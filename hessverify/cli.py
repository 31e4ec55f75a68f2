"""The ``hessverify`` command line.

Exit statuses (also in ``hessverify --help`` and the README):

* 0: every comparison agrees within its bound;
* 1: a discrepancy;
* 2: invalid input or usage (a case file, an option, a name);
* 3: the Hessian does not exist at a case's point (a relu net input exactly at its kink);
* 4: overflow: the network's values are not finite at a case's point.

Errors meant for people are printed as one line, ``hessverify: error: ...``,
never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hessverify.cases import find_cases, load_case
from hessverify.errors import (
    EXIT_DISCREPANCY,
    EXIT_INVALID,
    EXIT_NOT_DIFFERENTIABLE,
    EXIT_OK,
    EXIT_OVERFLOW,
    HessverifyError,
    NotDifferentiableError,
    OverflowReport,
    UsageError,
)
from hessverify.model.well_posed import ensure_well_posed
from hessverify.registry import METHODS, get_method

__all__ = ["main"]

EPILOG = """exit status:
  0  every comparison agrees within its bound
  1  a discrepancy: some method disagrees with some reference
  2  invalid input or usage
  3  the Hessian does not exist at a case's point (relu net input exactly at its kink)
  4  overflow: the network's values are not finite at a case's point
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


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hessverify", description="Verify second-order backpropagation.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    v = sub.add_parser("verify", help="compare every method with every reference on cases",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("paths", nargs="*", default=["cases"], metavar="CASE_OR_DIR",
                   help="case files or directories of *.toml (default: cases/)")
    v.add_argument("--method", action="append", dest="methods", metavar="NAME",
                   help="a method to verify (repeatable; default: every exact method)")
    v.add_argument("--reference", action="append", dest="references", metavar="NAME",
                   help="a reference to hold the methods to (repeatable; default: every reference)")
    v.add_argument("--json", metavar="PATH", help="write the results as JSON")
    v.add_argument("--report", metavar="DIR", help="write results.json, report.md and report.html into DIR")
    v.set_defaults(func=_cmd_verify)

    h = sub.add_parser("hessian", help="compute a Hessian (or its diagonal, blocks, approximation) and save it",
                       description=HESSIAN_FORMS, formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("case", metavar="CASE")
    h.add_argument("--method", default="backprop", help=f"one of: {', '.join(METHODS)}")
    h.add_argument("--out", required=True, metavar="FILE.npy",
                   help="where to save: .npy for every method; .npz also for block methods")
    h.set_defaults(func=_cmd_hessian)

    pa = sub.add_parser("params", help="print the parameter names in the public order")
    pa.add_argument("case", metavar="CASE")
    pa.set_defaults(func=_cmd_params)

    d = sub.add_parser("derive", help="closed form of a gradient or Hessian entry, and its value at the case's point")
    d.add_argument("case", metavar="CASE")
    d.add_argument("--entry", nargs="+", required=True, metavar="PARAM",
                   help="one name (a gradient entry) or two (a Hessian entry), e.g. --entry 'W1[0,1]' 'b2[0]'")
    d.add_argument("--latex", action="store_true", help="print LaTeX instead of plain text")
    d.add_argument("--explicit", action="store_true", help="also the closed form written out in the weights")
    d.add_argument("--digits", type=int, default=50, help="significant digits of the value (default 50)")
    d.set_defaults(func=_cmd_derive)

    ls = sub.add_parser("methods", help="list the registered methods and references")
    ls.set_defaults(func=_cmd_methods)

    sw = sub.add_parser("sweep", help="check your own Hessian function on random problems (Hypothesis)",
                        epilog="exit status: 0 nothing found, 1 a discrepancy (the minimal problem is printed "
                               "as a case file), 2 invalid usage")
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
    sw.set_defaults(func=_cmd_sweep)
    return p


def _cmd_params(args: argparse.Namespace) -> int:
    case = load_case(args.case)
    sys.stdout.write("\n".join(case.param_names) + "\n")
    return EXIT_OK


def _cmd_derive(args: argparse.Namespace) -> int:
    from hessverify.symbolic.lecture import derive

    case = load_case(args.case)
    ensure_well_posed(case)  # at a relu kink there is no second derivative to derive (exit 3)
    print(derive(case, args.entry, latex=args.latex, explicit=args.explicit, digits=args.digits))
    return EXIT_OK


def _cmd_methods(args: argparse.Namespace) -> int:
    for m in METHODS.values():
        print(f"{m.name:16s} {m.role:14s} {m.kind:8s} {m.summary}")
    return EXIT_OK


def _cmd_hessian(args: argparse.Namespace) -> int:
    method = get_method(args.method)
    case = load_case(args.case)
    from hessverify.verify import hessian

    out = Path(args.out)
    allowed = (".npy", ".npz") if method.kind == "blocks" else (".npy",)
    if out.suffix not in allowed:
        raise UsageError(f"--out {args.out}: for {method.name} (kind {method.kind}) the file must end in "
                         + " or ".join(allowed))
    result = hessian(case, method.name)
    try:
        if method.kind == "blocks" and out.suffix == ".npz":
            np.savez(out, **{f"layer{i}": b for i, b in enumerate(result, start=1)})
            what = f"{len(result)} diagonal block(s) " + ", ".join(f"{b.shape[0]}x{b.shape[1]}" for b in result)
        else:
            if method.kind == "blocks":
                from hessverify.methods.block_diagonal import embed

                result = embed(case, result)
            np.save(out, result)
            what = "x".join(str(n) for n in result.shape)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write: {exc.strerror}") from None
    print(f"{case.id}: {method.name} ({method.kind}) {what} written to {out}")
    return EXIT_OK


def _cmd_sweep(args: argparse.Namespace) -> int:
    from hessverify.sweep import run_sweep

    return run_sweep(args.method_under_test, examples=args.examples, seed=args.seed, json_path=args.json,
                     returns=args.returns, against=args.against, report_dir=args.report)


def _cmd_verify(args: argparse.Namespace) -> int:
    from hessverify.reports import check_directory, check_json_path, write_json, write_report
    from hessverify.reports.progress import track
    from hessverify.verify import verify_problem

    for name in (args.methods or []) + (args.references or []):
        get_method(name)
    paths = find_cases(args.paths)
    cases = [load_case(p) for p in paths]  # every file validated before any work
    if args.report:
        check_directory(Path(args.report))  # fail now, not after the whole run
    if args.json:
        check_json_path(Path(args.json))
    results = []
    skipped: list[dict[str, str]] = []
    kept: dict[str, dict[str, np.ndarray]] = {}  # the matrices the report draws (only with --report)
    header = (f"{'case':34s} {'method':14s} {'reference':12s} {'max abs err':>11s} {'rel err':>9s} {'margin':>9s}"
              "  worst entry")
    print(header)
    print("-" * len(header))
    for case in track(cases, "verifying", label=lambda case: case.id):
        try:
            comps = verify_problem(case, args.methods, args.references,
                                   matrices=kept.setdefault(case.id, {}) if args.report else None)
        except NotDifferentiableError as exc:
            print(f"{case.id:34s} NOT DIFFERENTIABLE: {exc}")
            skipped.append({"case": case.id, "reason": "not_differentiable", "message": str(exc)})
            continue
        except OverflowReport as exc:
            print(f"{case.id:34s} OVERFLOW: {exc}")
            skipped.append({"case": case.id, "reason": "overflow", "message": str(exc)})
            continue
        for c in comps:
            mark = ("approx" if c.bound_kind == "approximation" else "ok ") if c.passed else "FAIL"
            w = c.worst_entry
            print(f"{c.case:34s} {c.method:14s} {c.reference:12s} {c.max_abs_error:11.2e} "
                  f"{c.max_rel_error:9.1e} {c.margin:9.1e}  {mark} {w.row} x {w.col}")
            if c.note:
                print(f"    note: {c.note}")
            if not c.passed:
                print(f"    {c.failing_entries} entries over the bound; worst {w.row} x {w.col}: "
                      f"{c.method} {w.value:.17g}, {c.reference} {w.reference_value:.17g}, "
                      f"|error| {w.abs_error:.3g} > bound {w.bound:.3g} ({c.bound_kind})")
        results.extend(comps)
    n_fail = sum(not c.passed for c in results)
    n_approx = sum(c.bound_kind == "approximation" for c in results)
    n_comp = len(results) - n_approx
    print(f"\n{len(cases)} case(s), {n_comp} comparison(s): {n_comp - n_fail} passed, {n_fail} failed"
          + (f"; {n_approx} approximation record(s)" if n_approx else "")
          + (f"; {len(skipped)} case(s) not compared" if skipped else ""))
    if args.json:
        write_json(Path(args.json), results, skipped)
    if args.report:
        written = write_report(Path(args.report), results, skipped, cases, matrices=kept)
        print(f"report written to {', '.join(str(p) for p in written)}")
    return _verify_status(results, skipped)


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except HessverifyError as exc:
        print(f"hessverify: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hessverify: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_INVALID


if __name__ == "__main__":
    raise SystemExit(main())
