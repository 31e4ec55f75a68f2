"""Reading inputs and writing outputs without surprises.

Reading (:func:`read_case_text`): only a regular file, or standard input
as ``-``; its size is checked before anything is read (``/dev/zero`` is
never read, a FIFO with no writer never waits), and every fault is one
:class:`~hessverify.errors.CaseError` that says what the path is.

Writing (:func:`write_output`): what a person expects of ``> PATH``, made
safe.  A symbolic link is written through to its target; an existing file
that is not a regular file (a device such as ``/dev/null``, a FIFO) is
written into directly; only a regular file (or nothing) is replaced, by
writing a temporary file beside it and renaming it over, so an interrupted
run leaves the old file or the new one and never a stray temporary.

:func:`report_set` writes a set of files (a report's ``results.json``,
``report.md`` and ``report.html``) so that they always come from one run:
a lock refuses a second concurrent writer, the set is written into a fresh
directory and moved into place with interrupts held back, all of it or
none: a destination that cannot take its file (a directory named
``results.json``) is found before anything moves, and a move that fails
puts back what was moved before it.

:func:`claim_output` holds an output (a file or a report directory) for a
whole run, from before any work until it is written: a second hessverify
run that names the same output gets a one-line :class:`UsageError` at its
start, not a silent race at the end.  A file is held by a lock file beside
it (``.NAME.hessverify-lock``, removed when the run ends), a directory by a
lock on the directory itself; one process may claim the same output again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hessverify.errors import CaseError, UsageError

__all__ = ["MAX_CASE_BYTES", "check_output_path", "claim_output", "read_case_text", "report_set", "strict_json",
           "write_output"]

MAX_CASE_BYTES = 64 * 2**20
"""Largest case file read (64 MiB): far above any case within the parameter and pattern caps in text
that parses within the memory budget."""

_KIND = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def _finite_or_null(obj: Any) -> Any:
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # NumPy arrays and scalars
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def strict_json(obj: Any, indent: int | None = 2) -> str:
    """``obj`` as strict JSON text ending in a newline: NaN and infinity become ``null``.

    Python's ``json`` writes ``NaN`` and ``Infinity``, which no strict reader
    accepts; every JSON file hessverify writes goes through here.

    >>> strict_json({"bound": float("inf"), "errors": [1.5, float("nan")]}, indent=None)
    '{"bound": null, "errors": [1.5, null]}\\n'
    """
    return json.dumps(_finite_or_null(obj), indent=indent, allow_nan=False) + "\n"


def _kind(mode: int) -> str:
    return _KIND.get(stat.S_IFMT(mode), "not a regular file")


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a loop of symbolic links"
    if exc.errno == errno.ENOENT:
        return "no such file"
    if exc.errno == errno.EACCES:
        return "permission denied"
    return exc.strerror or str(exc)


def _read_limited(fh: object, source: str, limit: int) -> bytes:
    data = fh.read(limit + 1)  # type: ignore[attr-defined]
    if len(data) > limit:
        raise CaseError(source, "", f"is larger than {limit // 2**20} MiB, more than a case file may be")
    return data  # type: ignore[no-any-return]


def read_case_text(path: str | os.PathLike[str], *, limit: int = MAX_CASE_BYTES) -> str:
    """The text of a case file: a regular file of at most ``limit`` bytes, or standard input as ``-``.

    Raises :class:`CaseError` for anything else (a directory, a device, a
    FIFO, a loop of symbolic links, a file too large, text that is not
    UTF-8 or starts with a byte-order mark).

    Examples
    --------
    >>> read_case_text("cases/xor-2-2-1-sigmoid.toml").startswith("id")
    True
    >>> read_case_text("/dev/zero")
    Traceback (most recent call last):
    ...
    hessverify.errors.CaseError: /dev/zero: is a character device, not a case file; give a regular file or - for standard input
    """
    source = os.fspath(path)
    if source == "-":
        if sys.stdin is None:
            raise CaseError("-", "", "standard input is closed")
        data = _read_limited(sys.stdin.buffer, "<stdin>", limit)
        return _decode(data, "<stdin>")
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise CaseError(source, "", "is a directory, not a case file") from None
    except OSError as exc:
        raise CaseError(source, "", _os_reason(exc)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise CaseError(source, "", "is a directory, not a case file")
        raise CaseError(source, "", f"is {_kind(st.st_mode)}, not a case file; give a regular file "
                                    "or - for standard input")
    if st.st_size > limit:
        os.close(fd)
        raise CaseError(source, "", f"is {st.st_size / 2**20:.0f} MiB, more than the {limit // 2**20} MiB "
                                    "a case file may be")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as fh:
        try:
            data = _read_limited(fh, source, limit)
        except OSError as exc:
            raise CaseError(source, "", f"cannot be read: {_os_reason(exc)}") from None
    return _decode(data, source)


def _decode(data: bytes, source: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        raise CaseError(source, "", "starts with a UTF-8 byte-order mark (BOM), which TOML does not allow; "
                                    "save the file as UTF-8 without BOM")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaseError(source, "", f"cannot be read as UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
                                    "save it as UTF-8") from None


# -- writing ----------------------------------------------------------------------------------------------


def _resolve(path: Path, option: str) -> Path:
    """Follow symbolic links to the file they name (which need not exist yet)."""
    try:
        return Path(os.path.realpath(path, strict=False))
    except OSError as exc:  # pragma: no cover - realpath(strict=False) raises only on odd systems
        raise UsageError(f"{option} {path}: {_os_reason(exc)}") from None


def check_output_path(path: Path, option: str) -> None:
    """A :class:`UsageError` now, before any work, if ``path`` cannot take an output file."""
    if str(path) == "":
        raise UsageError(f"{option} '': name a file")
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UsageError(f"{option} {path}: a loop of symbolic links") from None
    target = _resolve(path, option)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UsageError(f"{option} {path}: {_os_reason(exc)}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{option} {path}: is a directory; name a file")
    if st is not None and not stat.S_ISREG(st.st_mode):
        if not os.access(target, os.W_OK):
            raise UsageError(f"{option} {path}: cannot write there (permission denied)")
        return  # a device or FIFO: written into directly
    if not target.parent.is_dir():
        raise UsageError(f"{option} {path}: the directory {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK | os.X_OK) or (st is not None and not os.access(target, os.W_OK)):
        raise UsageError(f"{option} {path}: cannot write there (permission denied)")


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for a few system calls that must not be split."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _write_special(target: Path, data: bytes, option: str, path: Path) -> None:
    try:
        # O_NONBLOCK: a FIFO nobody reads is an error now, not a wait forever
        fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        reason = "nobody is reading the FIFO" if exc.errno == errno.ENXIO else _os_reason(exc)
        raise UsageError(f"{option} {path}: cannot write: {reason}") from None
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_replacing(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mkstemp makes the file private (0600); an output is for reading, so use the umask as open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with _signals_held():
            os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_output(path: Path, data: str | bytes, *, option: str = "output") -> Path:
    """Write ``data`` to ``path`` as described in the module text; the path written is returned.

    ``option`` names the option in the one-line :class:`UsageError` of any fault.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    check_output_path(path, option)
    target = _resolve(path, option)
    try:
        try:
            st = os.stat(target)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            _write_special(target, raw, option, path)
        else:
            _write_replacing(target, raw)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write: {_os_reason(exc)}") from None
    return path


