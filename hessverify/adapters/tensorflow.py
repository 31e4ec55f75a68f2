"""TensorFlow adapter: a problem as TensorFlow and Keras objects, and checking curvature code written in TensorFlow.

Installed with ``pip install 'hessverify[tensorflow]'`` (``tensorflow-cpu==2.21.0``; Keras 3 comes with
it) and imported only when used: ``import hessverify`` never imports TensorFlow (``import tensorflow``
takes about 10 s), and ``hessverify.adapters.tensorflow`` is loaded on first access.

* :func:`loss`: ``E`` as a function of the flat parameter tensor in the public order
  (``problem.param_names``, see docs/cases.md), written in ``tf`` operations for the dense networks and
  through the Keras model (:func:`to_keras`, called statelessly) for the other layer kinds;
* :func:`to_keras`: a ``keras.Model`` of Keras layers (``Dense``, ``Conv1D``, ``Conv2D``,
  ``AveragePooling1D/2D``, ``LayerNormalization``, ``BatchNormalization``, ``MultiHeadAttention``,
  ``Embedding``, ``Add``, ``Flatten``) at the problem's parameters; its weights are Keras' layouts
  (kernels ``(in, out)``), and :class:`KerasCase` says where each public parameter sits in them;
* :func:`loss_fn`: ``E`` from the outputs and targets, with the reduction;
* :func:`to_case`: all of these for one problem, as a :class:`KerasCase`;
* :func:`check_model`: hold a user's TensorFlow curvature code (full Hessian, Hessian-vector product,
  diagonal, layer blocks, Gauss-Newton matrix) to hessverify's references, as the torch adapter does;
* :func:`import_module`: a user's Keras ``Sequential`` or functional model and Keras loss as a problem
  (:mod:`hessverify.adapters.tensorflow_import`);
* :func:`check_module`: hold the user's curvature code for the user's own Keras model to references, on the
  import or, where it does not import, from the model's own forward
  (:mod:`hessverify.adapters.tensorflow_check`).

The activations and losses here are the accurate ones of :mod:`hessverify.adapters.tensorflow_table`
(softplus branched on the sign, gelu through ``erfc``); the ``tf.nn`` builtins are what
``hessverify conformance --library tensorflow`` holds to account.

Examples
--------
>>> import tensorflow as tf
>>> import hessverify
>>> import hessverify.adapters.tensorflow as hvtf
>>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
>>> theta = tf.constant(case.params)
>>> with tf.GradientTape() as outer:
...     outer.watch(theta)
...     with tf.GradientTape() as inner:
...         inner.watch(theta)
...         E = hvtf.loss(case)(theta)
...     g = inner.gradient(E, theta)
>>> outer.jacobian(g, theta).shape
TensorShape([9, 9])
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    from hessverify.adapters import tensorflow_table as _table
except ImportError as exc:  # one line that says what to install
    raise ImportError("hessverify.adapters.tensorflow needs TensorFlow: pip install 'hessverify[tensorflow]' "
                      "(tensorflow-cpu==2.21.0)") from exc

import tensorflow as _tf  # noqa: E402  (the TensorFlow package, not this module)

from hessverify.adapters.tensorflow_check import ModuleCheckResult, check_module  # noqa: E402
from hessverify.adapters.tensorflow_import import import_module  # noqa: E402
from hessverify.checking.check import DEFAULT_AGAINST, RETURNS, CheckResult, check  # noqa: E402
from hessverify.checking.sandbox import DEFAULT_ISOLATION, DEFAULT_TIMEOUT  # noqa: E402
from hessverify.errors import FunctionUnderTestError, UsageError  # noqa: E402
from hessverify.model.problem import Problem  # noqa: E402

__all__ = ["RETURNS", "KerasCase", "ModuleCheckResult", "cases", "check_model", "check_module", "import_module", "loss",
           "loss_fn", "to_case", "to_keras"]

Tensor = Any


def _dtype(dtype: Any) -> Any:
    try:
        d = _tf.as_dtype(dtype)
    except TypeError:
        d = None
    if d not in (_tf.float64, _tf.float32):
        raise UsageError(f"dtype={dtype!r}: choose tf.float64 or tf.float32")
    return d


def loss_fn(problem: Problem) -> Callable[[Tensor, Tensor], Tensor]:
    """``E(outputs, targets)``: the problem's loss summed or averaged (``problem.scale``) over patterns."""
    _table.require(problem)
    row = _table.LOSSES[problem.loss]
    delta = _table._delta(problem)
    scale = problem.scale

    def E(outputs: Tensor, targets: Tensor) -> Tensor:
        return scale * _tf.reduce_sum(row.per_pattern(outputs, targets, delta))

    return E


