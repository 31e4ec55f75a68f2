"""TensorFlow's conformance rows: each agrees with backprop on a plain network, and the three findings of
docs/conformance.md reproduce on their case files (cases/conformance/tensorflow-*.toml)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")  # imported once for the module (about 10 s)

import hessverify  # noqa: E402
from hessverify.adapters import conformance  # noqa: E402
from hessverify.errors import FunctionUnderTestError  # noqa: E402
from tests.conftest import CASE_PATHS  # noqa: E402

XOR = hessverify.load_case(CASE_PATHS[[p.stem for p in CASE_PATHS].index("xor-2-2-1-sigmoid")])
FINDINGS = Path(__file__).resolve().parents[2] / "cases" / "conformance"
ROWS = conformance.QUANTITIES["tensorflow"]
DENSE_ROWS = [q for q in ROWS if q.name.endswith(", dense")]


def _row(words: str, kinds: bool = True) -> conformance.Quantity:
    return next(q for q in ROWS if q.name.startswith(words) and ("Keras layer kinds" in q.name) == kinds)


def test_tensorflow_is_a_library_with_its_rows_and_version() -> None:
    assert "tensorflow" in conformance.LIBRARIES and conformance._version("tensorflow").startswith("2.")
    assert len(DENSE_ROWS) == 7 and "tensorflow" in conformance.NOT_COVERED
    conformance.check_libraries(["tensorflow"], "float32")  # installed: no error


@pytest.mark.parametrize("q", DENSE_ROWS, ids=[q.name for q in DENSE_ROWS])
def test_every_dense_row_agrees_with_backprop_on_xor(q) -> None:
    comps = conformance.check_quantity(q, XOR)
    assert comps and all(c.passed for c in comps), [c.margin for c in comps]


def test_a_row_at_float32_is_judged_at_float32() -> None:
    q = _row("GradientTape.jacobian(GradientTape.gradient), eager", kinds=False)
    comps = conformance.check_quantity(q, XOR, precision="float32")
    assert all(c.passed for c in comps) and "float32" in comps[0].bound_kind


def test_layer_normalization_after_a_dense_layer_has_the_wrong_hessian() -> None:
    problem = hessverify.load_case(FINDINGS / "tensorflow-layer-norm-moments.toml")
    H = _row("GradientTape.jacobian(GradientTape.gradient), eager").fn(problem, "float64")
    B = hessverify.hessian(problem, "backprop")
    assert abs(H[0, 0] - B[0, 0]) > 1.0  # -3.0004 against -0.0014 (PyTorch's double backward gives backprop's)
    assert np.allclose(H[4:, 4:], B[4:, 4:], rtol=1e-12, atol=1e-15)  # after the norm: right
    assert not all(c.passed for c in conformance.check_quantity(_row("tf.hessians"), problem))


def test_attention_at_float64_is_off_by_a_float32_scale() -> None:
    problem = hessverify.load_case(FINDINGS / "tensorflow-attention-scale-float64.toml")
    comps = conformance.check_quantity(_row("GradientTape.jacobian(GradientTape.gradient), eager"), problem)
    assert not all(c.passed for c in comps)
    H = _row("GradientTape.jacobian(GradientTape.gradient), eager").fn(problem, "float64")
    B = hessverify.hessian(problem, "backprop")
    err = np.max(np.abs(H - B)) / np.max(np.abs(B))
    assert 1e-12 < err < 1e-5  # a float32 rounding's size, not a wrong formula


def test_grouped_conv2d_second_derivatives_raise_on_cpu() -> None:
    problem = hessverify.load_case(FINDINGS / "tensorflow-grouped-conv2d.toml")
    q = _row("GradientTape.jacobian(GradientTape.gradient), eager")
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:  # the row's routine itself (no longer drawn)
        q.fn(problem, "float64")
    assert "Conv2DBackpropFilter" in str(raised.value)  # the backward of the backward: the message below
    assert "grouped convolutions are not supported" in str(raised.value) or "pfor" in str(raised.value)



def test_tf_nn_gelu_at_float64_carries_a_float32_constant() -> None:
    problem = hessverify.load_case(FINDINGS / "tensorflow-gelu-float64.toml")
    q = _row("GradientTape.jacobian(GradientTape.gradient), eager", kinds=False)
    assert not all(c.passed for c in conformance.check_quantity(q, problem))
    x = tf.constant([-1.0, 0.5, 2.0], tf.float64)
    from scipy.special import erfc  # the exact 1/sqrt(2) in float64
    exact = 0.5 * x.numpy() * erfc(-x.numpy() / np.sqrt(2.0))
    err = np.max(np.abs(tf.nn.gelu(x, approximate=False).numpy() - exact) / np.abs(exact))
    assert 1e-12 < err < 1e-6


def test_tf_hessians_raises_on_a_loss_linear_in_a_variable() -> None:
    problem = hessverify.load_case(FINDINGS / "tensorflow-hessians-linear.toml")
    with pytest.raises(FunctionUnderTestError, match="None values not supported"):
        conformance.check_quantity(_row("tf.hessians", kinds=False), problem)
    # the other routes give the zero Hessian
    assert all(c.passed for c in conformance.check_quantity(_row("GradientTape.jacobian(GradientTape.gradient), eager",
                                                                  kinds=False), problem))

    @tf.function
    def plain(w):  # TensorFlow alone: d^2 (3 w) / dw^2 = 0, yet tf.hessians raises
        return tf.hessians(tf.reduce_sum(3.0 * w), [w])

    with pytest.raises(ValueError, match="None values not supported"):
        plain(tf.constant([0.5], tf.float64))


def test_nested_forward_accumulators_in_tf_function_fail_on_a_comparison() -> None:
    problem = hessverify.load_case(FINDINGS / "tensorflow-nested-forward-comparison.toml")
    graph = _row("ForwardAccumulator over ForwardAccumulator (e_j^T H e_j) in tf.function", kinds=False)
    eager = _row("ForwardAccumulator over ForwardAccumulator (e_j^T H e_j), eager", kinds=False)
    with pytest.raises(FunctionUnderTestError, match="IndexError"):
        conformance.check_quantity(graph, problem)
    assert all(c.passed for c in conformance.check_quantity(eager, problem))

    def second(x, v):  # TensorFlow alone: the second derivative of max(x, 0) through tf.where
        with tf.autodiff.ForwardAccumulator(x, v) as outer:
            with tf.autodiff.ForwardAccumulator(x, v) as inner:
                y = tf.where(x >= 0, x * x, tf.zeros_like(x))
            d = inner.jvp(y)
        return outer.jvp(d)

    x, v = tf.constant([0.3], tf.float64), tf.constant([1.0], tf.float64)
    assert second(x, v).numpy()[0] == 2.0  # eager: right
    with pytest.raises(Exception, match="list index out of range"):
        tf.function(second)(x, v)


BATCH_NORM_EVAL = """
[network]
inputs = 2
layers = [
  { kind = "batch_norm", affine = true, mode = "eval", running_mean = [0.1, -0.2], running_var = [1.5, 0.5] },
  { units = 1, activation = "tanh" },
]
loss = "sse"
reduction = "sum"

