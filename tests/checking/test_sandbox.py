"""Tests of hessverify.sandbox: every fault of the function under test is its own, with its frames."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from hessverify import FunctionUnderTestError, load_case
from hessverify.checking.sandbox import call_user, user_copy

CASE = load_case("cases/xor-2-2-1-sigmoid.toml")


def raises(p: object) -> None:
    raise RuntimeError("boom")


def exits(p: object) -> None:
    sys.exit(3)


def hangs(p: object) -> None:
    while True:
        time.sleep(0.01)


def swallows_everything(p: object) -> None:
    while True:
        try:
            time.sleep(0.01)
        except Exception:  # an alarm must not be an Exception this can eat
            pass


def test_an_exception_names_the_users_frame() -> None:
    with pytest.raises(FunctionUnderTestError) as info:
        call_user(raises, CASE, problem=CASE)
    err = info.value
    assert err.exit_code == 5 and err.message == "RuntimeError: boom" and err.problem is CASE
    assert "test_sandbox.py" in err.where and 'raise RuntimeError("boom")' in err.where
    assert isinstance(err.cause, RuntimeError)


def test_sys_exit_is_the_functions_failure_not_hessverifys_exit() -> None:
    with pytest.raises(FunctionUnderTestError, match=r"sys.exit\(3\)"):
        call_user(exits, CASE)


@pytest.mark.parametrize("fn", [hangs, swallows_everything])
def test_a_hang_ends_at_the_timeout_on_the_main_thread(fn: object) -> None:
    with pytest.raises(FunctionUnderTestError, match="no result after 0.2 s") as info:
        call_user(fn, CASE, timeout=0.2)
    assert "test_sandbox.py" in info.value.where


def test_a_hang_ends_at_the_timeout_off_the_main_thread() -> None:
    box: dict[str, BaseException] = {}

    def run() -> None:
        try:
            call_user(hangs, CASE, timeout=0.2)
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(10)
    assert isinstance(box.get("error"), FunctionUnderTestError)


def test_keyboard_interrupt_is_the_persons_and_passes_through() -> None:
    def interrupted(p: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_user(interrupted, CASE)


def test_the_user_copy_shares_no_array_with_the_problem() -> None:
    copy = user_copy(CASE)
    before = CASE.params.copy(), CASE.inputs.copy(), CASE.targets.copy()
    copy.params[:] = 0
    copy.inputs[:] = 0
    copy.targets[:] = 0
    for original, saved in zip((CASE.params, CASE.inputs, CASE.targets), before, strict=True):
        np.testing.assert_array_equal(original, saved)


# -- issue 24: the function under test in a child process ------------------------------------------------------


def swallows_with_a_bare_except(p: object) -> None:
    while True:
        try:
            time.sleep(0.01)
        except:  # noqa: E722 - the point: a bare except eats every exception an alarm could raise
            pass


def resets_the_alarm(p: object) -> None:
    import signal

    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, 0)
    while True:
        time.sleep(0.01)


def exits_quietly(p: object) -> None:
    import os

    os._exit(0)


def kills_itself(p: object) -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def crashes(p: object) -> None:
    import ctypes

    ctypes.string_at(0)  # a segmentation fault in native code


def meddles(p: object) -> str:
    import os
    import signal

    os.chdir("/")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path.insert(0, "/nowhere")
    return os.getcwd()


def pid_of(p: object) -> int:
    import os

    return os.getpid()


def writes_into(p: object) -> float:
    p.params[:] = 7.0  # type: ignore[attr-defined]
    return float(p.params.sum())  # type: ignore[attr-defined]


@pytest.mark.parametrize("fn", [swallows_with_a_bare_except, resets_the_alarm])
def test_a_timeout_is_a_kill_whatever_the_function_does_to_exceptions_and_signals(fn: object) -> None:
    with pytest.raises(FunctionUnderTestError, match="no result after 0.3 s.*killed") as info:
        call_user(fn, CASE, timeout=0.3)
    assert "test_sandbox.py" in info.value.where  # where it hung, from the child's own stack


@pytest.mark.parametrize("fn,message", [
    (exits_quietly, "exit status 0"),
    (kills_itself, "killed by SIGKILL"),
    (crashes, "killed by SIGSEGV"),
])
def test_every_exit_of_the_function_is_its_failure(fn: object, message: str) -> None:
    with pytest.raises(FunctionUnderTestError, match=message) as info:
        call_user(fn, CASE, problem=CASE)
    assert info.value.exit_code == 5 and info.value.problem is CASE
    if fn is crashes:
        assert "test_sandbox.py" in info.value.where  # faulthandler's dump of the crash


def test_what_the_function_does_to_its_process_does_not_reach_this_one() -> None:
    import os
    import signal

    cwd, path = os.getcwd(), list(sys.path)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert call_user(meddles, CASE) == "/"
    assert os.getcwd() == cwd and sys.path == path
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers


def pid_or_exit(p: object, leave: bool) -> int:
    import os

    if leave:
        os._exit(3)
    return os.getpid()


def test_one_process_serves_a_run_and_another_starts_after_a_crash() -> None:
    import os

    from hessverify.checking.sandbox import Sandbox

    with Sandbox(pid_or_exit) as box:
        pids = {box(CASE, False) for _ in range(5)}
        assert len(pids) == 1 and os.getpid() not in pids and box.starts == 1
        with pytest.raises(FunctionUnderTestError, match="exit status 3"):
            box(CASE, True)
        assert box(CASE, False) not in pids and box.starts == 2


def test_each_call_gets_its_own_copy_even_when_the_problem_is_sent_once() -> None:
    from hessverify.checking.sandbox import Sandbox

    with Sandbox(writes_into) as box:
        first, second = box(CASE), box(CASE)
    assert first == second == 7.0 * CASE.n_params
    assert not np.any(CASE.params == 7.0)


def test_spawned_where_forking_is_not_safe() -> None:
    from hessverify.checking.sandbox import Sandbox, start_method

    box_out: dict[str, object] = {}

    def run() -> None:  # a second thread is running: forking is not safe, the child is spawned
        box_out["method"] = start_method()
        with Sandbox(pid_of) as box:
            box_out["pid"], box_out["how"] = box(CASE), box.method

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(300)
    assert box_out["method"] == "spawn" and box_out["how"] == "spawn" and isinstance(box_out["pid"], int)
    import sys

    from hessverify.checking.sandbox import _jax_started

    # here, alone, it is, unless this test process has loaded TensorFlow or started JAX (other tests in it did)
    alone = threading.active_count() == 1 and "tensorflow" not in sys.modules and not _jax_started()
    assert start_method() == ("fork" if alone else "spawn")


def _sandboxed_in_a_daemon(out: object) -> None:
    from hessverify.checking.sandbox import Sandbox

    try:
        with Sandbox(pid_of) as box:
            pid = box(CASE)  # the child is started at the first call
            out.put((box.method, pid))  # type: ignore[attr-defined]
    except BaseException as exc:  # noqa: BLE001 - the parent asserts on what happened
        out.put(("failed", repr(exc)))  # type: ignore[attr-defined]


def test_a_daemonic_worker_spawns_its_child() -> None:
    """A campaign's worker is a daemonic process, which multiprocessing lets have no children of its own."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    daemon = ctx.Process(target=_sandboxed_in_a_daemon, args=(out,), daemon=True)
    daemon.start()
    try:
        method, pid = out.get(timeout=300)
    finally:
        daemon.join(60)
    assert method == "spawn" and isinstance(pid, int) and pid not in (daemon.pid, multiprocessing.current_process().pid)


