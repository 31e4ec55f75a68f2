"""report_problems: the report over a sweep's examples, minimal failing problems first."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import hessverify
from hessverify.errors import UsageError
from hessverify.reports import report_problems, write_report

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
        write_report(tmp_path, [], [], [xor], leading=["nowhere"], html=False)