def _dense_forward(problem: Problem, theta: Tensor, x: Tensor) -> Tensor:
    """A dense network's outputs with its parameters read from the flat vector in the public order."""
    _table.require(problem)
    arch = problem.architecture
    outs = [x]
    for blk, layer in zip(arch.blocks, arch.layers):
        h = _tf.concat([outs[j] for j in arch.parents(blk.layer)], axis=-1)  # the sources side by side
        w = _tf.reshape(theta[blk.w_slice], (blk.units, blk.fan_in))
        a = _tf.matmul(h, w, transpose_b=True)
        if blk.bias:
            a = a + theta[blk.b_slice]
        outs.append(_table.ACTIVATIONS[layer.activation].accurate(a))
    return outs[-1]


def _inputs(problem: Problem, dtype: Any) -> Tensor:
    """The inputs as the network reads them: ``(N, *input_shape)``, token ids as ``int32``."""
    arch = problem.architecture
    x = np.asarray(problem.inputs).reshape((problem.n_patterns,) + arch.shape)
    if arch.layers[0].kind_def.reads_ids:
        return _tf.constant(np.rint(x).astype(np.int32))
    return _tf.constant(x, dtype=dtype)


def _stateless(model: Any, index: np.ndarray) -> Callable[[Tensor, Tensor], Tensor]:
    """``outputs(theta, x)``: the Keras model at the flat public vector ``theta`` (its weights untouched)."""
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    non_trainable = [v.value for v in model.non_trainable_variables]
    take = _tf.constant(index)

    def outputs(theta: Tensor, x: Tensor) -> Tensor:
        flat = _tf.gather(theta, take)  # the Keras weights, concatenated, from the public vector
        values = [_tf.reshape(p, s) for p, s in zip(_tf.split(flat, sizes), shapes)]
        y, _ = model.stateless_call(values, non_trainable, x, training=True)
        return y

    return outputs


def loss(problem: Problem, *, dtype: Any = _tf.float64) -> Callable[[Tensor], Tensor]:
    """``E(theta)``: the error as a function of the flat parameter tensor in the public order.

    .. math::

       E(\\theta) = s \\sum_n e(y_n(\\theta), t_n), \\qquad s = 1 \\text{ (sum) or } 1/N \\text{ (mean)}

    Dense networks are written in ``tf`` operations; other layer kinds go through :func:`to_keras`'s model
    (``stateless_call``), with the accurate activations.

    Examples
    --------
    >>> import tensorflow as tf, hessverify
    >>> case = hessverify.load_case("cases/linear-3-2-2.toml")
    >>> abs(float(loss(case)(tf.constant(case.params))) - hessverify.error(case)) <= 1e-12 * abs(hessverify.error(case))
    True
    """
    dtype = _dtype(dtype)
    t = _tf.constant(problem.targets, dtype=dtype)
    reduce = loss_fn(problem)
    x = _inputs(problem, dtype)
    if problem.architecture.is_dense:
        def E(theta: Tensor) -> Tensor:
            return reduce(_dense_forward(problem, theta, x), t)
        return E
    model = to_keras(problem, dtype=dtype)
    outputs = _stateless(model, model.public_index)

    def E_kinds(theta: Tensor) -> Tensor:
        return reduce(outputs(theta, x), t)

    return E_kinds


