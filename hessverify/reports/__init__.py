"""Verification reports: ``results.json`` for machines, ``report.md`` and ``report.html`` for people.

:func:`write_report` writes all three into a directory from the runs
(:class:`hessverify.engine.run.Run`, one per problem) that ``hessverify verify``
computed; :func:`report_problems` runs a list of problems (a sweep's
examples, say) and writes the same report, leading with the minimal failing
problems.  A report reads everything from the runs: it computes no Hessian
and no bound again, and imports neither :mod:`hessverify.engine.verify` nor the
registry.

The three files are written into a fresh directory and moved into place
together (:func:`hessverify.io.files.report_set`), so an interrupted run never
leaves a half-written report or a mix of two runs; a second run writing into
the same directory at the same time is refused.
The JSON schema is in :data:`hessverify.reports.schema.RESULTS_SCHEMA` and
documented in ``docs/reports.md``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hessverify.engine.compare import Comparison, is_not_applicable, margin_text
from hessverify.errors import UsageError
from hessverify.io.files import check_output_path, check_replaceable, report_set, strict_json, write_output
from hessverify.model.problem import Problem
from hessverify.reports.analysis import CaseAnalysis, analyse_case, is_approximation
from hessverify.reports.progress import track
from hessverify.reports.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from hessverify.reports.html import Drawing
    from hessverify.engine.run import Run

__all__ = [
    "REPORT_FILES",
    "analyse",
    "check_directory",
    "environment",
    "markdown",
    "report_problems",
    "results_document",
    "write_html",
    "write_json",
    "write_markdown",
    "write_report",
]

def environment() -> dict[str, Any]:
    """Package versions, float type and platform, for the record."""
    import autograd
    import numpy
    import scipy
    import sympy

    from hessverify.base.version import VERSION

    def version(mod: Any) -> str:
        return str(getattr(mod, "__version__", "unknown"))

    try:
        from importlib.metadata import version as dist_version

        autograd_version = dist_version("autograd")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        autograd_version = version(autograd)
    return {
        "hessverify": VERSION,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "sympy": sympy.__version__,
        "autograd": autograd_version,
        "platform": platform.platform(),
        "float": "float64",
        "seeds": "cases draw with numpy.random.default_rng(seed) as documented in docs/cases.md",
    }


# -- the per-case analysis ----------------------------------------------------------


def _ordered(cases: Sequence[Problem], leading: Sequence[str]) -> list[Problem]:
    """Leading cases first (in the order given), then the rest in their own order."""
    first = [c for name in leading for c in cases if c.id == name]
    return first + [c for c in cases if c.id not in set(leading)]


def analyse(runs: Sequence[Run], *, show_progress: bool | None = None) -> list[CaseAnalysis]:
    """:func:`~hessverify.reports.analysis.analyse_case` for every run, in the order given (once per run)."""
    return [analyse_case(r) for r in track(runs, "analysing", label=lambda r: r.id, enabled=show_progress)]


def flatten(runs: Sequence[Run]) -> tuple[list[Comparison], list[dict[str, str]], list[Problem]]:
    """The runs' records, their ``not_compared`` records and their problems, in the runs' order."""
    return ([c for r in runs for c in r.records], [s for r in runs for s in r.skipped()],
            [r.problem for r in runs])


# -- results.json ------------------------------------------------------------------------


def results_document(results: Sequence[Comparison], skipped: Sequence[dict[str, str]] = (),
                     analyses: Sequence[CaseAnalysis] = (), leading: Sequence[str] = ()) -> dict[str, Any]:
    """The ``results.json`` document (schema: :mod:`hessverify.reports.schema`)."""
    located = {(a.problem.id, m, r): loc for a in analyses for (m, r), loc in a.localisations.items()}
    records = []
    for c in results:
        d = c.to_dict()
        loc = located.get((c.case, c.method, c.reference))
        if loc is not None:
            d["localisation"] = loc.to_dict()
        records.append(d)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "summary": {
            # approximation records are reports of approximation error, never pass/fail comparisons
            "comparisons": sum(not is_approximation(c) and not is_not_applicable(c) for c in results),
            "passed": sum(c.passed and not is_approximation(c) and not is_not_applicable(c) for c in results),
            "failed": sum(not c.passed for c in results),
            "approximations": sum(is_approximation(c) for c in results),
            # references that could not serve at a case's point (NaN or inf there): not comparisons
            "not_applicable": sum(is_not_applicable(c) for c in results),
            "not_compared": len(skipped),
        },
        "results": records,
        "not_compared": list(skipped),
    }
    if analyses:
        doc["cases"] = [a.to_dict() for a in analyses]
    if leading:
        doc["leading"] = list(leading)
    return doc



def _atomic_write(path: Path, data: str | bytes, option: str = "--report") -> None:
    """Write through :func:`hessverify.io.files.write_output`: readers see the old file or the new one."""
    write_output(path, data, option=option)


def check_json_path(path: Path, option: str = "--json") -> None:
    """A :class:`UsageError` now, rather than a lost run later, if ``path`` cannot take the JSON."""
    check_output_path(path, option)


def write_json(path: Path, results: Sequence[Comparison], skipped: Sequence[dict[str, str]] = (),
               analyses: Sequence[CaseAnalysis] = (), leading: Sequence[str] = (), *,
               option: str = "--json") -> Path:
    """Write ``results.json`` (:func:`results_document`) atomically; NaN and inf are written as such."""
    # strict JSON: NaN and infinity (an approximation's bound, a broken method's error) become null
    _atomic_write(path, strict_json(results_document(results, skipped, analyses, leading)), option)
    return path


# -- report.md ------------------------------------------------------------------------------


def _plain(text: str) -> str:
    """Text from a case file as one safe Markdown paragraph: line breaks become spaces, other control
    characters are shown escaped, and HTML or Markdown syntax is shown as written, not interpreted."""
    out = []
    for ch in text:
        if ch in "\r\n\t":
            out.append(" ")
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029":
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        elif ch in "<>&":
            out.append({"<": "&lt;", ">": "&gt;", "&": "&amp;"}[ch])
        elif ch in "\\`*_[]#|":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _fmt(x: float) -> str:
    return f"{x:.2e}"


def summary_cells(case: Problem, comps: Sequence[Comparison], skipped: Sequence[dict[str, str]],
                  methods: Sequence[str]) -> list[tuple[str, bool | None]]:
    """One cell per method: its text and whether it passed (``None``: no comparison)."""
    if not comps:
        reason = next((s["reason"] for s in skipped if s["case"] == case.id), "not compared")
        return [(reason.replace("_", " "), None)] * len(methods)
    cells: list[tuple[str, bool | None]] = []
    for m in methods:
        mine = [c for c in comps if c.method == m]
        if not mine:
            cells.append(("-", None))
            continue
        ok = all(c.passed for c in mine)
        worst = max(mine, key=lambda c: c.margin)
        cells.append((f"{'pass' if ok else 'FAIL'} {margin_text(worst)}", ok))
    return cells


def markdown(results: Sequence[Comparison], skipped: Sequence[dict[str, str]], cases: Sequence[Problem],
             analyses: Sequence[CaseAnalysis] = (), leading: Sequence[str] = ()) -> str:
    """The report as Markdown: a summary table (cases x methods), then one section per case.

    With ``leading`` (case ids), those cases come first in the table and
    the sections, marked as minimal failing problems.
    """
    cases = _ordered(cases, leading)
    unusable = [c for c in results if is_not_applicable(c)]
    # approximations have their own table; a reference that could not serve is a note, not a row
    results = [c for c in results if not is_approximation(c) and not is_not_applicable(c)]
    by_id = {a.problem.id: a for a in analyses}
    methods = sorted({c.method for c in results}) or ["result"]  # a column even when nothing was compared
    by_case: dict[str, list[Comparison]] = {}
    for c in results:
        by_case.setdefault(c.case, []).append(c)
    n_fail = sum(not c.passed for c in results)
    lines = [
        "# hessverify report",
        "",
        f"{len(cases)} case(s), {len(results)} comparison(s): {len(results) - n_fail} passed, {n_fail} failed"
        + (f", {len(skipped)} case(s) not compared." if skipped else "."),
        "",
    ]
    if leading:
        lines += [f"Minimal failing problems first: {', '.join(f'`{x}`' for x in leading)}.", ""]
    lines += [
        "Each cell: pass or FAIL, then the worst margin (largest |error| / bound over every entry and "
        "every reference; a comparison passes when it is at most 1).",
        "",
        "| case | " + " | ".join(methods) + " |",
        "| --- | " + " | ".join("---" for _ in methods) + " |",
    ]
    for case in cases:
        cells = summary_cells(case, by_case.get(case.id, []), skipped, methods)
        text = [t.replace("FAIL", "**FAIL**") for t, _ in cells]
        mark = " (minimal failing)" if case.id in leading else ""
        lines.append(f"| {case.id}{mark} | " + " | ".join(text) + " |")
    for case in cases:
        lines += ["", f"## {case.id}", ""]
        if case.id in leading:
            lines += ["A minimal failing problem.", ""]
        if case.description:
            lines += [_plain(case.description), ""]
        lines += [f"Network {case.architecture.describe()}, loss {case.loss} ({case.reduction}), "
                  f"W = {case.n_params}, N = {case.n_patterns}.", ""]
        skip = [s for s in skipped if s["case"] == case.id]
        if skip:
            lines += [f"Not compared: {skip[0]['message']}", ""]
            continue
        lines += ["| method | reference | result | max abs error | max rel error | bound at worst | margin "
                  "| worst entry |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in by_case.get(case.id, []):
            w = c.worst_entry
            lines.append(
                f"| {c.method} | {c.reference} | {'pass' if c.passed else '**FAIL**'} | {_fmt(c.max_abs_error)} | "
                f"{_fmt(c.max_rel_error)} | {_fmt(c.bound)} ({c.bound_kind}) | {margin_text(c)} | "
                f"`{w.row}` x `{w.col}` |"
            )
        lines += ["", *(f"- {c.reference}: {c.note}" for c in unusable if c.case == case.id)]
        a = by_id.get(case.id)
        for c in by_case.get(case.id, []):
            if not c.passed:
                w = c.worst_entry
                lines += ["", f"- {c.method} vs {c.reference}: {c.failing_entries} entries over the bound; worst "
                              f"`{w.row}` x `{w.col}`: {w.value:.17g} against {w.reference_value:.17g} "
                              f"(|error| {w.abs_error:.3g}, bound {w.bound:.3g}"
                              + ("; reference is exactly 0" if w.reference_value == 0.0 else "") + ")."]
                loc = a.localisations.get((c.method, c.reference)) if a else None
                if loc is not None:
                    lines += [f"  Where: {loc.words}"]
        if a is not None:
            lines += _markdown_spectrum(a)
    return "\n".join(lines) + "\n"


def spectrum_sentence(a: CaseAnalysis) -> str:
    """The inertia of the exact Hessian in one sentence."""
    s = a.spectrum
    if s is None:
        return a.spectrum_note[:1].upper() + a.spectrum_note[1:] + "." if a.spectrum_note else ""
    return (f"Spectrum of the {a.exact_name} Hessian: {s.positive} positive, {s.negative} negative, {s.zero} zero "
            f"eigenvalue(s) (|λ| ≤ {s.threshold:.1e} counts as zero), from {s.eigenvalues[0]:.3g} to "
            f"{s.eigenvalues[-1]:.3g}: {a.point}.")


def _markdown_spectrum(a: CaseAnalysis) -> list[str]:
    lines = []
    if spectrum_sentence(a):
        lines += ["", spectrum_sentence(a)]
    if a.approximations:
        lines += ["", "| approximation | kind | rel. Frobenius error | rel. diagonal error | cosine "
                  "| inertia (+/-/0) |", "| --- | --- | --- | --- | --- | --- |"]
        for x in a.approximations:
            if x.error or x.inertia is None:
                lines.append(f"| {x.name} | {x.kind} | {x.error or 'not computed'} | | | |")
            else:
                i = x.inertia
                lines.append(f"| {x.name} | {x.kind} | {x.rel_frobenius_error:.2e} | {x.rel_diagonal_error:.2e} | "
                             f"{x.cosine:.4f} | {i.positive}/{i.negative}/{i.zero} |")
    return lines


def write_markdown(path: Path, results: Sequence[Comparison], skipped: Sequence[dict[str, str]],
                   cases: Sequence[Problem], analyses: Sequence[CaseAnalysis] = (),
                   leading: Sequence[str] = ()) -> Path:
    """Write ``report.md`` (:func:`markdown`) atomically."""
    _atomic_write(path, markdown(results, skipped, cases, analyses, leading))
    return path


# -- report.html ----------------------------------------------------------------------------


def write_html(path: Path, results: Sequence[Comparison], skipped: Sequence[dict[str, str]],
               cases: Sequence[Problem], analyses: Sequence[CaseAnalysis], leading: Sequence[str] = (), *,
               show_progress: bool | None = None, drawing: Drawing | None = None) -> Path:
    """``report.html``: one self-contained file (:mod:`hessverify.reports.html`).

    ``drawing``: pictures already being drawn (:class:`hessverify.reports.html.Drawing`).
    """
    from hessverify.reports.html import html_document

    text = html_document(results, skipped, _ordered(cases, leading), analyses, leading,
                         show_progress=show_progress, drawing=drawing)
    _atomic_write(path, text)
    return path


# -- the whole report ----------------------------------------------------------------------------


REPORT_FILES = ("results.json", "report.md", "report.html")
"""The files of a report, written together (:func:`hessverify.io.files.report_set`)."""


def check_directory(directory: Path, names: Sequence[str] = REPORT_FILES) -> None:
    """Make sure ``directory`` exists and takes the report's files ``names``; else a :class:`UsageError` naming it.

    Called before any work, so a long run does not end in a report it cannot write.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise UsageError(f"--report {directory}: exists and is not a directory; name a directory") from None
    except OSError as exc:
        raise UsageError(f"--report {directory}: cannot write a report there: "
                         f"{exc.strerror or exc}; choose a writable directory") from None
    check_replaceable(directory, names)


