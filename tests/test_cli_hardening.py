"""The reproducers of issue 11, each a test: one line, a documented exit status, nothing changed outside
the output paths.  In process through ``hessverify.cli.main`` where possible, in a subprocess where the
point is the process itself (signals, a closed stdout, what is on sys.path)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

import hessverify
from hessverify import CaseError, FunctionUnderTestError, UsageError, load_case, parse_case
from hessverify.cli import main

ROOT = Path(__file__).resolve().parent.parent
XOR = str(ROOT / "cases" / "xor-2-2-1-sigmoid.toml")
HESSVERIFY = str(Path(sys.executable).parent / "hessverify")

USER_CODE = '''
import sys
import numpy as np
import hessverify

def raises(p):
    raise RuntimeError("boom")

def exits0(p):
    sys.exit(0)

def hangs(p):
    while True:
        pass

def returns_none(p):
    return None

def wrong_shape(p):
    return np.zeros((2, 3))

def complex_result(p):
    return hessverify.hessian(p, "autograd") + 1e-3j

def mutates(p):
    H = hessverify.hessian(p, "autograd") * 1.5
    p.params[:] = 0
    return H

def nan_entry(p):
    H = hessverify.hessian(p, "autograd").copy()
    H[0, 0] = float("nan")
    return H

def right(p):
    return hessverify.hessian(p, "autograd")
'''


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "mine.py"
    path.write_text(USER_CODE)
    return path


def one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.startswith("hessverify: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(*dirs: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for d in dirs for p in d.rglob("*") if p.is_file()}


# -- faults of the function under test: exit 5, not a discrepancy ------------------------------------------------


@pytest.mark.parametrize("function,message", [
    ("raises", "RuntimeError: boom"),
    ("exits0", "sys.exit(0)"),
    ("returns_none", "returned None"),
    ("wrong_shape", "returned shape (2, 3)"),
    ("complex_result", "complex values"),
])
def test_a_fault_of_the_function_is_exit_5_with_the_problem_as_toml(
        user_file: Path, function: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["sweep", "--method-under-test", f"{user_file}:{function}", "--examples", "5", "--seed", "1"])
    out, err = capsys.readouterr()
    assert status == 5
    line = one_line(err)
    assert "the function under test failed" in line and message in line
    if function in ("raises", "exits0"):
        assert "mine.py:" in line  # the frame in the user's own file
    case = parse_case(out)  # the problem it failed on, as a case file
    assert case.n_params >= 1 and "DISAGREES" not in err and "shrunk" not in err


def test_a_hang_past_the_timeout_is_exit_5(user_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    status = main(["sweep", "--method-under-test", f"{user_file}:hangs", "--timeout", "0.5", "--examples", "3"])
    assert status == 5 and "no result after 0.5 s" in one_line(capsys.readouterr().err)
    assert time.monotonic() - start < 30


def test_writing_into_the_input_does_not_change_the_references(user_file: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--method-under-test", f"{user_file}:mutates", "--examples", "5", "--seed", "2"]) == 1
    assert "DISAGREES" in capsys.readouterr().err
    case = load_case(XOR)
    params = case.params.copy()
    from hessverify.methods.backprop import hessian

    result = hessverify.check(lambda p: (hessian(p), p.params.__setitem__(slice(None), 0))[0], case,
                              against=("autograd",))
    assert result.passed and (case.params == params).all()


def test_nan_where_the_reference_is_finite_is_a_discrepancy_said_as_such(
        user_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--method-under-test", f"{user_file}:nan_entry", "--examples", "3", "--seed", "1"]) == 1
    assert "NaN or inf" in capsys.readouterr().err


def test_check_raises_the_typed_error_and_refuses_nothing_to_check() -> None:
    case = load_case(XOR)
    with pytest.raises(FunctionUnderTestError) as info:
        hessverify.check(lambda p: 1 / 0, case, against=("backprop",))
    assert isinstance(info.value, hessverify.HessverifyError) and info.value.problem is case
    assert "FunctionUnderTestError" in hessverify.__all__
    with pytest.raises(UsageError, match="none given"):
        hessverify.check(lambda p: None, [])


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_check_on_a_strategy_does_not_shrink_a_fault(isolation: str) -> None:
    from hessverify.checking.strategies import problems

    calls = []  # counted where the function runs: in its own process by default

    def fails_on_the_third(p: hessverify.Problem) -> object:
        calls.append(p)
        if len(calls) == 3:
            raise ValueError("third")
        return hessverify.hessian(p, "autograd")

    seen: list[hessverify.Problem] = []  # counted here, whatever the isolation
    with pytest.raises(FunctionUnderTestError, match="third"):
        hessverify.check(fails_on_the_third, problems(), against=("autograd",), max_examples=20, seed=0,
                         isolation=isolation, observe=seen.append)
    assert len(seen) == 3


def test_the_sweep_report_is_written_after_the_function_raised(user_file: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report"
    status = main(["sweep", "--method-under-test", f"{user_file}:raises", "--examples", "2", "--seed", "1",
                   "--report", str(report), "--json", str(tmp_path / "sweep.json")])
    one_line(capsys.readouterr().err)
    assert status == 5 and sorted(p.name for p in report.iterdir()) == ["cases", "report.html", "report.md",
                                                                         "results.json"]
    assert [p.name for p in (report / "cases").iterdir()] == ["sweep-raises-failed.toml"]  # the problem it failed on
    doc = json.loads((report / "results.json").read_text())
    assert {s["reason"] for s in doc["not_compared"]} == {"function_failed"}
    assert "RuntimeError: boom" in json.loads((tmp_path / "sweep.json").read_text())["function_failed"]


def test_a_hypothesis_py_beside_the_users_file_does_not_shadow_the_library(user_file: Path) -> None:
    (user_file.parent / "hypothesis.py").write_text("raise ImportError('the shadow was imported')\n")
    result = subprocess.run([HESSVERIFY, "sweep", "--method-under-test", f"{user_file}:right", "--examples", "2",
                             "--seed", "1"], capture_output=True, text=True, timeout=300, cwd=user_file.parent)
    assert result.returncode == 0, result.stderr


# -- reading -----------------------------------------------------------------------------------------------------


def _case_text(**replace_lines: str) -> str:
    text = Path(XOR).read_text()
    for old, new in replace_lines.items():
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize("build,message", [
    (lambda d: "/dev/zero", "character device"),
    (lambda d: (os.mkfifo(d / "f.toml"), str(d / "f.toml"))[1], "FIFO"),
    (lambda d: ((d / "a.toml").symlink_to(d / "b.toml"), (d / "b.toml").symlink_to(d / "a.toml"),
                str(d / "a.toml"))[2], "loop of symbolic links"),
    (lambda d: ((d / "x.toml").write_text('id = "x"\nv = ' + "[" * 500 + "]" * 500 + "\n"), str(d / "x.toml"))[1],
     "nested more than"),
    (lambda d: ((d / "x.toml").write_text('id = "x"\nv = ' + "{a=" * 5000 + "1" + "}" * 5000 + "\n"),
                str(d / "x.toml"))[1], "nested more than"),
    (lambda d: ((d / "x.toml").write_text(_case_text(**{"[0, 0], [0, 1]": "[" + "9" * 400 + ", 0], [0, 1]"})),
                str(d / "x.toml"))[1], "[data.inputs] entry 0"),
    (lambda d: ((d / "x.toml").write_bytes(b"\xef\xbb\xbf" + Path(XOR).read_bytes()), str(d / "x.toml"))[1],
     "byte-order mark"),
])
@pytest.mark.parametrize("command", ["params", "verify"])
def test_bad_case_paths_and_texts_are_one_line_and_exit_2(tmp_path: Path, build: object, message: str,
                                                          command: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = build(tmp_path)  # type: ignore[operator]
    assert main([command, path]) == 2
    assert message in one_line(capsys.readouterr().err)


def test_a_parameter_name_params_never_lists_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("W01[0,0]", "W1[00,0]", "b1[01]"):
        assert main(["derive", XOR, "--entry", name]) == 2
        assert "is not a parameter name" in one_line(capsys.readouterr().err)


def test_seeded_data_past_the_budget_is_refused_before_allocating(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    case = tmp_path / "big.toml"
    case.write_text('id = "big"\n[network]\ninputs = 19999\nlayers = [{ units = 1, activation = "tanh" }]\n'
                    'loss = "sse"\n[data]\nseed = 1\npatterns = 100000\n[params]\nseed = 1\nscale = 0.1\n')
    assert main(["verify", str(case)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "[data.patterns]" in line and "GiB of memory, more than the budget" in line


def test_a_large_case_under_the_cap_is_refused_by_the_budget_with_the_figure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = tmp_path / "w.toml"
    case.write_text('id = "w"\n[network]\ninputs = 9998\nlayers = [{ units = 2, activation = "tanh" }]\n'
                    'loss = "sse"\n[data]\nseed = 1\npatterns = 3\n[params]\nseed = 1\nscale = 0.1\n')
    for args in (["verify", str(case)], ["hessian", str(case), "--method", "complex_step", "--out",
                                          str(tmp_path / "H.npy")]):
        assert main(args) == 2
        assert "W = 19998" in one_line(capsys.readouterr().err)
    assert main(["hessian", XOR, "--out", str(tmp_path / "H.npy"), "--max-memory", "1M"]) == 2
    assert "more than the budget of 1.0 MiB" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "H.npy").exists()


@pytest.mark.parametrize("args,message", [
    (["--entry", "W1[0,0]", "--digits", "1000000000"], "at most 1000"),
    (["--entry", "W1[0,0]", "--digits", "100000"], "at most 1000"),
])
def test_derive_digits_are_bounded(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["derive", XOR, *args]) == 2
    assert message in one_line(capsys.readouterr().err)


def test_slow_symbolic_work_is_refused_past_max_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.toml"
    big.write_text('id = "big"\n[network]\ninputs = 19\nlayers = [{ units = 1000, activation = "tanh", bias = false }, '
                   '{ units = 1, activation = "tanh", bias = false }]\nloss = "sse"\n[data]\nseed = 1\npatterns = 1\n'
                   '[params]\nseed = 1\nscale = 0.1\n')
    mid = tmp_path / "mid.toml"
    mid.write_text('id = "mid"\n[network]\ninputs = 20\nlayers = [{ units = 100, activation = "tanh" }, '
                   '{ units = 2, activation = "tanh" }]\nloss = "sse"\n[data]\nseed = 1\npatterns = 2\n'
                   '[params]\nseed = 1\nscale = 0.1\n')
    # the limit is --max-time (default 600 s): derive --explicit on W = 20000 is past even the default; the others
    # fit the default (an estimate is no reason to refuse work that fits) and are refused under a smaller --max-time
    for args in (["derive", str(big), "--entry", "W1[0,0]", "--max-time", "10"],
                 ["derive", str(big), "--entry", "W1[0,0]", "--explicit"],
                 ["hessian", str(mid), "--method", "symbolic", "--out", str(tmp_path / "S.npy"), "--max-time", "1"],
                 ["verify", str(mid), "--reference", "symbolic", "--max-time", "1"]):
        assert main(args) == 2
        assert "more than the --max-time" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("reference", ["diagonal", "block_diagonal"])
def test_a_reference_that_is_not_a_full_matrix_is_a_usage_error(reference: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", XOR, "--reference", reference]) == 2
    assert "only full-matrix references can serve" in one_line(capsys.readouterr().err)


def test_a_diagonal_approximation_as_reference_is_a_usage_error_that_says_why(
        capsys: pytest.CaptureFixture[str]) -> None:
    # becker_lecun is a diagonal too, but the first reason it cannot serve is that it is an approximation
    assert main(["verify", XOR, "--reference", "becker_lecun"]) == 2
    assert "is an approximation" in one_line(capsys.readouterr().err)


def test_overflow_in_the_hessians_terms_is_exit_4_and_nothing_is_saved(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    case = tmp_path / "huge.toml"
    case.write_text(_case_text(**{"[[0, 0], [0, 1]": "[[1e308, 0], [0, 1]"}))
    assert main(["hessian", str(case), "--out", str(tmp_path / "H.npy")]) == 4
    one_line(capsys.readouterr().err)
    assert not (tmp_path / "H.npy").exists()
    assert main(["verify", str(case)]) == 4
    assert "OVERFLOW" in capsys.readouterr().out


def test_descriptions_with_newlines_and_control_characters(tmp_path: Path) -> None:
    text = "two\nlines\r\n## not a heading <b>x</b> \x1b[31m \x00 \x7f tab\t\"quote\" \\ end"
    case = replace(load_case(XOR), description=text)
    assert parse_case(case.to_toml()).description == text
    from hessverify.reports import markdown

    md = markdown([], [], [case])
    section = md.split("## xor-2-2-1-sigmoid", 1)[1]
    assert "\n## not a heading" not in section and "<b>" not in section and "\x1b" not in md and "\x00" not in md


def test_python_api_errors_are_hessverifys_own() -> None:
    case = load_case(XOR)
    with pytest.raises(UsageError, match="load_case"):
        hessverify.hessian(XOR)  # type: ignore[arg-type]
    with pytest.raises(CaseError):
        load_case(None)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="against"):
        hessverify.check(hessverify.hessian, case, against=None)  # type: ignore[arg-type]
    with pytest.raises(CaseError, match="got bytes"):
        parse_case(Path(XOR).read_bytes())  # type: ignore[arg-type]
    one = hessverify.verify_problem(case, "backprop", "autograd")
    assert [(c.method, c.reference) for c in one] == [("backprop", "autograd")]


# -- writing -------------------------------------------------------------------------------------------------------


def test_duplicate_case_ids_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "copy.toml").write_text(Path(XOR).read_text())
    assert main(["verify", XOR, str(tmp_path / "copy.toml")]) == 2
    assert "also the id of" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("args", [["verify", XOR, "--report", ""], ["verify", XOR, "--json", ""],
                                  ["hessian", XOR, "--out", ""], ["verify", XOR, "--json", "/no/such/dir/x.json"]])
def test_empty_and_bad_output_paths_are_usage_errors_before_any_work(args: list[str],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    out, err = capsys.readouterr()
    one_line(err)
    assert "max abs err" not in out  # nothing was verified


def test_sweep_finds_a_bad_json_path_before_the_sweep(user_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--method-under-test", f"{user_file}:hangs", "--json", "/no/such/dir/x.json"]) == 2
    assert "--json" in one_line(capsys.readouterr().err)


def test_json_through_a_symlink_and_into_a_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "target.json"
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert main(["verify", XOR, "--method", "backprop", "--reference", "autograd", "--json", str(link)]) == 0
    assert link.is_symlink() and json.loads(target.read_text())["summary"]["passed"] == 1
    null = os.stat("/dev/null")
    assert main(["verify", XOR, "--method", "backprop", "--reference", "autograd", "--json", "/dev/null"]) == 0
    assert (os.stat("/dev/null").st_ino, os.stat("/dev/null").st_rdev) == (null.st_ino, null.st_rdev)
    assert main(["hessian", XOR, "--out", "/dev/null"]) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_report_directory_is_blamed_on_report(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    assert main(["verify", XOR, "--method", "backprop", "--reference", "autograd", "--report", str(ro)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--report" in line and "--json" not in line


def _run(args: list[str], **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([HESSVERIFY, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            **kw)  # type: ignore[call-overload]


def test_two_concurrent_reports_never_mix_and_sigterm_leaves_no_temporaries(tmp_path: Path) -> None:
    report = tmp_path / "R"
    args = ["verify", XOR, str(ROOT / "cases" / "single-neuron-tanh.toml"), "--report", str(report)]
    first, second = _run(args), _run(args)
    errors = [p.communicate(timeout=300)[1] for p in (first, second)]
    for p, err in zip((first, second), errors, strict=True):
        assert p.returncode in (0, 2) and "Traceback" not in err, err
        if p.returncode == 2:
            assert "another hessverify run is writing" in err
    created = {json.loads((report / "results.json").read_text())["created"]}
    assert sorted(p.name for p in report.iterdir()) == ["report.html", "report.md", "results.json"]
    assert created
    # SIGTERM at several moments: the set is the old one or a whole new one, never a temporary left behind
    # each run moves in three new files: by inode, either none of them changed or all three did
    before = {n: (report / n).stat().st_ino for n in ("results.json", "report.md", "report.html")}
    for delay in (0.5, 2.0, 4.0, 6.0):
        p = _run(args)
        time.sleep(delay)
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=300)[1]
        # -15: the signal came while the interpreter itself was starting (a loaded machine), before any output
        assert p.returncode in (0, 143, -signal.SIGTERM) and "Traceback" not in err, err
        assert sorted(q.name for q in report.iterdir()) == ["report.html", "report.md", "results.json"]
        now = {n: (report / n).stat().st_ino for n in before}
        changed = {n for n in now if now[n] != before[n]}
        assert changed in (set(), set(now)), changed
        before = now


def _wait_until_hessverify_loads(p: subprocess.Popen[str], limit: float = 120.0) -> None:
    """Wait until the child is past the interpreter's own start-up (it has begun to load NumPy).

    A signal while Python itself starts (its site module) ends in Python's
    own traceback before any hessverify code runs; on a loaded machine that
    phase can outlast a fixed delay, so the delays below count from here.
    """
    maps = Path(f"/proc/{p.pid}/maps")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and p.poll() is None:
        try:
            if "numpy" in maps.read_text():
                return
        except OSError:
            return  # no /proc here: fall back to the fixed delays
        time.sleep(0.005)


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.4, 1.0, 2.5])
def test_sigint_at_any_moment_is_one_line_and_130(delay: float) -> None:
    p = _run(["verify", XOR])
    _wait_until_hessverify_loads(p)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=300)[1]
    assert "Traceback" not in err, err
    assert p.returncode in (0, 130)
    assert p.returncode != 130 or err.strip() == "hessverify: interrupted"


def _import_interrupted(*args: object, **kwargs: object) -> None:
    """What a SIGINT inside a pybind11 module's initialisation looks like (SciPy's HiGHS, seen in CI)."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as exc:
        raise ImportError("initialization failed") from exc


