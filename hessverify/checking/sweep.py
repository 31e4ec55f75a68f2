"""``hessverify sweep``: Hypothesis over random problems against a user's Hessian code.

``hessverify sweep --method-under-test MODULE:FUNCTION`` loads ``FUNCTION``
(see :func:`load_function`), runs :func:`hessverify.checking.check` on
:func:`hessverify.checking.strategies.problems`, and on a discrepancy prints the
shrunk, minimal problem as a complete case file on standard output (the
explanation goes to standard error, so ``> cases/found.toml`` saves just the
case) and exits 1.  It exits 0 when nothing is found and 2 on bad usage.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from hessverify.checking.check import CheckResult, check, describe
from hessverify.checking.sandbox import (
    DEFAULT_ISOLATION,
    DEFAULT_TIMEOUT,
    Sandbox,
    check_isolation,
    check_timeout,
    register_user_module,
)
from hessverify.errors import EXIT_DISCREPANCY, EXIT_OK, FunctionUnderTestError, UsageError, exception_text
from hessverify.model.problem import Problem

REPORT_EXAMPLES = 20
"""How many of the examples tried a sweep's report covers, besides the minimal failing problem."""

__all__ = ["load_function", "run_sweep", "write_report"]

_HINT = "write MODULE:FUNCTION, e.g. mypackage.hessians:hessian or path/to/file.py:hessian"


def load_function(spec: str) -> Callable[..., Any]:
    """The function named by ``MODULE:FUNCTION``.

    ``MODULE`` is a dotted module importable from the current directory or
    the path, or a path to a ``.py`` file (its directory is appended to the
    path so it can import its neighbours, but a neighbour such as
    ``hypothesis.py`` never shadows an installed library).  Every fault is a one-line
    :class:`~hessverify.errors.UsageError`.
    """
    module_part, sep, name = spec.rpartition(":")
    if not sep or not module_part or not name:
        raise UsageError(f"--method-under-test {spec!r}: {_HINT}")
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        module = _load_file(Path(module_part), spec)
    else:
        module = _load_module(module_part, spec)
    target: Any = module
    for part in name.split("."):  # FUNCTION may be Class.method
        try:
            target = getattr(target, part)
        except AttributeError:
            public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise UsageError(f"--method-under-test {spec!r}: {module_part} has no {name!r}"
                             + (f"; it defines {', '.join(public)}" if public else "")) from None
    if not callable(target):
        raise UsageError(f"--method-under-test {spec!r}: {name} is not callable (it is {type(target).__name__!r})")
    return target  # type: ignore[no-any-return]


def _import_failed(spec: str, what: str, exc: BaseException) -> UsageError:
    return UsageError(f"--method-under-test {spec!r}: importing {what} failed: {exception_text(exc)}")


def _load_module(dotted: str, spec: str) -> Any:
    # like `python -m`, the current directory is importable; appended, so it shadows no library
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ written into the user's folders
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        raise UsageError(f"--method-under-test {spec!r}: no module named {exc.name or dotted!r} "
                         f"(a dotted module on the path, or a path to a .py file)") from None
    except (Exception, SystemExit) as exc:  # the user's module is broken: say so in one line
        raise _import_failed(spec, dotted, exc) from None
    finally:
        sys.dont_write_bytecode = dont_write


def _load_file(path: Path, spec: str) -> Any:
    if not path.is_file():
        raise UsageError(f"--method-under-test {spec!r}: no such file {str(path)!r}")
    if path.suffix != ".py":
        raise UsageError(f"--method-under-test {spec!r}: {str(path)!r} is not a .py file")
    name = "_hessverify_under_test_" + re.sub(r"\W", "_", path.stem)
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"--method-under-test {spec!r}: cannot load {str(path)!r} as a module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up here
    register_user_module(name, str(path))  # a spawned child process loads it the same way
    folder = str(path.resolve().parent)
    if folder not in sys.path:  # appended: a hypothesis.py beside the file must not replace the library
        sys.path.append(folder)
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ beside the user's file: nothing outside the outputs changes
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise _import_failed(spec, str(path), exc) from None
    finally:
        sys.dont_write_bytecode = dont_write
    return module


def _found_case(problem: Problem, spec: str, result: CheckResult) -> Problem:
    """The minimal problem with an id and description that say where it came from."""
    func = re.sub(r"[^a-z0-9]+", "-", spec.rpartition(":")[2].lower()).strip("-") or "method"
    arch = problem.architecture
    sizes = "-".join(str(n) for n in [arch.inputs] + [math.prod(shape) for shape in arch.shapes[1:]])
    worst = max(result.failures, key=lambda c: c.margin, default=None)
    where = (f", worst entry {worst.worst_entry.row} x {worst.worst_entry.col} against {worst.reference}"
             if worst is not None and worst.bound_kind != "none" else "")
    return replace(problem, id=f"sweep-{func}-{sizes}",
                   description=f"found by hessverify sweep: {spec} ({result.returns}){where}; "
                               f"{problem.architecture.describe()}, {problem.loss}, {problem.reduction}")


