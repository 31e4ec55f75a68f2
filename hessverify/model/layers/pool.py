"""``avg_pool1d``, ``avg_pool2d`` and ``flatten``: ``nn.AvgPool1d`` / ``nn.AvgPool2d`` (no padding) and ``nn.Flatten``.

Pooling is the mean of each window: a fixed linear map (its second derivative
is zero), taken as the windows of the input (an index map) and their mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hessverify.model.layers.base import LayerKind, Option, Shape, int_pair, positive
from hessverify.model.layers.conv import out_size, patch_index

__all__ = ["KINDS", "AvgPool", "Flatten"]


class AvgPool(LayerKind):
    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.name = f"avg_pool{dims}d"
        pair = int_pair(dims)
        self.options = (Option("kernel", pair, check=positive, doc="the window size, an int or a list"),
                        Option("stride", pair, None, check=positive, doc="default: the kernel"))
        self.torch = f"nn.AvgPool{dims}d(kernel, stride)"
        self.summary = "the mean of each window"

    def _stride(self, o: dict[str, Any]) -> Shape:
        return o["kernel"] if o["stride"] is None else o["stride"]

    def out_shape(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        if len(shape) != self.dims + 1:
            raise ValueError(f"reads an input of shape {'[C, L]' if self.dims == 1 else '[C, H, W]'}, got {list(shape)}")
        outs = tuple(out_size(n, k, s, 0) for n, k, s in zip(shape[1:], o["kernel"], self._stride(o)))
        if min(outs) < 1:
            raise ValueError(f"a window of {list(o['kernel'])} does not fit an input of {list(shape[1:])}")
        return (shape[0],) + outs

    def build(self, b: Any, o: dict[str, Any], xs: Sequence[int], ps: Sequence[int], in_shapes: Sequence[Shape],
              ids: Any = None) -> int:
        index = patch_index(in_shapes[0], o["kernel"], self._stride(o), (0,) * self.dims, 1)[0]  # (C, *outs, *k)
        windows = b.gather([xs[0]], index)
        axes = tuple(range(1 + self.dims, 1 + 2 * self.dims))
        mean = b.scale(b.sum(windows, axes), 1.0 / int(np.prod(o["kernel"])))
        return b.reshape(mean, self.out_shape(o, in_shapes))

    def xp(self, xp: Any, o: dict[str, Any], xs: Sequence[Any], ps: Sequence[Any]) -> Any:
        x = xs[0]
        stride = self._stride(o)
        outs = [(n - k) // s + 1 for n, k, s in zip(x.shape[2:], o["kernel"], stride)]
        total = 0
        for offset in np.ndindex(*o["kernel"]):
            window = (slice(None), slice(None)) + tuple(slice(j, j + s * (m - 1) + 1, s)
                                                         for j, s, m in zip(offset, stride, outs))
            total = total + x[window]
        return total / float(np.prod(o["kernel"]))

    def describe(self, o: dict[str, Any]) -> str:
        return "k" + "x".join(map(str, o["kernel"])) + ("" if o["stride"] is None else
                                                        ",s" + "x".join(map(str, o["stride"])))


class Flatten(LayerKind):
    name = "flatten"
    activation = False
    torch = "nn.Flatten()"
    summary = "one pattern's values in one axis, row-major"

    def out_shape(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> Shape:
        return (int(np.prod(in_shapes[0])),)

    def build(self, b: Any, o: dict[str, Any], xs: Sequence[int], ps: Sequence[int], in_shapes: Sequence[Shape],
              ids: Any = None) -> int:
        return b.reshape(xs[0], self.out_shape(o, in_shapes))

    def xp(self, xp: Any, o: dict[str, Any], xs: Sequence[Any], ps: Sequence[Any]) -> Any:
        return xp.reshape(xs[0], (xs[0].shape[0], -1))

    def describe(self, o: dict[str, Any]) -> str:
        return ""


KINDS = (AvgPool(1), AvgPool(2), Flatten())