def test_an_interrupt_inside_a_lazy_import_is_one_line_and_130(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from hessverify.engine.registry import METHODS

    monkeypatch.setitem(METHODS, "autograd", replace(METHODS["autograd"], fn=_import_interrupted))
    assert main(["verify", XOR, "--method", "backprop", "--reference", "autograd"]) == 130
    assert capsys.readouterr().err.strip() == "hessverify: interrupted"


def test_an_ordinary_import_error_still_surfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    from hessverify.engine.registry import METHODS

    def broken(*args: object) -> None:
        raise ImportError("a real fault")

    monkeypatch.setitem(METHODS, "autograd", replace(METHODS["autograd"], fn=broken))
    with pytest.raises(ImportError, match="a real fault"):
        main(["verify", XOR, "--method", "backprop", "--reference", "autograd"])


def test_an_interrupt_inside_the_function_under_tests_import_is_not_its_fault() -> None:
    from hessverify.checking.sandbox import call_user

    with pytest.raises(KeyboardInterrupt):
        call_user(_import_interrupted, None, timeout=None)
    with pytest.raises(FunctionUnderTestError):
        call_user(lambda p: 1 / 0, None, timeout=None)


def test_a_closed_stdout_is_no_traceback() -> None:
    result = subprocess.run(f"'{HESSVERIFY}' verify '{XOR}' --method backprop --reference autograd >&-",
                            shell=True, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


def test_nothing_outside_the_output_paths_changes(tmp_path: Path, user_file: Path) -> None:
    before = snapshot(ROOT / "cases", user_file.parent)
    out = tmp_path / "out"
    out.mkdir()
    for args in (["verify", XOR, "--json", str(out / "r.json"), "--method", "backprop", "--reference", "autograd"],
                 ["sweep", "--method-under-test", f"{user_file}:raises", "--examples", "2"]):
        subprocess.run([HESSVERIFY, *args], capture_output=True, timeout=300, cwd=out)
    after = snapshot(ROOT / "cases", user_file.parent)

    def outside(files: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        # no __pycache__ either: the user's folder gets no bytecode cache from loading the function
        return {k: v for k, v in files.items() if not k.startswith(str(out))}

    assert outside(after) == outside(before) and (out / "r.json").is_file()


def test_verify_past_max_time_is_refused_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", XOR, "--max-time", "0.001"]) == 2
    out, err = capsys.readouterr()
    assert "more than the --max-time" in one_line(err) and "max abs err" not in out
    assert main(["verify", XOR, "--max-time", "-1"]) == 2
    one_line(capsys.readouterr().err)


def test_the_full_matrix_message_offers_no_approximation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", XOR, "--reference", "diagonal"]) == 2
    offered = one_line(capsys.readouterr().err).split("choose among ")[1]
    assert "autograd" in offered and "gauss_newton" not in offered and "fisher" not in offered


def test_standard_output_on_a_full_disk_is_one_line_and_exit_2() -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "hessverify.cli", "verify", XOR], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["hessverify: error: cannot write: No space left on device"]


# -- issue 24: the function under test in a child process, held outputs, linear validation -----------------------

USER_CODE_24 = '''
import os
import signal
import sys
import time
import hessverify

def exits_quietly(p):
    os._exit(0)

def retries_forever(p):
    # a retry loop with a bare except: it eats every exception, an alarm's or an interrupt's included
    with open(os.environ["PID_FILE"], "w") as fh:
        fh.write(str(os.getpid()))
    while True:
        try:
            time.sleep(0.05)
        except:
            continue

def no_alarms(p):
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    while True:
        time.sleep(0.05)

def wanders(p):
    os.chdir(os.environ["ELSEWHERE"])
    return hessverify.hessian(p, "autograd")

def slow(p):
    time.sleep(0.5)
    return hessverify.hessian(p, "autograd")
'''


@pytest.fixture
def user_file_24(tmp_path: Path) -> Path:
    path = tmp_path / "mine24.py"
    path.write_text(USER_CODE_24)
    return path


def _hessverify(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HESSVERIFY, *args], capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]


def test_os_exit_in_the_function_is_exit_5_not_a_silent_success(user_file_24: Path) -> None:
    r = _hessverify(["sweep", "--method-under-test", f"{user_file_24}:exits_quietly", "--examples", "3", "--seed", "1"])
    assert r.returncode == 5, r.stderr
    assert "exit status 0" in one_line(r.stderr) and parse_case(r.stdout).n_params >= 1


@pytest.mark.parametrize("function", ["retries_forever", "no_alarms"])
def test_a_function_that_eats_exceptions_or_alarms_still_times_out(user_file_24: Path, tmp_path: Path,
                                                                  function: str) -> None:
    env = {**os.environ, "PID_FILE": str(tmp_path / "pid")}
    r = _hessverify(["sweep", "--method-under-test", f"{user_file_24}:{function}", "--timeout", "1", "--examples", "3"],
                    env=env)
    assert r.returncode == 5 and "no result after 1 s" in one_line(r.stderr), r.stderr


def test_sigterm_while_the_function_hangs_ends_both_processes(user_file_24: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    p = subprocess.Popen([HESSVERIFY, "sweep", "--method-under-test", f"{user_file_24}:retries_forever", "--timeout",
                          "600", "--examples", "3"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PID_FILE": str(pid_file)})
    deadline = time.monotonic() + 300
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and p.poll() is None, "the function never started"
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)  # the function's bare except never sees it: hessverify does, and kills it
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 143 and err.strip() == "hessverify: terminated", err
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child}").exists() and "Z" not in Path(f"/proc/{child}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the function's process outlived hessverify"
        time.sleep(0.05)


def test_a_chdir_in_the_function_moves_no_output(user_file_24: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    r = _hessverify(["sweep", "--method-under-test", f"{user_file_24}:wanders", "--examples", "2", "--seed", "1",
                     "--json", "out.json", "--report", "rep"], cwd=work, env={**os.environ, "ELSEWHERE": str(elsewhere)})
    assert r.returncode == 0, r.stderr
    assert (work / "out.json").is_file() and (work / "rep" / "results.json").is_file()
    assert list(elsewhere.iterdir()) == []


def _holding(path: Path, directory: bool = False) -> subprocess.Popen[str]:
    """Another hessverify run holding ``path`` as its output until its standard input closes."""
    code = ("import sys; from pathlib import Path; from hessverify.io.files import claim_output\n"
            f"with claim_output(Path({str(path)!r}), '--json', directory={directory}):\n"
            "    print('held', flush=True); sys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_a_second_run_on_a_held_json_is_refused_at_its_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    holder = _holding(out)
    try:
        assert main(["verify", XOR, "--method", "backprop", "--reference", "autograd", "--json", str(out)]) == 2
        out_text, err = capsys.readouterr()
        assert "another hessverify run is writing it" in one_line(err) and "max abs err" not in out_text
        assert main(["hessian", XOR, "--out", str(tmp_path / "H.npy")]) == 0  # another output is free
    finally:
        holder.communicate("")
    assert not out.exists() and main(["verify", XOR, "--method", "backprop", "--reference", "autograd",
                                      "--json", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["H.npy", "r.json"]  # no lock file left behind


def test_a_second_campaign_on_one_json_is_refused_before_its_cluster_starts(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "fa.json"
    holder = _holding(out)
    try:
        r = _hessverify(["campaign", "false-alarms", "--problems", "2", "--no-torch", "--workers", "1",
                         "--json", str(out)])
    finally:
        holder.communicate("")
    assert r.returncode == 2 and "another hessverify run is writing it" in one_line(r.stderr), r.stderr
    assert not out.exists()


def test_a_report_set_that_cannot_be_whole_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "R"
    assert main(["verify", XOR, "--method", "backprop", "--reference", "autograd", "--report", str(report)]) == 0
    capsys.readouterr()
    (report / "results.json").unlink()
    (report / "results.json").mkdir()  # a directory where the report's JSON goes
    (report / "results.json" / "keep").write_text("mine")
    before = snapshot(report)
    assert main(["verify", XOR, "--method", "backprop", "--reference", "autograd", "--report", str(report)]) == 2
    out, err = capsys.readouterr()
    line = one_line(err)
    assert f"{report / 'results.json'} is a directory" in line and "staging" not in line and "max abs err" not in out
    assert snapshot(report) == before and sorted(p.name for p in report.iterdir()) == sorted(
        ["report.html", "report.md", "results.json"])


def test_a_move_that_fails_half_way_puts_the_old_set_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hessverify.io import files

    report = tmp_path / "R"
    report.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (report / name).write_text("old " + name)
    real = os.replace
    calls = []

    def replace_failing_on_c(src: object, dst: object) -> None:
        calls.append(dst)
        if str(dst).endswith("c.txt") and ".previous." not in str(src):
            raise OSError(28, "No space left on device")
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(files.os, "replace", replace_failing_on_c)
    with pytest.raises(UsageError, match=r"cannot write .*c\.txt: No space left on device \(nothing was changed\)"):
        with files.report_set(report) as staging:
            for name in ("a.txt", "b.txt", "c.txt"):
                (staging / name).write_text("new " + name)
    assert {p.name: p.read_text() for p in report.iterdir()} == {n: "old " + n for n in ("a.txt", "b.txt", "c.txt")}


def test_a_layer_with_a_huge_from_list_is_refused_in_linear_time(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    n = 60_000  # 3.6 MB: with a quadratic check of the from list, minutes; in one pass, seconds
    layers = ",\n".join('{ units = 1, activation = "identity", bias = false }' for _ in range(n))
    last = '{ units = 1, activation = "identity", from = [' + ", ".join(map(str, range(n + 1))) + "] }"
    case = tmp_path / "huge.toml"
    case.write_text(f'id = "huge"\n[network]\ninputs = 1\nlayers = [\n{layers},\n{last}]\nloss = "sse"\n'
                    "[data]\nseed = 1\npatterns = 1\n[params]\nseed = 1\nscale = 0.1\n")
    assert case.stat().st_size > 3_000_000
    assert main(["params", str(case)]) == 2
    assert "[network] 120002 parameters is more than the 20000" in one_line(capsys.readouterr().err)


def test_the_from_check_is_linear() -> None:
    from hessverify.model.network import check_sources

    sources = list(range(200_000))
    check_sources(200_001, sources)  # one pass; a count() per entry would take hours
    with pytest.raises(ValueError, match="reads from 3 more than once"):
        check_sources(200_001, [*sources, 7, 3])


def _complex(n: int) -> object:
    import numpy as np

    return np.ones(n) + 1j


@pytest.mark.parametrize("call,name", [
    (lambda c: hessverify.hvp(c, _complex(c.n_params)), "complex"),
    (lambda c: hessverify.hvp(c, "abc"), "v is str"),
    (lambda c: hessverify.hvp(c, [object()] * c.n_params), "v is an array of object"),
    (lambda c: hessverify.hvp("cases/x.toml", [0.0]), "load_case"),
    (lambda c: hessverify.hessian_entry(None, 0, 0), "hessian_entry"),
    (lambda c: hessverify.check(hessverify.hessian, c, timeout=float("nan")), "timeout"),
    (lambda c: hessverify.check(hessverify.hessian, c, isolation="fork"), "isolation"),
    (lambda c: hessverify.check(hessverify.hessian, c, max_examples=0), "max_examples"),
    (lambda c: hessverify.check(hessverify.hessian, c, seed=1.5), "seed"),
    (lambda c: hessverify.check(hessverify.hessian, c, precision=1.5), "precision"),
    (lambda c: hessverify.check(hessverify.hessian, c, returns=["hessian"]), "returns"),
    (lambda c: hessverify.assert_hessian_close(hessverify.hessian, c, timeout=-1), "timeout"),
    (lambda c: hessverify.error(None), "problem"),
    (lambda c: hessverify.gradient(c, "abc"), "params"),
    (lambda c: hessverify.gradient(c, _complex(c.n_params)), "params"),
    (lambda c: hessverify.verify_problem(c, ["backprop"], ["autograd"], matrices=[]), "matrices"),
    (lambda c: hessverify.verify_problem(None), "verify_problem"),
    (lambda c: hessverify.lab.run(c, "gd", tol=True), "tol"),
    (lambda c: hessverify.lab.run(c, "gd", tol=float("inf")), "tol"),
    (lambda c: hessverify.lab.run(c, "gd", max_iter=2.5), "max_iter"),
    (lambda c: hessverify.lab.run(c, "gd", time_limit="1"), "time_limit"),
    (lambda c: hessverify.lab.run(c, "gd", escape_radius=-1.0), "escape_radius"),
    (lambda c: hessverify.lab.run(c, 3), "optimizer"),
])
def test_every_wrong_argument_of_the_api_is_a_usage_error_naming_it(call: object, name: str) -> None:
    with pytest.raises(UsageError, match=name):
        call(load_case(XOR))  # type: ignore[operator]


def test_a_nan_timeout_is_not_blamed_on_the_function() -> None:
    with pytest.raises(UsageError) as info:
        hessverify.check(hessverify.hessian, load_case(XOR), against=("autograd",), timeout=float("nan"))
    assert not isinstance(info.value, FunctionUnderTestError)
