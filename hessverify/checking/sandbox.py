"""Calling the function under test: its faults are its own, never hessverify's.

A :class:`Sandbox` runs a user's function, call after call, and turns every
way it can fail (an exception, ``sys.exit``, ``os._exit``, a signal, a crash
in native code, a hang past the timeout) into a
:class:`~hessverify.errors.FunctionUnderTestError` (exit status 5) that names
the last frames in the user's own file.  A fault is not a discrepancy: nothing
was compared, so nothing is shrunk as one.  Every call gets its own copy of
the problem, so a function that writes into its input cannot change what the
references see.

Where the function runs is ``isolation``:

``"process"`` (the default)
    In a child process, one for the whole run (a check, a sweep, a report),
    started again after the function killed it.  It is forked where that is
    safe (:func:`start_method`: a POSIX system other than macOS, one Python
    thread, no JAX backend or TensorFlow loaded) and spawned otherwise (the
    function then travels by pickle, or by cloudpickle where installed; one
    that cannot falls back to ``"thread"`` with a warning).  A timeout is a
    kill (SIGKILL), so neither a bare ``except:`` nor a signal handler of the
    function can outlast it; every exit is seen; and nothing the function does
    to signal handlers, the working directory, ``sys.path``, loaded modules or
    the interpreter reaches the caller.  What it prints goes to standard error.
``"thread"``
    In this process, for a debugger or a profiler: on the main thread an
    alarm interrupts the function at the timeout (a ``BaseException``, so
    ``except Exception`` cannot eat it, but a bare ``except:`` or a function
    that takes SIGALRM for itself can); elsewhere a daemon thread is waited
    for and left behind.  ``sys.exit`` is caught; ``os._exit`` is not.
``"none"``
    In this process, a plain call: no time limit at all.

The cost of ``"process"``, measured with ``benchmarks/sandbox_overhead.py``, is in
docs/trust.md ("Hardening"): the start of the worker once per run, then a round
trip through a pipe per call (the problem is sent once, not once per call).

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

import atexit
import faulthandler
import importlib.util
import inspect
import linecache
import math
import multiprocessing
import os
import pickle
import re
import select
import signal
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from hessverify.errors import FunctionUnderTestError, Terminated, UsageError, exception_text, signal_behind
from hessverify.model.problem import Problem

__all__ = ["DEFAULT_ISOLATION", "DEFAULT_TIMEOUT", "ISOLATIONS", "Sandbox", "call_user", "check_isolation",
           "check_timeout", "register_user_module", "start_method", "user_copy", "user_frames"]

DEFAULT_TIMEOUT = 60.0
"""Seconds one call of the function under test may take (``--timeout``; ``0`` or ``None``: no limit)."""

ISOLATIONS = ("process", "thread", "none")
"""Where the function under test may run (module text)."""

DEFAULT_ISOLATION = "process"

START_TIMEOUT = 300.0
"""Seconds a child process may take to start (a spawned one imports NumPy, hessverify and the user's modules,
PyTorch or JAX perhaps, on a loaded machine); not counted in the function's own timeout."""

GRACE = 1.0
"""Seconds given to a child to say where it hangs, or to stop when asked, before it is killed."""

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HERE = os.path.abspath(__file__)


class _Timeout(BaseException):
    """Raised inside the user's code by the alarm; a BaseException so that ``except Exception`` cannot eat it."""


# -- arguments ------------------------------------------------------------------------------------------------


def check_timeout(timeout: Any, name: str = "timeout") -> float | None:
    """``timeout`` as seconds, ``None`` for no limit (``None``, ``0`` or ``inf``); else a :class:`UsageError`.

    >>> check_timeout(2), check_timeout(0), check_timeout(None)
    (2.0, None, None)
    >>> check_timeout(float("nan"))
    Traceback (most recent call last):
    ...
    hessverify.errors.UsageError: timeout=nan: give seconds, a number at least 0 (0 or None: no limit)
    """
    said = f"{name} {timeout!r}" if name.startswith("--") else f"{name}={timeout!r}"
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) and not hasattr(timeout, "__float__"):
        raise UsageError(f"{said}: give seconds, a number at least 0 (0 or None: no limit)")
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        raise UsageError(f"{said}: give seconds, a number at least 0 (0 or None: no limit)") from None
    if not seconds >= 0:  # NaN too
        raise UsageError(f"{said}: give seconds, a number at least 0 (0 or None: no limit)")
    return None if seconds == 0 or math.isinf(seconds) else seconds


