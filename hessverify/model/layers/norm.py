"""``layer_norm`` and ``batch_norm``: ``nn.LayerNorm`` and ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``.

.. math:: y = \\frac{x - \\mu}{\\sqrt{v + \\epsilon}}\\, w + b,\\qquad
          \\mu = \\operatorname{mean}(x),\\quad v = \\operatorname{mean}\\big((x - \\mu)^2\\big)

with the means over the last axis (LayerNorm), or per channel over the patterns
and positions (BatchNorm in ``train`` mode: batch statistics, the biased
variance, as PyTorch normalises in training; one pattern's output then depends
on every pattern, so ``E`` is no longer a sum of per-pattern terms).  In
``eval`` mode BatchNorm uses the given ``running_mean`` and ``running_var`` and
is an affine map of ``x``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hessverify.model.layers.base import BOOLEAN, NUMBER, NUMBERS, TEXT, LayerKind, Option, Shape

__all__ = ["KINDS", "BatchNorm", "LayerNorm"]


def _eps(v: float) -> str | None:
    return None if v > 0 else "must be positive"


def _normalise(b: Any, x: int, axes: tuple[int, ...], eps: float, over_patterns: bool = False,
               patterns: int = 1) -> int:
    """``(x - mean) / sqrt(var + eps)`` over ``axes`` (and the patterns): the primitives of both norms."""
    from hessverify.model.ops import rsqrt, square

    mu = b.mean(x, axes, over_patterns, patterns)
    xc = b.add(x, b.scale(mu, -1.0))
    v = b.mean(b.unary(xc, square(b.batched(xc))), axes, over_patterns, patterns)
    r = b.unary(v, rsqrt(eps, b.batched(v)))
    return b.mul(xc, r)


class LayerNorm(LayerKind):
    name = "layer_norm"
    options = (Option("affine", BOOLEAN, True, doc="elementwise_affine: a weight and a bias"),
               Option("eps", NUMBER, 1e-5, check=_eps))
    torch = "nn.LayerNorm(last dim, elementwise_affine=affine, eps=eps)"
    summary = "normalised over the last axis"

    def out_shape(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> Shape:
        return in_shapes[0]

    def tensors(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> list[tuple[str, Shape]]:
        d = in_shapes[0][-1]
        return [("W", (d,)), ("b", (d,))] if o["affine"] else []

    def build(self, b: Any, o: dict[str, Any], xs: Sequence[int], ps: Sequence[int], in_shapes: Sequence[Shape],
              ids: Any = None) -> int:
        last = len(in_shapes[0]) - 1
        y = _normalise(b, xs[0], (last,), o["eps"])
        if o["affine"]:
            y = b.add(b.mul(y, ps[0]), ps[1])
        return y

    def xp(self, xp: Any, o: dict[str, Any], xs: Sequence[Any], ps: Sequence[Any]) -> Any:
        x = xs[0]
        mu = xp.mean(x, axis=-1, keepdims=True)
        var = xp.mean((x - mu) ** 2, axis=-1, keepdims=True)
        y = (x - mu) / xp.sqrt(var + o["eps"])
        return y * ps[0] + ps[1] if o["affine"] else y

    def describe(self, o: dict[str, Any]) -> str:
        return ("" if o["affine"] else "noaffine") + ("" if o["eps"] == 1e-5 else f",eps={o['eps']:g}")


def _mode(v: str) -> str | None:
    return None if v in ("train", "eval") else "must be train or eval"


class BatchNorm(LayerKind):
    name = "batch_norm"
    options = (Option("affine", BOOLEAN, True), Option("eps", NUMBER, 1e-5, check=_eps),
               Option("mode", TEXT, "train", check=_mode, doc="train: batch statistics; eval: the running ones"),
               Option("running_mean", NUMBERS, None, doc="eval mode: per channel (default 0)"),
               Option("running_var", NUMBERS, None, doc="eval mode: per channel, positive (default 1)"))
    torch = "nn.BatchNorm1d / nn.BatchNorm2d(C, eps, affine=affine) by the input's rank, .train() or .eval()"
    summary = "normalised per channel"

    def out_shape(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        if not 1 <= len(shape) <= 3:
            raise ValueError(f"reads [C], [C, L] or [C, H, W], got {list(shape)}")
        C = shape[0]
        for key in ("running_mean", "running_var"):
            if o[key] is not None:
                if o["mode"] != "eval":
                    raise ValueError(f"{key}: given in train mode, where the batch statistics are used; "
                                     "set mode = \"eval\" or leave it out")
                if len(o[key]) != C:
                    raise ValueError(f"{key}: has {len(o[key])} entries for {C} channels")
        if o["running_var"] is not None and min(o["running_var"]) < 0:
            raise ValueError("running_var: a variance cannot be negative")
        return shape

    def couples_patterns(self, o: dict[str, Any]) -> bool:
        return o["mode"] == "train"

    def tensors(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> list[tuple[str, Shape]]:
        C = in_shapes[0][0]
        return [("W", (C,)), ("b", (C,))] if o["affine"] else []

    def _stats(self, o: dict[str, Any], C: int) -> tuple[np.ndarray, np.ndarray]:
        mean = np.zeros(C) if o["running_mean"] is None else np.array(o["running_mean"])
        var = np.ones(C) if o["running_var"] is None else np.array(o["running_var"])
        return mean, var

    def build(self, b: Any, o: dict[str, Any], xs: Sequence[int], ps: Sequence[int], in_shapes: Sequence[Shape],
              ids: Any = None) -> int:
        shape = in_shapes[0]
        C, d = shape[0], len(shape) - 1
        per_channel = (C,) + (1,) * d
        if o["mode"] == "train":
            y = _normalise(b, xs[0], tuple(range(1, len(shape))), o["eps"], True, b.patterns)
        else:
            mean, var = self._stats(o, C)
            y = b.add(xs[0], b.const(-mean.reshape(per_channel)))
            y = b.mul(y, b.const((1.0 / np.sqrt(var + o["eps"])).reshape(per_channel)))
        if o["affine"]:
            y = b.add(b.mul(y, b.reshape(ps[0], per_channel)), b.reshape(ps[1], per_channel))
        return y

    def xp(self, xp: Any, o: dict[str, Any], xs: Sequence[Any], ps: Sequence[Any]) -> Any:
        x = xs[0]
        C, d = x.shape[1], x.ndim - 2
        per_channel = (1, C) + (1,) * d
        if o["mode"] == "train":
            axes = (0,) + tuple(range(2, x.ndim))
            mu = xp.mean(x, axis=axes, keepdims=True)
            var = xp.mean((x - mu) ** 2, axis=axes, keepdims=True)
            y = (x - mu) / xp.sqrt(var + o["eps"])
        else:
            mean, var = self._stats(o, C)
            # xp's sqrt of xp's sum: exact in the symbolic reference, not the float64 root of a rounded sum
            y = (x - mean.reshape(per_channel)) / xp.sqrt(xp.asarray(var.reshape(per_channel)) + o["eps"])
        if o["affine"]:
            y = y * xp.reshape(ps[0], per_channel) + xp.reshape(ps[1], per_channel)
        return y

    def describe(self, o: dict[str, Any]) -> str:
        return o["mode"] + ("" if o["affine"] else ",noaffine")


KINDS = (LayerNorm(), BatchNorm())