def to_keras(problem: Problem, *, dtype: Any = _tf.float64, builtin: bool = False) -> Any:
    """The problem's network as a ``keras.Model`` at the problem's parameters.

    Its trainable weights are Keras' (a ``Dense`` kernel is ``W^T``, a ``Conv1D`` kernel ``(k, in, out)``,
    ``MultiHeadAttention`` three ``(d, heads, d_h)`` kernels for ``Win``); two attributes say where the
    public parameters are: ``model.public_index[k]`` is the public index of entry ``k`` of the
    trainable weights flattened and concatenated, and ``model.param_map`` maps each public tensor name
    (``W1``, ``bin2``) to the paths of the variables holding it (none for a layer the output does not read:
    Keras leaves it out of a functional model).  ``builtin``: the ``tf.nn`` activations
    instead of the accurate ones.

    Examples
    --------
    >>> import hessverify
    >>> net = to_keras(hessverify.load_case("cases/nobias-2-3-2-tanh-sigmoid.toml"))
    >>> [tuple(v.shape) for v in net.trainable_variables]
    [(2, 3), (3, 2), (2,)]
    >>> net.public_index[:3].tolist()  # W1[0,0], W1[1,0], W1[2,0]: the kernel is W1 transposed
    [0, 2, 4]
    """
    dtype = _dtype(dtype)
    try:
        model, held = _table.build_model(problem, dtype=dtype, builtin=builtin)
    except ValueError as exc:
        raise UsageError(f"{problem.id}: {exc}") from None
    index = _table.public_index(model, held, problem)
    param_map: dict[str, list[str]] = {}
    owner = np.repeat(np.arange(len(model.trainable_variables)),
                      [int(np.prod(v.shape, dtype=np.int64)) for v in model.trainable_variables])
    for t in problem.architecture.tensors:
        holders = sorted(set(owner[np.isin(index, np.arange(t.slice.start, t.slice.stop))].tolist()))
        param_map[t.label] = [model.trainable_variables[i].path for i in holders]
    model.public_index = index
    model.param_map = param_map
    return model


@dataclass
class KerasCase:
    """One problem as TensorFlow objects, what :func:`check_model` hands to the function under test.

    Attributes
    ----------
    problem:
        The :class:`~hessverify.model.problem.Problem` itself.
    model:
        :func:`to_keras` (``model.public_index``, ``model.param_map``).
    inputs, targets:
        ``(N, *input_shape)`` (token ids as ``int32``) and ``(N, outputs)`` tensors.
    loss_fn:
        :func:`loss_fn`: ``E = loss_fn(model(inputs), targets)``.
    loss:
        :func:`loss`: ``E(theta)`` of the flat parameter tensor.
    params:
        The flat parameter tensor in the public order (``param_names``).
    """

    problem: Problem
    model: Any
    inputs: Tensor
    targets: Tensor
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    loss: Callable[[Tensor], Tensor]
    params: Tensor

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.problem.param_names

    @property
    def variables(self) -> list[Any]:
        """The model's trainable variables, in Keras' order."""
        return list(self.model.trainable_variables)

    def E(self) -> Tensor:
        """The error at the model's current weights."""
        return self.loss_fn(self.model(self.inputs, training=True), self.targets)

    def to_public(self, value: Any) -> np.ndarray:
        """A vector or matrix over the model's weights (flattened, concatenated in Keras' order) in the public
        order: what a Hessian taken with respect to ``model.trainable_variables`` needs before it is returned."""
        a = np.asarray(value)
        n, where = self.problem.n_params, self.model.public_index
        if a.ndim == 1:
            out = np.zeros(n, dtype=a.dtype)
            out[where] = a
            return out
        out = np.zeros((n, n), dtype=a.dtype)  # a layer the output does not read: no weight, zero curvature
        out[np.ix_(where, where)] = a
        return out