def write_report(directory: Path, runs: Sequence[Run], *, leading: Sequence[str] = (), html: bool = True,
                 show_progress: bool | None = None, drawing: Drawing | None = None) -> list[Path]:
    """Write ``results.json``, ``report.md`` and ``report.html`` into ``directory``.

    Parameters
    ----------
    runs:
        One :class:`hessverify.engine.run.Run` per case, as ``hessverify verify``
        computed them (:func:`hessverify.engine.run.run_cases`); the report reads
        its matrices, bounds, records and skip reasons from them.
    leading:
        Case ids to put first, as minimal failing problems (a sweep's
        shrunk counterexamples).
    html:
        Also write ``report.html`` (the slow part: the pictures).
    show_progress:
        Draw a progress bar; default: when standard output is a terminal.
    drawing:
        The pictures of the runs, started while they were verified
        (:class:`hessverify.reports.html.Drawing`); without it they
        are all drawn now.
    """
    check_directory(directory)
    results, skipped, cases = flatten(runs)
    unknown = [x for x in leading if x not in {c.id for c in cases}]
    if unknown:
        raise UsageError(f"leading case(s) {', '.join(unknown)} are not among the cases reported")
    by_id = {r.id: r for r in runs}
    analyses = analyse([by_id[c.id] for c in _ordered(cases, leading)], show_progress=show_progress)
    # written into a fresh directory and moved in together: the three files always come from one run
    with report_set(directory) as staging:
        try:
            write_json(staging / "results.json", results, skipped, analyses, leading, option="--report")
            write_markdown(staging / "report.md", results, skipped, cases, analyses, leading)
            if html:
                write_html(staging / "report.html", results, skipped, cases, analyses, leading,
                           show_progress=show_progress, drawing=drawing)
        except OSError as exc:
            raise UsageError(f"--report {directory}: cannot write the report: {exc.strerror or exc}") from None
    names = ["results.json", "report.md"] + (["report.html"] if html else [])
    return [directory / n for n in names]