@pytest.mark.parametrize("isolation", ["thread", "none"])
def test_in_process_isolation_is_there_for_debugging(isolation: str) -> None:
    import os

    assert call_user(pid_of, CASE, isolation=isolation) == os.getpid()
    with pytest.raises(FunctionUnderTestError, match="boom"):
        call_user(raises, CASE, isolation=isolation)


def checks_its_own_result(p: object) -> None:  # what an adapter's wrapper does inside the call
    raise FunctionUnderTestError("fn(problem) returned (3,), expected (9,)")


@pytest.mark.parametrize("isolation", ["process", "thread", "none"])
def test_a_failure_found_inside_the_call_says_so_once(isolation: str) -> None:
    """A check of the function's own result, run inside the sandboxed call, is not wrapped again as an exception
    of the function: the message says "the function under test failed" once, with no class name in it."""
    with pytest.raises(FunctionUnderTestError) as info:
        call_user(checks_its_own_result, CASE, isolation=isolation)
    assert info.value.message == "fn(problem) returned (3,), expected (9,)"
    assert str(info.value).count("the function under test failed") == 1


@pytest.mark.parametrize("kwargs,name", [
    ({"timeout": float("nan")}, "timeout"), ({"timeout": -1}, "timeout"), ({"timeout": "5"}, "timeout"),
    ({"timeout": True}, "timeout"), ({"isolation": "fork"}, "isolation"), ({"isolation": None}, "isolation"),
])
def test_bad_timeouts_and_isolations_are_usage_errors(kwargs: dict[str, object], name: str) -> None:
    from hessverify import UsageError

    with pytest.raises(UsageError, match=name):
        call_user(pid_of, CASE, **kwargs)  # type: ignore[arg-type]