def check_isolation(isolation: Any, name: str = "isolation") -> str:
    """``isolation`` if it is one of :data:`ISOLATIONS`, else a :class:`UsageError` naming the choices."""
    if not isinstance(isolation, str) or isolation not in ISOLATIONS:
        raise UsageError(f"{name}={isolation!r}: choose one of {', '.join(map(repr, ISOLATIONS))} "
                         "(process: a child process, the default; thread or none: this process, for debugging)")
    return isolation


# -- what the function sees and where it failed -----------------------------------------------------------------


def user_copy(problem: Problem) -> Problem:
    """The problem with its own arrays: what the function under test does to them stays with it."""
    return replace(problem, params=problem.params.copy(), inputs=problem.inputs.copy(),
                   targets=problem.targets.copy(), meta=dict(problem.meta))


def _copied(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(user_copy(a) if isinstance(a, Problem) else a for a in args)


def _source_file(fn: Callable[..., Any]) -> str | None:
    target = inspect.unwrap(fn)
    target = getattr(target, "__func__", target)
    if not (inspect.isfunction(target) or inspect.ismethod(target)) and callable(target):
        target = type(target).__call__  # a callable object: its __call__'s file
    try:
        path = inspect.getsourcefile(target) or inspect.getfile(target)
    except TypeError:
        return None
    return os.path.abspath(path) if path else None


def _frames_text(frames: list[tuple[str, int, str, str | None]], fn: Callable[..., Any], keep: int) -> str:
    """``frames`` (file, line, function, source; oldest first) as one line: the last ``keep`` in ``fn``'s file,
    or outside hessverify when none is."""
    outside = [f for f in frames if not os.path.abspath(f[0]).startswith(_PACKAGE + os.sep)]
    own = _source_file(fn)
    mine = [f for f in outside if own is not None and os.path.abspath(f[0]) == own] or outside
    return " <- ".join(f"{os.path.basename(file)}:{line} in {name}" + (f": {code.strip()}" if code else "")
                       for file, line, name, code in reversed(mine[-keep:]))


def user_frames(exc: BaseException, fn: Callable[..., Any], *, keep: int = 3) -> str:
    """The last ``keep`` frames of ``exc``'s traceback in ``fn``'s own file, as one line.

    When no frame is in that file (a lambda from elsewhere, a C function),
    the last frames outside hessverify are given instead.
    """
    return _frames_text([(f.filename, f.lineno or 0, f.name, f.line) for f in traceback.extract_tb(exc.__traceback__)],
                        fn, keep)


_FRAME = re.compile(r'^\s+File "(?P<file>.*)", line (?P<line>\d+) in (?P<name>.*)$')


def _dump_frames(text: str) -> list[tuple[str, int, str, str | None]]:
    """The frames of the function under test in a :mod:`faulthandler` dump of the child, oldest first.

    The dump lists every thread, most recent call first; the thread that runs
    the function is the one that passes through this module's ``_serve``, and
    its frames above that are the function's.
    """
    for block in re.split(r"\n(?=\S)", text):
        frames = [(m["file"], int(m["line"]), m["name"]) for m in map(_FRAME.match, block.splitlines()) if m]
        ours = [i for i, (file, _, name) in enumerate(frames) if os.path.abspath(file) == _HERE and name == "_serve"]
        if ours:
            return [(file, line, name, linecache.getline(file, line) or None)
                    for file, line, name in reversed(frames[:ours[0]])]
    return []


# -- the child process ----------------------------------------------------------------------------------------------


_USER_MODULES: dict[str, str] = {}


def register_user_module(name: str, path: str) -> None:
    """Say that module ``name`` was loaded from the file ``path`` (``sweep --method-under-test file.py:f``), so that a
    spawned child can load it the same way before it unpickles a function defined there."""
    _USER_MODULES[name] = os.path.abspath(path)


def _jax_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    if bridge is None:
        return False
    started = getattr(bridge, "backends_are_initialized", None)
    return bool(started()) if callable(started) else True


def start_method() -> str:
    """``"fork"`` where forking this process now is safe, else ``"spawn"``.

    Safe: ``fork`` exists and is not macOS's (whose system libraries are not
    fork-safe), this process runs one Python thread (a lock another thread
    holds stays held forever in the child), and no library that runs threads
    of its own, unknown to Python, is active: a JAX backend or TensorFlow.
    PyTorch's OpenMP pool does not survive a fork either; the child sets
    PyTorch to one thread, which needs no pool.  A daemonic multiprocessing
    worker may not fork children of multiprocessing's own: it spawns.
    """
    if "fork" not in multiprocessing.get_all_start_methods() or sys.platform == "darwin":
        return "spawn"
    if multiprocessing.current_process().daemon:  # multiprocessing lets a daemonic process have no children
        return "spawn"
    if threading.active_count() > 1 or "tensorflow" in sys.modules or _jax_started():
        return "spawn"
    return "fork"


class _NotPortable(Exception):
    """The function cannot be sent to a spawned process."""


def _portable(fn: Callable[..., Any]) -> bytes:
    """``fn`` pickled for a spawned child, or :class:`_NotPortable`.

    cloudpickle, where installed, takes functions of ``__main__``, lambdas and
    closures by value (and the rest by reference); plain pickle takes only
    functions a fresh interpreter can import by name.
    """
    try:
        import cloudpickle
    except ImportError:
        cloudpickle = None
    try:
        return cloudpickle.dumps(fn) if cloudpickle is not None else pickle.dumps(fn)  # type: ignore[no-any-return]
    except Exception as exc:  # lambdas, closures, functions of a notebook: pickle cannot take them by reference
        reason = exception_text(exc)
        hint = "" if cloudpickle is not None else "; pip install cloudpickle lets such functions travel"
        raise _NotPortable(reason + hint) from None


def _load_user_modules(modules: dict[str, str]) -> None:
    """Load the user's files a spawned child needs, under the names the parent gave them."""
    for name, path in modules.items():
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        folder = os.path.dirname(path)
        if folder not in sys.path:
            sys.path.append(folder)
        spec.loader.exec_module(module)


def _die_with_parent() -> None:
    """On Linux, a SIGKILL when the parent dies: a hanging child never outlives hessverify."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no libc here
        pass


def _become_child(dump_fd: int, via_fork: bool) -> None:
    """What the child does first: signals to their defaults, standard output to standard error, stack dumps on call."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the person's: the parent hears it and ends this process
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):  # held back by the parent while it started this process
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):  # pragma: no cover - not the main thread
        pass
    try:
        os.dup2(2, 1)  # standard output is the caller's (a sweep writes the case file there)
    except OSError:  # no standard error to send it to: then nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    faulthandler.enable(file=dump_fd, all_threads=True)  # a crash in native code says where
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, file=dump_fd, all_threads=True)  # where a hang is, on request
    _die_with_parent()
    if via_fork and "torch" in sys.modules:
        # PyTorch's OpenMP pool does not survive a fork (a parallel region then waits forever); one thread needs none
        sys.modules["torch"].set_num_threads(1)


