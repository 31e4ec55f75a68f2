"""Hypothesis strategies for random, well-posed Hessian problems.

Four public strategies:

* :func:`architectures` draws an :class:`~hessverify.model.network.Architecture`;
* :func:`parameters` draws a flat parameter vector for a given architecture;
* :func:`datasets` draws ``(inputs, targets)`` for a given architecture and loss;
* :func:`problems` draws a whole :class:`~hessverify.model.problem.Problem`, with
  the bounds of the other three, in a layout that shrinks well (below).

Every bound is keyword-only and checked when the strategy is *built*, so a
bad bound raises :class:`hypothesis.errors.InvalidArgument` (a
error naming the argument) at the call, not deep inside
a test run.

Graphs.  By default every layer may read, besides the previous layer, any
earlier layer or the inputs (skip connections, the case schema's ``from``),
in any order; ``graphs=False`` draws chains only.  Each possible skip edge is
a boolean that shrinks to "absent", the previous layer's edge one that
shrinks to "present", and the order of the sources a list of sort keys that
shrinks to "ascending", so a failure that needs a skip connection shrinks to
the fewest edges and layers that still show it.

Shrinking.  Hypothesis shrinks integers towards their lower bound, choices
towards the first one listed and floats towards ``0.0`` and simple
numbers, so a failure shrinks towards one layer, one unit, one input, one
pattern, the first activation (``identity`` by default), the first loss
(``sse``), ``sum`` reduction and layers without bias (fewer parameters).

Ranges.  Parameters lie in ``[-max_magnitude, max_magnitude]`` (default
:data:`PARAM_MAGNITUDE` = 2), inputs in ``[-max_input, max_input]`` (default
:data:`INPUT_MAGNITUDE` = 2), ``sse`` targets in the same range, probability
targets (``cross_entropy``: a row summing to 1; ``binary_cross_entropy``:
each in ``[0, 1]``) and zeros for ``output``.  Every non-zero value is at
least :data:`MIN_MAGNITUDE` (about 1e-6) in magnitude.  In these ranges every
intermediate value stays finite and far from overflow, and the derived
rounding bounds (:mod:`hessverify.engine.bounds`) and finite-difference error
estimates are meaningful.  Subnormal floats are never drawn.  A saturated
output layer (below) is the exception: its parameters are scaled past
these ranges, up to :data:`SATURATION_MAX_PARAM`.

Saturation.  A share of the problems (about three in ten, shrinking to
none) has a saturated output (:func:`saturate`): the output layer's weights
and bias are scaled so that its largest net input (for cross-entropy, the
widest spread of a pattern's logits) is between 16 and 48
(:data:`SATURATION_LEVELS`), where a logistic or softmax output is within
1e-7 of 0 or 1 and a tanh, softplus, gelu or silu output is flat, or
rounds to its limit exactly past 36.7.  That is where real Hessian code
clips, underflows or divides by ``y (1 - y)``, and where a draw of the
ranges above rarely goes.  ``saturation=False`` leaves it out.

Kinks.  A problem whose relu net input lies within :data:`KINK_MARGIN` of
the kink is rejected (``hypothesis.assume``), so the Hessian always exists
and the finite-difference steps (about ``6e-6`` relative) never straddle the
kink: a kink is never reported as a discrepancy.

Examples
--------
>>> from hypothesis import Phase, find, settings
>>> shrink = settings(phases=[Phase.generate, Phase.shrink], database=None)  # no explain phase
>>> smallest = find(problems(), lambda p: True, settings=shrink)
>>> smallest.architecture.describe(), smallest.loss, smallest.n_patterns
('1-1(identity,nobias)', 'sse', 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from hessverify.base.typing import FloatArray
from hessverify.checking.layer_draws import layered_architectures
from hessverify.errors import HessverifyError
from hessverify.io.cases import MAX_PARAMS
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.losses import LOSSES, REDUCTIONS, valid_targets
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.model.well_posed import ensure_well_posed
from hessverify.model.well_posed import near_kink as _near_kink

__all__ = [
    "INPUT_MAGNITUDE",
    "KINK_MARGIN",
    "LAYER_KINDS",
    "MAX_MAGNITUDE",
    "MIN_MAGNITUDE",
    "PARAM_MAGNITUDE",
    "SATURATING_OUTPUTS",
    "SATURATING_SCALE",
    "SATURATION_LEVELS",
    "SATURATION_MAX_PARAM",
    "SPECIAL_VALUES",
    "InvalidArgument",
    "architectures",
    "datasets",
    "near_kink",
    "parameters",
    "problems",
    "saturate",
    "special_problems",
]

PARAM_MAGNITUDE = 2.0
"""Default bound on ``|theta_i|``: large enough to saturate sigmoid and tanh
units, small enough that nothing overflows."""

INPUT_MAGNITUDE = 2.0
"""Default bound on ``|x|`` and on ``sse`` targets."""

MAX_MAGNITUDE = 10.0
"""Largest ``max_magnitude`` / ``max_input`` accepted: beyond it three layers
of fan-in 8 can reach net inputs of 10^4, where the finite-difference
reference's truncation error is no longer small next to the entries."""

