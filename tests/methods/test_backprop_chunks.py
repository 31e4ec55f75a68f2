"""``backprop`` over patterns in chunks: the sums over patterns are split, the Hessian is not changed."""

from __future__ import annotations

import numpy as np
import pytest

from hessverify.methods import backprop
from hessverify.model import kernel
from hessverify.model.network import Architecture, Layer
from hessverify.references import autograd_ref

from .conftest import assert_within, exact_bound, load


def test_chunks_cover_the_patterns_within_the_budget() -> None:
    arch = Architecture(32, (Layer(50, "tanh"), Layer(24, "tanh"), Layer(4, "identity")))
    chunks = kernel.pattern_chunks(arch, 5000)
    assert len(chunks) > 1 and chunks[0].start == 0 and chunks[-1].stop == 5000
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:], strict=False))
    # each chunk's per-pattern quantities take at most about as much as H (W^2 floats)
    assert (chunks[0].stop - chunks[0].start) * kernel._per_pattern_floats(arch) <= arch.n_params**2


@pytest.mark.parametrize("name", ["tanh-6-12-8-2", "softmax-4-5-3-cross-entropy", "nobias-2-3-2-tanh-sigmoid"])
def test_chunked_assembly_equals_autograd(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = load(name)
    # three patterns a chunk (a ragged last one), so later chunks add into what the first one wrote
    monkeypatch.setattr(kernel, "pattern_chunks", lambda arch, n: [slice(i, min(n, i + 3)) for i in range(0, n, 3)])
    assert_within("backprop in pattern chunks vs autograd", case, backprop.hessian(case),
                  autograd_ref.hessian(case), exact_bound(case))


@pytest.mark.parametrize("name", ["tanh-6-12-8-2", "softmax-4-5-3-cross-entropy", "nobias-2-3-2-tanh-sigmoid"])
def test_blocks_on_a_thread_pool_equal_autograd(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool path (large problems) on small ones: the same blocks, written by worker threads."""
    case = load(name)
    monkeypatch.setattr(kernel, "PARALLEL_MIN_WORK", 0.0)
    monkeypatch.setattr(kernel, "_blas_threads", lambda: 2)
    monkeypatch.setattr(kernel, "pattern_chunks", lambda arch, n: [slice(i, min(n, i + 3)) for i in range(0, n, 3)])
    H = backprop.hessian(case)
    assert_within("backprop on two threads vs autograd", case, H, autograd_ref.hessian(case), exact_bound(case))
    assert np.array_equal(H, H.T)
