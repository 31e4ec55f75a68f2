"""Progress bars for long work: on standard error, drawn only on a terminal, one facility for the package.

Every long command and API call (``verify``, ``sweep``, :func:`hessverify.check`,
``check_model``, ``campaign``, ``conformance``, ``lab``) reports through
:func:`progress` or :func:`track`.  When a bar is drawn (:func:`shown`):

* only when standard error is a terminal: logs, CI, pipes and notebooks get
  no control characters;
* never under pytest, whose own progress line must stay readable, unless
  asked (``enabled=True`` or ``HESSVERIFY_PROGRESS=1``);
* never inside :func:`quiet` (the command line's ``--quiet``) or with
  ``HESSVERIFY_PROGRESS=0``.

A bar started while another is drawn becomes a second line of the same
display (rich allows one live display at a time), so ``check`` inside a
``conformance`` run shows both.  While a bar is drawn, ``print`` and warnings
still appear above it, and standard output stays standard output: it is
routed around the bar only when it is the terminal too, line by line as
written.  The bar is removed when the work is done.

Examples
--------
>>> with progress(3, "counting", enabled=False) as bar:
...     for k in range(3):
...         bar(f"item {k + 1}")
>>> list(track(["a", "b"], "letters", enabled=False))
['a', 'b']
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["ENVIRONMENT", "Bar", "progress", "quiet", "shown", "track"]

T = TypeVar("T")

ENVIRONMENT = "HESSVERIFY_PROGRESS"
"""``1`` draws bars wherever standard error is a terminal, pytest included; ``0`` draws none."""

_state = threading.local()  # quiet depth, per thread (a campaign's client threads stay as they are)
_live: dict[str, Any] = {"progress": None}  # the display being drawn, if any (one per process)
_lock = threading.Lock()


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream is not None and stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):  # closed or replaced stream
        return False


def shown(enabled: bool | None = None) -> bool:
    """Whether a bar asked for with ``enabled`` is drawn (see the module text): ``True``/``False`` decide, except
    that :func:`quiet` and ``HESSVERIFY_PROGRESS=0`` silence every bar; ``None`` means: only on a terminal, never
    under pytest unless ``HESSVERIFY_PROGRESS=1``."""
    setting = os.environ.get(ENVIRONMENT, "").strip()
    if getattr(_state, "quiet", 0) or setting == "0":
        return False
    if enabled is not None:
        return enabled
    if "PYTEST_CURRENT_TEST" in os.environ and setting != "1":
        return False
    return _is_terminal(sys.stderr)


@contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """No bar is drawn inside this block (in this thread) when ``on``: the command line's ``--quiet``."""
    _state.quiet = getattr(_state, "quiet", 0) + bool(on)
    try:
        yield
    finally:
        _state.quiet -= bool(on)


class Bar:
    """One task of the display: call it once per finished item, with the label of the next one.

    ``describe(text)`` renames the work (a check turning from examples to
    shrinking), ``restart(total)`` sets a new total (``None``: unknown, a
    pulsing bar).  A bar that is not drawn does nothing.
    """

    def __init__(self, description: str = "", display: Any = None, task: Any = None) -> None:
        self._description = description
        self._display = display
        self._task = task

    def __call__(self, label: str = "", *, advance: int = 1) -> None:
        if self._display is not None:
            self._display.update(self._task, advance=advance, description=_text(self._description, label))

    def describe(self, description: str, label: str = "") -> None:
        self._description = description
        if self._display is not None:
            self._display.update(self._task, description=_text(description, label))

    def restart(self, total: int | None, label: str = "") -> None:
        if self._display is not None:  # rich cannot set a total back to unknown: a fresh task in its place
            self._display.remove_task(self._task)
            self._task = self._display.add_task(_text(self._description, label), total=total)


def _text(description: str, label: str) -> str:
    from rich.markup import escape

    return escape(f"{description} {label}".rstrip())


@contextmanager
def progress(total: int | None, description: str, *, enabled: bool | None = None,
             first: str = "") -> Iterator[Bar]:
    """Yield a :class:`Bar` for ``total`` items (``None``: not known in advance) while the block runs.

    ``enabled``: see :func:`shown`.  ``first`` labels the first item, before
    any tick.  Nothing is drawn, and the bar's calls do nothing, when the bar
    is not :func:`shown` or ``total`` is 0.
    """
    if total == 0 or not shown(enabled):
        yield Bar()
        return
    with _lock:
        outer = _live["progress"]
    if outer is not None:  # a second line of the display already drawn
        task = outer.add_task(_text(description, first), total=total)
        bar = Bar(description, outer, task)
        try:
            yield bar
        finally:
            outer.remove_task(bar._task)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=sys.stderr, stderr=True)
    display = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=console, transient=True, redirect_stdout=False, redirect_stderr=False)
    streams = (sys.stdout, sys.stderr)
    with display:
        # what is printed while the bar is drawn goes above it, as written: standard error always (the bar's
        # own terminal), standard output only when it is that terminal too (a file or pipe gets it untouched)
        above = _Above(console, sys.stderr)
        if _is_terminal(sys.stdout):
            sys.stdout = _Above(console, sys.stdout)  # type: ignore[assignment]
        sys.stderr = above  # type: ignore[assignment]
        with _lock:
            _live["progress"] = display
        try:
            yield Bar(description, display, display.add_task(_text(description, first), total=total))
        finally:
            with _lock:
                _live["progress"] = None
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, _Above):
                    stream.flush()
            sys.stdout, sys.stderr = streams


class _Above(io.TextIOBase):
    """A stream that prints whole lines above the bar, exactly as written (no wrapping, markup or colour)."""

    def __init__(self, console: Any, stream: Any) -> None:
        self._console = console
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._console.print(line, soft_wrap=True, markup=False, highlight=False, emoji=False)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._console.print(self._pending, soft_wrap=True, markup=False, highlight=False, emoji=False, end="")
            self._pending = ""

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return int(self._stream.fileno())

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self._stream, "encoding", "utf-8"))


def track(items: Sequence[T], description: str, *, label: Callable[[T], str] = str,
          enabled: bool | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar naming the item in hand (see :func:`progress`)."""
    with progress(len(items), description, enabled=enabled, first=label(items[0]) if items else "") as bar:
        for k, item in enumerate(items):
            yield item
            bar(label(items[k + 1]) if k + 1 < len(items) else "")