def _unique_ids(problems: Sequence[Problem]) -> list[Problem]:
    """Problems with distinct ids: a repeated id gets ``-2``, ``-3``, ... (sweep examples often share one)."""
    seen: dict[str, int] = {}
    out = []
    for p in problems:
        n = seen.get(p.id, 0) + 1
        seen[p.id] = n
        out.append(p if n == 1 else replace(p, id=f"{p.id}-{n}"))
    return out


def report_problems(directory: Path, problems: Sequence[Problem], *, leading: Sequence[Problem] = (),
                    methods: Sequence[str] | None = None, references: Sequence[str] | None = None,
                    html: bool = True, show_progress: bool | None = None) -> list[Path]:
    """Verify ``problems`` and write the report, leading with ``leading`` (for sweeps).

    ``leading`` are the minimal failing problems (for instance those a sweep
    shrank its counterexamples to); they come first in the table and the
    sections.  They need not be among ``problems``.  Problems that share an
    id are renamed ``id-2``, ``id-3``, ... so each has its own section.
    Problems where the Hessian does not exist or the network overflows are
    listed as not compared, as ``hessverify verify`` does.

    Examples
    --------
    >>> import tempfile, hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> with tempfile.TemporaryDirectory() as out:
    ...     [p.name for p in report_problems(Path(out), [case], html=False)]
    ['results.json', 'report.md']
    """
    from hessverify.engine.run import run_cases

    everything = _unique_ids(list(leading) + [p for p in problems if not any(p is q for q in leading)])
    check_directory(directory)
    from hessverify.reports.html import Drawing

    # each case's pictures are drawn in the background while the next cases are verified
    with Drawing(cases=len(everything) if html else 0) as drawing:
        runs = []
        # run_cases draws each problem from the progress bar as it starts it
        for run in run_cases(track(everything, "verifying", label=lambda q: q.id, enabled=show_progress),
                             methods, references):
            runs.append(run)
            drawing.start(analyse_case(run))
        return write_report(directory, runs, leading=[p.id for p in everything[: len(leading)]], html=html,
                            show_progress=show_progress, drawing=drawing)