def to_case(problem: Problem, *, dtype: Any = _tf.float64) -> KerasCase:
    """Every TensorFlow object of one problem (:class:`KerasCase`)."""
    dtype = _dtype(dtype)
    return KerasCase(problem, to_keras(problem, dtype=dtype), _inputs(problem, dtype),
                     _tf.constant(problem.targets, dtype=dtype), loss_fn(problem), loss(problem, dtype=dtype),
                     _tf.constant(problem.params, dtype=dtype))


def cases(*, dtype: Any = _tf.float64, **kwargs: Any) -> Any:
    """A Hypothesis strategy of :class:`KerasCase`: :func:`hessverify.checking.strategies.problems` (same keywords)
    mapped, the networks Keras cannot express left out."""
    from hessverify.checking.strategies import problems

    return problems(**_table.within({"kinds": False, **kwargs})).filter(
        lambda p: _table.unsupported(p.architecture) is None).map(lambda p: to_case(p, dtype=dtype))


def _to_numpy(value: Any) -> Any:
    """A tensor (or a list of them, for blocks) as NumPy; anything else is passed on for check() to judge."""
    if isinstance(value, (_tf.Tensor, _tf.Variable)):
        return np.asarray(value.numpy(), dtype=np.float64)
    if isinstance(value, (list, tuple)):
        return [_to_numpy(v) for v in value]
    return value


def check_model(
    fn: Callable[..., Any],
    problems: Problem | Iterable[Problem] | Any,
    *,
    returns: str = "hessian",
    against: Sequence[str] = DEFAULT_AGAINST,
    dtype: Any = _tf.float64,
    max_examples: int = 100,
    seed: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    precision: Any = None,
    isolation: str = DEFAULT_ISOLATION,
) -> CheckResult:
    """Hold TensorFlow curvature code to hessverify's references, as :func:`hessverify.adapters.torch.check_model`.

    ``fn`` receives a :class:`KerasCase` and returns a tensor (or array): ``"hessian"`` ``(W, W)`` in the
    public order (:meth:`KerasCase.to_public` reorders one taken over ``model.trainable_variables``),
    ``"hvp"`` ``fn(case, v)``, ``"diagonal"``, ``"blocks"``, ``"ggn"``, as the torch adapter documents.
    ``problems``: a problem, an iterable of them or a Hypothesis strategy (a failure is shrunk).  Judged
    at ``dtype``'s format unless ``precision`` says another.

    Examples
    --------
    >>> import tensorflow as tf, hessverify
    >>> def hessian(case):
    ...     with tf.GradientTape() as outer:
    ...         outer.watch(case.params)
    ...         with tf.GradientTape() as inner:
    ...             inner.watch(case.params)
    ...             E = case.loss(case.params)
    ...         g = inner.gradient(E, case.params)
    ...     return outer.jacobian(g, case.params)
    >>> check_model(hessian, hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")).passed
    True
    """
    if returns not in RETURNS:
        raise UsageError(f"returns={returns!r}: choose one of {', '.join(RETURNS)}")
    dtype = _dtype(dtype)

    @functools.wraps(fn)  # __wrapped__: a fault is reported in the user's own frames
    def under_test(problem: Problem, *vectors: Any) -> Any:
        case = to_case(problem, dtype=dtype)
        args = [_tf.constant(np.asarray(v), dtype=dtype) for v in vectors]
        out = fn(case, *args)
        if out is not None and not isinstance(out, (_tf.Tensor, _tf.Variable, list, tuple, np.ndarray)):
            raise FunctionUnderTestError(f"fn returned a {type(out).__name__}, expected a tf.Tensor", problem=problem)
        return _to_numpy(out)

    if precision is None:
        precision = dtype.name
    return check(under_test, problems, against=against, returns=returns,  # type: ignore[arg-type]
                 max_examples=max_examples, seed=seed, timeout=timeout, precision=precision, isolation=isolation)