def _spawned(fd: int, dump_fd: int) -> None:
    """The start of a spawned child (``python -c``): the function and the user's modules come first on the pipe."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    _become_child(dump_fd, via_fork=False)
    try:
        payload, modules = conn.recv()
        _load_user_modules(modules)
        fn = pickle.loads(payload)
    except BaseException as exc:  # the function could not be rebuilt here: the parent runs it itself
        conn.send(("unusable", exception_text(exc)))
        return
    _serve(conn, fn)


def _forked(conn: Any, dump_fd: int, fn: Callable[..., Any]) -> None:
    """The start of a forked child: it has the function already."""
    _become_child(dump_fd, via_fork=True)
    _serve(conn, fn)


def _serve(conn: Any, fn: Callable[..., Any]) -> None:
    """The child's loop: receive a call, run it, send back what came of it, until the parent stops or goes."""
    conn.send(("ready", os.getpid()))
    first: Any = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        same, sent, rest, n = message
        if not same:
            first = sent
        reply = _run_call(fn, (first, *rest) if n else ())
        try:
            conn.send(reply)
        except Exception:  # the result cannot be pickled: it is no array, say what it is
            conn.send(("unsendable", type(reply[1]).__name__))


def _run_call(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, ...]:
    try:
        return ("ok", fn(*_copied(args)))
    except SystemExit as exc:
        return ("exit", repr(exc.code), user_frames(exc, fn))
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) or signal_behind(exc) is not None:
            return ("interrupt",)
        where = user_frames(exc, fn)
        try:
            cause = pickle.dumps(exc.with_traceback(None))
        except Exception:
            cause = None
        return ("raised", _raised_text(exc), where, cause)


