"""``embedding``: ``nn.Embedding(vocab, dim)``, the first layer only: each token id picks a row of the table.

``y[t] = W[ids[t]]``: linear in ``W`` (its second derivative is zero) and not
differentiable in the ids, which are data.  The input of an embedding network
is one pattern's token ids, ``input_shape = [T]``: whole numbers in ``0 .. vocab - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hessverify.model.layers.base import INTEGER, LayerKind, Option, Shape, positive

__all__ = ["KIND", "Embedding"]


class Embedding(LayerKind):
    name = "embedding"
    options = (Option("vocab", INTEGER, check=positive, doc="the number of token ids"),
               Option("dim", INTEGER, check=positive, doc="the size of each row"))
    first_only = True
    reads_ids = True
    torch = "nn.Embedding(vocab, dim)"
    summary = "a row of the table per token id"

    def out_shape(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> Shape:
        if len(in_shapes[0]) != 1:
            raise ValueError(f"reads token ids of shape [T], got {list(in_shapes[0])}")
        return (in_shapes[0][0], o["dim"])

    def tensors(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> list[tuple[str, Shape]]:
        return [("W", (o["vocab"], o["dim"]))]

    def check_ids(self, o: dict[str, Any], ids: np.ndarray) -> None:
        """``ValueError`` unless every id is a whole number in ``0 .. vocab - 1``."""
        bad = ~np.isfinite(ids) | (ids != np.round(ids)) | (ids < 0) | (ids >= o["vocab"])
        if bad.any():
            n, t = np.argwhere(bad)[0]
            raise ValueError(f"token id {float(ids[n, t]):g} (pattern {n}, position {t}) is not a whole number in "
                             f"0 .. {o['vocab'] - 1}")

    def build(self, b: Any, o: dict[str, Any], xs: Sequence[int], ps: Sequence[int], in_shapes: Sequence[Shape],
              ids: Any = None) -> int:
        tokens = np.asarray(ids).astype(np.intp)  # (N, T)
        flat = tokens[:, :, None] * o["dim"] + np.arange(o["dim"])[None, None, :]
        return b.rows(ps[0], flat)

    def xp(self, xp: Any, o: dict[str, Any], xs: Sequence[Any], ps: Sequence[Any]) -> Any:
        tokens = np.asarray(xs[0]).astype(np.intp)
        return ps[0][tokens]

    def describe(self, o: dict[str, Any]) -> str:
        return f"{o['vocab']}x{o['dim']}"


KIND = Embedding()
