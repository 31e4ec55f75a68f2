"""``add``: the sum of two earlier outputs (``from = [i, j]``, 0 the input): a residual connection, ``x + f(x)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hessverify.model.layers.base import LayerKind, Shape

__all__ = ["KIND", "AddLayer"]


class AddLayer(LayerKind):
    name = "add"
    sources = "two"
    torch = "x_i + x_j"
    summary = "the sum of two outputs of one shape"

    def out_shape(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> Shape:
        if in_shapes[0] != in_shapes[1]:
            raise ValueError(f"adds outputs of shapes {list(in_shapes[0])} and {list(in_shapes[1])}; they must be equal")
        return in_shapes[0]

    def build(self, b: Any, o: dict[str, Any], xs: Sequence[int], ps: Sequence[int], in_shapes: Sequence[Shape],
              ids: Any = None) -> int:
        return b.add(xs[0], xs[1])

    def xp(self, xp: Any, o: dict[str, Any], xs: Sequence[Any], ps: Sequence[Any]) -> Any:
        return xs[0] + xs[1]

    def describe(self, o: dict[str, Any]) -> str:
        return ""


KIND = AddLayer()