def _raised_text(exc: BaseException) -> str:
    """What the function under test raised, in one line: ``"Type: line"``, or the message alone of a
    :class:`FunctionUnderTestError` raised inside the call (a check of the function's own result, which already
    says "the function under test failed" once it is raised again here)."""
    return exc.message if isinstance(exc, FunctionUnderTestError) else exception_text(exc)


# -- the parent's side --------------------------------------------------------------------------------------------

_LIVE: weakref.WeakSet[_Worker] = weakref.WeakSet()
_EXIT_HOOK: list[bool] = []


def _kill_all() -> None:
    for worker in list(_LIVE):
        worker.kill()


def _kill_at_exit() -> None:
    """Kill every child left at exit, before multiprocessing's own exit handler would wait for them: registered
    after it (exit handlers run last registered first)."""
    if not _EXIT_HOOK:
        import multiprocessing.util  # noqa: F401 - its exit handler is registered on import

        atexit.register(_kill_all)
        _EXIT_HOOK.append(True)


class _Unusable(Exception):
    """The child could not run the function (it could not be rebuilt there)."""


class _Spawned:
    """A child started as ``python -c``, with the face of a :class:`multiprocessing.Process` that the worker uses."""

    def __init__(self, fd: int, dump_fd: int) -> None:
        import json
        import subprocess

        if not sys.executable:
            raise _Unusable("no Python interpreter to start (sys.executable is empty)")
        code = (f"import sys; sys.path[:] = {json.dumps(sys.path)}; "
                f"from hessverify.checking.sandbox import _spawned; _spawned({fd}, {dump_fd})")
        self._popen = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, pass_fds=(fd, dump_fd))
        self.pid: int | None = self._popen.pid

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def join(self, timeout: float | None = None) -> None:
        import subprocess

        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        self._popen.kill()


