"""Per-layer arrays in (unit, input-with-bias) layout, moved into the public order.

The methods of this package compute a layer's quantities with the bias as
one more input column (the constant 1), so a weight ``W_l[k, j]`` sits at
``(k, j)`` and the bias ``b_l[k]`` at ``(k, fan_in)``.  The public order
(:mod:`hessverify.model.network`) lists all of ``W_l`` row-major first, then
``b_l``; :func:`public_positions` is the one map between the two.
"""

from __future__ import annotations

import numpy as np

from hessverify.base.typing import FloatArray, IntArray
from hessverify.model.network import Architecture, ParamBlock, layer_input

__all__ = ["input_with_bias", "layer_vector", "public_positions", "with_ones"]


def with_ones(z: FloatArray, bias: bool) -> FloatArray:
    """Layer input with a column of ones appended when the layer has a bias."""
    if not bias:
        return z
    return np.concatenate([z, np.ones((z.shape[0], 1), dtype=z.dtype)], axis=1)


def input_with_bias(arch: Architecture, zs: list[FloatArray], layer: int) -> FloatArray:
    """``x = (z_in, 1)``: the input of ``layer`` with the bias column when it has a bias, ``(N, fan_in [+1])``."""
    return with_ones(layer_input(zs, layer, arch), arch.block(layer).bias)


def public_positions(blk: ParamBlock) -> IntArray:
    """For each ``(k, j)`` of the (unit, input-with-bias) layout, flattened, its index within the layer."""
    u, f = blk.units, blk.fan_in
    d = f + (1 if blk.bias else 0)
    k, j = np.meshgrid(np.arange(u), np.arange(d), indexing="ij")
    # a weight W[k, j] is at k f + j; a bias b[k] follows all of W, at u f + k
    return np.where(j < f, k * f + j, u * f + k).reshape(-1)


def layer_vector(blk: ParamBlock, arr: FloatArray) -> FloatArray:
    """``(units, fan_in [+1])`` -> the layer's slice of a public-order vector."""
    out = np.empty(blk.size)
    out[public_positions(blk)] = arr.reshape(-1)
    return out
