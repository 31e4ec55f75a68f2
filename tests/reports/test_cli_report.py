"""``hessverify verify --report DIR``: three files, written atomically; clear errors for bad directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hessverify.cli import main
from hessverify.engine.registry import methods_with_role

ROOT = Path(__file__).resolve().parents[2]
CASE = str(ROOT / "cases" / "xor-2-2-1-sigmoid.toml")


def test_report_writes_three_files_and_no_leftovers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nested" / "report"
    assert main(["verify", CASE, "--report", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md", "results.json"]
    doc = json.loads((out / "results.json").read_text())
    exact = [r for r in doc["results"] if r["bound_kind"] != "approximation"]
    # every reference that serves by default (certified is named to run: it needs python-flint)
    assert {r["reference"] for r in exact} == {m.name for m in methods_with_role("reference") if m.name != "certified"}
    assert doc["cases"][0]["inertia"]["positive"] + doc["cases"][0]["inertia"]["negative"] \
        + doc["cases"][0]["inertia"]["zero"] == 9
    printed = capsys.readouterr().out
    assert "report written to" in printed and "report.html" in printed
    assert "\x1b[" not in printed  # no progress bar (nor any escape code) when stdout is not a terminal


def test_report_files_are_readable_not_private(tmp_path: Path) -> None:
    assert main(["verify", CASE, "--report", str(tmp_path)]) == 0
    for name in ("report.html", "report.md", "results.json"):
        assert (tmp_path / name).stat().st_mode & 0o044, f"{name} is readable by its owner only"


@pytest.mark.parametrize("where", ["under a file", "is a file"])
def test_unwritable_report_dir_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                where: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    target = blocker / "report" if where == "under a file" else blocker
    assert main(["verify", CASE, "--report", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hessverify: error: --report {target}: ")  # why, in the rest of the one line
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_bad_directory_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    main(["verify", CASE, "--report", str(blocker / "r")])
    assert "xor-2-2-1-sigmoid" not in capsys.readouterr().out  # no case was verified first
