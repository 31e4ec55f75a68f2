"""TensorFlow's rows of the conformance table: its own second-order code on Keras models, held to ours.

Each row runs one way TensorFlow offers to take second derivatives on a network built from its *own*
parts (:mod:`hessverify.adapters.tensorflow_table`: Keras layers, ``tf.nn`` activations, the Keras loss
classes ``MeanSquaredError``, ``CategoricalCrossentropy(from_logits=True)``,
``BinaryCrossentropy(from_logits=True)``, ``Huber``), and maps the result to hessverify's Hessian:

* ``tf.hessians`` inside ``tf.function`` (graph mode; it is not available eagerly): one block per
  variable, ``d^2 L / dv_i^2``, NaN elsewhere and not compared;
* a ``GradientTape`` ``jacobian`` of the gradient of an inner tape, eagerly and inside ``tf.function``;
* ``ForwardAccumulator`` over a ``GradientTape`` (forward over back: ``H e_j`` a column at a time);
* two nested ``ForwardAccumulator`` (forward over forward: ``e_j^T H e_j``, the diagonal).

The network is the Keras model with the Keras weights taken from one flat vector in the public order
(``model.stateless_call``), so the library differentiates Keras' own layers.  Scale: ``E = c L`` with ``c``
of :func:`hessverify.adapters.tensorflow_table.keras_loss`.  Rows on dense networks are drawn by
:func:`hessverify.checking.strategies.problems` (``kinds=False``), rows on layer kinds with ``kinds=True``
(networks Keras cannot express are not drawn).  Nothing here imports TensorFlow until a row runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.model.problem import Problem

__all__ = ["CONVENTION", "NOT_COVERED", "ROWS", "version"]

CONVENTION = ("Keras losses with dtype = the format: MeanSquaredError E = K/2 L (sse), E = K L (mse, sum), E = L (mse, "
              "mean over N K); CategoricalCrossentropy(from_logits=True) E = L; BinaryCrossentropy(from_logits=True) "
              "E = K L; Huber(delta) E = K L (sum), E = L (mean over N K); output: sum of outputs (/ N for mean)")

NOT_COVERED = ("activations elu, selu, leaky_relu, swish with beta, tanh-approximate gelu (tf.nn.gelu's default); "
               "Keras losses with label smoothing, sample weights, integer labels (SparseCategoricalCrossentropy), "
               "from_logits=False; Keras' float16/bfloat16 policies; tf.hessians on MultiHeadAttention (its Win is "
               "three Keras variables, finer blocks than the public tensors); Dense with a per-unit gain (no Keras "
               "layer); grouped Conv1D/Conv2D (no second derivative on CPU: docs/conformance.md); "
               "TensorFlow Probability (its math.hessian-free tools are not run)")


def version() -> str:
    """The installed TensorFlow's version (the ``tensorflow`` or ``tensorflow-cpu`` distribution), or ``""``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    from importlib.util import find_spec

    if find_spec("tensorflow") is None:
        return ""
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return dist_version(dist)
        except PackageNotFoundError:
            continue
    return ""


def _keras_problem(problem: Problem) -> Problem | None:
    """The problem, or ``None`` when Keras cannot express its network (a draw that is not a Keras model) or
    TensorFlow has no second derivative for one of its layers: a grouped convolution, whose backward of the
    backward raises on CPU (docs/conformance.md; held by its own case and test, not drawn again)."""
    from hessverify.adapters.tensorflow_table import unsupported

    if any(layer.kind in ("conv1d", "conv2d") and layer.opts.get("groups", 1) > 1
           for layer in problem.architecture.layers):
        return None
    return problem if unsupported(problem.architecture) is None else None


def _no_attention(problem: Problem) -> Problem | None:
    """For ``tf.hessians``: networks without attention (MultiHeadAttention splits ``Win`` over three variables)."""
    if any(layer.kind == "attention" for layer in problem.architecture.layers):
        return None
    return _keras_problem(problem)


