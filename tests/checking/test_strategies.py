"""Tests of hessverify.strategies: bounds checked at build time, shrinking, ranges, kinks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis.errors import InvalidArgument

from hessverify import Architecture, Layer, Problem
from hessverify.checking.strategies import (
    INPUT_MAGNITUDE,
    KINK_MARGIN,
    MIN_MAGNITUDE,
    PARAM_MAGNITUDE,
    SATURATION_LEVELS,
    SATURATION_MAX_PARAM,
    architectures,
    datasets,
    parameters,
    problems,
    saturate,
)
from hessverify.model.forward import forward
from hessverify.model.well_posed import ensure_well_posed

ARCH = Architecture(2, (Layer(3, "tanh"), Layer(2, "identity")))
# find() without the explain phase, which re-runs variations of the minimal example last
SHRINK = settings(phases=[Phase.generate, Phase.shrink], database=None, max_examples=500)


@pytest.mark.parametrize(("build", "kwargs", "message"), [
    (architectures, {"min_layers": 0}, "min_layers must be at least 1"),
    (architectures, {"min_units": 3, "max_units": 2}, "min_units = 3 is greater than max_units = 2"),
    (architectures, {"max_inputs": 2.5}, "max_inputs must be a whole number"),
    (architectures, {"max_layers": True}, "max_layers must be a whole number"),
    (architectures, {"activations": ["tanh", "swish"]}, "unknown name 'swish'"),
    (architectures, {"activations": "tanh"}, "not the string 'tanh'"),
    (architectures, {"activations": []}, "at least one"),
    (architectures, {"bias": "yes"}, "bias must be True, False or None"),
    (architectures, {"max_units": 200, "max_layers": 3}, "more than the 20000"),
    (problems, {"losses": ["l1"]}, "unknown name 'l1'"),
    (problems, {"reductions": ["max"]}, "unknown name 'max'"),
    (problems, {"min_patterns": 5, "max_patterns": 4}, "min_patterns = 5 is greater"),
    (problems, {"max_magnitude": 1e6}, "max_magnitude must be in (0, 10]"),
    (problems, {"max_input": float("nan")}, "max_input must be a finite number"),
])
def test_bad_bounds_raise_when_the_strategy_is_built(build: Any, kwargs: dict[str, Any], message: str) -> None:
    # no .example() or draw: the error comes from the call itself
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        build(**kwargs)


def test_parameters_and_datasets_check_their_arguments() -> None:
    with pytest.raises(InvalidArgument, match="must be an Architecture"):
        parameters("2-3-1")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="loss: unknown name 'hinge'"):
        datasets(ARCH, loss="hinge")
    with pytest.raises(InvalidArgument, match="max_magnitude"):
        parameters(ARCH, max_magnitude=0.0)


def test_problems_shrink_to_the_smallest_network() -> None:
    p = find(problems(), lambda p: True, settings=SHRINK)
    assert p.architecture == Architecture(1, (Layer(1, "identity", bias=False),))
    assert (p.loss, p.reduction, p.n_patterns) == ("sse", "sum", 1)
    assert p.params.tolist() == [0.0]


def test_a_failure_shrinks_to_a_tiny_network() -> None:
    # a condition that needs curvature from an activation: shrinks to one layer, one unit
    def curved(p: Problem) -> bool:
        return any(layer.activation not in ("identity", "relu") for layer in p.architecture.layers)

    p = find(problems(), curved, settings=SHRINK)
    assert p.architecture.depth == 1 and p.architecture.layers[0].units == 1 and p.n_patterns == 1
    assert p.architecture.inputs == 1


@given(problems(max_magnitude=1.5, max_input=0.5, saturation=False))
def test_values_stay_in_the_documented_ranges(p: Problem) -> None:
    first = p.architecture.layers[0]
    if first.kind == "embedding":  # token ids: whole numbers below the vocabulary's size
        assert np.all(p.inputs == np.round(p.inputs)) and np.all((p.inputs >= 0) & (p.inputs < first.opts["vocab"]))
        assert np.all(np.abs(p.params) <= 1.5)
    else:
        assert np.all(np.abs(p.params) <= 1.5) and np.all(np.abs(p.inputs) <= 0.5)
    if p.loss == "cross_entropy":
        assert np.allclose(p.targets.sum(axis=1), 1.0) and np.all(p.targets >= 0)
    elif p.loss == "binary_cross_entropy":
        assert np.all((p.targets >= 0) & (p.targets <= 1))
    elif p.loss == "output":
        assert np.all(p.targets == 0)
    else:
        assert np.all(np.abs(p.targets) <= 0.5)


@given(problems())
def test_default_ranges(p: Problem) -> None:
    if p.architecture.is_dense:
        output = p.architecture.block(p.architecture.output_layer).slice
        inner = np.delete(p.params, np.arange(p.n_params)[output])
        assert np.all(np.abs(inner) <= PARAM_MAGNITUDE) and np.all(np.abs(p.inputs) <= INPUT_MAGNITUDE)
        assert np.all(np.abs(p.params[output]) <= SATURATION_MAX_PARAM)  # a saturated output layer is scaled up
    else:
        assert np.all(np.abs(p.params) <= PARAM_MAGNITUDE)
    # dense: 1 to 3 layers; layer kinds: up to 3 drawn layers, plus an embedding or a residual's first layer,
    # a flatten and the output layer (hessverify.checking.layer_draws)
    assert 1 <= p.architecture.depth <= (3 if p.architecture.is_dense else 6) and 1 <= p.n_patterns <= 4
    assert p.params.dtype == np.float64 and p.params.shape == (p.n_params,)


@settings(suppress_health_check=[HealthCheck.filter_too_much])  # relu nets near a kink are rejected by design
@given(problems(activations=["relu"], min_layers=2, kinds=False))  # dense: fp.a holds every relu's net input
def test_relu_net_inputs_stay_away_from_the_kink(p: Problem) -> None:
    ensure_well_posed(p)  # raises NotDifferentiableError at a kink
    fp = forward(p, derivatives=False)
    for index, layer in enumerate(p.architecture.layers, start=1):
        if layer.activation == "relu":
            assert np.all(np.abs(fp.a[index]) >= KINK_MARGIN)


@given(architectures(min_layers=2, max_layers=2, min_units=3, max_units=3, activations=["sin"],
                     output_activations=["identity"], bias=True))
def test_architecture_choices_are_respected(a: Architecture) -> None:
    assert a.depth == 2 and [layer.units for layer in a.layers] == [3, 3]
    assert [layer.activation for layer in a.layers] == ["sin", "identity"]
    assert all(layer.bias for layer in a.layers)


@given(problems())
def test_no_value_is_tiny_enough_to_underflow(p: Problem) -> None:
    # cross-entropy rows are normalised by their sum, at most max_units = 4
    floor = {"params": MIN_MAGNITUDE, "inputs": MIN_MAGNITUDE,
             "targets": MIN_MAGNITUDE / 4 if p.loss == "cross_entropy" else MIN_MAGNITUDE}
    for name, least in floor.items():
        values = getattr(p, name)
        assert np.all(np.abs(values[values != 0]) >= least), name


def test_special_problems_favour_special_values() -> None:
    from hypothesis import HealthCheck, given, settings

    from hessverify.checking.strategies import SPECIAL_VALUES, special_problems

    seen: list = []

    @settings(max_examples=60, database=None, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(special_problems())
    def collect(problem) -> None:  # type: ignore[no-untyped-def]
        seen.append(problem)

    collect()
    params = np.concatenate([p.params for p in seen])
    assert np.mean(np.isin(params, SPECIAL_VALUES)) > 0.5 and np.any(params == 0.0)
    assert any(p.n_patterns == 1 and p.reduction == "mean" for p in seen)
    assert any(np.all(w == 0) for p in seen for w in p.weights)
    assert all(p.description.endswith(f"{p.loss}, {p.reduction}") for p in seen)


# -- issue 24: saturated outputs ------------------------------------------------------------------------------


def _net_input(p: Problem) -> np.ndarray:
    """The output layer's net input of a one-layer network, by hand: ``x W^T + b``."""
    (W, b), = [(w, b if b is not None else 0.0) for w, b in zip(p.weights, p.biases, strict=True)]
    return p.inputs @ W.T + b


