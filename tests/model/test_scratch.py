"""The kernel's working arrays, kept between calls: never two holders of one array, never a stale value.

The assembly takes its large temporaries from :data:`hessverify.model.kernel._scratch`
and gives them back once nothing reads them (docs/methods.md, "the kernel's
working arrays kept between calls").  A give too early lets a later task
overwrite what an earlier one still reads.  Each test holds the kernel's
result to the same call on a store that keeps nothing (so every array is
fresh), bit for bit:

* with every task held back until the kernel waits for them, and every array
  given back overwritten with NaN at once, so that an early give shows
  whatever the timing (a deterministic stand-in for the worst interleaving of
  the pool);
* on the pool itself, with the rows let go after every row (the early wait),
  call after call;
* on the complex numbers of the rounding bound as well as on the values.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hessverify
from hessverify.engine.bounds import magnitude_hessian
from hessverify.model import kernel

from ..methods.conftest import load
from .test_kernel import PATHS, _force

CASES = ["tanh-6-12-8-2", "softmax-4-5-3-cross-entropy", "graph-residual-mlp-2-4-4-4-1-tanh",
         "graph-input-to-output-3-4-2-sigmoid-ce"]


class _Poisoned(kernel._Scratch):
    """A store that overwrites every array given back with NaN bytes, so that a reader after the give sees NaN."""

    def give(self, *arrays: np.ndarray) -> None:
        for a in arrays:
            root = kernel._root(a)
            if self.lent.get(id(root)) is root:
                root[...] = 0xFF  # all bits set: a NaN in float64, float32 and complex128 alike
        super().give(*arrays)


class _Deferred:
    """A runner that holds every task back until :meth:`wait`: the latest a task can run."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def submit(self, tasks: list[Callable[[], None]]) -> None:
        self.pending += tasks

    def wait(self) -> None:
        pending, self.pending = self.pending, []
        for task in reversed(pending):  # the last handed in first: still another order
            task()


@contextmanager
def _deferred(work: float) -> Iterator[_Deferred]:
    yield _Deferred()


