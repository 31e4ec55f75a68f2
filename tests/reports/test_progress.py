"""The progress bar: on standard error, only on a terminal, never under pytest unless asked, silenced by quiet()."""

from __future__ import annotations

import io

import pytest

from hessverify.reports import progress as bars
from hessverify.reports.progress import ENVIRONMENT, progress, quiet, shown, track


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _terminal_stderr(monkeypatch: pytest.MonkeyPatch) -> _Terminal:
    """Standard error as a terminal; pytest itself asks for no bars, so HESSVERIFY_PROGRESS=1 asks for them.

    Called in the test's body: pytest's capture sets ``sys.stderr`` again between a fixture and the test.
    """
    stream = _Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setenv(ENVIRONMENT, "1")
    return stream


def test_silent_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(track(["a", "b", "c"], "working")) == ["a", "b", "c"]
    with progress(3, "working") as tick:
        tick("a")
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_forced_on_it_still_yields_every_item() -> None:
    assert list(track([1, 2, 3], "working", label=str, enabled=True)) == [1, 2, 3]
    assert list(track([], "nothing", enabled=True)) == []


def test_under_pytest_no_bar_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", _Terminal())
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    assert not shown()  # a terminal, but pytest's progress line is drawn there
    assert shown(True)
    monkeypatch.setenv(ENVIRONMENT, "1")
    assert shown()
    monkeypatch.setenv(ENVIRONMENT, "0")
    assert not shown() and not shown(True)


def test_quiet_silences_every_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal_stderr = _terminal_stderr(monkeypatch)
    assert shown()
    with quiet():
        assert not shown() and not shown(True)
        with progress(2, "hidden work") as bar:
            bar()
    assert shown() and "hidden work" not in terminal_stderr.getvalue()
    with quiet(False):
        assert shown()


def test_the_bar_is_drawn_on_stderr_and_stdout_keeps_its_text(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Output printed while the bar is drawn stays on standard output when that is not the terminal."""
    terminal_stderr = _terminal_stderr(monkeypatch)
    with progress(2, "counting sheep") as bar:
        print("a line of results")
        bar("sheep 2")
        bar()
    assert "counting sheep" in terminal_stderr.getvalue()
    assert capsys.readouterr().out == "a line of results\n"


def test_a_bar_inside_a_bar_is_a_second_line_of_the_same_display(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal_stderr = _terminal_stderr(monkeypatch)
    with progress(2, "outer work") as outer:
        with progress(None, "inner work") as inner:
            assert bars._live["progress"] is not None and inner._display is outer._display
            inner.describe("shrinking")
            inner.restart(None)
            inner()
        outer()
    assert bars._live["progress"] is None
    assert "outer work" in terminal_stderr.getvalue()


def test_on_one_terminal_printed_lines_go_above_the_bar_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """stdout and stderr the same terminal: a long line printed while the bar runs is written whole, not wrapped,
    not coloured, and standard output is itself again afterwards."""
    terminal = _terminal_stderr(monkeypatch)
    monkeypatch.setattr("sys.stdout", terminal)
    line = "case-" + "x" * 200 + " [not markup] 1.5e-03"
    with progress(1, "work") as bar:
        print(line)
        print("no newline yet", end="")
        bar()
    import sys

    assert sys.stdout is terminal
    assert line + "\n" in terminal.getvalue() and "no newline yet" in terminal.getvalue()
