"""Bad input, generated: mutated case files give a clean message and status 2, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from hessverify.cli import main
from tests.conftest import CASE_PATHS

TEXTS = [p.read_text() for p in CASE_PATHS]
REPLACEMENTS = ["nan", "inf", "-inf", '"x"', "true", "[1, 2]", "[[1], [2, 3]]", "{}", "1e400", "-1", "0",
                "2.5", '""', "[" + ", ".join(["0.5"] * 25_001) + "]", "[]", "[[]]"]
NUMBER = re.compile(r"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?(?![\w.])")


@st.composite
def mutated_case_files(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(TEXTS))
    lines = text.splitlines()
    kind = draw(st.sampled_from(["delete_line", "replace_number", "replace_value", "truncate",
                                 "duplicate_line", "garbage", "rename_key"]))
    note(kind)
    if kind == "delete_line":
        del lines[draw(st.integers(0, len(lines) - 1))]
    elif kind == "duplicate_line":
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(i, lines[i])
    elif kind == "replace_number":
        spots = [m for m in NUMBER.finditer(text)]
        m = spots[draw(st.integers(0, len(spots) - 1))]
        return text[:m.start()] + draw(st.sampled_from(REPLACEMENTS)) + text[m.end():]
    elif kind == "replace_value":
        i = draw(st.integers(0, len(lines) - 1))
        if "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            lines[i] = f"{key}= {draw(st.sampled_from(REPLACEMENTS))}"
    elif kind == "truncate":
        return text[: draw(st.integers(0, len(text) - 1))]
    elif kind == "garbage":
        i = draw(st.integers(0, len(text)))
        return text[:i] + draw(st.text(alphabet="[]{}=\"',#\n abc", min_size=1, max_size=5)) + text[i:]
    elif kind == "rename_key":
        i = draw(st.integers(0, len(lines) - 1))
        if "=" in lines[i]:
            lines[i] = "x" + lines[i].lstrip()
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated_case_files())
def test_mutated_case_files_never_escape_as_tracebacks(text: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mutant.toml"
    path.write_text(text)
    code = main(["params", str(path)])  # loads and validates the file, computes nothing
    out, err = capsys.readouterr()
    event(f"exit {code}")
    assert code in (0, 2)
    if code == 2:
        assert err.startswith(f"hessverify: error: {path}: ") and err.count("\n") == 1, err
    else:
        assert out.strip() and not err