class _Objective:
    """``L`` of Keras' model and loss class at one problem, in one format: ``L(theta)`` of the flat public vector,
    ``L_vars(values)`` of one tensor per Keras variable, ``c`` with ``E = c L``."""

    def __init__(self, problem: Problem, precision: str) -> None:
        import tensorflow as tf

        from hessverify.adapters import tensorflow as hvtf
        from hessverify.adapters.tensorflow_table import keras_loss

        self.dtype = tf.as_dtype(precision)
        self.model = hvtf.to_keras(problem, dtype=self.dtype, builtin=True)
        self.index = self.model.public_index
        self.crit, self.c = keras_loss(problem, self.dtype)
        self.x = hvtf._inputs(problem, self.dtype)
        self.t = tf.constant(problem.targets, dtype=self.dtype)
        self.shapes = [tuple(v.shape) for v in self.model.trainable_variables]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.non_trainable = [v.value for v in self.model.non_trainable_variables]
        self.theta = tf.constant(problem.params, dtype=self.dtype)
        self.n = problem.n_params

    def L_vars(self, values: list[Any]) -> Any:
        y, _ = self.model.stateless_call(values, self.non_trainable, self.x, training=True)
        return self.crit(self.t, y)

    def split(self, theta: Any) -> list[Any]:
        import tensorflow as tf

        flat = tf.gather(theta, tf.constant(self.index))
        return [tf.reshape(p, s) for p, s in zip(tf.split(flat, self.sizes), self.shapes)]

    def L(self, theta: Any) -> Any:
        return self.L_vars(self.split(theta))

    def out(self, value: Any) -> FloatArray:
        """``c`` times a library result, as float64 (widening is exact)."""
        return self.c * np.asarray(value.numpy(), dtype=np.float64)


