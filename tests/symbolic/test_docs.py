"""The worked example in docs/derivation.md stays true: its doctests run, its printed output is current."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from hessverify.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "derivation.md"


def test_doctests_in_the_worked_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DOC.parents[1])  # the examples load cases/ relative to the repository
    result = doctest.testfile(str(DOC), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0


def test_the_shown_derive_output_is_current(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(DOC.parents[1])
    text = DOC.read_text(encoding="utf-8")
    shown = text.split("```console\n$ hessverify derive cases/xor-2-2-1-sigmoid.toml --entry 'W1[0,1]' 'W2[0,0]'\n")[1]
    shown = shown.split("```")[0]
    assert main(["derive", "cases/xor-2-2-1-sigmoid.toml", "--entry", "W1[0,1]", "W2[0,0]"]) == 0
    assert capsys.readouterr().out == shown
