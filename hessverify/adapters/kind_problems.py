"""Hypothesis problems whose networks have the other layer kinds, for the conformance rows.

A stop-gap until :func:`hessverify.checking.strategies.problems` draws layer kinds by default (issue 22,
item 3): the conformance rows that run on kinds draw from :func:`kind_problems` here, and nothing else does,
so switching them to the default strategies is changing :func:`hessverify.adapters.conformance._strategy`.

Each problem is one of :data:`FAMILIES`, a small network built around one kind, as people write them:

* ``conv1d``: ``[C, L]`` -> conv1d (kernel, stride, padding, groups, bias, activation) -> [avg_pool1d]
  -> flatten -> dense;
* ``conv2d``: ``[C, H, W]`` -> conv2d -> [avg_pool2d] -> flatten -> dense;
* ``layer_norm``: dense -> layer_norm (affine or not) -> dense; or ``[T, d]`` -> layer_norm -> flatten -> dense;
* ``batch_norm``: dense -> batch_norm (train, or eval with running statistics) -> dense, or after a conv1d;
* ``add``: a residual block, dense ``d -> d`` -> add(0, 1) -> dense;
* ``attention``: ``[T, d]`` -> attention (heads dividing d) -> [add(0, 1)] -> flatten -> dense (no LayerNorm:
  each family holds one kind whose faults it shows, so a fault of one kind does not hide another's);
* ``embedding``: ``[T]`` token ids -> embedding -> [attention] -> flatten -> dense.

Every choice shrinks towards the smaller network: the first family listed among those allowed, optional
layers absent, sizes at their minimum, values towards 0.  Parameters, inputs and ``sse`` targets lie in
``[-2, 2]`` (the default strategies' ranges), each non-zero value at least about 1e-6 in magnitude; problems
with an activation input within :data:`hessverify.checking.strategies.KINK_MARGIN` of a kink, or whose
Hessian does not exist or overflows, are rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from hessverify.checking.strategies import INPUT_MAGNITUDE, KINK_MARGIN, PARAM_MAGNITUDE, _finish_targets, _floats
from hessverify.errors import HessverifyError
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.losses import LOSSES, REDUCTIONS
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.model.well_posed import ensure_well_posed, kinked_values

__all__ = ["FAMILIES", "kind_problems", "kinds_of"]

FAMILIES: tuple[str, ...] = ("conv1d", "conv2d", "layer_norm", "batch_norm", "add", "attention", "embedding")
"""The networks drawn, each named by the kind it is built around (module text)."""

_KINDS: dict[str, frozenset[str]] = {  # every kind a family's networks may hold
    "conv1d": frozenset({"conv1d", "avg_pool1d", "flatten", "dense"}),
    "conv2d": frozenset({"conv2d", "avg_pool2d", "flatten", "dense"}),
    "layer_norm": frozenset({"layer_norm", "dense", "flatten"}),
    "batch_norm": frozenset({"batch_norm", "dense", "conv1d", "flatten"}),
    "add": frozenset({"add", "dense"}),
    "attention": frozenset({"attention", "add", "flatten", "dense"}),
    "embedding": frozenset({"embedding", "attention", "flatten", "dense"}),
}


def kinds_of(problem: Problem) -> tuple[str, ...]:
    """The layer kinds of a problem's network other than dense and flatten, in order of first appearance."""
    return tuple(dict.fromkeys(l.kind for l in problem.architecture.layers if l.kind not in ("dense", "flatten")))


def _layer(kind: str, activation: str = "identity", **options: Any) -> Layer:
    sources = options.pop("sources", None)
    if kind == "dense":
        return Layer(options["units"], activation, options.get("bias", True), sources)
    bias = options.pop("bias", True)
    return Layer(None, activation, bias, sources, kind, tuple(options.items()))


