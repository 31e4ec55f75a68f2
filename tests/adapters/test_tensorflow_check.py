"""hessverify.tensorflow.import_module and check_module: a user's Hessian code judged on the user's own Keras model."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
hvtf = pytest.importorskip("hessverify.adapters.tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import hessverify  # noqa: E402
from hessverify.adapters.tensorflow_check import FlatKeras, fd_of_gradient  # noqa: E402
from hessverify.adapters.tensorflow_import import keras_index, loss_at  # noqa: E402
from hessverify.errors import UnsupportedModel, UsageError  # noqa: E402

L = keras.layers
F64 = "float64"


# -- the user's side: models, and curvature code written as a Keras user writes it -----------------------------


@tf.custom_gradient
def my_tanh(a):
    """tanh with its derivative written by hand (differentiable: the second-order path is whole)."""
    y = tf.tanh(a)

    def grad(dy):
        return dy * (1 - y * y)

    return y, grad


@tf.custom_gradient
def cut_tanh(a):
    """tanh whose hand-written derivative stops the gradient through ``y``: its second derivative is lost."""
    y = tf.tanh(a)

    def grad(dy):
        return dy * (1 - tf.stop_gradient(y) ** 2)

    return y, grad


def _data(seed: int, x_shape: tuple[int, ...], t: str, K: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=x_shape)
    N = x_shape[0]
    targets = {"real": rng.normal(size=(N, K)), "onehot": np.eye(K)[rng.integers(0, K, N)],
               "ids": rng.integers(0, K, N)}[t]
    return x, targets


def mlp():
    """A Sequential Dense MLP, MSE."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,), dtype=F64), L.Dense(3, "tanh", dtype=F64),
                              L.Dense(2, "sigmoid", dtype=F64), L.Dense(2, dtype=F64)])
    return (model, keras.losses.MeanSquaredError(), *_data(1, (6, 3), "real", 2))


def resmlp():
    """A functional residual MLP, LayerNormalization of the input (pre-norm), categorical cross-entropy on logits."""
    keras.utils.set_random_seed(2)
    x = keras.Input((4,), dtype=F64)
    h = L.LayerNormalization(epsilon=1e-3, dtype=F64)(x)
    a = L.Dense(4, activation="tanh", dtype=F64)(h)
    b = L.Dense(4, dtype=F64)(a)
    s = L.Add(dtype=F64)([h, b])
    out = L.Dense(3, dtype=F64)(s)
    model = keras.Model(x, out)
    model.layers[1].set_weights([np.linspace(0.5, 1.5, 4), np.linspace(-0.2, 0.3, 4)])  # gamma, beta away from 1, 0
    return (model, keras.losses.CategoricalCrossentropy(from_logits=True), *_data(2, (5, 4), "onehot", 3))


def conv1d():
    """A small Conv1D net on channels-last sequences: conv, average pool, flatten, dense; Huber."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((7, 2), dtype=F64), L.Conv1D(3, 3, activation="tanh", dtype=F64),
                              L.AveragePooling1D(2, dtype=F64), L.Flatten(dtype=F64), L.Dense(2, dtype=F64)])
    return (model, keras.losses.Huber(delta=0.5), *_data(3, (4, 7, 2), "real", 2))


def custom(activation=my_tanh):
    """A functional MLP with a tf.custom_gradient activation (outside the schema: judged from its forward)."""
    keras.utils.set_random_seed(4)
    x = keras.Input((2,), dtype=F64)
    h = L.Activation(activation, dtype=F64)(L.Dense(3, dtype=F64)(x))
    out = L.Dense(2, dtype=F64)(h)
    return (keras.Model(x, out), keras.losses.MeanSquaredError(), *_data(4, (5, 2), "real", 2))


MODELS = {"mlp": mlp, "resmlp": resmlp, "conv1d": conv1d, "custom-gradient": custom}


def _flat(parts, W):
    return tf.concat([tf.reshape(p, [W, -1]) for p in parts], axis=1)


def users_hessian(model, loss, x, t):
    """The user's Hessian: nested GradientTapes over the model's variables, flattened in their order."""
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            E = loss(t, model(x, training=False))
        g = tf.concat([tf.reshape(d, [-1]) for d in inner.gradient(E, variables)], axis=0)
    return _flat(outer.jacobian(g, variables), int(g.shape[0]))


def users_ggn(model, loss, x, t):
    """The user's Gauss-Newton matrix J^T H_y J: what a Hessian routine that forgot the network's curvature gives."""
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        y = model(x, training=False)
        flat_y = tf.reshape(y, [-1])
    J = _flat(tape.jacobian(flat_y, variables), int(flat_y.shape[0]))
    y = tf.stop_gradient(y)
    with tf.GradientTape() as outer:
        outer.watch(y)
        with tf.GradientTape() as inner:
            inner.watch(y)
            E = loss(t, y)
        gy = inner.gradient(E, y)
    n = int(flat_y.shape[0])
    Hy = tf.reshape(outer.jacobian(gy, y), [n, n])
    return tf.transpose(J) @ Hy @ J


@tf.function(reduce_retracing=True)  # called once per column: traced once per model, as a user would
def users_hvp(model, loss, x, t, v):
    """H v by forward over reverse on the model's variables."""
    variables = model.trainable_variables
    tangents, pos = [], 0
    for w in variables:
        k = int(np.prod(w.shape))
        tangents.append(tf.reshape(v[pos:pos + k], w.shape))
        pos += k
    with tf.autodiff.ForwardAccumulator([w.value for w in variables], tangents) as acc:  # Keras' tf.Variables
        with tf.GradientTape() as tape:
            E = loss(t, model(x, training=False))
        g = tape.gradient(E, variables)
    return tf.concat([tf.reshape(acc.jvp(d), [-1]) for d in g], axis=0)


