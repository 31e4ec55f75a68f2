"""The TensorFlow adapter: its loss gives backprop's Hessian to rounding, its Keras model holds the parameters where it
says, its Keras loss classes carry the scales written in the table, check_model passes correct code and fails a bug."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")  # imported once for the module (about 10 s)

import hessverify  # noqa: E402
import hessverify.adapters.tensorflow as hvtf  # noqa: E402
from hessverify.adapters.tensorflow_table import keras_loss  # noqa: E402
from hessverify.engine.bounds import rounding_bound  # noqa: E402
from hessverify.errors import UsageError  # noqa: E402
from hessverify.model.network import Architecture, Layer  # noqa: E402
from hessverify.model.problem import Problem  # noqa: E402
from tests.conftest import CASE_PATHS  # noqa: E402

XOR = hessverify.load_case(CASE_PATHS[[p.stem for p in CASE_PATHS].index("xor-2-2-1-sigmoid")])
DENSE_CASES = [p for p in CASE_PATHS if hessverify.load_case(p).architecture.is_dense][:6]


def _tape_hessian(E, theta):
    with tf.GradientTape() as outer:
        outer.watch(theta)
        with tf.GradientTape() as inner:
            inner.watch(theta)
            value = E(theta)
        g = inner.gradient(value, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return outer.jacobian(g, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO).numpy()


def _problem(layers, shape, loss="sse", n=3, seed=0, ids=None, outputs=None):
    arch = Architecture(int(np.prod(shape)), tuple(layers), input_shape=shape if len(shape) > 1 else None)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, ids, size=(n, arch.inputs)).astype(float) if ids else rng.normal(size=(n, arch.inputs))
    t = rng.uniform(0.1, 0.9, size=(n, arch.outputs))
    return Problem(arch, loss, 0.5 * rng.normal(size=arch.n_params), x, t, "sum", "tf-" + "-".join(
        layer.kind for layer in layers))


KINDS = [
    _problem([Layer(None, "tanh", kind="conv1d", options=(("channels", 2), ("kernel", 2), ("padding", 1),
                                                          ("stride", 2))), Layer(None, kind="flatten"), Layer(2)],
             (2, 5)),
    _problem([Layer(None, "sigmoid", kind="conv2d", options=(("channels", 2), ("kernel", 2))),
              Layer(None, kind="avg_pool2d", options=(("kernel", 2),)), Layer(None, kind="flatten"), Layer(1)],
             (1, 4, 3)),
    _problem([Layer(None, kind="avg_pool1d", options=(("kernel", 2),)), Layer(None, kind="layer_norm"),
              Layer(None, kind="flatten"), Layer(2, "softplus")], (2, 4), loss="cross_entropy"),
    _problem([Layer(None, kind="embedding", options=(("vocab", 5), ("dim", 3))), Layer(None, kind="flatten"),
              Layer(2, "gelu")], (3,), ids=5, loss="binary_cross_entropy"),
    _problem([Layer(3, "tanh"), Layer(None, kind="layer_norm"), Layer(None, "silu", kind="add", sources=(1, 2)),
              Layer(2)], (3,), loss="huber"),
    _problem([Layer(3, "tanh"), Layer(None, kind="batch_norm"), Layer(2, "sigmoid")], (2,), n=4),
    _problem([Layer(None, kind="batch_norm", options=(("mode", "eval"), ("running_mean", (0.5, -1.0)),
                                                      ("running_var", (2.0, 0.5)))), Layer(2, "tanh")], (2,)),
]


@pytest.mark.parametrize("path", DENSE_CASES, ids=[p.stem for p in DENSE_CASES])
def test_loss_hessian_matches_backprop_to_rounding(path) -> None:
    problem = hessverify.load_case(path)
    H = _tape_hessian(hvtf.loss(problem), tf.constant(problem.params))
    B = hessverify.hessian(problem, "backprop")
    assert np.all(np.abs(H - B) <= rounding_bound(problem, methods=2)), np.max(np.abs(H - B))


@pytest.mark.parametrize("problem", KINDS, ids=[p.id for p in KINDS])
def test_layer_kinds_through_keras_match_backprop(problem) -> None:
    E = hvtf.loss(problem)
    theta = tf.constant(problem.params)
    assert abs(float(E(theta)) - hessverify.error(problem)) <= 1e-13 * (1 + abs(hessverify.error(problem)))
    H = _tape_hessian(E, theta)
    B = hessverify.hessian(problem, "backprop")
    assert np.max(np.abs(H - B)) <= 1e-12 * (1 + np.max(np.abs(B)))


@pytest.mark.parametrize("problem", [XOR, *KINDS], ids=["xor", *(p.id for p in KINDS)])
def test_keras_model_holds_every_parameter_once_and_computes_the_network(problem) -> None:
    model = hvtf.to_keras(problem)
    flat = np.concatenate([v.numpy().reshape(-1) for v in model.trainable_variables])
    assert np.array_equal(flat, problem.params[model.public_index])  # each weight is the parameter it says
    assert sorted(model.param_map) == sorted(t.label for t in problem.architecture.tensors)
    case = hvtf.to_case(problem)
    assert abs(float(case.E()) - hessverify.error(problem)) <= 1e-13 * (1 + abs(hessverify.error(problem)))


def test_to_public_reorders_a_hessian_over_the_keras_variables() -> None:
    case = hvtf.to_case(hessverify.load_case(CASE_PATHS[[p.stem for p in CASE_PATHS].index("nobias-2-3-2-tanh-sigmoid")]))
    variables = case.variables
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            E = case.E()
        g = tf.concat([tf.reshape(x, [-1]) for x in inner.gradient(E, variables)], 0)
    H = tf.concat([tf.reshape(j, (g.shape[0], -1)) for j in outer.jacobian(g, variables)], 1)
    B = hessverify.hessian(case.problem, "backprop")
    assert np.max(np.abs(case.to_public(H.numpy()) - B)) <= 1e-13 * np.max(np.abs(B))


@pytest.mark.parametrize("loss", ["sse", "mse", "cross_entropy", "binary_cross_entropy", "huber", "output"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_keras_loss_classes_carry_the_written_scale(loss, reduction) -> None:
    problem = _problem([Layer(3, "tanh")], (2,), loss=loss, n=4, seed=1)
    problem = Problem(problem.architecture, loss, problem.params, problem.inputs, 2.0 * problem.targets - 0.5,
                      reduction, problem.id)
    if loss == "cross_entropy":
        problem = Problem(problem.architecture, loss, problem.params, problem.inputs,
                          np.abs(problem.targets), reduction, problem.id)
    if loss == "binary_cross_entropy":
        problem = Problem(problem.architecture, loss, problem.params, problem.inputs,
                          np.clip(problem.targets, 0, 1), reduction, problem.id)
    crit, c = keras_loss(problem, tf.float64)
    W, b = problem.architecture.unpack(problem.params)[0]
    y = tf.constant(np.tanh(problem.inputs @ W.T + b))  # the one tanh layer, in NumPy
    value = c * float(crit(tf.constant(problem.targets), y))
    assert abs(value - hessverify.error(problem)) <= 1e-13 * (1 + abs(hessverify.error(problem)))


def test_check_model_passes_tape_code_and_fails_a_planted_bug() -> None:
    def hessian(case):
        return _tape_hessian(case.loss, case.params)

    assert hvtf.check_model(hessian, XOR, timeout=None).passed
    bad = hvtf.check_model(lambda case: hessian(case) * (1 + 1e-6), XOR, timeout=None)
    assert not bad.passed


def test_bad_dtype_and_unsupported_network_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="dtype"):
        hvtf.loss(XOR, dtype=tf.int32)
    gain = _problem([Layer(2, options=(("gain", True),))], (2,))
    with pytest.raises(UsageError, match="gain"):
        hvtf.to_keras(gain)


def test_attention_through_keras_matches_backprop_at_float64() -> None:
    # d_h = 2: 1/sqrt(2) is not a float32 number, so a scale rounded to float32 would show at 1e-9
    problem = _problem([Layer(None, kind="attention", options=(("heads", 2),)), Layer(None, kind="flatten"),
                        Layer(1)], (2, 4), n=2)
    E = hvtf.loss(problem)
    theta = tf.constant(problem.params)
    assert abs(float(E(theta)) - hessverify.error(problem)) <= 1e-13 * (1 + abs(hessverify.error(problem)))
    B = hessverify.hessian(problem, "backprop")
    assert np.max(np.abs(_tape_hessian(E, theta) - B)) <= 1e-12 * (1 + np.max(np.abs(B)))


def test_a_layer_the_output_does_not_read_has_no_weight_and_zero_curvature() -> None:
    problem = _problem([Layer(1, bias=False), Layer(1, bias=False, sources=(0,))], (1,))
    model = hvtf.to_keras(problem)
    assert model.public_index.tolist() == [1] and model.param_map["W1"] == []
    case = hvtf.to_case(problem)
    H = _tape_hessian(case.loss, case.params)
    assert np.array_equal(H, hessverify.hessian(problem, "backprop"))  # 2 x_0^2 at W2, zeros for W1


def test_the_public_name_is_the_adapter() -> None:
    import hessverify.tensorflow as public

    assert public is hvtf and hessverify.tensorflow is hvtf and hvtf.__name__ == "hessverify.adapters.tensorflow"
