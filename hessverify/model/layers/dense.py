r"""``dense``: ``nn.Linear``, applied to the last axis of its input (its sources side by side).

.. math:: a = x W^T + b,\qquad W \in \mathbb{R}^{u \times d},

and with ``gain = true`` each unit's net input scaled by a gain of its own,
``c \odot a`` (the adaptive gain of Nawi et al.: the activation then sees
``f(c_j a_j)``), parameters ``W``, ``b``, ``c`` in that order; ``x`` is the
outputs of the layer's sources concatenated along their last axis (Bishop
1992's general feed-forward topology for flat inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hessverify.model.layers.base import BOOLEAN, INTEGER, LayerKind, Option, Shape, positive

__all__ = ["KIND", "Dense"]

_LETTERS = "abcdefghjklm"


def _concat_last(b: Any, xs: Sequence[int], shapes: Sequence[Shape]) -> int:
    """The inputs side by side along their last axis (one node)."""
    if len(xs) == 1:
        return xs[0]
    lead = shapes[0][:-1]
    total = sum(s[-1] for s in shapes)
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    index = np.empty(lead + (total,), dtype=np.intp)
    col = 0
    for k, s in enumerate(shapes):
        part = offsets[k] + np.arange(int(np.prod(s))).reshape(s)
        index[..., col:col + s[-1]] = part
        col += s[-1]
    return b.gather(list(xs), index)


class Dense(LayerKind):
    name = "dense"
    options = (Option("units", INTEGER, check=positive, doc="the number of units"),
               Option("bias", BOOLEAN, True, doc="whether it has a bias"),
               Option("gain", BOOLEAN, False, doc="a gain c_j per unit, f(c_j a_j) (adaptive gain, Nawi et al.)"))
    sources = "concat"
    torch = "nn.Linear(in_features, units, bias)"
    summary = "a = x W^T + b on the last axis"

    def out_shape(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> Shape:
        lead = in_shapes[0][:-1]
        for s in in_shapes[1:]:
            if s[:-1] != lead:
                raise ValueError(f"its sources have shapes {list(in_shapes)}; side by side they must agree "
                                 "but for the last axis")
        return lead + (o["units"],)

    def tensors(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> list[tuple[str, Shape]]:
        fan_in = sum(s[-1] for s in in_shapes)
        out = [("W", (o["units"], fan_in))]
        if o["bias"]:
            out.append(("b", (o["units"],)))
        if o["gain"]:
            out.append(("c", (o["units"],)))
        return out

    def build(self, b: Any, o: dict[str, Any], xs: Sequence[int], ps: Sequence[int], in_shapes: Sequence[Shape],
              ids: Any = None) -> int:
        x = _concat_last(b, xs, in_shapes)
        lead = _LETTERS[: len(in_shapes[0]) - 1]
        a = b.einsum(f"n{lead}i,oi->n{lead}o", x, ps[0])
        if o["bias"]:
            a = b.add(a, ps[1])
        return b.mul(a, ps[-1]) if o["gain"] else a

    def xp(self, xp: Any, o: dict[str, Any], xs: Sequence[Any], ps: Sequence[Any]) -> Any:
        x = xs[0] if len(xs) == 1 else xp.concatenate(list(xs), axis=-1)
        a = xp.matmul(x, xp.transpose(ps[0]))
        if o["bias"]:
            a = a + ps[1]
        return a * ps[-1] if o["gain"] else a

    def describe(self, o: dict[str, Any]) -> str:
        return f"{o['units']}" + ("" if o["bias"] else ",nobias") + (",gain" if o["gain"] else "")


KIND = Dense()