class _Worker:
    """One child process running ``fn``; its replies as tuples, its death and its hangs as ``("died", ...)``,
    ``("timeout", ...)``.

    Forked, the child has ``fn`` already (multiprocessing's ``fork`` context).
    Spawned, it is a fresh ``python -c`` that imports nothing of the caller's
    ``__main__`` (so a script without ``if __name__ == "__main__"`` is not run
    again): ``fn`` is sent pickled, after the user's files it needs.
    """

    def __init__(self, fn: Callable[..., Any], method: str) -> None:
        payload = fn if method == "fork" else _portable(fn)
        _kill_at_exit()
        self.method = method
        self.conn: Any = None
        self.process: Any = None
        dump_r, dump_w = os.pipe()
        self.dump_fd = dump_r
        try:
            if method == "fork":
                ctx = multiprocessing.get_context("fork")
                self.conn, child = ctx.Pipe()
                self.process = ctx.Process(target=_forked, args=(child, dump_w, fn),
                                                name="hessverify-function-under-test", daemon=False)
                with _signals_deferred():
                    self.process.start()
                    _LIVE.add(self)
                child.close()
            else:
                import socket
                from multiprocessing.connection import Connection

                ours, theirs = socket.socketpair()
                self.conn = Connection(ours.detach())
                try:
                    with _signals_deferred():
                        self.process = _Spawned(theirs.fileno(), dump_w)
                        _LIVE.add(self)
                finally:
                    theirs.close()
                self.conn.send((payload, dict(_USER_MODULES)))
        except BaseException:
            self.kill()
            raise
        finally:
            os.close(dump_w)
        self._sent = False
        self._first: Any = None
        try:
            if not self.conn.poll(START_TIMEOUT):
                raise _Unusable(f"the child process did not start within {START_TIMEOUT:g} s")
            hello = self.conn.recv()
        except EOFError:
            self.process.join(GRACE)
            raise _Unusable(f"the child process ended while starting (status {self.process.exitcode})") from None
        except BaseException:
            self.kill()
            raise
        if hello[0] != "ready":
            self.kill()
            raise _Unusable(hello[1])

    def call(self, args: tuple[Any, ...], timeout: float | None) -> tuple[Any, ...]:
        first, rest = (args[0], args[1:]) if args else (None, ())
        same = self._sent and first is self._first
        try:
            try:
                self.conn.send((same, None if same else first, rest, len(args)))
            except (OSError, EOFError):  # the child is gone: its pipe broke or was closed
                return self._died()
            self._sent, self._first = True, first
            if not self.conn.poll(timeout):
                return ("timeout", self._where_and_kill())
            try:
                return self.conn.recv()  # type: ignore[no-any-return]
            except (EOFError, OSError):
                return self._died()
        except BaseException:  # an interrupt of the person's, or anything else: the child goes with it
            self.kill()
            raise

    def _read_dump(self, seconds: float) -> str:
        """What the child wrote to its dump pipe within ``seconds`` (until it goes quiet once it has said something)."""
        fd, chunks = self.dump_fd, []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([fd], [], [], min(left, 0.1) if chunks else left)
            if not ready:
                if chunks:
                    break
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode("utf-8", "replace")

    def _where_and_kill(self) -> str:
        """Ask the hanging child where it is (a faulthandler dump, written even from native code), then kill it."""
        text = ""
        if hasattr(signal, "SIGUSR1") and self.process.pid is not None:
            try:
                os.kill(self.process.pid, signal.SIGUSR1)
                text = self._read_dump(GRACE)
            except (ProcessLookupError, OSError):
                pass
        self.kill()
        return text

    def _died(self) -> tuple[Any, ...]:
        self.process.join(GRACE)
        if self.process.exitcode is None:
            self.kill()
        text = self._read_dump(0.05)
        self.kill()
        return ("died", self.process.exitcode, text)

    def kill(self) -> None:
        if self.process is not None and self.process.pid is not None and self.process.exitcode is None:
            try:
                self.process.kill()
            except OSError:  # pragma: no cover - already gone
                pass
            self.process.join(GRACE * 5)
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        if self.dump_fd >= 0:
            os.close(self.dump_fd)
            self.dump_fd = -1
        _LIVE.discard(self)

    def close(self) -> None:
        """Ask the child to stop; kill it if it does not."""
        if self.process.exitcode is None and not self.conn.closed:
            try:
                self.conn.send(None)
                self.process.join(GRACE)
            except (OSError, ValueError):
                pass
        self.kill()


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while a child is started, so that an interrupt cannot leave it half made."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_SIGNAL_WORDS = {"SIGSEGV": "a crash in native code", "SIGBUS": "a crash in native code",
                 "SIGILL": "a crash in native code", "SIGFPE": "a crash in native code",
                 "SIGABRT": "an abort, from native code or os.abort", "SIGKILL": "kill -9, or the out-of-memory killer"}


def _died_message(code: int | None) -> str:
    if code is None or code >= 0:
        return (f"it ended its process with exit status {code} (os._exit, or a native library that exits) "
                "instead of returning a result")
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    words = _SIGNAL_WORDS.get(name)
    return f"its process was killed by {name}" + (f" ({words})" if words else "")


