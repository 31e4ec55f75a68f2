"""``report.html``: the Markdown report's content plus pictures, in one self-contained file.

Self-contained means: CSS inline, heatmaps as inline SVG over ``data:`` PNGs,
the spectrum as inline SVG, no script, no font, no link
to anything outside the file, so it opens offline and can be mailed or
attached to an issue as it is.

The page opens with what fits one screen: the totals and the summary table
(one row per case, one cell per method: pass or FAIL and the worst margin).
Each case's section then says in one line how it went, shows where each
failing comparison's error lives, and folds the rest (``<details>``): the
table of comparisons, the heatmaps (open when something failed), the
spectrum and the approximations.  A summary cell links into its case's
table, which the browser unfolds on the way.
"""

from __future__ import annotations

import numpy as np

import html
from collections.abc import Sequence
from typing import Any

from hessverify.engine.compare import Comparison, is_not_applicable, margin_text
from hessverify.model.problem import Problem
from hessverify.reports.analysis import CaseAnalysis, is_approximation
from hessverify.reports.localise import SHAPE_PHRASES
from hessverify.reports.progress import track

__all__ = ["PARALLEL_DRAW_MAX_PARAMS", "Drawing", "Pictures", "draw_all", "html_document"]

Pictures = tuple[str | None, str | None]
"""One case's heatmaps and spectrum, each inline SVG (``None``: nothing to draw)."""

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b;
       max-width: 1180px; margin: 24px auto; padding: 0 16px; background: #fff; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 36px;
     border-bottom: 2px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin-top: 18px; }