@pytest.mark.parametrize("activation,loss,level", [("sigmoid", "sse", 16.0), ("tanh", "output", 30.0),
                                                   ("identity", "binary_cross_entropy", 48.0)])
def test_saturate_scales_the_output_layer_to_the_level(activation: str, loss: str, level: float) -> None:
    arch = Architecture(2, (Layer(2, activation),))
    p = Problem(arch, loss, np.array([0.5, -0.25, 0.125, 1.0, 0.25, -0.5]), np.array([[1.0, 2.0], [-1.0, 0.5]]),
                np.array([[0.0, 1.0], [1.0, 0.5]]) if loss != "output" else np.zeros((2, 2)))
    q = saturate(p, level)
    assert np.max(np.abs(_net_input(q))) == pytest.approx(level, rel=1e-12)
    ratio = q.params / p.params
    assert np.allclose(ratio, ratio[0]) and ratio[0] > 1  # one factor, on every parameter of the layer
    assert saturate(q, level / 2) is q  # saturated beyond that already


def test_saturate_spreads_the_softmax_logits_and_leaves_the_hidden_layers() -> None:
    arch = Architecture(1, (Layer(2, "tanh"), Layer(3, "identity")))
    p = Problem(arch, "cross_entropy", np.linspace(-1.0, 1.0, arch.n_params), np.array([[1.0], [-2.0]]),
                np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]))
    q = saturate(p, 20.0)
    hidden = np.tanh(p.inputs @ p.weights[0].T + p.biases[0])
    logits = hidden @ q.weights[1].T + q.biases[1]
    assert np.max(logits.max(axis=1) - logits.min(axis=1)) == pytest.approx(20.0, rel=1e-12)
    assert np.array_equal(q.params[: arch.block(1).size], p.params[: arch.block(1).size])


