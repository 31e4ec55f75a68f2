"""report.html: self-contained, and read by a real headless browser.

The browser is Debian's ``chromium`` (``make browser`` installs it); where
it is missing the browser tests are skipped with the reason.  Set
``HESSVERIFY_CHROMIUM`` to use another binary.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def page(report_dir: Path) -> str:
    return (report_dir / "report.html").read_text()


def test_self_contained(page: str) -> None:
    """No script, no stylesheet link, no external URL: the file opens offline as it is."""
    assert "<style>" in page
    assert not re.search(r"<script|<link|@import|url\(", page, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page, re.I)
    images = re.findall(r'(?:src|href)="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert page.count('<svg class="spectrum"') == 3  # the spectrum of each of the three cases
    assert page.count('<svg class="heat"') == 3  # and its heatmaps


def test_the_summary_comes_first_and_the_details_are_folded(page: str, small_cases) -> None:
    """Totals and the summary table open the page; each case's tables and pictures are folded, its heatmaps open
    when it failed; the where-boxes of failing comparisons stay in view."""
    assert page.index('<table id="summary">') < page.index("<section")
    for c in small_cases:
        section = page.split(f'<section id="{c.id}">', 1)[1].split("</section>", 1)[0]
        assert re.search(rf'<details><summary>Comparisons \(\d+\)</summary><div id="{c.id}-comparisons">', section)
        # the planted bug fails in every case: its heatmaps are open
        assert re.search(rf'<details open><summary>[^<]*heatmaps[^<]*</summary><div id="{c.id}-heatmaps">', section)
        assert re.search(rf'<details><summary>Spectrum[^<]*</summary><div id="{c.id}-spectrum">', section)
        assert section.index("class='where'") < section.index("<details")
        assert f'href="#{c.id}-comparisons"' in page  # a summary cell opens the case's table


def test_same_content_as_markdown(page: str, small_cases) -> None:
    assert '<table id="summary">' in page
    for c in small_cases:
        assert f'<section id="{c.id}">' in page
    assert page.count("<b>one whole block</b>") >= 3  # the planted bug, localised in every case
    assert "indefinite at a stationary point (|g| = 2e-15): a saddle" in page
    assert "test-diagonal" in page and "test-blocks" in page


def test_margins_do_not_wrap_in_the_grid(page: str) -> None:
    css = page.split("<style>", 1)[1].split("</style>", 1)[0]
    assert re.search(r"#summary td[^{]*\{[^}]*white-space: nowrap", css)


def _chromium() -> str:
    for candidate in (os.environ.get("HESSVERIFY_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return str(shutil.which(candidate))
    pytest.skip("no headless browser: chromium is not installed (run `make browser`, which uses "
                "`apt-get install chromium` as root, or set HESSVERIFY_CHROMIUM)")


def _run_chromium(url: str, tmp: Path, size: str = "1280,1800") -> tuple[Path, str, str]:
    """One headless chromium run on ``url``: (screenshot, DOM as the browser built it, stderr)."""
    shot = tmp / "shot.png"
    cmd = [_chromium(), *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--screenshot={shot}",
           f"--window-size={size}", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=tmp)
    return shot, proc.stdout, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def browser(report_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One headless chromium run: (screenshot, DOM as the browser built it, stderr)."""
    return _run_chromium((report_dir / "report.html").as_uri(), tmp_path_factory.mktemp("browser"))


def _coloured(shot: Path) -> float:
    """Share of a screenshot's pixels in a saturated colour (the heatmaps' and spectra's, not text or tables)."""
    img = (imread(shot)[..., :3] * 255).astype(int)
    return float(((img.max(axis=-1) - img.min(axis=-1)) > 80).mean())


def test_browser_renders_a_page_that_is_not_blank(browser: tuple[Path, str, str]) -> None:
    shot, _, stderr = browser
    assert shot.exists(), f"chromium wrote no screenshot:\n{stderr}"
    img = imread(shot)[..., :3]
    assert img.shape[:2] == (1800, 1280)
    ink = np.any(img < 0.9, axis=-1).mean()  # share of pixels that are not (near) white
    rgb = (img * 255).astype(np.uint32).reshape(-1, 3)
    colours = len(np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]))  # packed: unique rows are slow
    assert ink > 0.02, f"screenshot is blank: {ink:.1%} of pixels are not white"
    assert colours > 50, f"screenshot has only {colours} colours: text and pictures did not render"


def test_browser_sees_the_summary_table(browser: tuple[Path, str, str], small_cases) -> None:
    _, dom, stderr = browser
    assert '<table id="summary">' in dom, f"no summary table in the DOM:\n{stderr}"
    table = dom.split('<table id="summary">', 1)[1].split("</table>", 1)[0]
    assert "<th>backprop</th>" in table and "<th>buggy-backprop</th>" in table
    for c in small_cases:
        assert f'href="#{c.id}"' in table
    assert table.count('class="fail"') == len(small_cases)
    assert dom.count('<svg class="spectrum"') == len(small_cases) and dom.count('<svg class="heat"') == len(small_cases)
    assert re.search(rf'<details><summary>Comparisons[^<]*</summary><div id="{small_cases[0].id}-comparisons">', dom)