MIN_MAGNITUDE = 2.0**-20
"""Smallest non-zero ``|value|`` drawn (about 9.5e-7); smaller draws become 0.

Found by the ``thorough`` profile: with parameters of 1e-171 and a target of
5e-256 the gradient underflows to zero, so the finite-difference reference
returns 0 for a Hessian entry of -5.4e-256, far outside any rounding bound.
A product of the ten or so factors in a Hessian entry of values at least
2^-20 stays far above the underflow threshold (2.2e-308)."""

KINK_MARGIN = 1e-2
"""Smallest ``|a|`` allowed for a relu net input (see the module text)."""

SATURATION_LEVELS = (16.0, 48.0)
"""The range of a saturated output layer's largest net input (:func:`saturate`).  At 16 a logistic output is
within 1.1e-7 of 0 or 1 (``sigma(16) = 1 - 1.1e-7``), past 36.7 it rounds to exactly 1 in float64; a tanh
output is within 1e-13 of +-1 at 16; softmax probabilities whose logits spread by 16 are within 1.1e-7."""

SATURATION_MAX_PARAM = 100.0
"""Largest ``|theta|`` a saturated output layer may get: where the net inputs are too small to reach
:data:`SATURATION_LEVELS` within it (all but vanishing), the problem is left unsaturated."""

SATURATING_OUTPUTS = ("sigmoid", "tanh", "softplus", "gelu", "silu")
"""Output activations with flat tails: large net inputs saturate them whatever the loss."""


# -- validation (at build time) -------------------------------------------------