# -- correct code passes, planted bugs fail ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_correct_hessian_passes(name: str, dtype: str) -> None:
    result = hvtf.check_module(users_hessian, *MODELS[name](), dtype=dtype)
    assert result.passed, result.summary()
    custom_route = name == "custom-gradient"
    assert result.route == ("module references" if custom_route else "imported")
    assert set(result.served) == ({"rev-rev", "fwd-rev", "fd"} if custom_route else {"backprop", "autograd", "fd"})
    assert result.precision == dtype  # on either route, the format it was judged in


def test_a_keras_loss_keeps_its_dtype_in_the_process_sandbox() -> None:
    # Keras 3's Loss.get_config() has no dtype: a pickled float64 loss comes back computing in float32, and a
    # correct float64 Hessian failed by 1e-7 in the spawned child; the child now sets the dtype again
    result = hvtf.check_module(users_hessian, *MODELS["mlp"](), dtype="float64", isolation="process")
    assert result.passed and result.route == "imported", result.summary()


SCALE = {"resmlp": 1.1}
"""The factor of the planted scaled block: 1.001 (0.1 %), but 10 % on the residual LayerNorm MLP, where float32's
derived bound is loose: 0.1 % of its output kernel's block reached margin 0.026 only (a correct float32 Hessian:
1.2e-5)."""


def _planted(bug: str, name: str):
    """The user's Hessian with one realistic bug: the output Dense kernel's block scaled (:data:`SCALE`), the
    second layer's kernel entries read as if it were (out, in) (a transposed kernel), or the GGN."""
    if bug == "ggn":
        return users_ggn

    def fn(model, loss, x, t):
        H = users_hessian(model, loss, x, t).numpy()
        shapes = [tuple(v.shape) for v in model.trainable_variables]
        var = len(shapes) - 2 if bug == "scaled-block" else 2  # the output kernel; the second layer's kernel
        start = sum(int(np.prod(s)) for s in shapes[:var])
        fan_in, units = shapes[var]
        k = fan_in * units
        if bug == "scaled-block":
            H[start:start + k, start:start + k] *= SCALE.get(name, 1.001)
        else:  # kernel[i, o] read at the place of kernel[o, i] of an (out, in) matrix: column-major order
            perm = np.arange(start, start + k).reshape(fan_in, units).T.reshape(-1)
            full = np.arange(H.shape[0])
            full[start:start + k] = perm
            H = H[np.ix_(full, full)]
        return H

    return fn


@pytest.mark.parametrize("name, bug, dtype", [
    (name, bug, "float32") for name in ("resmlp", "custom-gradient") for bug in ("scaled-block", "transposed-kernel",
                                                                                 "ggn")] + [("resmlp", "scaled-block",
                                                                                             "float64")])
def test_planted_bugs_fail(name: str, bug: str, dtype: str) -> None:
    # float32's bounds are the wider ones: a bug they catch, float64's catch too
    if bug == "ggn" and name == "custom-gradient":
        with pytest.raises(UnsupportedModel, match="ggn"):
            hvtf.check_module(users_ggn, *MODELS[name](), returns="ggn", dtype=dtype)
    result = hvtf.check_module(_planted(bug, name), *MODELS[name](), dtype=dtype, against=("backprop",))
    assert not result.passed, result.summary()
    assert result.failures and "FAILED" in result.summary()


def test_a_cut_second_order_path_is_caught() -> None:
    # the custom gradient stops y: both AD references miss tanh'' (and agree with each other); fd reads g only
    result = hvtf.check_module(users_hessian, *custom(cut_tanh))
    assert not result.passed
    for ref in ("rev-rev", "fwd-rev"):
        assert "disagrees with fd" in result.not_served[ref]
    assert result.served == ("fd",) and "cut_tanh" in result.not_served["import"]