def test_nothing_to_saturate_is_left_alone() -> None:
    arch = Architecture(1, (Layer(1, "identity"),))
    p = Problem(arch, "sse", np.array([0.5, 0.5]), np.array([[1.0]]), np.array([[0.0]]))
    assert saturate(p, 20.0) is p  # a linear output under sse has no limit to approach
    tiny = Problem(Architecture(1, (Layer(1, "sigmoid"),)), "sse", np.array([1e-6, 0.0]), np.array([[1e-6]]),
                   np.array([[0.0]]))
    assert saturate(tiny, 20.0) is tiny  # only with parameters past SATURATION_MAX_PARAM


def test_a_default_draw_often_has_a_saturated_output() -> None:
    seen: list[Problem] = []

    @settings(max_examples=200, database=None, phases=[Phase.generate], derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(problems(kinds=False))  # saturation is drawn on dense networks
    def draw(p: Problem) -> None:
        seen.append(p)

    draw()
    saturated = 0
    for p in seen:
        a = forward(p, derivatives=False).a[p.architecture.output_layer]
        saturated += bool(np.max(np.abs(a)) >= SATURATION_LEVELS[0] - 1e-9)
    assert saturated >= len(seen) // 10, f"{saturated} of {len(seen)} draws saturated"


def test_the_saturation_switch_is_checked() -> None:
    with pytest.raises(InvalidArgument, match="saturation"):
        problems(saturation="yes")  # type: ignore[arg-type]


def _has_gain(p: Problem) -> bool:
    return any(layer.kind == "dense" and layer.opts["gain"] for layer in p.architecture.layers)


def test_gain_layers_are_drawn_and_shrink_to_one_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dense networks sometimes have gain layers (f(c_j a_j)); shrinking finds a small one.

    Hypothesis sometimes replaces a drawn integer by a literal from the modules imported so far, so even a
    derandomized draw changed with the tests run before it in the same process (from 9 to 40 gain draws of
    120 seen): the count is taken with that pool empty.
    """
    from hypothesis.internal.conjecture import providers

    if hasattr(providers, "_get_local_constants"):  # the pool, and the cache of it filtered by each draw's range
        monkeypatch.setattr(providers, "_get_local_constants", lambda: providers.Constants())
        monkeypatch.setattr(providers, "CONSTANTS_CACHE", {})
    p = find(problems(), _has_gain, settings=SHRINK)
    layers = p.architecture.layers
    assert all(layer.units == 1 and not layer.bias for layer in layers) and p.architecture.inputs == 1
    assert sum(layer.opts["gain"] for layer in layers) == 1 and p.param_names[-1].startswith("c")
    seen: list[Problem] = []

    @settings(max_examples=120, database=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(problems(kinds=False, gains=True))
    def draw(q: Problem) -> None:
        seen.append(q)

    draw()
    gained = [q for q in seen if _has_gain(q)]
    assert len(gained) >= len(seen) // 10, f"{len(gained)} of {len(seen)} draws with a gain layer"
    for q in gained:
        assert not q.architecture.is_dense
        assert np.all(np.abs(q.params) <= PARAM_MAGNITUDE)  # not saturated: every value in the drawn range
        for index, layer in enumerate(q.architecture.layers, start=1):
            names = [t.name for t in q.architecture.layer_tensors(index)]
            assert names == ["W"] + (["b"] if layer.bias else []) + (["c"] if layer.opts["gain"] else [])


@given(problems(kinds=False))
def test_kinds_false_draws_no_gains(p: Problem) -> None:
    assert p.architecture.is_dense and not _has_gain(p)


def test_the_gains_switch_is_checked() -> None:
    with pytest.raises(InvalidArgument, match="gains"):
        problems(gains="yes")  # type: ignore[arg-type]


@given(problems(min_layers=4, max_layers=4))
def test_min_layers_holds_for_networks_of_layer_kinds_too(p: Problem) -> None:
    # every layer of the depth counts (a flatten, an embedding, the output layer); the kinds' draws add
    # their own, so only the lower bound is shared with the dense draws
    assert p.architecture.depth >= 4, p.architecture.describe()


def test_the_simplest_network_of_kinds_drawn_with_min_layers_has_them() -> None:
    # the shrunk example: the fewest, simplest layers a draw of kinds allows (before: two, whatever min_layers)
    p = find(problems(min_layers=4, max_layers=4), lambda p: any(layer.kind != "dense" for layer in p.architecture.layers),
             settings=SHRINK)  # a dense network with a gain layer is not is_dense either
    assert p.architecture.depth == 4, p.architecture.describe()
    assert any(layer.kind != "dense" for layer in p.architecture.layers)
