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
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 * 3  # heatmaps and spectrum for each of the three cases
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)


def test_same_content_as_markdown(page: str, small_cases) -> None:
    assert '<table id="summary">' in page
    for c in small_cases:
        assert f'<section id="{c.id}">' in page
    assert page.count("<b>one whole block</b>") >= 3  # the planted bug, localised in every case
    assert "indefinite at a stationary point (|g| = 2e-15): a saddle" in page
    assert "test-diagonal" in page and "test-blocks" in page


def _chromium() -> str:
    for candidate in (os.environ.get("HESSVERIFY_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return str(shutil.which(candidate))
    pytest.skip("no headless browser: chromium is not installed (run `make browser`, which uses "
                "`apt-get install chromium` as root, or set HESSVERIFY_CHROMIUM)")


@pytest.fixture(scope="module")
def browser(report_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One headless chromium run: (screenshot, DOM as the browser built it, stderr)."""
    tmp = tmp_path_factory.mktemp("browser")
    shot = tmp / "shot.png"
    cmd = [_chromium(), *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--screenshot={shot}",
           "--window-size=1280,1800", "--dump-dom", (report_dir / "report.html").as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=tmp)
    return shot, proc.stdout, proc.stderr[-2000:]


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
    assert dom.count("<img") == 2 * len(small_cases)


def test_pictures_drawn_in_parallel_are_those_drawn_here(small_cases, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forked drawing processes return exactly the PNGs drawn in this process; large cases stay here."""
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