def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise InvalidArgument(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_range(what: str, lo: Any, hi: Any, minimum: int) -> tuple[int, int]:
    lo = _check_int(f"min_{what}", lo, minimum)
    hi = _check_int(f"max_{what}", hi, minimum)
    if lo > hi:
        raise InvalidArgument(f"min_{what} = {lo} is greater than max_{what} = {hi}")
    return lo, hi


def _check_magnitude(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, got {value!r}")
    if not 0 < value <= MAX_MAGNITUDE:
        raise InvalidArgument(f"{name} must be in (0, {MAX_MAGNITUDE:g}] so that float64 comparisons "
                              f"stay meaningful, got {value!r}")
    return float(value)


def _check_choices(name: str, values: Sequence[str] | None, table: Sequence[str]) -> tuple[str, ...]:
    if values is None:
        return tuple(table)
    if isinstance(values, str):
        raise InvalidArgument(f"{name} must be a sequence of names, not the string {values!r}; "
                              f"write {name}=[{values!r}]")
    values = tuple(values)
    if not values:
        raise InvalidArgument(f"{name} must name at least one of: {', '.join(table)}")
    for v in values:
        if v not in table:
            raise InvalidArgument(f"{name}: unknown name {v!r}; choose from {', '.join(table)}")
    return values


def _snap(v: float) -> float:
    return 0.0 if abs(v) < MIN_MAGNITUDE else v


def _floats(magnitude: float, *, low: float | None = None) -> st.SearchStrategy[float]:
    lo = -magnitude if low is None else low
    return st.floats(lo, magnitude, allow_nan=False, allow_infinity=False, allow_subnormal=False).map(_snap)


# -- architectures ---------------------------------------------------------------

def architectures(
    *,
    min_layers: int = 1,
    max_layers: int = 3,
    min_units: int = 1,
    max_units: int = 4,
    min_inputs: int = 1,
    max_inputs: int = 3,
    activations: Sequence[str] | None = None,
    output_activations: Sequence[str] | None = None,
    bias: bool | None = None,
    graphs: bool = True,
) -> st.SearchStrategy[Architecture]:
    """Fully connected architectures: feed-forward graphs (skip connections), or chains with ``graphs=False``.

    Parameters
    ----------
    min_layers, max_layers:
        Number of layers (hidden plus output), at least 1.
    min_units, max_units:
        Units of every layer, the output layer included.
    min_inputs, max_inputs:
        Width of the input.
    activations:
        Names allowed for hidden layers (default: every row of
        :data:`~hessverify.model.activations.ACTIVATIONS`, ``identity``
        first).  Shrinking prefers the earlier names.
    output_activations:
        Names allowed for the last layer (default: ``activations``).
    bias:
        ``True`` or ``False`` for every layer, or ``None`` to draw it per
        layer (shrinking towards no bias).
    graphs:
        ``True`` (default): a layer may also read any earlier layer or the
        inputs, in any order (shrinking towards the chain);
        ``False``: every layer reads the previous one only.

    Raises
    ------
    hypothesis.errors.InvalidArgument
        At once, for a bound that is not a whole number, is below 1, or
        exceeds its partner, or for an unknown activation name.

    Examples
    --------
    >>> from hypothesis import Phase, find, settings
    >>> shrink = settings(phases=[Phase.generate, Phase.shrink], database=None)
    >>> find(architectures(min_layers=2, activations=["tanh"]), lambda a: True, settings=shrink).describe()
    '1-1(tanh,nobias)-1(tanh,nobias)'
    """
    min_layers, max_layers = _check_range("layers", min_layers, max_layers, 1)
    min_units, max_units = _check_range("units", min_units, max_units, 1)
    min_inputs, max_inputs = _check_range("inputs", min_inputs, max_inputs, 1)
    hidden = _check_choices("activations", activations, tuple(ACTIVATIONS))
    output = hidden if output_activations is None else _check_choices(
        "output_activations", output_activations, tuple(ACTIVATIONS))
    if bias is not None and not isinstance(bias, bool):
        raise InvalidArgument(f"bias must be True, False or None (draw it), got {bias!r}")
    if not isinstance(graphs, bool):
        raise InvalidArgument(f"graphs must be True (draw feed-forward graphs) or False (chains), got {graphs!r}")
    largest = max_inputs * max_units + max_units + (max_layers - 1) * (max_units * max_units + max_units)
    if graphs:  # layer l may read the inputs and every layer before it
        largest = sum(max_units * (max_inputs + (l - 1) * max_units) + max_units for l in range(1, max_layers + 1))
    if largest > MAX_PARAMS:
        raise InvalidArgument(f"the largest network allowed has {largest} parameters, more than the "
                              f"{MAX_PARAMS} a case may have; lower max_units or max_layers")

    @st.composite
    def draw_architecture(draw: st.DrawFn) -> Architecture:
        n_in = draw(st.integers(min_inputs, max_inputs))
        depth = draw(st.integers(min_layers, max_layers))
        layers = []
        for index in range(depth):
            units = draw(st.integers(min_units, max_units))
            act = draw(st.sampled_from(output if index == depth - 1 else hidden))
            # booleans() shrinks to False: a layer without bias has fewer parameters
            has_bias = draw(st.booleans()) if bias is None else bias
            sources = draw(_sources(index + 1, max_layers)) if graphs else None
            layers.append(Layer(units, act, has_bias, sources))
        return Architecture(n_in, tuple(layers))

    return draw_architecture()


def _edges(max_layers: int) -> st.SearchStrategy[tuple[bool, list[bool], list[int]]]:
    """A layer's edges as drawn, before its index is known: drop the previous layer's edge (shrinks to
    False: keep it), an edge from each earlier place (shrinks to False: no skip), and sort keys of
    the sources (shrink to 0: ascending order)."""
    return st.tuples(st.booleans(), st.lists(st.booleans(), min_size=max_layers, max_size=max_layers),
                     st.lists(st.integers(0, max_layers), min_size=max_layers, max_size=max_layers))


def _layer_sources(layer: int, edges: tuple[bool, list[bool], list[int]]) -> tuple[int, ...]:
    """The ``from`` list of ``layer`` (1-based) from its drawn edges; at least one source."""
    drop_previous, skips, keys = edges
    sources = [j for j in range(layer - 1) if skips[j]]
    if not drop_previous or not sources:
        sources.append(layer - 1)
    return tuple(sorted(sources, key=lambda j: (keys[j], j)))


def _sources(layer: int, max_layers: int) -> st.SearchStrategy[tuple[int, ...]]:
    return _edges(max_layers).map(lambda edges: _layer_sources(layer, edges))


# -- parameters and data ---------------------------------------------------------

def parameters(architecture: Architecture, *, max_magnitude: float = PARAM_MAGNITUDE) -> st.SearchStrategy[FloatArray]:
    """Flat float64 parameter vectors in the public order, each entry in ``[-max_magnitude, max_magnitude]``.

    Examples
    --------
    >>> from hypothesis import Phase, find, settings
    >>> shrink = settings(phases=[Phase.generate, Phase.shrink], database=None)
    >>> arch = Architecture(2, (Layer(1, "tanh"),))
    >>> find(parameters(arch), lambda p: True, settings=shrink).tolist()
    [0.0, 0.0, 0.0]
    """
    if not isinstance(architecture, Architecture):
        raise InvalidArgument(f"architecture must be an Architecture, got {type(architecture).__name__}")
    magnitude = _check_magnitude("max_magnitude", max_magnitude)
    n = architecture.n_params
    return st.lists(_floats(magnitude), min_size=n, max_size=n).map(lambda v: np.array(v, dtype=np.float64))


def _finish_targets(loss: str, row: Sequence[float]) -> list[float]:
    """Make a drawn row a valid target for ``loss`` (:func:`hessverify.model.losses.valid_targets`)."""
    # all-zero weights (the shrinker's favourite) become the uniform distribution
    return [float(v) for v in valid_targets(loss, np.array([row], dtype=np.float64))[0]]


def _targets(loss: str, k: int, max_target: float, *, normalise: bool = True) -> st.SearchStrategy[list[float]]:
    """One target row for ``loss``, in the loss's natural range (the ``targets`` column of the loss table)."""
    kind = LOSSES[loss].targets
    if kind == "ignored":
        return st.just([0.0] * k)
    if kind in ("unit", "distribution"):
        row = st.lists(_floats(1.0, low=0.0), min_size=k, max_size=k)
        return row.map(lambda r: _finish_targets(loss, r)) if normalise else row
    return st.lists(_floats(max_target), min_size=k, max_size=k)


def datasets(
    architecture: Architecture,
    *,
    loss: str = "sse",
    min_patterns: int = 1,
    max_patterns: int = 4,
    max_input: float = INPUT_MAGNITUDE,
) -> st.SearchStrategy[tuple[FloatArray, FloatArray]]:
    """``(inputs, targets)`` arrays of shapes ``(N, inputs)`` and ``(N, outputs)``.

    Inputs lie in ``[-max_input, max_input]``; targets suit ``loss``:
    ``sse`` in ``[-max_input, max_input]``, ``cross_entropy`` a probability
    row, ``binary_cross_entropy`` in ``[0, 1]``, ``output`` zeros.

    Examples
    --------
    >>> from hypothesis import Phase, find, settings
    >>> shrink = settings(phases=[Phase.generate, Phase.shrink], database=None)
    >>> x, t = find(datasets(Architecture(2, (Layer(1, "identity"),))), lambda d: True, settings=shrink)
    >>> x.shape, t.shape
    ((1, 2), (1, 1))
    """
    if not isinstance(architecture, Architecture):
        raise InvalidArgument(f"architecture must be an Architecture, got {type(architecture).__name__}")
    if loss not in LOSSES:
        raise InvalidArgument(f"loss: unknown name {loss!r}; choose from {', '.join(LOSSES)}")
    min_patterns, max_patterns = _check_range("patterns", min_patterns, max_patterns, 1)
    magnitude = _check_magnitude("max_input", max_input)
    n_in, k = architecture.inputs, architecture.outputs

    @st.composite
    def draw_data(draw: st.DrawFn) -> tuple[FloatArray, FloatArray]:
        n = draw(st.integers(min_patterns, max_patterns))
        rows = [draw(st.lists(_floats(magnitude), min_size=n_in, max_size=n_in)) for _ in range(n)]
        targets = [draw(_targets(loss, k, magnitude)) for _ in range(n)]
        return np.array(rows, dtype=np.float64), np.array(targets, dtype=np.float64)

    return draw_data()


# -- whole problems --------------------------------------------------------------

def near_kink(problem: Problem, margin: float = KINK_MARGIN) -> bool:
    """Whether some relu net input of ``problem`` lies within ``margin`` of its kink."""
    return _near_kink(problem, margin)


def _case_id(arch: Architecture) -> str:
    sizes = [arch.inputs] + [layer.units for layer in arch.layers]
    return "generated-" + "-".join(map(str, sizes))


def _well_posed(problem: Problem) -> Problem:
    """``problem``, or Hypothesis rejects the draw where its Hessian does not exist or is not finite."""
    try:
        ensure_well_posed(problem)
    except HessverifyError:
        assume(False)
    return problem


def saturate(problem: Problem, level: float) -> Problem:
    """``problem`` with a saturated output: its output layer's ``W`` and ``b`` scaled by one factor.

    The factor makes the output layer's largest net input ``|a_L|`` equal to
    ``level`` (for ``cross_entropy`` with several outputs: the widest spread
    ``max_k a - min_k a`` of a pattern's logits, what saturates a softmax).
    Only the output layer changes, and linearly, so every other layer's
    values are the problem's own, and the factor is above 1 (values only
    grow: none falls under :data:`MIN_MAGNITUDE`).  Returned unchanged where
    nothing can saturate (an identity, relu or sin output under ``sse`` or
    ``output``), where the net inputs are all zero or beyond ``level``
    already, or where the factor would take a parameter past
    :data:`SATURATION_MAX_PARAM`.

    Examples
    --------
    >>> import numpy as np
    >>> arch = Architecture(1, (Layer(1, "sigmoid"),))
    >>> p = Problem(arch, "sse", np.array([0.5, 0.25]), np.array([[2.0]]), np.array([[1.0]]))
    >>> saturate(p, 20.0).params.tolist()  # a = 0.5 * 2 + 0.25 = 1.25, scaled by 16
    [8.0, 4.0]
    """
    from hessverify.model.forward import forward

    arch = problem.architecture
    k = arch.outputs
    spread = problem.loss == "cross_entropy" and k > 1
    if not (arch.layers[-1].activation in SATURATING_OUTPUTS or spread or problem.loss == "binary_cross_entropy"):
        return problem
    a = forward(problem, derivatives=False).a[arch.output_layer]
    size = float(np.max(np.max(a, axis=1) - np.min(a, axis=1))) if spread else float(np.max(np.abs(a)))
    block = arch.block(arch.output_layer).slice
    largest = float(np.max(np.abs(problem.params[block])))
    if not size > 0 or not np.isfinite(size) or size >= level or largest * level / size > SATURATION_MAX_PARAM:
        return problem  # nothing to scale, saturated already, or only with outsized parameters
    params = problem.params.copy()
    params[block] *= level / size
    return replace(problem, params=params,
                   description=f"{problem.description}, output saturated (net input {level:.3g})")


def problems(
    *,
    min_layers: int = 1,
    max_layers: int = 3,
    min_units: int = 1,
    max_units: int = 4,
    min_inputs: int = 1,
    max_inputs: int = 3,
    min_patterns: int = 1,
    max_patterns: int = 4,
    activations: Sequence[str] | None = None,
    output_activations: Sequence[str] | None = None,
    bias: bool | None = None,
    losses: Sequence[str] | None = None,
    reductions: Sequence[str] | None = None,
    max_magnitude: float = PARAM_MAGNITUDE,
    max_input: float = INPUT_MAGNITUDE,
    graphs: bool = True,
    saturation: bool = True,
    kinds: bool = True,
) -> st.SearchStrategy[Problem]:
    """Whole problems: an architecture, a loss, parameters and data.

    With ``kinds=True`` (the default) half the draws are networks of other layer
    kinds than dense (:mod:`hessverify.checking.layer_draws`: convolutions,
    pooling, norms, residual adds, attention, embeddings; shrinking prefers the
    dense ones); ``kinds=False`` draws dense networks only, for code that
    handles only those.  ``min_layers`` holds for both (every layer of
    ``Architecture.depth`` counts, a flatten too; a short network of kinds gets
    dense layers before its output).

    The keyword arguments are those of :func:`architectures`,
    :func:`parameters` and :func:`datasets`, plus the choices of ``losses``
    (default: every loss, ``sse`` first) and ``reductions`` (default
    ``("sum", "mean")``).  Feed-forward graphs are drawn unless
    ``graphs=False``; each layer's skip edges are drawn beside its weights,
    so dropping a layer while shrinking keeps the others' edges.  About
    three problems in ten have a saturated output (:func:`saturate`, a level
    drawn from :data:`SATURATION_LEVELS`, where the output can saturate;
    shrinking towards none) unless ``saturation=False``.  Problems with a relu net input within
    :data:`KINK_MARGIN` of the kink, or whose values overflow, are rejected.
    Each problem's id is ``generated-<inputs>-<units>-...`` and its
    description names the architecture, so ``problem.to_toml()`` is a
    valid case file.

    Examples
    --------
    >>> from hypothesis import Phase, find, settings
    >>> shrink = settings(phases=[Phase.generate, Phase.shrink], database=None)
    >>> p = find(problems(min_layers=2, losses=["cross_entropy"], kinds=False), lambda p: True, settings=shrink)
    >>> p.id, p.loss, p.architecture.depth
    ('generated-1-1-1', 'cross_entropy', 2)
    """
    # built only to validate the architecture bounds and choices, with the same messages
    architectures(
        min_layers=min_layers, max_layers=max_layers, min_units=min_units, max_units=max_units,
        min_inputs=min_inputs, max_inputs=max_inputs, activations=activations,
        output_activations=output_activations, bias=bias, graphs=graphs,
    )
    hidden = tuple(ACTIVATIONS) if activations is None else tuple(activations)
    output = hidden if output_activations is None else tuple(output_activations)
    loss_names = _check_choices("losses", losses, tuple(LOSSES))
    reduction_names = _check_choices("reductions", reductions, REDUCTIONS)
    min_patterns, max_patterns = _check_range("patterns", min_patterns, max_patterns, 1)
    magnitude = _check_magnitude("max_magnitude", max_magnitude)
    input_magnitude = _check_magnitude("max_input", max_input)
    if not isinstance(saturation, bool):
        raise InvalidArgument(f"saturation must be True (draw saturated outputs too) or False, got {saturation!r}")
    max_fan = max(max_inputs, max_units)
    if graphs:  # the widest input: the inputs and every layer but the last side by side
        max_fan = max_inputs + (max_layers - 1) * max_units

    # Shrink-friendly layout: every layer's weights are drawn as a max_units x max_fan block
    # and every pattern as max_inputs inputs and max_units targets, and the network uses the
    # *trailing* rows and columns.  Lowering a size then only drops values instead of shifting
    # every later value into another role, so Hypothesis can shrink 3 inputs to 1 (its
    # shortlex order also leaves the non-zero values it needs at the end).
    layer_blocks = st.tuples(
        st.integers(min_units, max_units),
        st.sampled_from(hidden),
        st.booleans() if bias is None else st.just(bias),  # False first: fewer parameters
        st.lists(_floats(magnitude), min_size=max_units * max_fan, max_size=max_units * max_fan),
        st.lists(_floats(magnitude), min_size=max_units, max_size=max_units),
        _edges(max_layers) if graphs else st.just(None),
    )

    @st.composite
    def draw_problem(draw: st.DrawFn) -> Problem:
        n_in = draw(st.integers(min_inputs, max_inputs))
        blocks = draw(st.lists(layer_blocks, min_size=min_layers, max_size=max_layers))
        out_act = draw(st.sampled_from(output))
        loss = draw(st.sampled_from(loss_names))
        reduction = draw(st.sampled_from(reduction_names))
        rows = draw(st.lists(st.tuples(st.lists(_floats(input_magnitude), min_size=max_inputs, max_size=max_inputs),
                                       _targets(loss, max_units, input_magnitude, normalise=False)),
                             min_size=min_patterns, max_size=max_patterns))
        layers = [Layer(units, out_act if index == len(blocks) - 1 else act, has_bias,
                        None if edges is None else _layer_sources(index + 1, edges))
                  for index, (units, act, has_bias, _, _, edges) in enumerate(blocks)]
        arch = Architecture(n_in, tuple(layers))
        parts = []
        for index, (units, _, has_bias, w, b, _) in enumerate(blocks, start=1):
            fan = arch.fan_in(index)
            parts.append(np.array(w).reshape(max_units, max_fan)[max_units - units:, max_fan - fan:].reshape(-1))
            if has_bias:
                parts.append(np.array(b[max_units - units:]))
        params = np.concatenate(parts).astype(np.float64)
        k = arch.outputs
        x = np.array([r[max_inputs - n_in:] for r, _ in rows], dtype=np.float64)
        t = np.array([_finish_targets(loss, tr[max_units - k:]) for _, tr in rows], dtype=np.float64)
        problem = Problem(arch, loss, params, x, t, reduction, _case_id(arch),
                          f"drawn by hessverify.strategies: {arch.describe()}, {loss}, {reduction}")
        # saturated about every third draw (where the output can saturate); shrinks to False: not saturated
        if saturation and draw(st.booleans()):
            problem = saturate(problem, draw(st.floats(*SATURATION_LEVELS)))
        # fd must not straddle a kink, and the Hessian must exist and be finite
        assume(not near_kink(problem))
        return _well_posed(problem)

    if not isinstance(kinds, bool):
        raise InvalidArgument(f"kinds must be True (draw every layer kind) or False (dense networks), got {kinds!r}")
    if not kinds:
        return draw_problem()
    return st.one_of(draw_problem(), _layered_problems(hidden, output, loss_names, reduction_names, min_patterns,
                                                      max_patterns, magnitude, input_magnitude, max_layers,
                                                      min(max_units, 3), min_layers))


def _layered_problems(hidden: Sequence[str], output: Sequence[str], loss_names: Sequence[str],
                      reduction_names: Sequence[str], min_patterns: int, max_patterns: int, magnitude: float,
                      input_magnitude: float, max_layers: int, max_size: int,
                      min_layers: int = 1) -> st.SearchStrategy[Problem]:
    """Problems whose networks have layers of other kinds (:func:`hessverify.checking.layer_draws.layered_architectures`)."""

    @st.composite
    def draw_problem(draw: st.DrawFn) -> Problem:
        arch = draw(layered_architectures(max_layers=max_layers, max_size=max_size, activations=hidden,
                                          output_activations=output, min_layers=min_layers))
        loss = draw(st.sampled_from(loss_names))
        reduction = draw(st.sampled_from(reduction_names))
        coupled = any(layer.kind_def.couples_patterns(layer.opts) for layer in arch.layers)
        n = draw(st.integers(max(min_patterns, 2 if coupled else 1), max(max_patterns, 2 if coupled else 1)))
        params = np.array(draw(st.lists(_floats(magnitude), min_size=arch.n_params, max_size=arch.n_params)))
        first = arch.layers[0]
        if first.kind_def.reads_ids:
            vocab = first.opts["vocab"]
            x = np.array(draw(st.lists(st.integers(0, vocab - 1), min_size=n * arch.inputs, max_size=n * arch.inputs)),
                         dtype=np.float64).reshape(n, arch.inputs)
        else:
            x = np.array(draw(st.lists(_floats(input_magnitude), min_size=n * arch.inputs,
                                       max_size=n * arch.inputs)), dtype=np.float64).reshape(n, arch.inputs)
        t = np.array([draw(_targets(loss, arch.outputs, input_magnitude)) for _ in range(n)], dtype=np.float64)
        problem = Problem(arch, loss, params.astype(np.float64), x, t, reduction, _layered_id(arch),
                          f"drawn by hessverify.strategies: {arch.describe()}, {loss}, {reduction}")
        assume(not near_kink(problem))
        return _well_posed(problem)

    return draw_problem()


def _layered_id(arch: Architecture) -> str:
    kinds = [layer.kind.replace("_", "") for layer in arch.layers if layer.kind != "dense"]
    return "generated-" + "-".join(kinds[:6] or ["dense"])



# -- special values --------------------------------------------------------------

SPECIAL_VALUES: tuple[float, ...] = (0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0)
"""Exact zeros, units, halves and small integers: what a shrinker produces and a person writes.

A log-uniform draw of magnitudes never lands on them; false alarms live there
(an entry that is exactly 0 has a rounding bound of nothing)."""

LAYER_KINDS = ("values", "zero", "saturated", "dead")
"""How :func:`special_problems` fills a layer: drawn values, all zeros, weights scaled by
:data:`SATURATING_SCALE` (saturated sigmoid and tanh units), or a bias of ``-SATURATING_SCALE``
(dead relu units, saturated others)."""

SATURATING_SCALE = 20.0


def _special_floats(magnitude: float) -> st.SearchStrategy[float]:
    # the special values come first, so they are drawn often and shrinking goes to them
    return st.one_of(st.sampled_from(SPECIAL_VALUES), _floats(magnitude))


def special_problems(
    *,
    max_layers: int = 3,
    max_units: int = 3,
    max_inputs: int = 3,
    max_patterns: int = 3,
    activations: Sequence[str] | None = None,
    losses: Sequence[str] | None = None,
    graphs: bool = True,
) -> st.SearchStrategy[Problem]:
    """Whole problems made of special values (:data:`SPECIAL_VALUES`), where false alarms live.

    Weights, biases, inputs and ``sse`` targets favour exact zeros, ``+-1``,
    halves and small integers; each layer may be all zeros, saturated or
    dead (:data:`LAYER_KINDS`); patterns may repeat; one pattern with the
    mean reduction is drawn as often as any other count.  ``cross_entropy``
    targets are one-hot or uniform, ``binary_cross_entropy`` targets 0, 1/2
    or 1.  Problems whose Hessian does not exist (a relu net input at its
    kink, as far as float64 can tell) or that overflow are rejected; relu net
    inputs *near* a kink are kept (finite differences say where they cannot
    be trusted).

    Examples
    --------
    >>> from hypothesis import Phase, find, settings
    >>> shrink = settings(phases=[Phase.generate, Phase.shrink], database=None)
    >>> p = find(special_problems(), lambda p: True, settings=shrink)
    >>> p.params.tolist(), p.inputs.tolist()
    ([0.0], [[0.0]])
    """
    arch_strategy = architectures(max_layers=max_layers, max_units=max_units, max_inputs=max_inputs,
                                  activations=activations, graphs=graphs)
    loss_names = _check_choices("losses", losses, tuple(LOSSES))
    _, max_patterns = _check_range("patterns", 1, max_patterns, 1)

    @st.composite
    def draw_problem(draw: st.DrawFn) -> Problem:
        # the pattern count and reduction first, so that how much the architecture draws
        # (a graph's edges) does not change how often one pattern with the mean comes up
        n = draw(st.integers(1, max_patterns))
        reduction = draw(st.sampled_from(REDUCTIONS))
        arch = draw(arch_strategy)
        loss = draw(st.sampled_from(loss_names))
        parts = []
        for index, layer in enumerate(arch.layers, start=1):
            fan = arch.fan_in(index)
            kind = draw(st.sampled_from(LAYER_KINDS))
            W = np.array(draw(st.lists(_special_floats(PARAM_MAGNITUDE), min_size=layer.units * fan,
                                       max_size=layer.units * fan)), dtype=np.float64)
            b = np.array(draw(st.lists(_special_floats(PARAM_MAGNITUDE), min_size=layer.units,
                                       max_size=layer.units)), dtype=np.float64)
            if kind == "zero":
                W[:], b[:] = 0.0, 0.0
            elif kind == "saturated":
                W *= SATURATING_SCALE
            elif kind == "dead":
                b[:] = -SATURATING_SCALE
            parts.append(W)
            if layer.bias:
                parts.append(b)
        row = st.lists(_special_floats(INPUT_MAGNITUDE), min_size=arch.inputs, max_size=arch.inputs)
        x = np.array([draw(row)] * n if draw(st.booleans()) else [draw(row) for _ in range(n)], dtype=np.float64)
        k = arch.outputs
        if loss == "cross_entropy":
            t = np.array([np.eye(k)[draw(st.integers(0, k - 1))] if draw(st.booleans()) else np.full(k, 1.0 / k)
                          for _ in range(n)])
        elif loss == "binary_cross_entropy":
            t = np.array(draw(st.lists(st.lists(st.sampled_from([0.0, 1.0, 0.5]), min_size=k, max_size=k),
                                       min_size=n, max_size=n)), dtype=np.float64)
        elif loss == "output":
            t = np.zeros((n, k))
        else:
            t = np.array(draw(st.lists(st.lists(_special_floats(INPUT_MAGNITUDE), min_size=k, max_size=k),
                                       min_size=n, max_size=n)), dtype=np.float64)
        problem = Problem(arch, loss, np.concatenate(parts), x, t, reduction, _case_id(arch),
                          f"drawn by hessverify.strategies.special_problems: {arch.describe()}, {loss}, {reduction}")
        return _well_posed(problem)

    return draw_problem()