def test_keras_layer_normalization_after_a_dense_layer_fails() -> None:
    # tf.nn.moments stops the mean's gradient in the variance (docs/conformance.md): a nested-tape Hessian through
    # Keras' own LayerNormalization after a Dense layer is wrong, and the imported route says so
    keras.utils.set_random_seed(5)
    x = keras.Input((3,), dtype=F64)
    out = L.Dense(2, dtype=F64)(L.LayerNormalization(dtype=F64)(L.Dense(4, dtype=F64)(x)))
    data = _data(5, (4, 3), "real", 2)
    result = hvtf.check_module(users_hessian, keras.Model(x, out), keras.losses.MeanSquaredError(), *data,
                               against=("backprop", "autograd"))
    assert result.route == "imported" and not result.passed and result.failures


def test_fd_error_estimate_covers_its_error() -> None:
    model, loss, x, t = custom()
    flat = FlatKeras(model, loss, x, t)
    H, err = fd_of_gradient(flat)
    exact = users_hessian(model, loss_at(loss, F64), tf.constant(x), tf.constant(t)).numpy()
    assert np.all(np.abs(H - exact) <= err)
    assert np.max(err) < 1e-6 * np.max(np.abs(exact))


@pytest.mark.parametrize("returns", ["hvp", "diagonal", "blocks"])
def test_other_returns(returns: str) -> None:
    def diagonal(*args):
        return tf.linalg.diag_part(users_hessian(*args))

    def blocks(model, *rest):
        H = users_hessian(model, *rest)
        out, pos = [], 0
        for layer in model.layers:
            k = sum(int(np.prod(v.shape)) for v in layer.trainable_variables)
            if k:
                out.append(H[pos:pos + k, pos:pos + k])
                pos += k
        return out

    fn = {"hvp": users_hvp, "diagonal": diagonal, "blocks": blocks}[returns]
    # hvp and blocks: the imported route's translations of order; the diagonal: both routes
    for build in (mlp, custom) if returns == "diagonal" else (mlp,):
        result = hvtf.check_module(fn, *build(), returns=returns, against=("backprop",))
        assert result.passed, result.summary()


# -- the import -----------------------------------------------------------------------------------------------


def tensorflows_hessian(model, loss, x, t) -> np.ndarray:
    """TensorFlow's own Hessian of E over the flat trainable variables (nested tapes, stateless_call), float64."""
    variables = model.trainable_variables
    shapes = [tuple(v.shape) for v in variables]
    sizes = [int(np.prod(s)) for s in shapes]
    theta = tf.constant(np.concatenate([v.numpy().reshape(-1) for v in variables]))
    fixed = [v.value for v in model.non_trainable_variables]
    loss64 = type(loss)(**{**loss.get_config(), **loss._fn_kwargs, "dtype": F64})  # Keras computes losses in float32
    with tf.GradientTape() as outer:
        outer.watch(theta)
        with tf.GradientTape() as inner:
            inner.watch(theta)
            values = [tf.reshape(p, s) for p, s in zip(tf.split(theta, sizes), shapes)]
            y, _ = model.stateless_call(values, fixed, tf.constant(x), training=False)
            E = loss64(tf.constant(t), y)
        g = inner.gradient(E, theta)
    return outer.jacobian(g, theta).numpy()


def conv2d():
    """Conv2D with 'same' padding, a 2x2 average pool, flatten, dense: channels-last images, CCE on logits."""
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((4, 5, 2), dtype=F64),
                              L.Conv2D(3, 3, padding="same", activation="sigmoid", dtype=F64),
                              L.AveragePooling2D(2, dtype=F64), L.Flatten(dtype=F64), L.Dense(3, dtype=F64)])
    return (model, keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
            *_data(6, (3, 4, 5, 2), "onehot", 3))


def transformer():
    """Embedding, self-attention (key_dim 4: Keras' float32 scale is exact), residual add, flatten, dense; sparse CCE."""
    keras.utils.set_random_seed(7)
    x = keras.Input((3,), dtype="int32")
    h = L.Embedding(6, 4, dtype=F64)(x)
    s = L.Add(dtype=F64)([h, L.MultiHeadAttention(1, 4, dtype=F64)(h, h)])
    out = L.Dense(3, dtype=F64)(L.Flatten(dtype=F64)(s))
    rng = np.random.default_rng(7)
    return (keras.Model(x, out), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            rng.integers(0, 6, (3, 3)), rng.integers(0, 3, 3))


def binary():
    """One logit, binary cross-entropy summed."""
    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((2,), dtype=F64), L.Dense(3, "softplus", dtype=F64), L.Dense(1, dtype=F64)])
    rng = np.random.default_rng(8)
    return model, keras.losses.BinaryCrossentropy(from_logits=True, reduction="sum"), rng.normal(size=(4, 2)), \
        rng.uniform(size=(4, 1))


