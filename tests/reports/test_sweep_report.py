"""report_problems: the report over a sweep's examples, minimal failing problems first."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import hessverify
from hessverify.errors import UsageError
from hessverify.reports import report_problems, write_report
from hessverify.engine.run import Run

ROOT = Path(__file__).resolve().parents[2]


def test_leading_problems_come_first_and_ids_stay_unique(tmp_path: Path) -> None:
    xor = hessverify.load_case(ROOT / "cases" / "xor-2-2-1-sigmoid.toml")
    examples = [replace(xor, id="example"), replace(xor, id="example", params=xor.params * 0.5)]
    minimal = replace(xor, id="minimal", params=xor.params * 0.1)
    report_problems(tmp_path, examples, leading=[minimal], html=False, show_progress=False)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["leading"] == ["minimal"]
    assert [c["case"] for c in doc["cases"]] == ["minimal", "example", "example-2"]
    md = (tmp_path / "report.md").read_text()
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and "case" not in line
            and "---" not in line][:3]
    assert rows == ["minimal (minimal failing)", "example", "example-2"]
    assert md.index("## minimal") < md.index("## example")


def test_unknown_leading_id_is_a_usage_error(tmp_path: Path) -> None:
    xor = hessverify.load_case(ROOT / "cases" / "xor-2-2-1-sigmoid.toml")
    with pytest.raises(UsageError, match="leading case.*nowhere"):
        write_report(tmp_path, [Run.from_matrices(xor)], leading=["nowhere"], html=False)


def test_cases_not_compared_are_listed_not_drawn(tmp_path: Path) -> None:
    import jsonschema

    from hessverify.reports.schema import RESULTS_SCHEMA

    relu = hessverify.load_case(ROOT / "cases" / "relu-3-5-2.toml")
    skipped = [{"case": relu.id, "reason": "not_differentiable", "message": "a relu net input is exactly 0"}]
    write_report(tmp_path, [Run.from_matrices(relu, skipped=skipped[0])], show_progress=False)
    md = (tmp_path / "report.md").read_text()
    assert f"| {relu.id} | not differentiable |" in md
    assert "Not compared: a relu net input is exactly 0" in md
    page = (tmp_path / "report.html").read_text()
    assert "<p class='skip'>Not compared: a relu net input is exactly 0</p>" in page
    assert "<img" not in page and "<svg" not in page
    jsonschema.validate(json.loads((tmp_path / "results.json").read_text()), RESULTS_SCHEMA)


def test_spectrum_is_skipped_for_very_large_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    from hessverify.reports import analysis, spectrum_sentence

    monkeypatch.setattr(analysis, "MAX_SPECTRUM_PARAMS", 5)
    a = analysis.analyse_case(Run.from_matrices(hessverify.load_case(ROOT / "cases" / "xor-2-2-1-sigmoid.toml")))
    assert a.spectrum is None
    assert spectrum_sentence(a).startswith("No spectrum: 9 parameters is more than the 5")
