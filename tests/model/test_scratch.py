"""The kernel's working arrays, kept between calls: never two holders of one array, never a stale value.

The assembly takes its large temporaries from :data:`hessverify.model.kernel._scratch`
and gives them back once nothing reads them (docs/methods.md, "Working arrays
kept between calls").  A give too early would let a later task overwrite
what an earlier one still reads: the Hessian would change from one call to
the next, or with what ran before it.  So each test here holds a call's
Hessian to the same call on a fresh store, bit for bit, on every path of the
kernel (the pool of threads included), after other problems have used the
arrays.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hessverify
from hessverify.model import kernel

from ..methods.conftest import load
from .test_kernel import PATHS, _force

CASES = ["tanh-6-12-8-2", "softmax-4-5-3-cross-entropy", "graph-residual-mlp-2-4-4-4-1-tanh",
         "graph-input-to-output-3-4-2-sigmoid-ce"]


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> kernel._Scratch:
    """A store of this test's own, so that no other test's arrays are in it."""
    fresh = kernel._Scratch(kernel.SCRATCH_KEEP_BYTES)
    monkeypatch.setattr(kernel, "_scratch", fresh)
    return fresh


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_hessian_does_not_depend_on_what_used_the_arrays_before(path: str, store: kernel._Scratch,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _force(monkeypatch, path)
    first = {name: hessverify.hessian(load(name)) for name in CASES}
    assert store.kept > 0, "the kernel gave nothing back"
    for name in [*reversed(CASES), *CASES]:  # every case after every other one, on arrays they wrote
        again = hessverify.hessian(load(name))
        np.testing.assert_array_equal(again, first[name], err_msg=f"{name} after other cases ({path})")


def test_the_pool_gives_the_same_hessian_call_after_call(store: kernel._Scratch,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads, pieces of one unit's rows: the most tasks at once on the fewest arrays."""
    _force(monkeypatch, "pool")
    monkeypatch.setattr(kernel, "PAIR_TASK_FLOATS", 1)
    monkeypatch.setattr(kernel, "BLOCK_FLOATS", 1)
    case = load("tanh-6-12-8-2")
    reference = hessverify.hessian(case)
    for _ in range(20):
        np.testing.assert_array_equal(hessverify.hessian(case), reference)


def test_a_second_call_takes_no_new_array(store: kernel._Scratch) -> None:
    """What the kernel is for: once a shape has been seen, its arrays are there for the next call."""
    case = load("tanh-6-12-8-2")
    hessverify.hessian(case)
    kept = [id(b) for b in store.free]
    hessverify.hessian(case)
    assert sorted(id(b) for b in store.free) == sorted(kept)


def test_no_more_is_kept_than_the_limit() -> None:
    store = kernel._Scratch(3000)
    a, b = store.take((200,), np.float64), store.take((200,), np.float64)  # 1600 bytes each
    store.give(a, b)
    assert store.kept == 1600


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
    """Any sequence of takes and gives: what is held is disjoint, and a given-back array is reused."""
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
