"""Verification reports: ``results.json`` for machines, ``report.md`` for people.

Every file is written to a temporary name in the target directory and then
renamed into place, so an interrupted run never leaves a half-written report.
The JSON schema is in :data:`hessverify.reports.schema.RESULTS_SCHEMA` and
documented in ``docs/reports.md``.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hessverify.compare import Comparison
from hessverify.problem import Problem
from hessverify.reports.schema import SCHEMA_VERSION

__all__ = ["environment", "results_document", "write_json", "write_markdown", "write_report"]


def environment() -> dict[str, Any]:
    """Package versions, float type and platform, for the record."""
    import autograd
    import numpy
    import scipy
    import sympy

    import hessverify

    def version(mod: Any) -> str:
        return str(getattr(mod, "__version__", "unknown"))

    try:
        from importlib.metadata import version as dist_version

        autograd_version = dist_version("autograd")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        autograd_version = version(autograd)
    return {
        "hessverify": hessverify.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "sympy": sympy.__version__,
        "autograd": autograd_version,
        "platform": platform.platform(),
        "float": "float64",
        "seeds": "cases draw with numpy.random.default_rng(seed) as documented in docs/cases.md",
    }


def results_document(results: Sequence[Comparison], skipped: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "summary": {
            "comparisons": len(results),
            "passed": sum(c.passed for c in results),
            "failed": sum(not c.passed for c in results),
            "not_compared": len(skipped),
        },
        "results": [c.to_dict() for c in results],
        "not_compared": list(skipped),
    }


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, results: Sequence[Comparison], skipped: Sequence[dict[str, str]] = ()) -> Path:
    text = json.dumps(results_document(results, skipped), indent=2, allow_nan=True)
    _atomic_write(path, text + "\n")
    return path


def _fmt(x: float) -> str:
    return f"{x:.2e}"


def markdown(results: Sequence[Comparison], skipped: Sequence[dict[str, str]], cases: Sequence[Problem]) -> str:
    """The report as Markdown: a summary table (cases x methods), then one section per case."""
    methods = sorted({c.method for c in results})
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
        "Each cell: pass or FAIL, then the worst margin (largest |error| / bound over every entry and "
        "every reference; a comparison passes when it is at most 1).",
        "",
        "| case | " + " | ".join(methods) + " |",
        "| --- | " + " | ".join("---" for _ in methods) + " |",
    ]
    for case in cases:
        comps = by_case.get(case.id, [])
        cells = []
        for m in methods:
            mine = [c for c in comps if c.method == m]
            if not mine:
                cells.append("-")
                continue
            ok = all(c.passed for c in mine)
            cells.append(f"{'pass' if ok else '**FAIL**'} {max(c.margin for c in mine):.1e}")
        if not comps:
            reason = next((s["reason"] for s in skipped if s["case"] == case.id), "not compared")
            cells = [reason.replace("_", " ")] * len(methods)
        lines.append(f"| {case.id} | " + " | ".join(cells) + " |")
    for case in cases:
        lines += ["", f"## {case.id}", ""]
        if case.description:
            lines += [case.description, ""]
        lines += [f"Network {case.architecture.describe()}, loss {case.loss} ({case.reduction}), "
                  f"W = {case.n_params}, N = {case.n_patterns}.", ""]
        skip = [s for s in skipped if s["case"] == case.id]
        if skip:
            lines += [f"Not compared: {skip[0]['message']}", ""]
            continue
        lines += ["| method | reference | result | max abs error | max rel error | bound at worst | margin | worst entry |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in by_case.get(case.id, []):
            w = c.worst_entry
            lines.append(
                f"| {c.method} | {c.reference} | {'pass' if c.passed else '**FAIL**'} | {_fmt(c.max_abs_error)} | "
                f"{_fmt(c.max_rel_error)} | {_fmt(c.bound)} ({c.bound_kind}) | {c.margin:.1e} | "
                f"`{w.row}` x `{w.col}` |"
            )
        for c in by_case.get(case.id, []):
            if not c.passed:
                w = c.worst_entry
                lines += ["", f"- {c.method} vs {c.reference}: {c.failing_entries} entries over the bound; worst "
                              f"`{w.row}` x `{w.col}`: {w.value:.17g} against {w.reference_value:.17g} "
                              f"(|error| {w.abs_error:.3g}, bound {w.bound:.3g})."]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, results: Sequence[Comparison], skipped: Sequence[dict[str, str]],
                   cases: Sequence[Problem]) -> Path:
    _atomic_write(path, markdown(results, skipped, cases))
    return path


def write_report(directory: Path, results: Sequence[Comparison], skipped: Sequence[dict[str, str]],
                 cases: Sequence[Problem]) -> list[Path]:
    """Write ``results.json`` and ``report.md`` into ``directory``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from hessverify.errors import UsageError

        raise UsageError(f"--report {directory}: cannot create the directory: {exc.strerror}") from None
    return [
        write_json(directory / "results.json", results, skipped),
        write_markdown(directory / "report.md", results, skipped, cases),
    ]