[data]
inputs = [[0.3, -0.7], [1.1, 0.4]]
targets = [[0.2], [-0.1]]

[params]
values = [1.2, 0.8, 0.1, -0.3, 0.5, -0.4, 0.05]
"""


def test_an_eval_batch_norm_runs_in_tf_function(tmp_path: Path) -> None:
    # hessverify's own bug, fixed: Keras named the private layer class _EvalBatchNorm "__eval_batch_norm", a name
    # tf.function's name scopes refuse ("not a valid root scope name"): every tf.function row raised on it
    (tmp_path / "bn.toml").write_text(BATCH_NORM_EVAL)
    problem = hessverify.load_case(tmp_path / "bn.toml")
    for words in ("tf.hessians", "ForwardAccumulator over GradientTape (H e_j) in tf.function"):
        comps = conformance.check_quantity(_row(words), problem)
        assert comps and all(c.passed for c in comps), [c.margin for c in comps]


def test_grouped_convolutions_are_not_drawn_again() -> None:
    # their second derivatives raise on CPU (the finding above): every Keras-kinds row stopped at one
    from hessverify.adapters.tensorflow_conformance import _keras_problem

    grouped = hessverify.load_case(FINDINGS / "tensorflow-grouped-conv2d.toml")
    assert _keras_problem(grouped) is None
    assert _keras_problem(hessverify.load_case(FINDINGS / "tensorflow-layer-norm-moments.toml")) is not None
