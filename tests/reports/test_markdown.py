"""report.md: the summary table (cases x methods), the sections, the localisation words."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def md(report_dir: Path) -> str:
    return (report_dir / "report.md").read_text()


def _summary_rows(md: str) -> list[list[str]]:
    lines = md.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| case |")))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_summary_table_is_cases_by_methods(md: str, small_cases) -> None:
    rows = _summary_rows(md)
    assert rows[0] == ["case", "backprop", "buggy-backprop"]
    assert rows[1] == ["---"] * 3
    assert [r[0] for r in rows[2:]] == [c.id for c in small_cases]


def test_cells_say_pass_or_fail_with_the_margin(md: str) -> None:
    for case, good, bad in _summary_rows(md)[2:]:
        word, margin = good.split()
        assert word == "pass" and float(margin) <= 1, case
        word, margin = bad.split()
        assert word == "**FAIL**" and float(margin) > 1, case


def test_one_section_per_case_with_localisation(md: str, small_cases) -> None:
    for c in small_cases:
        section = md.split(f"\n## {c.id}\n", 1)[1].split("\n## ", 1)[0]
        assert "| backprop | autograd | pass |" in section
        assert "| buggy-backprop | autograd | **FAIL** |" in section
        # the planted bug scales layer 2 x layer 1: the words must say so
        assert "Where: one whole block: layer 2 x layer 1" in section or \
            "Where: one whole block: W2 x W1" in section, section
        assert "Spectrum of the autograd Hessian:" in section


def test_saddle_shows_in_the_inertia(md: str) -> None:
    section = md.split("\n## saddle-2-3-1-tanh-zero\n", 1)[1].split("\n## ", 1)[0]
    assert "indefinite at a stationary point (|g| = 2e-15): a saddle" in section
    assert "| test-diagonal | vector |" in section and "| test-blocks | blocks |" in section