def run_sweep(spec: str, *, examples: int = 100, seed: int | None = None, json_path: str | None = None,
              returns: str = "hessian", against: Sequence[str] | None = None,
              out: TextIO | None = None, err: TextIO | None = None, report_dir: str | None = None,
              timeout: float | None = DEFAULT_TIMEOUT, chains_only: bool = False, dense_only: bool = False,
              isolation: str = DEFAULT_ISOLATION) -> int:
    """Run the sweep and print its findings; return the exit status (0 or 1).

    Problems are feed-forward graphs (skip connections) as well as chains;
    ``chains_only`` draws dense chains alone, for a function that knows no ``from``;
    ``dense_only`` draws dense networks alone (no other layer kind).
    The function runs in one child process for the whole sweep (``isolation``,
    :mod:`hessverify.checking.sandbox`; ``--in-process`` is ``"thread"``).
    ``json_path`` and ``report_dir`` are resolved against the working
    directory once, here, and held (:func:`hessverify.io.files.claim_output`)
    until they are written: a second run on one of them is refused.

    With ``report_dir``, also write the verification report
    (:func:`hessverify.reports.report_problems`) over the minimal failing
    problem, first, and the first examples tried.

    When the function itself fails (raises, exits, hangs past ``timeout``
    seconds, returns no usable array), the problem it failed on is printed
    as a case file, the JSON and report are written, and the
    :class:`~hessverify.errors.FunctionUnderTestError` is raised (exit 5).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise UsageError(f"--examples {examples}: must be a whole number, at least 1")
    timeout = check_timeout(timeout, "--timeout")
    check_isolation(isolation)
    from hessverify.io.files import claim_output

    with contextlib.ExitStack() as held:
        if report_dir is not None:
            if returns == "hvp":
                raise UsageError("--report: a report needs matrices or diagonals; use --returns hessian or diagonal")
            from hessverify.reports import check_directory

            report_dir = os.path.abspath(report_dir)  # a chdir in the function under test cannot move it
            check_directory(Path(report_dir))  # fail now, not after the sweep
            held.enter_context(claim_output(Path(report_dir), "--report"))
        if json_path is not None:
            from hessverify.reports import check_json_path

            json_path = _absolute(json_path)
            check_json_path(Path(json_path))  # fail now, not after the sweep
            held.enter_context(claim_output(Path(json_path), "--json"))
        return _sweep(spec, examples, seed, json_path, returns, against, out, err, report_dir, timeout, chains_only,
                      isolation, dense_only)


def _absolute(path: str) -> str:
    """``path`` against the working directory now; a device such as ``/dev/stdout`` stays as given."""
    return path if path.startswith("/dev/") else os.path.abspath(path)


def _sweep(spec: str, examples: int, seed: int | None, json_path: str | None, returns: str,
           against: Sequence[str] | None, out: TextIO, err: TextIO, report_dir: str | None, timeout: float | None,
           chains_only: bool, isolation: str, dense_only: bool = False) -> int:
    from hessverify.checking.strategies import problems  # imports Hypothesis before the user's file can shadow it

    user_fn = load_function(spec)
    tried: list[Problem] = []

    def observe(problem: Problem) -> None:
        if report_dir is not None and len(tried) < REPORT_EXAMPLES and not any(problem is p for p in tried):
            tried.append(problem)

    if seed is None:
        seed = random.SystemRandom().randrange(2**32)  # printed, so any run can be repeated

    kwargs: dict[str, Any] = {} if against is None else {"against": tuple(against)}
    # anything the user's function prints goes to stderr: stdout is kept for the case file
    try:
        with contextlib.redirect_stdout(err):
            strategy = problems(graphs=not chains_only, kinds=not (chains_only or dense_only))
            result = check(user_fn, strategy, returns=returns,  # type: ignore[arg-type]
                           max_examples=examples, seed=seed, timeout=timeout, isolation=isolation, observe=observe,
                           **kwargs)
    except FunctionUnderTestError as exc:
        _function_failed(exc, spec, seed, returns, json_path, report_dir, user_fn, against, tried, timeout, out, err,
                         isolation)
        raise
    report: dict[str, Any] = {"method_under_test": spec, "examples": result.n_problems, "seed": seed,
                              **result.to_dict()}
    if result.passed:
        print(f"hessverify sweep: {spec} agrees with {', '.join(result.against)} on "
              f"{result.n_problems} random problem(s) (seed {seed})", file=out)
        status = EXIT_OK
    else:
        assert result.problem is not None
        case = _found_case(result.problem, spec, result)
        report["problem_toml"] = case.to_toml()
        print(f"hessverify sweep: {spec} DISAGREES after {result.n_problems} example(s) (seed {seed}), "
              f"shrunk in {result.shrink_calls} more call(s); "
              f"minimal problem {case.architecture.describe()}, {case.loss}, {case.reduction}, "
              f"{case.n_patterns} pattern(s), {case.n_params} parameter(s):", file=err)
        lines = ([f"where {result.where}"] if result.where else []) + [describe(c) for c in result.failures]
        if result.shrinking:
            lines.insert(0, f"shrinking: {result.shrinking}")
        for line in lines:
            print("  " + line, file=err)
        saved = f"; --report writes it to {Path(report_dir) / 'cases' / (case.id + '.toml')}" if report_dir else ""
        print(f"the case file follows on standard output; save it with > cases/{case.id}.toml{saved}", file=err)
        print("# found by hessverify sweep --method-under-test " + spec + f" --seed {seed}", file=out)
        for line in lines:
            print("# " + line, file=out)
        out.write(case.to_toml())
        status = EXIT_DISCREPANCY
    if report_dir is not None:
        write_report(Path(report_dir), spec, user_fn, returns, against, tried,
                      [] if result.passed else [case], err, timeout, isolation)
    if json_path:
        _write_json(json_path, report)
    return status


def _write_json(json_path: str, report: dict[str, Any]) -> None:
    from hessverify.io.files import strict_json, write_output

    write_output(Path(json_path), strict_json(report), option="--json")


def _function_failed(exc: FunctionUnderTestError, spec: str, seed: int, returns: str, json_path: str | None,
                     report_dir: str | None, user_fn: Callable[..., Any], against: Sequence[str] | None,
                     tried: list[Problem], timeout: float | None, out: TextIO, err: TextIO,
                     isolation: str = DEFAULT_ISOLATION) -> None:
    """The function failed: the problem it failed on as a case file, then the JSON and the report."""
    problem = exc.problem if isinstance(exc.problem, Problem) else None
    case = None
    if problem is not None:
        func = re.sub(r"[^a-z0-9]+", "-", spec.rpartition(":")[2].lower()).strip("-") or "method"
        case = replace(problem, id=f"sweep-{func}-failed",
                       description=f"hessverify sweep: {spec} ({returns}) failed here: {exc.message}")
        print(f"hessverify sweep: {spec} FAILED (seed {seed}); the problem it failed on follows on standard "
              f"output; save it with > cases/{case.id}.toml", file=err)
        print("# found by hessverify sweep --method-under-test " + spec + f" --seed {seed}", file=out)
        print("# " + str(exc), file=out)
        out.write(case.to_toml())
    if json_path:
        _write_json(json_path, {"method_under_test": spec, "seed": seed, "passed": False, "returns": returns,
                                "function_failed": str(exc),
                                "problem_toml": case.to_toml() if case is not None else None})
    if report_dir is not None:
        write_report(Path(report_dir), spec, user_fn, returns, against, tried, [case] if case else [], err, timeout,
                     isolation)


def write_report(directory: Path, spec: str, fn: Callable[..., Any], returns: str, against: Sequence[str] | None,
                  tried: list[Problem], leading: list[Problem], err: TextIO,
                  timeout: float | None = DEFAULT_TIMEOUT, isolation: str = DEFAULT_ISOLATION) -> None:
    """The report over the sweep, with the function under test registered for the duration.

    The function runs in a sandbox of its own (one child process for the
    report), a failure there is that problem's ``function_failed``, not a crash.
    """
    from hessverify.checking.check import DEFAULT_AGAINST
    from hessverify.engine.registry import METHODS, Method
    from hessverify.reports import report_problems

    name = spec.rsplit(":", 1)[-1]
    kind = "vector" if returns == "diagonal" else "matrix"
    with Sandbox(fn, isolation=isolation, timeout=timeout) as box:
        box.start()  # now, before the report's drawing processes and threads start: a fork is safe here
        METHODS[name] = Method(name, box, "method", kind, f"the function under test, {spec}")
        try:
            # every name the sweep compared with, exact methods such as backprop included: the report's table has
            # a row for each comparison its header cites
            refs = [r for r in (against or DEFAULT_AGAINST) if r != name and METHODS[r].role != "approximation"]
            written = report_problems(directory, tried, leading=leading, methods=[name],
                                      references=refs or ["autograd"])
        finally:
            del METHODS[name]
    written += _write_cases(directory, leading)
    print(f"report written to {', '.join(str(p) for p in written)}", file=err)


def _write_cases(directory: Path, cases: list[Problem]) -> list[Path]:
    """Each minimal problem as a case file beside the report, ``DIR/cases/ID.toml`` (``hessverify verify`` reads it)."""
    from hessverify.io.files import write_output

    out = []
    for case in cases:
        (directory / "cases").mkdir(exist_ok=True)
        out.append(write_output(directory / "cases" / f"{case.id}.toml", case.to_toml(), option="--report"))
    return out
