"""A progress bar for long runs: shown on a terminal, silent otherwise.

Logs, CI and pipes get no control characters: the bar is drawn only when
standard output is a terminal.  While it runs, ``print`` output still
appears, above the bar (rich redirects ``sys.stdout``), and the bar is
removed when the work is done.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["progress", "track"]

T = TypeVar("T")


@contextmanager
def progress(total: int, description: str, *, enabled: bool | None = None,
             first: str = "") -> Iterator[Callable[[str], None]]:
    """Yield ``tick(label)``: call it once per finished item, with the label of the next one.

    ``enabled=None`` means: only when ``sys.stdout`` is a terminal.
    ``first`` labels the first item, before any tick.
    """
    if enabled is None:
        try:
            enabled = sys.stdout is not None and sys.stdout.isatty()
        except (AttributeError, ValueError, OSError):  # closed or replaced standard output
            enabled = False
    if not enabled or total < 1:
        yield lambda label="": None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task(f"{description} {first}".rstrip(), total=total)

        def tick(label: str = "") -> None:
            bar.update(task, advance=1, description=f"{description} {label}".rstrip())

        yield tick


def track(items: Sequence[T], description: str, *, label: Callable[[T], str] = str,
          enabled: bool | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar naming the item in hand (see :func:`progress`)."""
    with progress(len(items), description, enabled=enabled, first=label(items[0]) if items else "") as tick:
        for k, item in enumerate(items):
            yield item
            tick(label(items[k + 1]) if k + 1 < len(items) else "")