def _fresh(monkeypatch: pytest.MonkeyPatch, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()`` on a store that keeps nothing: every working array is new."""
    with monkeypatch.context() as m:
        m.setattr(kernel, "_scratch", kernel._Scratch(0))
        return compute()


def _computations(name: str) -> dict[str, Callable[[], np.ndarray]]:
    case = load(name)
    return {"hessian": lambda: hessverify.hessian(case),
            "magnitudes": lambda: magnitude_hessian(case),  # complex step through the kernel
            "magnitudes float32": lambda: magnitude_hessian(case, "float32")}


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> kernel._Scratch:
    """A store of this test's own, so that no other test's arrays are in it."""
    fresh = kernel._Scratch(kernel.SCRATCH_KEEP_BYTES)
    monkeypatch.setattr(kernel, "_scratch", fresh)
    return fresh


@pytest.mark.parametrize("path", ["default", *sorted(PATHS)])
@pytest.mark.parametrize("name", CASES)
def test_no_array_is_given_back_while_a_task_may_read_it(name: str, path: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if path != "default":
        _force(monkeypatch, path)
    expected = {what: _fresh(monkeypatch, compute) for what, compute in _computations(name).items()}
    monkeypatch.setattr(kernel, "_scratch", _Poisoned(kernel.SCRATCH_KEEP_BYTES))
    monkeypatch.setattr(kernel, "_runner", _deferred)
    for _ in range(2):  # the second time on arrays the first one gave back
        for what, compute in _computations(name).items():
            np.testing.assert_array_equal(compute(), expected[what], err_msg=f"{what}, {path}")


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_hessian_does_not_depend_on_what_used_the_arrays_before(path: str, store: kernel._Scratch,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _force(monkeypatch, path)
    expected = {name: _fresh(monkeypatch, lambda name=name: hessverify.hessian(load(name))) for name in CASES}
    for name in [*CASES, *reversed(CASES), *CASES]:  # every case after every other one, on arrays they wrote
        np.testing.assert_array_equal(hessverify.hessian(load(name)), expected[name],
                                      err_msg=f"{name} after other cases ({path})")
    assert store.kept > 0, "the kernel gave nothing back"


def test_the_pool_letting_rows_go_after_every_row(store: kernel._Scratch, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads, pieces of one unit's rows, the early wait after every row: rows reused mid-call."""
    _force(monkeypatch, "pool")
    _force(monkeypatch, "flushes")
    monkeypatch.setattr(kernel, "PAIR_TASK_FLOATS", 1)
    monkeypatch.setattr(kernel, "BLOCK_FLOATS", 1)
    waits = 0
    original = kernel._Threads.wait

    def counted(self: kernel._Threads) -> None:
        nonlocal waits
        waits += 1
        original(self)

    monkeypatch.setattr(kernel._Threads, "wait", counted)
    for name in CASES:
        expected = _fresh(monkeypatch, lambda name=name: hessverify.hessian(load(name)))
        for _ in range(5):
            np.testing.assert_array_equal(hessverify.hessian(load(name)), expected, err_msg=name)
    assert waits > 2 * 5 * len(CASES), "the rows were never let go before the end of a call"


def test_a_second_call_takes_no_new_array(store: kernel._Scratch) -> None:
    """What the store is for: once a shape has been seen, its arrays are there for the next call."""
    case = load("tanh-6-12-8-2")
    hessverify.hessian(case)
    kept = sorted(id(b) for b in store.free)
    hessverify.hessian(case)
    assert sorted(id(b) for b in store.free) == kept


def test_no_more_is_kept_than_the_limit() -> None:
    store = kernel._Scratch(3000)
    a, b = store.take((200,), np.float64), store.take((200,), np.float64)  # 1600 bytes each
    store.give(a, b)
    assert store.kept == 1600


def test_only_arrays_it_lent_are_taken_back_and_only_once() -> None:
    """(A holder that gives twice, after someone else took the same bytes, cannot be told apart: the
    kernel gives each array at one place only.)"""
    store = kernel._Scratch(2**20)
    store.give(np.empty(100, dtype=np.uint8), np.empty((3, 3)))  # not its own
    assert store.kept == 0
    a = store.take((10, 10), np.float64)
    store.give(a[2:], a.T)  # views of one array: taken back once
    store.give(a)  # and not again
    assert store.kept == 800 and len(store.free) == 1
    b = store.take((10, 10), np.float64)  # the same bytes, lent again
    assert np.shares_memory(a, b) and store.kept == 0


def test_an_array_of_references_is_never_made_of_raw_bytes() -> None:
    store = kernel._Scratch(2**20)
    a = store.take((3,), object)
    assert a.dtype == object and all(v is None for v in a)
    store.give(a)
    assert store.kept == 0


def test_release_lets_every_array_go(store: kernel._Scratch) -> None:
    hessverify.hessian(load("tanh-6-12-8-2"))
    assert store.kept > 0
    kernel.release_working_arrays()
    assert store.kept == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5000), st.sampled_from(["f8", "f4", "c16"])), max_size=40))
def test_arrays_held_at_once_never_share_memory(steps: list[tuple[bool, int, str]]) -> None:
    """Any sequence of takes and gives: what is held is disjoint, and keeps what its holder wrote."""
    store = kernel._Scratch(2**22)
    held: list[np.ndarray] = []
    marks: dict[int, int] = {}
    counter = itertools.count(1)
    for give, size, dtype in steps:
        if give and held:
            store.give(held.pop(size % len(held)))
            continue
        a = store.take((size,), dtype)
        assert a.shape == (size,) and a.dtype == np.dtype(dtype) and a.flags.writeable
        marks[id(a)] = next(counter)
        a[...] = marks[id(a)]  # each holder writes its own mark
        held.append(a)
    for i, a in enumerate(held):
        assert np.all(a == marks[id(a)]), "another holder wrote into this array"
        assert not any(np.shares_memory(a, b) for b in held[i + 1:])