table { border-collapse: collapse; margin: 10px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { background: #e3f4e3; color: #14521b; }
.fail { background: #fbe0e0; color: #8a0c0c; font-weight: 600; }
.skip { background: #f3f0e0; color: #5b4d00; }
.lead { background: #fff4d6; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f4f4f4;
       padding: 0 3px; border-radius: 3px; }
.where { border-left: 4px solid #c0392b; background: #fdf3f2; padding: 8px 12px; margin: 8px 0; }
.where b { color: #8a0c0c; }
.note { color: #555; font-size: 13px; }
figure { margin: 10px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12px; }
nav a { margin-right: 8px; }
.wide { overflow-x: auto; }
#summary { font-size: 12px; }
#summary td, #summary th { padding: 3px 6px; }
#summary td, td.num { white-space: nowrap; }
#summary td a { color: inherit; text-decoration: none; }
#summary td:first-child a { color: #0645ad; }
p.status { margin: 6px 0; }
details { margin: 6px 0; }
details > summary { cursor: pointer; font-weight: 600; padding: 3px 0; }
details[open] > summary { margin-bottom: 4px; }
svg.heat, svg.spectrum { max-width: 100%; height: auto; display: block; }
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _svg(svg: str | None, caption: str) -> str:
    """An inline SVG picture (:func:`hessverify.reports.figures.heatmaps_svg`) with its caption."""
    if not svg:
        return ""
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _fold(anchor: str, title: str, body: str, *, open_: bool = False) -> str:
    """``body`` folded under ``title`` (``<details>``); ``anchor`` is the id of the body, which a link unfolds
    (a browser opens a closed ``<details>`` to show the element a link points to inside it)."""
    return (f'<details{" open" if open_ else ""}><summary>{_e(title)}</summary>'
            f'<div id="{_e(anchor)}">{body}</div></details>')


def _summary_table(cases: Sequence[Problem], results: Sequence[Comparison], skipped: Sequence[dict[str, str]],
                   leading: Sequence[str]) -> str:
    from hessverify.reports import summary_cells

    methods = sorted({c.method for c in results}) or ["result"]  # a column even when nothing was compared
    rows = ['<div class="wide"><table id="summary"><thead><tr><th>case</th>'
            + "".join(f"<th>{_e(m).replace('_', '_<wbr>')}</th>" for m in methods) + "</tr></thead><tbody>"]
    for case in cases:
        cells = summary_cells(case, [c for c in results if c.case == case.id], skipped, methods)
        # a cell opens its case's table of comparisons: the browser unfolds the <details> it links to
        tds = "".join(f'<td class="{"skip" if ok is None else ("pass" if ok else "fail")}">'
                      + (f'<a href="#{_e(case.id)}-comparisons">{_e(t)}</a>' if ok is not None else _e(t)) + "</td>"
                      for t, ok in cells)
        lead = ' class="lead"' if case.id in leading else ""
        mark = " <small>(minimal failing)</small>" if case.id in leading else ""
        rows.append(f'<tr{lead}><td><a href="#{_e(case.id)}">{_e(case.id)}</a>{mark}</td>{tds}</tr>')
    rows.append("</tbody></table></div>")
    return "\n".join(rows)


def _comparison_table(comps: Sequence[Comparison]) -> str:
    head = ("<tr><th>method</th><th>reference</th><th>result</th><th>max abs error</th><th>max rel error</th>"
            "<th>bound at worst</th><th>margin</th><th>worst entry</th><th>method value</th>"
            "<th>reference value</th></tr>")
    rows = []
    for c in comps:
        w = c.worst_entry
        cls = "pass" if c.passed else "fail"
        rows.append(
            f"<tr><td>{_e(c.method)}</td><td>{_e(c.reference)}</td><td class='{cls}'>"
            f"{'pass' if c.passed else 'FAIL'}</td><td class='num'>{c.max_abs_error:.2e}</td>"
            f"<td class='num'>{c.max_rel_error:.2e}</td><td class='num'>{c.bound:.2e} ({_e(c.bound_kind)})</td>"
            f"<td class='num'>{_e(margin_text(c))}</td><td><code>{_e(w.row)}</code> x <code>{_e(w.col)}</code></td>"
            f"<td class='num'>{w.value:.17g}</td><td class='num'>{w.reference_value:.17g}</td></tr>")
    return f"<div class='wide'><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"


def _status(comps: Sequence[Comparison]) -> str:
    """One line for a case: comparisons passed and failed, the worst margin and where it is."""
    if not comps:
        return "No comparison."
    n_fail = sum(not c.passed for c in comps)
    worst = max(comps, key=lambda c: c.margin)
    w = worst.worst_entry
    head = (f"<span class='fail'>{n_fail} of {len(comps)} comparisons failed</span>" if n_fail
            else f"<span class='pass'>all {len(comps)} comparisons passed</span>")
    return (f"{head}; worst margin {_e(margin_text(worst))}: {_e(worst.method)} vs {_e(worst.reference)} at "
            f"<code>{_e(w.row)}</code> x <code>{_e(w.col)}</code>.")


def _approximation_table(a: CaseAnalysis) -> str:
    if not a.approximations:
        return ("<p class='note'>No approximations are registered (registry role \"approximation\": "
                "Gauss-Newton, Fisher, diagonals); when there are, they are compared here.</p>")
    rows = []
    for x in a.approximations:
        if x.error or x.inertia is None:
            rows.append(f"<tr><td>{_e(x.name)}</td><td>{_e(x.kind)}</td><td colspan='4'>{_e(x.error)}</td></tr>")
            continue
        i = x.inertia
        rows.append(f"<tr><td>{_e(x.name)}</td><td>{_e(x.kind)}</td><td class='num'>{x.rel_frobenius_error:.2e}</td>"
                    f"<td class='num'>{x.rel_diagonal_error:.2e}</td><td class='num'>{x.cosine:.4f}</td>"
                    f"<td>{i.positive} / {i.negative} / {i.zero}</td></tr>")
    return ("<table><thead><tr><th>approximation</th><th>kind</th><th>rel. Frobenius error</th>"
            "<th>rel. diagonal error</th><th>cosine with exact</th><th>inertia + / − / 0</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _case_section(case: Problem, a: CaseAnalysis | None, comps: Sequence[Comparison],
                  skipped: Sequence[dict[str, str]], leading: Sequence[str],
                  unusable: Sequence[Comparison] = (), pictures: Pictures | None = None) -> str:
    from hessverify.reports import spectrum_sentence

    out = [f'<section id="{_e(case.id)}"><h2>{_e(case.id)}</h2>']
    if case.id in leading:
        out.append("<p><b>A minimal failing problem.</b></p>")
    if case.description:
        out.append(f"<p>{_e(case.description)}</p>")
    out.append(f"<p class='note'>Network <code>{_e(case.architecture.describe())}</code>, loss {_e(case.loss)} "
               f"({_e(case.reduction)}), W = {case.n_params}, N = {case.n_patterns}.</p>")
    skip = next((s for s in skipped if s["case"] == case.id), None)
    if skip is not None:
        out.append(f"<p class='skip'>Not compared: {_e(skip['message'])}</p></section>")
        return "\n".join(out)
    out.append(f"<p class='status'>{_status(comps)}</p>")
    for c in comps:
        if c.passed:
            continue
        w = c.worst_entry
        loc = a.localisations.get((c.method, c.reference)) if a else None
        words = _e(loc.words) if loc else "no matrices kept, so the error cannot be localised"
        if loc is not None:
            phrase = SHAPE_PHRASES[loc.shape]
            words = words.replace(_e(phrase), f"<b>{_e(phrase)}</b>", 1)
        out.append(f"<div class='where'><b>{_e(c.method)} vs {_e(c.reference)}</b>: {c.failing_entries} entries "
                   f"over the bound; worst <code>{_e(w.row)}</code> x <code>{_e(w.col)}</code> "
                   f"(|error| {w.abs_error:.3g}, bound {w.bound:.3g}"
                   + ("; reference is exactly 0" if w.reference_value == 0.0 else "") + f").<br>Where: {words}</div>")
    notes = "".join(f"<p class='note'>{_e(c.reference)}: {_e(c.note)}</p>" for c in unusable)
    out.append(_fold(f"{case.id}-comparisons", f"Comparisons ({len(comps)})", _comparison_table(comps) + notes))
    if a is not None:
        heat, spectrum = pictures if pictures is not None else _pictures(a)
        figure = _svg(heat, "First: the exact Hessian (symmetric log colour scale). Then |method − reference| on a "
                      "log scale for every failing comparison, and for each method that passes its comparison with "
                      "the exact reference (grey: exactly equal, or not computed by a diagonal or block method; "
                      "red rings: entries over the bound). Solid lines: layer boundaries; dotted: between a "
                      "layer's W and b.")
        if figure:
            out.append(_fold(f"{case.id}-heatmaps", "Hessian and errors (heatmaps)", figure,
                             open_=any(not c.passed for c in comps)))
        sentence = spectrum_sentence(a)
        body = (f"<p>{_e(sentence)}</p>" if sentence else "") + _svg(
            spectrum, "Eigenvalues in ascending order; blue positive, red negative, grey within the zero threshold "
            "(shaded band). Approximations' eigenvalues are overlaid.") + _approximation_table(a)
        title = "Spectrum and approximations" + (f": {a.point}" if a.point else "")
        out.append(_fold(f"{case.id}-spectrum", title, body))
    out.append("</section>")
    return "\n".join(out)


def _pictures(a: CaseAnalysis) -> Pictures:
    """The heatmaps and the spectrum of one case, each inline SVG."""
    from hessverify.reports.figures import heatmaps_svg, spectrum_svg

    with np.errstate(over="ignore", invalid="ignore"):  # matplotlib's symlog ticks overflow harmlessly
        return heatmaps_svg(a), spectrum_svg(a)


def _quiet_worker() -> None:
    """A drawing process leaves Ctrl-C and termination to the command that started it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


PARALLEL_DRAW_MAX_PARAMS = 1000
"""Cases up to this many parameters are drawn in parallel: their matrices are a few MB each.  Larger ones
are drawn one at a time here, so drawing never holds two large cases' pictures at once (the memory budget
counts one case at a time)."""

class Drawing:
    """Cases' pictures drawn in background processes while the caller goes on (with the next case's verification).

    Drawing (a heatmap's PNG rows and SVG text; 0.05 s a case of 206
    parameters) is independent from case to case: :meth:`start` hands a case's
    analysis to a pool of forked processes as soon as its run is done, so
    pictures are drawn while the next cases are verified, and :meth:`pictures`
    collects them in the report's order, drawing here whatever was not
    started.  A case past :data:`PARALLEL_DRAW_MAX_PARAMS` is always drawn
    here, at collection, one at a time; so is every case where ``fork`` is not
    available or there is one worker.  The pool is started by the first
    :meth:`start` (each analysis reaches it pickled, the SVG text comes back)
    and shut down by :meth:`close` or the ``with`` block.

    Examples
    --------
    >>> import hessverify
    >>> from hessverify.reports.analysis import analyse_case
    >>> from hessverify.engine.run import run_problem
    >>> a = analyse_case(run_problem(hessverify.load_case("cases/xor-2-2-1-sigmoid.toml"), references=["autograd"]))
    >>> with Drawing(workers=1) as drawing:
    ...     drawing.start(a)
    ...     [(heat[:4], spectrum[:4]) for heat, spectrum in drawing.pictures([a], show_progress=False)]
    [('<svg', '<svg')]
    """

    def __init__(self, *, workers: int | None = None, cases: int | None = None) -> None:
        import multiprocessing
        import os

        # one process per core (default), and no more than there are cases to draw
        self.workers = workers if workers is not None else os.cpu_count() or 1
        if cases is not None:
            self.workers = min(self.workers, cases)
        if "fork" not in multiprocessing.get_all_start_methods():
            self.workers = 1
        self._pool: Any = None
        self._started: dict[int, Any] = {}  # id(analysis) -> future of its pictures

    def start(self, analysis: CaseAnalysis) -> None:
        """Start drawing one case (a run that was not skipped) in the background, if it is small enough."""
        if self.workers <= 1 or analysis.problem.n_params > PARALLEL_DRAW_MAX_PARAMS or analysis.skipped:
            return
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # imported once here rather than once in every forked process
            import hessverify.reports.figures  # noqa: F401

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                             initializer=_quiet_worker)
        self._started[id(analysis)] = self._pool.submit(_pictures, analysis)

    def pictures(self, analyses: Sequence[CaseAnalysis], *, show_progress: bool | None = None) -> list[Pictures]:
        """Every case's pictures in the order given: those started collected, small ones not yet started started
        now, the rest drawn here."""
        for a in analyses:
            if id(a) not in self._started:
                self.start(a)
        progress = track([a.problem.id for a in analyses], "drawing", enabled=show_progress)
        out = []
        for a in analyses:
            future = self._started.pop(id(a), None)
            out.append(future.result() if future is not None else _pictures(a))
            next(progress, None)
        for _ in progress:  # finish the bar
            pass
        return out

    def close(self) -> None:
        """Stop the drawing processes (pictures not collected are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._started.clear()

    def __enter__(self) -> Drawing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def draw_all(analyses: Sequence[CaseAnalysis], *, show_progress: bool | None = None,
             workers: int | None = None) -> list[Pictures]:
    """Every case's pictures, small cases drawn in parallel where the platform forks (:class:`Drawing`)."""
    small = sum(a.problem.n_params <= PARALLEL_DRAW_MAX_PARAMS for a in analyses)
    with Drawing(workers=workers, cases=small) as drawing:
        return drawing.pictures(analyses, show_progress=show_progress)


def html_document(results: Sequence[Comparison], skipped: Sequence[dict[str, str]], cases: Sequence[Problem],
                  analyses: Sequence[CaseAnalysis], leading: Sequence[str] = (), *,
                  show_progress: bool | None = None, drawing: Drawing | None = None) -> str:
    """The whole page as a string (``cases`` already in report order).

    With ``drawing``, the pictures it has started are collected from it (:class:`Drawing`).
    """
    from hessverify.reports import environment

    unusable = [c for c in results if is_not_applicable(c)]
    # approximations have their own table; a reference that could not serve is a note, not a row
    results = [c for c in results if not is_approximation(c) and not is_not_applicable(c)]
    by_id = {a.problem.id: a for a in analyses}
    n_fail = sum(not c.passed for c in results)
    env = environment()
    head = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>hessverify report</title><style>{CSS}</style></head><body>")
    parts = [head, "<h1>hessverify report</h1>",
             f"<p id='totals'>{len(cases)} case(s), {len(results)} comparison(s): {len(results) - n_fail} passed, "
             f"<span class='{'fail' if n_fail else ''}'>{n_fail} failed</span>"
             + (f", {len(skipped)} case(s) not compared" if skipped else "") + ".</p>"]
    if leading:
        parts.append("<p>Minimal failing problems first: " + ", ".join(f"<code>{_e(x)}</code>" for x in leading)
                     + ".</p>")
    parts += ["<h2>Summary</h2>",
              "<p class='note'>Each cell: pass or FAIL, then the worst margin (largest |error| / bound over every "
              "entry and every reference; a comparison passes when it is at most 1).</p>",
              _summary_table(cases, results, skipped, leading)]
    drawn = [by_id[c.id] for c in cases if c.id in by_id and by_id[c.id].skipped is None]
    drawn_pictures = (drawing.pictures(drawn, show_progress=show_progress) if drawing is not None
                      else draw_all(drawn, show_progress=show_progress))
    pictures = dict(zip((a.problem.id for a in drawn), drawn_pictures, strict=True))
    for case in cases:
        parts.append(_case_section(case, by_id.get(case.id), [c for c in results if c.case == case.id],
                                   skipped, leading, [c for c in unusable if c.case == case.id],
                                   pictures.get(case.id)))
    env_rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in env.items())
    parts += ["<h2>Environment</h2>", f"<table>{env_rows}</table>", "</body></html>"]
    return "\n".join(parts) + "\n"
