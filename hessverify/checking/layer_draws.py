"""Random networks of every layer kind, for :func:`hessverify.strategies.problems`.

A network is drawn as a stack of layers chosen one at a time from the kinds
that fit the current shape (:data:`FITS`): a convolution or pooling where the
shape is ``[C, L]`` or ``[C, H, W]``, attention where it is ``[T, d]``, a norm
or a residual ``add`` of an earlier output of the same shape anywhere, dense on
the last axis; the input is ``[C, L]``, ``[C, H, W]``, ``[T, d]``, token ids
``[T]`` (an embedding first) or flat.  The stack ends with a ``flatten`` (if
needed) and a dense output layer.  Every choice lists the simpler option
first, so Hypothesis shrinks towards fewer and simpler layers: dense before
anything else, no activation before one, sizes of 1 or 2.

Sizes are kept small (a handful of channels, positions and units), so that a
Hessian stays well under a thousand parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from hessverify.model.layers import KINDS
from hessverify.model.network import Architecture, Layer

__all__ = ["FITS", "INPUT_FAMILIES", "layered_architectures"]

INPUT_FAMILIES = ("flat", "sequence", "conv1d", "conv2d", "tokens")
"""The inputs drawn: flat (dense nets with norms, adds, batch norm), ``[T, d]`` (attention), ``[C, L]``,
``[C, H, W]``, token ids ``[T]`` (an embedding first)."""

FITS: dict[int, tuple[str, ...]] = {
    1: ("dense", "layer_norm", "batch_norm", "add"),
    2: ("dense", "layer_norm", "add", "attention", "conv1d", "avg_pool1d", "batch_norm"),
    3: ("layer_norm", "add", "conv2d", "avg_pool2d", "batch_norm"),
}
"""The kinds drawn for a shape of each rank (``[T, d]`` and ``[C, L]`` are both rank 2)."""


def _activation(activations: Sequence[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(tuple(activations))


SIGNATURES = ("dense", "layer_norm", "add", "batch_norm", "avg_pool1d", "conv1d", "avg_pool2d", "conv2d", "attention",
              "embedding")
"""The kind each drawn network is built around, simplest first (shrinking moves towards the start), so that a
sweep meets every kind about as often."""

FAMILY = {"dense": "flat", "layer_norm": "flat", "add": "flat", "batch_norm": "flat", "avg_pool1d": "conv1d",
          "conv1d": "conv1d", "avg_pool2d": "conv2d", "conv2d": "conv2d", "attention": "sequence",
          "embedding": "tokens"}


@st.composite
def _layer(draw: st.DrawFn, shapes: list[tuple[int, ...]], index: int, family: str, activations: Sequence[str],
           max_size: int, force: str | None = None) -> Layer | None:
    """One layer reading the previous output (or an ``add`` of two), or ``None`` when nothing fits.
    ``force``: the kind to draw."""
    shape = shapes[-1]
    rank = len(shape)
    choices = [k for k in FITS[rank] if k in KINDS]
    if family == "sequence" and rank == 2:  # [T, d]: no convolution over the feature axis
        choices = [k for k in choices if k not in ("conv1d", "avg_pool1d", "batch_norm")]
    if family == "conv1d" and rank == 2:
        choices = [k for k in choices if k not in ("attention", "dense", "layer_norm")]
    kind = force if force is not None else draw(st.sampled_from(choices))
    act = draw(_activation(activations))
    if kind == "dense":
        return Layer(draw(st.integers(1, max_size)), act, draw(st.booleans()))
    if kind == "layer_norm":
        return Layer(kind="layer_norm", options={"affine": draw(st.booleans())}, activation=act)
    if kind == "batch_norm":
        mode = draw(st.sampled_from(("eval", "train")))
        opts: dict[str, Any] = {"affine": draw(st.booleans()), "mode": mode}
        if mode == "eval":
            C = shape[0]
            opts["running_mean"] = draw(st.lists(st.sampled_from((0.0, 0.5, -1.0)), min_size=C, max_size=C))
            opts["running_var"] = draw(st.lists(st.sampled_from((1.0, 0.5, 2.0)), min_size=C, max_size=C))
        return Layer(kind="batch_norm", options=opts, activation=act)
    if kind == "add":
        same = [j for j in range(index) if shapes[j] == shape and j != index - 1]
        if not same:
            return None
        return Layer(kind="add", sources=(draw(st.sampled_from(same[::-1])), index - 1), activation=act)
    if kind == "attention":
        d = shape[1]
        heads = draw(st.sampled_from([h for h in range(1, d + 1) if d % h == 0]))
        return Layer(kind="attention", options={"heads": heads, "bias": draw(st.booleans())}, activation=act)
    if kind in ("conv1d", "conv2d"):
        dims = 1 if kind == "conv1d" else 2
        spatial = shape[1:]
        kernel = [draw(st.integers(1, min(3, s))) for s in spatial]
        padding = [draw(st.integers(0, min(1, (k - 1)))) for k in kernel]
        stride = [draw(st.integers(1, 2)) for _ in spatial]
        groups = draw(st.sampled_from([g for g in (1, 2) if shape[0] % g == 0]))
        channels = groups * draw(st.integers(1, max(1, max_size // groups)))
        return Layer(kind=kind, options={"channels": channels, "kernel": kernel if dims == 2 else kernel[0],
                                         "stride": stride if dims == 2 else stride[0],
                                         "padding": padding if dims == 2 else padding[0], "groups": groups,
                                         "bias": draw(st.booleans())}, activation=act)
    if kind in ("avg_pool1d", "avg_pool2d"):
        spatial = shape[1:]
        if min(spatial) < 2:
            return None
        kernel = [draw(st.integers(1, min(2, s))) for s in spatial]
        return Layer(kind=kind, options={"kernel": kernel if len(kernel) == 2 else kernel[0]})
    return None  # pragma: no cover


@st.composite
def layered_architectures(draw: st.DrawFn, *, max_layers: int = 3, max_size: int = 3,
                          activations: Sequence[str] = ("identity", "tanh"),
                          output_activations: Sequence[str] = ("identity", "tanh"),
                          min_layers: int = 1) -> Architecture:
    """A network of layer kinds (module text): up to ``max_layers`` layers before the output layer.

    ``min_layers``: at least that many layers in all (``Architecture.depth``: an
    embedding, a flatten and the output layer count), as for the dense
    :func:`hessverify.checking.strategies.architectures`; a network drawn
    shorter gets dense layers (the simplest kind) before its output layer.
    """
    signature = draw(st.sampled_from(SIGNATURES))
    family = FAMILY[signature]
    small = st.integers(1, max_size)
    layers: list[Layer] = []
    if family == "flat":
        shape: tuple[int, ...] = (draw(small),)
    elif family == "sequence":
        shape = (draw(st.integers(2, max_size)), draw(st.integers(1, max_size)))
    elif family == "conv1d":
        shape = (draw(st.integers(1, 2)), draw(st.integers(2, 2 * max_size)))
    elif family == "conv2d":
        shape = (draw(st.integers(1, 2)), draw(st.integers(2, max_size + 1)), draw(st.integers(2, max_size + 1)))
    else:
        T, vocab, dim = draw(st.integers(1, max_size)), draw(st.integers(2, 5)), draw(st.integers(1, max_size))
        shape = (T,)
        layers.append(Layer(kind="embedding", options={"vocab": vocab, "dim": dim}))
    shapes = [shape] + ([(shape[0], layers[0].opts["dim"])] if layers else [])
    if signature == "add":  # a layer of the input's shape, then the residual sum
        layers.append(Layer(shape[0], draw(_activation(activations)), draw(st.booleans())))
        shapes.append(shape)
    forced = [] if signature in ("dense", "embedding") else [signature]
    if signature == "avg_pool2d" and min(shape[1:]) < 2:
        forced = []
    for step in range(len(forced) + draw(st.integers(0, max_layers - len(forced)))):
        layer = draw(_layer(shapes, len(layers) + 1, family, activations, max_size, forced[step] if step < len(forced)
                            else None))
        if layer is None:
            continue
        candidate = layers + [layer]
        try:
            trial = Architecture(int(np.prod(shape)), tuple(candidate), shape)
        except ValueError:
            continue  # a kernel or window that does not fit after an earlier stride: leave it out
        layers = candidate
        shapes = list(trial.shapes)
    if len(shapes[-1]) > 1:
        layers.append(Layer(kind="flatten"))
    while len(layers) + 1 < min_layers:  # flat by now: dense layers fit
        layers.append(Layer(draw(st.integers(1, max_size)), draw(_activation(activations)), draw(st.booleans())))
    layers.append(Layer(draw(st.integers(1, max_size)), draw(_activation(output_activations)), draw(st.booleans())))
    return Architecture(int(np.prod(shape)), tuple(layers), shape)