def test_browser_unfolds_the_section_a_link_points_to(report_dir: Path, small_cases,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    """A summary cell links to its case's folded table of comparisons: the browser opens it on arrival."""
    _, dom, stderr = _run_chromium((report_dir / "report.html").as_uri() + f"#{small_cases[1].id}-comparisons",
                                   tmp_path_factory.mktemp("fragment"))
    def fold(case_id: str) -> re.Match[str] | None:
        return re.search(rf'<details( open="")?><summary>Comparisons[^<]*</summary><div id="{case_id}-comparisons">',
                         dom)

    opened = fold(small_cases[1].id)
    assert opened is not None, f"no such section in the DOM:\n{stderr}"
    assert opened.group(1), "the browser did not unfold the section the link points to"
    assert not fold(small_cases[0].id).group(1)  # type: ignore[union-attr]  # the others stay folded


OPEN_EVERYTHING = """<script>
addEventListener("load", () => {
  const before = document.documentElement.scrollHeight;
  const shut = document.querySelectorAll("details:not([open])").length;
  document.querySelectorAll("details > summary").forEach(s => { if (!s.parentElement.open) s.click(); });
  const all = document.querySelectorAll("details").length;
  const open = document.querySelectorAll("details[open]").length;
  const drawn = [...document.querySelectorAll("details svg.spectrum")]
    .filter(s => s.getBoundingClientRect().height > 100).length;
  const heat = [...document.querySelectorAll("details svg.heat")]
    .filter(s => s.getBoundingClientRect().width > 300).length;
  const grew = document.documentElement.scrollHeight - before;
  document.body.setAttribute("data-probe", `shut=${shut} all=${all} open=${open} drawn=${drawn} heat=${heat} grew=${grew}`);
});
</script>"""


def test_browser_opens_every_folded_section_with_its_pictures(report_dir: Path, small_cases,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    """Clicking each folded section's summary (as a reader does) opens it, and what was folded is laid out: every
    spectrum decoded and drawn at its size, every heatmap at its width, the page longer by what was folded."""
    tmp = tmp_path_factory.mktemp("opened")
    page = (report_dir / "report.html").read_text().replace("</body>", OPEN_EVERYTHING + "</body>")
    probe = tmp / "report.html"
    probe.write_text(page)
    _, dom, stderr = _run_chromium(probe.as_uri(), tmp)
    found = re.search(r'data-probe="shut=(\d+) all=(\d+) open=(\d+) drawn=(\d+) heat=(\d+) grew=(-?\d+)"', dom)
    assert found is not None, f"the probe did not run:\n{stderr}"
    shut, total, opened, drawn, heat, grew = map(int, found.groups())
    n = len(small_cases)
    assert shut == 2 * n and total == 3 * n and opened == total  # comparisons and spectrum were folded
    assert drawn == n and heat == n
    assert grew > n * 300, f"opening the sections made the page only {grew} px longer"


def test_pictures_drawn_in_parallel_are_those_drawn_here(small_cases, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forked drawing processes return exactly the pictures drawn in this process; large cases stay here."""
    from hessverify.reports import html
    from hessverify.reports.analysis import analyse_case
    from hessverify.engine.run import run_problem

    analyses = [analyse_case(run_problem(c, ["backprop"], ["autograd"])) for c in small_cases[:3]]
    here = html.draw_all(analyses, show_progress=False, workers=1)
    assert all(heat and spectrum for heat, spectrum in here)
    assert html.draw_all(analyses, show_progress=False, workers=2) == here
    monkeypatch.setattr(html, "PARALLEL_DRAW_MAX_PARAMS", 0)  # every case "large": all drawn here, in order
    assert html.draw_all(analyses, show_progress=False, workers=2) == here


def test_pictures_started_while_verifying_are_those_drawn_here(small_cases) -> None:
    """A Drawing fed case by case (as `verify --report` does while it verifies the next case) returns, in the
    report's order, exactly the PNGs drawn in this process, including a case never started."""
    from hessverify.reports import html
    from hessverify.reports.analysis import analyse_case
    from hessverify.engine.run import run_problem

    analyses = [analyse_case(run_problem(c, ["backprop"], ["autograd"])) for c in small_cases[:3]]
    here = html.draw_all(analyses, show_progress=False, workers=1)
    with html.Drawing(workers=2) as drawing:
        for a in analyses[1:]:
            drawing.start(a)
        assert drawing.pictures(analyses, show_progress=False) == here
    with html.Drawing(workers=2, cases=1) as one:
        assert one.workers == 1  # never more processes than cases