class Sandbox:
    """Where the function under test runs for one run of :func:`hessverify.checking.check` (module text).

    ``box(problem, *args)`` is ``fn(copy of problem, *args)``, with every
    fault raised as :class:`~hessverify.errors.FunctionUnderTestError`.  With
    ``isolation="process"`` one child process serves every call and is started
    again after the function killed it; :meth:`close` (or the ``with`` block)
    stops it.  ``starts`` counts the processes started, ``method`` says how the
    last one was (``"fork"`` or ``"spawn"``; ``None`` in this process).

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> with Sandbox(hessverify.hessian, timeout=30) as box:
    ...     box(case, "autograd").shape
    (9, 9)
    """

    def __init__(self, fn: Callable[..., Any], *, isolation: str = DEFAULT_ISOLATION,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        if not callable(fn):
            raise UsageError(f"fn: {type(fn).__name__!r} is not callable; pass the function under test")
        self.fn = fn
        self.isolation = check_isolation(isolation)
        self.timeout = check_timeout(timeout)
        self.starts = 0
        self.method: str | None = None
        self.fallback: str | None = None  # why the function runs in this process although "process" was asked
        self._worker: _Worker | None = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the child process, if one runs."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()

    def start(self) -> None:
        """Start the child process now (before threads that would make forking unsafe), not at the first call."""
        if self.isolation == "process" and self.fallback is None and self._worker is None:
            self._start()

    def _start(self) -> _Worker | None:
        method = start_method()
        try:
            self._worker = _Worker(self.fn, method)
        except (_NotPortable, _Unusable) as exc:
            self.fallback = str(exc)
            warnings.warn(f"hessverify: the function under test cannot run in a child process ({exc}); it runs in "
                          "this process, where a timeout cannot kill it (pass isolation='thread' to say so)",
                          RuntimeWarning, stacklevel=4)
            return None
        self.starts += 1
        self.method = method
        return self._worker

    def __call__(self, *args: Any, problem: Problem | None = None) -> Any:
        if problem is None and args and isinstance(args[0], Problem):
            problem = args[0]
        worker = None
        if self.isolation == "process" and self.fallback is None:
            worker = self._worker or self._start()
        if worker is None:
            return _call_here(self.fn, _copied(args), self.timeout if self.isolation != "none" else None, problem)
        try:
            reply = worker.call(args, self.timeout)
        except BaseException:  # an interrupt while the function ran: the worker was killed with it
            self._worker = None
            raise
        if reply[0] in ("timeout", "died"):
            self._worker = None
            worker.kill()
        return _outcome(reply, self.fn, self.timeout, problem)


def _outcome(reply: tuple[Any, ...], fn: Callable[..., Any], timeout: float | None, problem: Problem | None) -> Any:
    """The child's reply as the function's value, or as the :class:`FunctionUnderTestError` it amounts to."""
    kind = reply[0]
    if kind == "ok":
        return reply[1]
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "timeout":
        raise FunctionUnderTestError(f"no result after {timeout:g} s (raise --timeout if it needs longer); "
                                     "its process was killed", problem=problem,
                                     where=_frames_text(_dump_frames(reply[1]), fn, 3))
    if kind == "died":
        raise FunctionUnderTestError(_died_message(reply[1]), problem=problem,
                                     where=_frames_text(_dump_frames(reply[2]), fn, 3))
    if kind == "exit":
        raise FunctionUnderTestError(f"it called sys.exit({reply[1]}); a function under test must return its result",
                                     problem=problem, where=reply[2])
    if kind == "unsendable":
        raise FunctionUnderTestError(f"it returned a {reply[1]} that cannot be passed back from its process "
                                     "(not an array)", problem=problem)
    cause = None
    if reply[3] is not None:
        try:
            cause = pickle.loads(reply[3])
        except Exception:  # an exception class the parent cannot rebuild: the message says enough
            cause = None
    raise FunctionUnderTestError(reply[1], problem=problem, where=reply[2], cause=cause)


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


def _call_here(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None, problem: Problem | None) -> Any:
    """``fn(*args)`` in this process (isolation ``"thread"`` or ``"none"``), faults raised as the function's."""
    try:
        if not timeout:
            return fn(*args)
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            with _alarm(timeout):
                return fn(*args)
        return _in_thread(fn, args, timeout)
    except _Timeout as exc:
        raise FunctionUnderTestError(f"no result after {timeout:g} s (raise --timeout if it needs longer)",
                                     problem=problem, where=user_frames(exc, fn)) from None
    except (KeyboardInterrupt, Terminated):
        raise
    except SystemExit as exc:
        raise FunctionUnderTestError(f"it called sys.exit({exc.code!r}); a function under test must return "
                                     "its result", problem=problem, where=user_frames(exc, fn), cause=exc) from None
    except Exception as exc:
        signalled = signal_behind(exc)
        if signalled is not None:  # an interrupt that landed in an import inside the function
            raise signalled from None
        raise FunctionUnderTestError(_raised_text(exc), problem=problem,
                                     where=user_frames(exc, fn), cause=exc) from None


def call_user(fn: Callable[..., Any], *args: Any, timeout: float | None = DEFAULT_TIMEOUT,
              problem: Problem | None = None, isolation: str = DEFAULT_ISOLATION) -> Any:
    """``fn(*args)`` once, with every fault of ``fn`` raised as :class:`FunctionUnderTestError`.

    A :class:`Sandbox` for one call (a ``Problem`` among ``args`` is copied
    first); for many calls, keep one :class:`Sandbox` (one process) instead.
    ``KeyboardInterrupt`` is the person's, not the function's, and passes
    through.
    """
    with Sandbox(fn, isolation=isolation, timeout=timeout) as box:
        return box(*args, problem=problem)
