"""``conv1d`` and ``conv2d``: ``nn.Conv1d`` / ``nn.Conv2d`` (dilation 1, zero padding).

.. math:: a_{o,l} = \\sum_{c \\in g(o)} \\sum_{j} W_{o,c,j}\\, x_{c,\\, s l + j - p} + b_o

A convolution is a dense map with tied weights applied to the patches of its
input: the primitives take the patches once (a fixed index map, zero where the
padding is) and contract them with the kernel, one group at a time, so it costs
what the convolution costs, never a dense ``W``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hessverify.model.layers.base import BOOLEAN, INTEGER, LayerKind, Option, Shape, int_pair, non_negative, positive

__all__ = ["KINDS", "Conv"]


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """PyTorch's output length: ``floor((size + 2 padding - kernel) / stride) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def patch_index(shape: Shape, kernel: Shape, stride: Shape, padding: Shape, groups: int) -> np.ndarray:
    """Index of ``x`` (flattened ``(C, *spatial)``) for each ``(group, channel, *out position, *kernel offset)``; -1: padding."""
    C, spatial = shape[0], shape[1:]
    outs = [out_size(n, k, s, p) for n, k, s, p in zip(spatial, kernel, stride, padding)]
    grids = np.meshgrid(*[np.arange(o) for o in outs], *[np.arange(k) for k in kernel], indexing="ij")
    d = len(spatial)
    pos = [grids[i] * stride[i] + grids[d + i] - padding[i] for i in range(d)]  # (*outs, *kernel) each
    inside = np.ones(pos[0].shape, dtype=bool)
    flat = np.zeros(pos[0].shape, dtype=np.intp)
    for i, n in enumerate(spatial):
        inside &= (pos[i] >= 0) & (pos[i] < n)
        flat = flat * n + np.clip(pos[i], 0, n - 1)
    per_channel = np.prod(spatial)
    index = np.arange(C)[(...,) + (None,) * (2 * d)] * per_channel + flat[None]
    index = np.where(inside[None], index, -1)
    return index.reshape((groups, C // groups) + index.shape[1:])


class Conv(LayerKind):
    sources = "one"

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.name = f"conv{dims}d"
        pair = int_pair(dims)
        self.options = (Option("channels", INTEGER, check=positive, doc="the number of output channels"),
                        Option("kernel", pair, check=positive, doc="the kernel size, an int or a list"),
                        Option("stride", pair, (1,) * dims, check=positive),
                        Option("padding", pair, (0,) * dims, check=non_negative),
                        Option("groups", INTEGER, 1, check=positive),
                        Option("bias", BOOLEAN, True))
        self.torch = f"nn.Conv{dims}d(in_channels, channels, kernel, stride, padding, groups=groups, bias=bias)"
        self.summary = "a convolution (zero padding, dilation 1)"

    def _check(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        if len(shape) != self.dims + 1:
            want = "[C, L]" if self.dims == 1 else "[C, H, W]"
            raise ValueError(f"reads an input of shape {want}, got {list(shape)}")
        C = shape[0]
        if C % o["groups"] or o["channels"] % o["groups"]:
            raise ValueError(f"groups = {o['groups']} must divide the input channels ({C}) and the output "
                             f"channels ({o['channels']})")
        outs = tuple(out_size(n, k, s, p) for n, k, s, p in zip(shape[1:], o["kernel"], o["stride"], o["padding"]))
        if min(outs) < 1:
            raise ValueError(f"a kernel of {list(o['kernel'])} with padding {list(o['padding'])} does not fit an "
                             f"input of {list(shape[1:])}")
        return outs

    def out_shape(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> Shape:
        return (o["channels"],) + self._check(o, in_shapes)

    def tensors(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> list[tuple[str, Shape]]:
        C = in_shapes[0][0]
        out = [("W", (o["channels"], C // o["groups"]) + tuple(o["kernel"]))]
        if o["bias"]:
            out.append(("b", (o["channels"],)))
        return out

    def build(self, b: Any, o: dict[str, Any], xs: Sequence[int], ps: Sequence[int], in_shapes: Sequence[Shape],
              ids: Any = None) -> int:
        g, d = o["groups"], self.dims
        outs = self._check(o, in_shapes)
        patches = b.gather([xs[0]], patch_index(in_shapes[0], o["kernel"], o["stride"], o["padding"], g))
        kernel = b.reshape(ps[0], (g, o["channels"] // g) + b.shape(ps[0])[1:])
        space, offsets = "hwv"[:d], "ijk"[:d]
        y = b.einsum(f"ngc{space}{offsets},goc{offsets}->ngo{space}", patches, kernel)
        y = b.reshape(y, (o["channels"],) + outs)
        if o["bias"]:
            y = b.add(y, b.reshape(ps[1], (o["channels"],) + (1,) * d))
        return y

    def xp(self, xp: Any, o: dict[str, Any], xs: Sequence[Any], ps: Sequence[Any]) -> Any:
        # written with slices of the zero-padded input, one kernel offset at a time (not with patches)
        x, W = xs[0], ps[0]
        C = x.shape[1]
        for axis, p in enumerate(o["padding"]):
            if p:
                shape = list(x.shape)
                shape[2 + axis] = p
                zeros = xp.zeros(tuple(shape))
                x = xp.concatenate([zeros, x, zeros], axis=2 + axis)
        g = o["groups"]
        cin, cout = C // g, o["channels"] // g
        spatial = x.shape[2:]
        outs = [(size - k) // s + 1 for size, k, s in zip(spatial, o["kernel"], o["stride"])]
        groups = []
        for gi in range(g):
            xg = x[:, gi * cin:(gi + 1) * cin]
            Wg = W[gi * cout:(gi + 1) * cout]
            total = 0
            for offset in np.ndindex(*o["kernel"]):
                window = (slice(None), slice(None)) + tuple(
                    slice(j, j + s * (m - 1) + 1, s) for j, s, m in zip(offset, o["stride"], outs))
                w = Wg[(slice(None), slice(None)) + offset]
                total = total + xp.einsum("oc,nc...->no...", w, xg[window])
            groups.append(total)
        y = groups[0] if g == 1 else xp.concatenate(groups, axis=1)
        if o["bias"]:
            y = y + xp.reshape(ps[1], (1, o["channels"]) + (1,) * self.dims)
        return y

    def describe(self, o: dict[str, Any]) -> str:
        extra = [f"k{'x'.join(map(str, o['kernel']))}"]
        if any(s != 1 for s in o["stride"]):
            extra.append(f"s{'x'.join(map(str, o['stride']))}")
        if any(o["padding"]):
            extra.append(f"p{'x'.join(map(str, o['padding']))}")
        if o["groups"] != 1:
            extra.append(f"g{o['groups']}")
        if not o["bias"]:
            extra.append("nobias")
        return f"{o['channels']}," + ",".join(extra)


KINDS = (Conv(1), Conv(2))
