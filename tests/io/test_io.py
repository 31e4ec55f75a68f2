"""Tests of hessverify.io: reading only regular files, size-limited; writing through links and into devices."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from hessverify import CaseError, UsageError
from hessverify.io.files import read_case_text, report_set, write_output

XOR = Path("cases/xor-2-2-1-sigmoid.toml")


def test_a_regular_file_is_read() -> None:
    assert read_case_text(XOR) == XOR.read_text()


@pytest.mark.parametrize("path,message", [("/dev/zero", "character device"), ("/nonexistent/x.toml", "no such file"),
                                          ("cases", "is a directory")])
def test_what_is_not_a_regular_file_is_named(path: str, message: str) -> None:
    with pytest.raises(CaseError, match=message):
        read_case_text(path)


def test_a_fifo_with_no_writer_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "case.toml"
    os.mkfifo(fifo)
    with pytest.raises(CaseError, match="FIFO"):
        read_case_text(fifo)


def test_a_symlink_loop_is_said_as_such(tmp_path: Path) -> None:
    (tmp_path / "a.toml").symlink_to(tmp_path / "b.toml")
    (tmp_path / "b.toml").symlink_to(tmp_path / "a.toml")
    with pytest.raises(CaseError, match="loop of symbolic links"):
        read_case_text(tmp_path / "a.toml")


def test_size_is_checked_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    with open(big, "wb") as fh:
        fh.truncate(2000)  # sparse: no bytes are written, and none should be read
    with pytest.raises(CaseError, match="more than the 0 MiB"):
        read_case_text(big, limit=1000)


def test_a_bom_and_non_utf8_are_explained(tmp_path: Path) -> None:
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + XOR.read_bytes())
    with pytest.raises(CaseError, match="byte-order mark"):
        read_case_text(bom)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'id = "caf\xe9"\n')
    with pytest.raises(CaseError, match="UTF-8"):
        read_case_text(latin)


def test_writing_through_a_symlink_writes_its_target(tmp_path: Path) -> None:
    target = tmp_path / "target.json"
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_output(link, "new\n", option="--json")
    assert link.is_symlink() and target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "target.json"]  # no stray temporary


def test_a_device_is_written_into_not_replaced() -> None:
    before = os.stat("/dev/null")
    write_output(Path("/dev/null"), "x" * 10, option="--json")
    after = os.stat("/dev/null")
    assert (before.st_ino, before.st_mode, before.st_rdev) == (after.st_ino, after.st_mode, after.st_rdev)


def test_a_fifo_is_written_into_when_read_and_refused_when_not(tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="nobody is reading"):
        write_output(fifo, "x", option="--json")
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    for _ in range(200):  # wait until the reader has the FIFO open
        try:
            write_output(fifo, "hello", option="--json")
            break
        except UsageError:
            threading.Event().wait(0.01)
    reader.join(10)
    assert got == [b"hello"] and fifo.exists() and not fifo.is_file()


def test_empty_and_directory_paths_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        write_output(tmp_path, "x", option="--json")
    with pytest.raises(UsageError, match="does not exist"):
        write_output(tmp_path / "no" / "x.json", "x", option="--json")


def test_a_report_set_is_all_or_nothing(tmp_path: Path) -> None:
    out = tmp_path / "report"
    with report_set(out) as staging:
        (staging / "a.json").write_text("1")
        (staging / "b.md").write_text("1")
    with pytest.raises(RuntimeError), report_set(out) as staging:
        (staging / "a.json").write_text("2")
        raise RuntimeError("interrupted between the files")
    assert (out / "a.json").read_text() == "1" and (out / "b.md").read_text() == "1"
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.md"]  # no staging directory left


def test_a_second_writer_is_refused_while_the_first_writes(tmp_path: Path) -> None:
    """Another process holds the report directory: this one is refused; within one process a claim is re-entrant."""
    import subprocess
    import sys

    out = tmp_path / "report"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from hessverify.io.files import report_set\n"
         f"with report_set({str(out)!r}):\n    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match="another hessverify run is writing"), report_set(out):
            pass
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    with report_set(out), report_set(out):  # the holder has gone: free again, and re-entrant here
        pass


def test_standard_input_is_read_as_dash_and_size_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(XOR.read_bytes())))
    assert read_case_text("-") == XOR.read_text()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x" * 2000)))
    with pytest.raises(CaseError, match="<stdin>: is larger than"):
        read_case_text("-", limit=1000)
