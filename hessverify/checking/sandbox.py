"""Calling the function under test: its faults are its own, never hessverify's.

:func:`call_user` runs a user's function with a time limit and turns every
way it can fail (an exception, ``sys.exit``, a hang past the timeout) into a
:class:`~hessverify.errors.FunctionUnderTestError` (exit status 5) that
names the last frames of the traceback in the user's own file.  A fault is
not a discrepancy: nothing was compared, so nothing is shrunk as one.
:func:`user_copy` gives the function its own copy of a problem, so a
function that writes into its input cannot change what the references see.

Examples
--------
>>> def broken(p):
...     raise RuntimeError("boom")
>>> try:
...     call_user(broken, 1, timeout=5)
... except FunctionUnderTestError as exc:
...     print(exc.message)
RuntimeError: boom
"""

from __future__ import annotations

import inspect
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from hessverify.errors import FunctionUnderTestError, signal_behind
from hessverify.model.problem import Problem

__all__ = ["DEFAULT_TIMEOUT", "call_user", "user_copy", "user_frames"]

DEFAULT_TIMEOUT = 60.0
"""Seconds one call of the function under test may take (``--timeout``; ``0`` or ``None``: no limit)."""

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


class _Timeout(BaseException):
    """Raised inside the user's code by the alarm; a BaseException so that ``except Exception`` cannot eat it."""


def user_copy(problem: Problem) -> Problem:
    """The problem with its own arrays: what the function under test does to them stays with it."""
    return replace(problem, params=problem.params.copy(), inputs=problem.inputs.copy(),
                   targets=problem.targets.copy(), meta=dict(problem.meta))


def _source_file(fn: Callable[..., Any]) -> str | None:
    target = inspect.unwrap(fn)
    target = getattr(target, "__func__", target)
    try:
        path = inspect.getsourcefile(target) or inspect.getfile(target)
    except TypeError:
        return None
    return os.path.abspath(path) if path else None


def user_frames(exc: BaseException, fn: Callable[..., Any], *, keep: int = 3) -> str:
    """The last ``keep`` frames of ``exc``'s traceback in ``fn``'s own file, as one line.

    When no frame is in that file (a lambda from elsewhere, a C function),
    the last frames outside hessverify are given instead.
    """
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not os.path.abspath(f.filename).startswith(_PACKAGE + os.sep)]
    own = _source_file(fn)
    mine = [f for f in frames if own is not None and os.path.abspath(f.filename) == own] or frames
    return " <- ".join(
        f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" + (f": {f.line.strip()}" if f.line else "")
        for f in reversed(mine[-keep:]))


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def fire(signum: int, frame: Any) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _in_thread(fn: Callable[..., Any], args: tuple[Any, ...], seconds: float) -> Any:
    """Off the main thread no alarm can interrupt: wait for a daemon thread, and leave it behind if it hangs."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True, name="hessverify-function-under-test")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _Timeout
    if "error" in box:
        raise box["error"]
    return box["value"]


def call_user(fn: Callable[..., Any], *args: Any, timeout: float | None = DEFAULT_TIMEOUT,
              problem: Problem | None = None) -> Any:
    """``fn(*args)``, with every fault of ``fn`` raised as :class:`FunctionUnderTestError`.

    ``timeout`` (seconds) bounds the call: on the main thread by an alarm
    that interrupts the function where it is; elsewhere by waiting for a
    worker thread.  ``KeyboardInterrupt`` is the person's, not the
    function's, and passes through.
    """
    try:
        if not timeout or timeout <= 0:
            return fn(*args)
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            with _alarm(timeout):
                return fn(*args)
        return _in_thread(fn, args, timeout)
    except _Timeout as exc:
        raise FunctionUnderTestError(f"no result after {timeout:g} s (raise --timeout if it needs longer)",
                                     problem=problem, where=user_frames(exc, fn)) from None
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:
        raise FunctionUnderTestError(f"it called sys.exit({exc.code!r}); a function under test must return "
                                     "its result", problem=problem, where=user_frames(exc, fn), cause=exc) from None
    except Exception as exc:
        signalled = signal_behind(exc)
        if signalled is not None:  # an interrupt that landed in an import inside the function
            raise signalled from None
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise FunctionUnderTestError(f"{type(exc).__name__}: {text}".rstrip(": "), problem=problem,
                                     where=user_frames(exc, fn), cause=exc) from None
