"""The progress bar: silent off a terminal, and iteration unchanged either way."""

from __future__ import annotations

import pytest

from hessverify.reports.progress import progress, track


def test_silent_when_stdout_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(track(["a", "b", "c"], "working")) == ["a", "b", "c"]
    with progress(3, "working") as tick:
        tick("a")
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_forced_on_it_still_yields_every_item() -> None:
    assert list(track([1, 2, 3], "working", label=str, enabled=True)) == [1, 2, 3]
    assert list(track([], "nothing", enabled=True)) == []