@st.composite
def _conv_net(draw: st.DrawFn, dims: int, act: st.SearchStrategy[str], out: st.SearchStrategy[str],
              norm: bool = False) -> tuple[tuple[int, ...], list[Layer]]:
    C = draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(2, 5 if dims == 1 else 3)) for _ in range(dims))
    kernel = tuple(draw(st.integers(1, min(3, n))) for n in spatial)
    stride = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, 1)) for _ in range(dims))
    groups = draw(st.sampled_from([1, C]))
    channels = groups * draw(st.integers(1, 2))
    layers = [_layer(f"conv{dims}d", draw(act), channels=channels, kernel=list(kernel), stride=list(stride),
                     padding=list(padding), groups=groups, bias=draw(st.booleans()))]
    outs = [(n + 2 * p - k) // s + 1 for n, k, s, p in zip(spatial, kernel, stride, padding)]
    if norm:
        layers.append(_batch_norm(draw, channels))
    elif draw(st.booleans()) and min(outs) >= 2:
        layers.append(_layer(f"avg_pool{dims}d", kernel=[2] * dims if draw(st.booleans()) else [1] * dims))
    layers += [_layer("flatten"), _dense_out(draw, out)]
    return (C,) + spatial, layers


def _dense_out(draw: st.DrawFn, out: st.SearchStrategy[str]) -> Layer:
    return _layer("dense", draw(out), units=draw(st.integers(1, 2)), bias=draw(st.booleans()))


def _eps(draw: st.DrawFn) -> float:
    return draw(st.sampled_from([1e-5, 0.25]))  # PyTorch's default, and one where eps matters


def _batch_norm(draw: st.DrawFn, channels: int) -> Layer:
    mode = draw(st.sampled_from(["train", "eval"]))
    options: dict[str, Any] = {"affine": draw(st.booleans()), "mode": mode, "eps": _eps(draw)}
    if mode == "eval" and draw(st.booleans()):  # running statistics given (else PyTorch's 0 and 1)
        options["running_mean"] = [draw(_floats(1.0)) for _ in range(channels)]
        options["running_var"] = [draw(st.floats(0.25, 2.0)) for _ in range(channels)]
    return _layer("batch_norm", **options)


@st.composite
def _network(draw: st.DrawFn, family: str, act: st.SearchStrategy[str],
             out: st.SearchStrategy[str]) -> tuple[tuple[int, ...], list[Layer]]:
    if family in ("conv1d", "conv2d"):
        return draw(_conv_net(int(family[4]), act, out))
    if family == "layer_norm":
        d = draw(st.integers(1, 3))
        if draw(st.booleans()):  # over the last axis of [T, d]
            shape: tuple[int, ...] = (draw(st.integers(1, 3)), d)
            layers = [_layer("layer_norm", affine=draw(st.booleans()), eps=_eps(draw)), _layer("flatten")]
        else:
            shape = (draw(st.integers(1, 3)),)
            layers = [_layer("dense", draw(act), units=d, bias=draw(st.booleans())),
                      _layer("layer_norm", affine=draw(st.booleans()), eps=_eps(draw))]
        return shape, layers + [_dense_out(draw, out)]
    if family == "batch_norm":
        if draw(st.booleans()):  # after a convolution: per channel over the patterns and positions
            return draw(_conv_net(1, act, out, norm=True))
        n_in, d = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        return (n_in,), [_layer("dense", draw(act), units=d, bias=draw(st.booleans())), _batch_norm(draw, d),
                         _dense_out(draw, out)]
    if family == "add":
        d = draw(st.integers(1, 3))
        return (d,), [_layer("dense", draw(act), units=d, bias=draw(st.booleans())), _layer("add", sources=(0, 1)),
                      _dense_out(draw, out)]
    if family == "attention":
        T, heads = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        d = heads * draw(st.integers(1, 2))
        layers = [_layer("attention", heads=heads, bias=draw(st.booleans()))]
        if draw(st.booleans()):
            layers.append(_layer("add", sources=(0, 1)))
        return (T, d), layers + [_layer("flatten"), _dense_out(draw, out)]
    # embedding
    T, vocab, dim = draw(st.integers(1, 3)), draw(st.integers(2, 4)), draw(st.integers(1, 2))
    layers = [_layer("embedding", vocab=vocab, dim=dim)]
    if draw(st.booleans()):
        layers.append(_layer("attention", heads=1, bias=draw(st.booleans())))
    return (T,), layers + [_layer("flatten"), _dense_out(draw, out)]


def _near_kink(problem: Problem) -> bool:
    return any(np.any(np.abs(v) < KINK_MARGIN) for v in kinked_values(problem))


def kind_problems(
    *,
    families: Sequence[str] | None = None,
    activations: Sequence[str] | None = None,
    output_activations: Sequence[str] | None = None,
    losses: Sequence[str] | None = None,
    reductions: Sequence[str] | None = None,
    min_patterns: int = 1,
    max_patterns: int = 3,
) -> st.SearchStrategy[Problem]:
    """Whole problems on the networks of :data:`FAMILIES` (module text).

    ``families`` restricts the networks drawn (default: all, in the order listed); ``activations``,
    ``output_activations``, ``losses``, ``reductions`` and the pattern counts are as in
    :func:`hessverify.checking.strategies.problems`.  Each problem's id is ``generated-<family>`` and its
    description names the architecture, so ``problem.to_toml()`` is a valid case file.
    """
    chosen = tuple(FAMILIES) if families is None else tuple(families)
    for f in chosen:
        if f not in FAMILIES:
            raise InvalidArgument(f"families: unknown {f!r}; choose from {', '.join(FAMILIES)}")
    if not chosen:
        raise InvalidArgument(f"families must name at least one of {', '.join(FAMILIES)}")
    hidden = tuple(ACTIVATIONS) if activations is None else tuple(activations)
    output = hidden if output_activations is None else tuple(output_activations)
    loss_names = tuple(LOSSES) if losses is None else tuple(losses)
    reduction_names = REDUCTIONS if reductions is None else tuple(reductions)

    @st.composite
    def draw_problem(draw: st.DrawFn) -> Problem:
        family = draw(st.sampled_from(chosen))
        shape, layers = draw(_network(family, st.sampled_from(hidden), st.sampled_from(output)))
        arch = Architecture(int(np.prod(shape)), tuple(layers), shape)
        loss = draw(st.sampled_from(loss_names))
        reduction = draw(st.sampled_from(reduction_names))
        # PyTorch refuses BatchNorm in train mode on one value per channel ("Expected more than 1 value per
        # channel when training"), where hessverify's batch statistics are a variance of 0: not drawn
        single = any(l.kind == "batch_norm" and l.opts["mode"] == "train" and
                     int(np.prod(arch.shapes[i][1:])) == 1 for i, l in enumerate(arch.layers))
        n = draw(st.integers(max(min_patterns, 2) if single else min_patterns, max(max_patterns, 2)))
        params = np.array(draw(st.lists(_floats(PARAM_MAGNITUDE), min_size=arch.n_params, max_size=arch.n_params)),
                          dtype=np.float64)
        if arch.layers[0].kind_def.reads_ids:
            vocab = arch.layers[0].opts["vocab"]
            x = np.array(draw(st.lists(st.lists(st.integers(0, vocab - 1), min_size=arch.inputs,
                                                max_size=arch.inputs), min_size=n, max_size=n)), dtype=np.float64)
        else:
            x = np.array(draw(st.lists(st.lists(_floats(INPUT_MAGNITUDE), min_size=arch.inputs, max_size=arch.inputs),
                                       min_size=n, max_size=n)), dtype=np.float64)
        k = arch.outputs
        if LOSSES[loss].targets == "ignored":
            t = np.zeros((n, k))
        else:
            low, high = (0.0, 1.0) if LOSSES[loss].targets in ("unit", "distribution") else (-INPUT_MAGNITUDE,
                                                                                              INPUT_MAGNITUDE)
            t = np.array([_finish_targets(loss, draw(st.lists(_floats(high, low=low if low == 0.0 else None),
                                                              min_size=k, max_size=k))) for _ in range(n)])
        problem = Problem(arch, loss, params, x, t, reduction, f"generated-{family.replace('_', '-')}",
                          f"drawn by hessverify.adapters.kind_problems: {arch.describe()}, {loss}, {reduction}")
        try:
            ensure_well_posed(problem)
        except HessverifyError:
            assume(False)
        assume(not _near_kink(problem))
        return problem

    return draw_problem()