@pytest.mark.parametrize("build", [mlp, resmlp, conv1d, conv2d, transformer, binary], ids=lambda b: b.__name__)
def test_the_import_has_tensorflows_hessian(build) -> None:
    model, loss, x, t = build()
    problem = hvtf.import_module(model, loss, x, t)
    idx = keras_index(problem)
    H_tf = tensorflows_hessian(model, loss, x, t)[np.ix_(idx, idx)]
    H = hessverify.hessian(problem, "backprop")
    assert np.max(np.abs(H - H_tf)) <= 1e-12 * np.max(np.abs(H_tf))


def test_the_import_reads_a_flattened_conv_in_the_schemas_order() -> None:
    # a Dense after Flatten of a channels-last conv: the kernel's rows are (position, channel) in Keras, the
    # schema's W columns (channel, position); W1 of the import is Keras' kernel with its rows permuted
    model, loss, x, t = conv1d()
    problem = hvtf.import_module(model, loss, x, t)
    kernel = model.layers[-1].kernel.numpy()  # (positions * channels, 2), Keras' flatten of (L=2, C=3)
    W = problem.architecture.unpack_tensors(problem.params)[2]  # the dense W, (2, channels * positions)
    assert W.shape == (2, 6)
    assert W[1, 1 * 2 + 0] == kernel[0 * 3 + 1, 1]  # channel 1, position 0


@pytest.mark.parametrize("make, match", [
    (lambda: keras.Sequential([keras.Input((3,)), L.Dense(2), L.BatchNormalization()]), "BatchNormalization"),
    (lambda: keras.Sequential([keras.Input((3,)), L.Dense(2, activation=my_tanh)]), "my_tanh"),
    (lambda: keras.Sequential([keras.Input((5, 2)), L.Conv1D(2, 2, padding="same")]), "padding='same'"),
])
def test_unsupported_layers_are_named(make, match: str) -> None:
    model = make()
    x = np.ones((2,) + tuple(model.inputs[0].shape[1:]))
    t = np.zeros((2,) + tuple(model.outputs[0].shape[1:]))
    with pytest.raises(UnsupportedModel, match=match):
        hvtf.import_module(model, keras.losses.MeanSquaredError(), x, t)


@pytest.mark.parametrize("loss, match", [
    (keras.losses.BinaryCrossentropy(), "from_logits=False"),
    (keras.losses.MeanSquaredError(reduction="sum"), "averages over them"),
    (keras.losses.KLDivergence(), "KLDivergence"),
])
def test_unsupported_losses_are_named(loss, match: str) -> None:
    model, _, x, t = mlp()
    with pytest.raises(UnsupportedModel, match=match):
        hvtf.import_module(model, loss, x, t)


def test_bad_use_is_one_line() -> None:
    with pytest.raises(UsageError, match="returns="):
        hvtf.check_module(users_hessian, *mlp(), returns="kfac")
    with pytest.raises(UsageError, match="not a keras.Model"):
        hvtf.check_module(users_hessian, object(), keras.losses.MeanSquaredError(), np.ones(1), np.ones(1))
    with pytest.raises(UsageError, match="dtype="):
        hvtf.check_module(users_hessian, *mlp(), dtype="float16")


CLI_BUILD = """
import keras, numpy as np

def make():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,), dtype="float64"), keras.layers.Dense(3, "tanh", dtype="float64"),
                              keras.layers.Dense(2, dtype="float64")])
    rng = np.random.default_rng(0)
    return model, keras.losses.MeanSquaredError(), rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
"""

CLI_MINE = """
import tensorflow as tf

def hessian(model, loss, x, t):
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            E = loss(t, model(x))
        g = tf.concat([tf.reshape(d, [-1]) for d in inner.gradient(E, variables)], 0)
    W = int(g.shape[0])
    return tf.concat([tf.reshape(r, [W, -1]) for r in outer.jacobian(g, variables)], 1)
"""


def test_the_command_line_takes_a_keras_model(tmp_path, monkeypatch, capsys) -> None:
    # in this process (TensorFlow is imported once): main() as `hessverify check-module` runs it
    from hessverify.cli import main

    (tmp_path / "build.py").write_text(CLI_BUILD)
    (tmp_path / "mine.py").write_text(CLI_MINE)
    monkeypatch.chdir(tmp_path)
    assert main(["check-module", "build.py:make", "--method-under-test", "mine.py:hessian"]) == 0
    assert "judged by imported" in capsys.readouterr().out
    assert main(["check-module", "build.py:make", "--method-under-test", "mine.py:hessian", "--returns", "hvp",
                 "--probes", "1"]) == 2