def _tape_hessian(obj: _Objective, theta: Any) -> Any:
    """``jacobian`` of an inner tape's gradient: the Hessian by reverse over reverse."""
    import tensorflow as tf

    with tf.GradientTape() as outer:
        outer.watch(theta)
        with tf.GradientTape() as inner:
            inner.watch(theta)
            L = obj.L(theta)
        g = inner.gradient(L, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return outer.jacobian(g, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _forward_over_back(obj: _Objective, theta: Any, v: Any) -> Any:
    """``H v``: a ``ForwardAccumulator`` pushing ``v`` through a tape's gradient."""
    import tensorflow as tf

    with tf.autodiff.ForwardAccumulator(theta, v) as acc:
        with tf.GradientTape() as tape:
            tape.watch(theta)
            L = obj.L(theta)
        # the gradient through tf.gather (the public vector to the Keras weights) is IndexedSlices, which
        # ForwardAccumulator.jvp does not take (AttributeError: 'IndexedSlices' object has no attribute '_id')
        g = tf.convert_to_tensor(tape.gradient(L, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO))
    return acc.jvp(g, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _forward_over_forward(obj: _Objective, theta: Any, u: Any, v: Any) -> Any:
    """``u^T H v``: two nested ``ForwardAccumulator``."""
    import tensorflow as tf

    zero = tf.UnconnectedGradients.ZERO
    with tf.autodiff.ForwardAccumulator(theta, u) as outer:
        with tf.autodiff.ForwardAccumulator(theta, v) as inner:
            L = obj.L(theta)
        d = inner.jvp(L, unconnected_gradients=zero)
    return outer.jvp(d, unconnected_gradients=zero)


def _compiled(fn: Callable[..., Any], graph: bool) -> Callable[..., Any]:
    import tensorflow as tf

    return tf.function(fn, reduce_retracing=True) if graph else fn


def _tape(graph: bool) -> Callable[[Problem, str], FloatArray]:
    def run(problem: Problem, precision: str = "float64") -> FloatArray:
        obj = _Objective(problem, precision)
        return obj.out(_compiled(lambda th: _tape_hessian(obj, th), graph)(obj.theta))
    return run


def _fwd_back(graph: bool) -> Callable[[Problem, str], FloatArray]:
    def run(problem: Problem, precision: str = "float64") -> FloatArray:
        import tensorflow as tf

        obj = _Objective(problem, precision)
        column = _compiled(lambda th, v: _forward_over_back(obj, th, v), graph)
        eye = tf.eye(obj.n, dtype=obj.dtype)
        return obj.out(tf.stack([column(obj.theta, eye[j]) for j in range(obj.n)], axis=1))
    return run


def _fwd_fwd(graph: bool) -> Callable[[Problem, str], FloatArray]:
    def run(problem: Problem, precision: str = "float64") -> FloatArray:
        import tensorflow as tf

        obj = _Objective(problem, precision)
        entry = _compiled(lambda th, v: _forward_over_forward(obj, th, v, v), graph)
        eye = tf.eye(obj.n, dtype=obj.dtype)
        return obj.out(tf.stack([entry(obj.theta, eye[j]) for j in range(obj.n)]))
    return run


def _tf_hessians(problem: Problem, precision: str = "float64") -> FloatArray:
    """``tf.hessians(L, variables)`` in a ``tf.function``: each variable's block, placed at its public indices."""
    import tensorflow as tf

    obj = _Objective(problem, precision)

    @tf.function
    def blocks(values: list[Any]) -> list[Any]:
        return tf.hessians(obj.L_vars(values), values)

    parts = blocks(obj.split(obj.theta))
    out = np.full((obj.n, obj.n), np.nan)
    for t in problem.architecture.tensors:  # a tensor in no Keras weight (its layer is not read): E ignores it
        if not np.isin(np.arange(t.slice.start, t.slice.stop), obj.index).any():
            out[t.slice, t.slice] = 0.0
    start = 0
    for size, block in zip(obj.sizes, parts):
        where = obj.index[start:start + size]
        if block is not None:  # None: L does not depend on the variable (its block is zero)
            out[np.ix_(where, where)] = obj.out(block).reshape(size, size)
        else:
            out[np.ix_(where, where)] = 0.0
        start += size
    return out


_KINDS = {"kinds": True}
_DENSE: dict[str, Any] = {}

ROWS: tuple[tuple[Any, ...], ...] = (
    ("tensorflow", "tf.hessians in tf.function, dense", "Hessian, per-variable blocks", CONVENTION,
             _tf_hessians, "hessian_blocks", _DENSE, _keras_problem),
    ("tensorflow", "GradientTape.jacobian(GradientTape.gradient), eager, dense", "Hessian", CONVENTION,
             _tape(False), "hessian", _DENSE, _keras_problem),
    ("tensorflow", "GradientTape.jacobian(GradientTape.gradient) in tf.function, dense", "Hessian",
             CONVENTION, _tape(True), "hessian", _DENSE, _keras_problem),
    ("tensorflow", "ForwardAccumulator over GradientTape (H e_j), eager, dense", "Hessian, column by column",
             CONVENTION, _fwd_back(False), "hessian", _DENSE, _keras_problem),
    ("tensorflow", "ForwardAccumulator over GradientTape (H e_j) in tf.function, dense",
             "Hessian, column by column", CONVENTION, _fwd_back(True), "hessian", _DENSE, _keras_problem),
    ("tensorflow", "ForwardAccumulator over ForwardAccumulator (e_j^T H e_j), eager, dense", "Hessian diagonal",
             CONVENTION, _fwd_fwd(False), "diagonal", _DENSE, _keras_problem),
    ("tensorflow", "ForwardAccumulator over ForwardAccumulator (e_j^T H e_j) in tf.function, dense",
             "Hessian diagonal", CONVENTION, _fwd_fwd(True), "diagonal", _DENSE, _keras_problem),
    ("tensorflow", "tf.hessians in tf.function, Keras layer kinds but attention", "Hessian, per-variable blocks",
             CONVENTION, _tf_hessians, "hessian_blocks", _KINDS, _no_attention),
    ("tensorflow", "GradientTape.jacobian(GradientTape.gradient), eager, Keras layer kinds", "Hessian",
             CONVENTION, _tape(False), "hessian", _KINDS, _keras_problem),
    ("tensorflow", "ForwardAccumulator over GradientTape (H e_j) in tf.function, Keras layer kinds",
             "Hessian, column by column", CONVENTION, _fwd_back(True), "hessian", _KINDS, _keras_problem),
    ("tensorflow", "ForwardAccumulator over ForwardAccumulator (e_j^T H e_j), eager, Keras layer kinds",
             "Hessian diagonal", CONVENTION, _fwd_fwd(False), "diagonal", _KINDS, _keras_problem),
)
"""TensorFlow's rows of ``hessverify conformance --library tensorflow``: the fields of
:class:`hessverify.adapters.conformance.Quantity` in order (library, name, equals, convention, fn, returns, draw,
adapt), which :mod:`hessverify.adapters.conformance` makes its ``QUANTITIES["tensorflow"]`` (this module stays
below it)."""
