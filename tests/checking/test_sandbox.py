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