# -- holding outputs for a run ----------------------------------------------------------------------------------

_CLAIMS: dict[str, list[int]] = {}  # lock path -> [file descriptor, claims by this process]


def _lock_name(target: Path) -> Path:
    return target.parent / f".{target.name}.hessverify-lock"


def _take_lock_file(lock: Path, option: str, path: Path) -> int:
    """An exclusive lock on the file ``lock`` (created if need be), or the one-line error of a second writer."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise UsageError(f"{option} {path}: cannot write there: {_os_reason(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"{option} {path}: another hessverify run is writing it; wait for it or choose "
                             "another file") from None
        # the run before may have removed the lock file between our open and our lock: lock the one that is there
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _take_directory_lock(directory: Path, option: str) -> int:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileExistsError:
        raise UsageError(f"{option} {directory}: exists and is not a directory; name a directory") from None
    except OSError as exc:
        raise UsageError(f"{option} {directory}: cannot write a report there: {_os_reason(exc)}; "
                         "choose a writable directory") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"{option} {directory}: another hessverify run is writing a report there; "
                         "wait for it or choose another directory") from None
    return fd


@contextmanager
def claim_output(path: Path, option: str = "output", *, directory: bool | None = None) -> Iterator[Path]:
    """Hold ``path`` (a file to write, or with ``directory=True`` a report directory) for the ``with`` block.

    ``directory`` defaults to whether ``path`` is an existing directory.  A
    device or FIFO (``/dev/null``) is not held: it is written into, and two
    writers there are the person's intent.  The path yielded is ``path``
    made absolute, so a change of working directory inside the block
    cannot move it.  Raises the one-line :class:`UsageError` of
    :func:`check_output_path` for a file that cannot be written, and of a
    second writer while another process holds it.
    """
    path = Path(os.path.abspath(path))
    is_dir = path.is_dir() if directory is None else directory
    if is_dir:
        key = str(_resolve(path, option))
    else:
        check_output_path(path, option)
        target = _resolve(path, option)
        try:
            special = not stat.S_ISREG(os.stat(target).st_mode)
        except FileNotFoundError:
            special = False
        if special:
            yield path
            return
        key = str(_lock_name(target))
    held = _CLAIMS.get(key)
    if held is not None:  # this process holds it already (the command line, then the function it calls)
        held[1] += 1
        try:
            yield path
        finally:
            held[1] -= 1
        return
    fd = _take_directory_lock(path, option) if is_dir else _take_lock_file(Path(key), option, path)
    _CLAIMS[key] = [fd, 1]
    try:
        yield path
    finally:
        del _CLAIMS[key]
        if not is_dir:
            with _signals_held():
                Path(key).unlink(missing_ok=True)  # while still locked: the next run locks a fresh file
        os.close(fd)


# -- a set of files from one run -------------------------------------------------------------------------------


def check_replaceable(directory: Path, names: Iterator[str] | list[str] | tuple[str, ...], option: str = "--report") -> None:
    """A :class:`UsageError` naming the path unless each ``directory/name`` is absent or a file that can be replaced."""
    for name in names:
        dest = directory / name
        if dest.is_dir() and not dest.is_symlink():
            raise UsageError(f"{option} {directory}: {dest} is a directory, so the report cannot be written there "
                             "(nothing was changed); move it away or choose another directory")


def _move_all(staging: Path, directory: Path, names: list[str], option: str) -> None:
    """Move ``names`` from ``staging`` into ``directory``: all of them, or (a move failed) none.

    Each file replaced is kept first (a hard link, else a copy) in the
    staging directory, so a failed move puts every earlier one back.
    """
    done: list[tuple[str, Path | None]] = []
    try:
        for name in names:
            dest = directory / name
            backup: Path | None = None
            if os.path.lexists(dest):
                backup = staging / f".previous.{name}"
                try:
                    os.link(dest, backup, follow_symlinks=False)
                except OSError:
                    shutil.copy2(dest, backup, follow_symlinks=False)
            os.replace(staging / name, dest)
            done.append((name, backup))
    except OSError as exc:
        for name, backup in reversed(done):
            if backup is not None:
                os.replace(backup, directory / name)
            else:
                (directory / name).unlink(missing_ok=True)
        failed = directory / names[len(done)]
        raise UsageError(f"{option} {directory}: cannot write {failed}: {_os_reason(exc)} (nothing was changed)") from None


@contextmanager
def report_set(directory: Path, option: str = "--report") -> Iterator[Path]:
    """Yield a fresh staging directory; on success its files are moved into ``directory`` together.

    A second writer while one holds ``directory`` gets a one-line
    :class:`UsageError`.  On any failure (an exception, SIGINT, SIGTERM
    turned into an exception by the command line, a destination that cannot
    take its file) the staging directory is removed and ``directory`` keeps
    its previous set; an error names the user's paths, never the staging one.
    """
    directory = Path(os.path.abspath(directory))
    with claim_output(directory, option, directory=True):
        try:
            staging = Path(tempfile.mkdtemp(prefix=".hessverify-staging.", dir=directory))
        except OSError as exc:
            raise UsageError(f"{option} {directory}: cannot write a report there: {_os_reason(exc)}; "
                             "choose a writable directory") from None
        try:
            try:
                yield staging
            except UsageError as exc:  # said of a file in the staging directory: say it of the user's
                raise UsageError(str(exc).replace(str(staging), str(directory))) from None
            names = sorted(p.name for p in staging.iterdir())
            check_replaceable(directory, names, option)
            umask = os.umask(0)
            os.umask(umask)
            for name in names:
                os.chmod(staging / name, 0o666 & ~umask)
            with _signals_held():  # the whole set or none of it
                _move_all(staging, directory, names, option)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
