"""``block_diagonal`` and ``diagonal``: the exact blocks and diagonal, without the full matrix."""

from __future__ import annotations

import numpy as np

import hessverify
from hessverify.methods import backprop, block_diagonal, diagonal
from hessverify.references import autograd_ref

from .conftest import assert_within, exact_bound


def test_blocks_equal_the_diagonal_blocks_of_backprop(case: hessverify.Problem) -> None:
    H = backprop.hessian(case)
    B = exact_bound(case)
    blocks = block_diagonal.blocks(case)
    assert len(blocks) == case.architecture.depth
    for blk, got in zip(case.architecture.blocks, blocks, strict=True):
        s = blk.slice
        assert_within(f"block of layer {blk.layer}", case, got, H[s, s], B[s, s])


def test_diagonal_equals_the_diagonal_of_backprop(case: hessverify.Problem) -> None:
    assert_within("diagonal", case, diagonal.diagonal(case), np.diag(backprop.hessian(case)),
                  np.diag(exact_bound(case)))


def test_diagonal_against_autograd(case: hessverify.Problem) -> None:
    # an independent reference as well, so that a bug shared with backprop cannot hide
    assert_within("diagonal vs autograd", case, diagonal.diagonal(case), np.diag(autograd_ref.hessian(case)),
                  np.diag(exact_bound(case)))


def test_embed_puts_blocks_on_the_diagonal_only() -> None:
    from .conftest import load

    case = load("xor-2-2-1-sigmoid")
    M = block_diagonal.embed(case, block_diagonal.blocks(case))
    layer = case.architecture.layer_of_param
    off = layer[:, None] != layer[None, :]
    assert np.all(M[off] == 0.0)
    assert np.count_nonzero(M[~off]) > 0
