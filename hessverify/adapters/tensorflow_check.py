r"""Check a user's curvature code on the user's own Keras model: :func:`check_module`.

The function under test gets a copy of the user's model at the dtype asked for (the model itself when it is
already at that dtype), the Keras loss computing in that dtype (:func:`~hessverify.adapters.tensorflow_import.
loss_at`), the inputs and the targets (as tensors, floating ones at that dtype), and returns, by ``returns``:

* ``"hessian"``: ``fn(model, loss, inputs, targets) -> (W, W)``;
* ``"hvp"``: ``fn(model, loss, inputs, targets, v) -> (W,)``, ``H v``;
* ``"diagonal"``: ``fn(model, loss, inputs, targets) -> (W,)``;
* ``"blocks"``: ``fn(...) -> [B_1, B_2, ...]``, one square block per layer that owns trainable weights, in
  ``model.trainable_variables`` order;
* ``"ggn"``: ``fn(...) -> (W, W)``, the generalised Gauss-Newton matrix;

rows and columns in the flat ``model.trainable_variables`` order (each variable flattened row-major, Keras'
layout: a ``Dense`` kernel is ``(in, out)``), ``E = loss(targets, model(inputs, training=False))``.

Where the model imports (:func:`hessverify.adapters.tensorflow_import.import_module`) and the import's ``E``
equals the model's, the result is judged by :func:`hessverify.checking.check.check` with every method and
reference of the registry and its derived rounding bounds.  Where it does not (a custom layer, a
``tf.custom_gradient`` activation, Keras' float64 ``gelu`` and ``MultiHeadAttention`` whose constants pass through
float32), the references are built from the user's own forward in float64 (:func:`module_references`):

* ``rev-rev``: a ``GradientTape.jacobian`` of an inner ``GradientTape``'s gradient;
* ``fwd-rev``: a ``tf.autodiff.ForwardAccumulator`` over a ``GradientTape``, ``H e_j`` column by column;
* ``fd``: central differences of the gradient with the error estimate of Richardson extrapolation
  (:func:`hessverify.checking.module_refs.fd_of_gradient`).

Each AD reference is first held to ``fd``; a ``tf.custom_gradient`` whose gradient cuts the second-order path
(``tf.stop_gradient`` inside it) makes both disagree with ``fd``, which reads the first derivative only, and
the result says so.  The user's result is held to each serving reference within an estimated bound
(:data:`~hessverify.checking.module_refs.ESTIMATED_FACTOR`).

Keras' own ``LayerNormalization`` has a wrong second derivative when its input depends on the weights
(``tf.nn.moments`` stops the mean's gradient, docs/conformance.md): a Hessian taken through it by nested tapes
fails here, correctly, on the imported route.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hessverify.adapters import tensorflow_table as _table
from hessverify.adapters.tensorflow_import import import_module, keras_index, loss_at
from hessverify.checking import module_refs
from hessverify.checking.check import DEFAULT_AGAINST, RETURNS, CheckResult, check
from hessverify.checking.module_refs import ModuleCheckResult
from hessverify.checking.sandbox import DEFAULT_TIMEOUT
from hessverify.errors import FunctionUnderTestError, UnsupportedModel, UsageError, exception_text
from hessverify.model.problem import Problem

keras, tf = _table.keras, _table.tf  # Keras 3 on TensorFlow, as the table set it up (KERAS_BACKEND)

__all__ = ["FlatKeras", "ModuleCheckResult", "at_dtype", "check_module", "module_references"]

_UNIT = {"float64": 2.0 ** -53, "float32": 2.0 ** -24}


def _dtype_name(dtype: Any) -> str:
    try:
        name = tf.as_dtype(dtype).name
    except TypeError:
        name = ""
    if name not in _UNIT:
        raise UsageError(f"dtype={dtype!r}: choose tf.float64 or tf.float32")
    return name


def at_dtype(model: Any, dtype: Any) -> Any:
    """The model at ``dtype``: itself when every weight and layer already is, else a clone (each layer rebuilt from
    its config with ``dtype``, its activation function kept as it is) with the weights cast."""
    name = _dtype_name(dtype)
    layers = [layer for layer in model._flatten_layers(include_self=False) if type(layer).__name__ != "InputLayer"]
    if all(w.dtype == name for w in model.weights) and all(getattr(layer, "compute_dtype", name) == name
                                                           for layer in layers):
        return model

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        config["dtype"] = name
        if "activation" in config and callable(getattr(layer, "activation", None)):
            config["activation"] = layer.activation
        return type(layer).from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=clone)
        copy.set_weights([np.asarray(w, dtype=np.float64).astype(name) if np.issubdtype(np.asarray(w).dtype,
                          np.floating) else w for w in model.get_weights()])
    except Exception as exc:
        raise UsageError(f"{model.name}: cannot make a {name} copy of the model ({exception_text(exc, 160)}); "
                         f"build it at {name} (dtype= on each layer), or give custom layers a get_config") from None
    return copy


def _tensor(a: Any, name: str) -> Any:
    t = tf.convert_to_tensor(a.numpy() if hasattr(a, "numpy") else a)
    return tf.cast(t, name) if t.dtype.is_floating else t


class FlatKeras:
    """``E(theta)`` of the user's model in float64, ``theta`` the flat ``model.trainable_variables`` vector
    (module text), computed statelessly (``model.stateless_call``, ``training=False``)."""

    def __init__(self, model: Any, loss: Any, inputs: Any, targets: Any) -> None:
        self.model = at_dtype(model, "float64")
        self.loss = loss_at(loss, "float64")
        self.x, self.t = _tensor(inputs, "float64"), _tensor(targets, "float64")
        variables = self.model.trainable_variables
        self.names = [v.path for v in variables]
        self.shapes = [tuple(int(s) for s in v.shape) for v in variables]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.theta = np.concatenate([np.asarray(v.numpy(), dtype=np.float64).reshape(-1) for v in variables])
        self._fixed = [v.value for v in self.model.non_trainable_variables]
        self._grad = tf.function(self._gradient, reduce_retracing=True)
        self._hvp = tf.function(self._forward_over_reverse, reduce_retracing=True)

    @property
    def n(self) -> int:
        return int(self.theta.size)

    def E(self, theta: Any) -> Any:
        values = [tf.reshape(p, s) for p, s in zip(tf.split(theta, self.sizes), self.shapes)]
        y, _ = self.model.stateless_call(values, self._fixed, self.x, training=False)
        return self.loss(self.t, y)

    def _gradient(self, theta: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(theta)
            e = self.E(theta)
        return tape.gradient(e, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def _forward_over_reverse(self, theta: Any, v: Any) -> Any:
        with tf.autodiff.ForwardAccumulator(theta, v) as acc:
            g = self._gradient(theta)
        return acc.jvp(g, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def error(self) -> float:
        return float(self.E(tf.constant(self.theta)))

    def grad(self, theta: np.ndarray) -> np.ndarray:
        return self._grad(tf.constant(theta, dtype=tf.float64)).numpy()

    @property
    def param_names(self) -> tuple[str, ...]:
        """``dense/kernel[0,1]``: each entry of the flat vector by its variable's path and index."""
        out: list[str] = []
        for name, shape in zip(self.names, self.shapes):
            out += [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)]
        return tuple(out)

    @property
    def groups(self) -> np.ndarray:
        """For each flat entry, the index of the layer that owns its variable (the ``blocks`` of ``returns``)."""
        owner: dict[int, int] = {}
        for k, layer in enumerate(self.model.layers):
            for v in layer.trainable_variables:
                owner.setdefault(id(v), k)
        firsts: list[int] = []
        out = []
        for v, size in zip(self.model.trainable_variables, self.sizes):
            o = owner.get(id(v), -1 - len(firsts))
            if o not in firsts:
                firsts.append(o)
            out += [firsts.index(o)] * size
        return np.asarray(out)


def reverse_over_reverse(flat: FlatKeras) -> np.ndarray:
    """A ``GradientTape.jacobian`` of an inner tape's gradient (``pfor``; a loop where ``pfor`` cannot)."""
    theta = tf.constant(flat.theta)

    def hessian(pfor: bool) -> np.ndarray:
        with tf.GradientTape() as outer:
            outer.watch(theta)
            g = flat._gradient(theta)
        H = outer.jacobian(g, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO, experimental_use_pfor=pfor)
        return H.numpy()

    try:
        return hessian(True)
    except Exception:  # a custom gradient pfor has no rule for
        return hessian(False)


def forward_over_reverse(flat: FlatKeras) -> np.ndarray:
    """Column ``j``: the tangent of the gradient along ``e_j`` (``ForwardAccumulator`` over ``GradientTape``)."""
    theta = tf.constant(flat.theta)
    cols = [flat._hvp(theta, tf.one_hot(j, flat.n, dtype=tf.float64)).numpy() for j in range(flat.n)]
    return np.stack(cols, axis=1)


def fd_of_gradient(flat: FlatKeras) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of the gradient with their error estimate
    (:func:`hessverify.checking.module_refs.fd_of_gradient`)."""
    return module_refs.fd_of_gradient(flat.grad, flat.theta)


def module_references(flat: FlatKeras) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """The references from the user's own forward that serve, ``name -> (H, error)``, and why the others did not
    (:func:`hessverify.checking.module_refs.serving_references`)."""
    return module_refs.serving_references(
        fd_of_gradient(flat), {"rev-rev": lambda: reverse_over_reverse(flat),
                               "fwd-rev": lambda: forward_over_reverse(flat)}, flat.param_names)


# -- the user's function ---------------------------------------------------------------------------------------------


def _as_array(out: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if isinstance(out, (tf.Tensor, tf.Variable)):
        out = out.numpy()
    arr = np.asarray(out, dtype=np.float64) if out is not None else None
    if arr is None or arr.shape != shape:
        raise FunctionUnderTestError(f"{what} returned {None if arr is None else arr.shape}, expected {shape}")
    return arr


def _user_matrix(fn: Callable[..., Any], args: tuple, returns: str, groups: np.ndarray, dtype: str,
                 W: int) -> np.ndarray:
    """The user's result as a ``(W, W)`` float64 matrix in ``trainable_variables`` order (zeros where not given)."""
    try:
        if returns == "hvp":
            return np.stack([_as_array(fn(*args, tf.one_hot(j, W, dtype=dtype)), (W,),
                                       "fn(model, loss, inputs, targets, v)") for j in range(W)], axis=1)
        out = fn(*args)
    except FunctionUnderTestError:
        raise
    except Exception as exc:
        raise FunctionUnderTestError(f"{type(exc).__name__}: {exc}", cause=exc) from None
    if returns == "diagonal":
        return np.diag(_as_array(out, (W,), "fn(model, loss, inputs, targets)"))
    if returns == "blocks":
        count = int(groups.max()) + 1
        if not isinstance(out, (list, tuple)) or len(out) != count:
            raise FunctionUnderTestError(f"fn returned {type(out).__name__}, expected a list of {count} blocks "
                                         "(one per layer that owns trainable weights)")
        M = np.zeros((W, W))
        for k, block in enumerate(out):
            idx = np.flatnonzero(groups == k)
            M[np.ix_(idx, idx)] = _as_array(block, (idx.size, idx.size), f"block {k}")
        return M
    return _as_array(out, (W, W), "fn(model, loss, inputs, targets)")


def _user_args(model: Any, loss: Any, x: Any, t: Any, dtype: str) -> tuple:
    return at_dtype(model, dtype), loss_at(loss, dtype), _tensor(x, dtype), _tensor(t, dtype)


# -- check_module -------------------------------------------------------------------------------------------------


def _imports(model: Any, loss: Any, x: Any, t: Any, flat: FlatKeras) -> tuple[Problem | None, str]:
    """The problem when the model imports and the import's ``E`` is the model's, else ``None`` and why not."""
    try:
        problem = import_module(model, loss, x, t)
    except UnsupportedModel as exc:
        return None, str(exc)
    from hessverify.engine.objective import error

    mine, theirs = flat.error(), float(error(problem))
    if abs(mine - theirs) > 1e-10 * max(abs(mine), abs(theirs), 1e-300):
        return None, (f"the import's E {theirs!r} differs from the model's {mine!r} (Keras' float64 gelu and "
                      "MultiHeadAttention carry float32 constants, docs/conformance.md)")
    return problem, ""


def check_module(fn: Callable[..., Any], model: Any, loss: Any, inputs: Any, targets: Any, *,
                 returns: str = "hessian", dtype: Any = None, against: Sequence[str] = DEFAULT_AGAINST,
                 timeout: float | None = DEFAULT_TIMEOUT, isolation: str = "thread") -> ModuleCheckResult:
    """Hold the user's curvature code for the user's own Keras model to references (module text).

    Parameters
    ----------
    fn:
        ``fn(model, loss, inputs, targets)`` (``returns="hvp"``: and ``v``), over the flat
        ``model.trainable_variables`` vector, see the module text.
    model, loss, inputs, targets:
        The user's built ``keras.Model``, its Keras loss and one batch.
    returns:
        ``"hessian"``, ``"hvp"``, ``"diagonal"``, ``"blocks"`` or ``"ggn"``.
    dtype:
        The dtype ``fn`` computes in (default: the model's weights'); judged at that format's rounding.
    against:
        For an importable model: the registry's references (as :func:`hessverify.check`).
    timeout, isolation:
        As :func:`hessverify.check`, on the imported route.  ``isolation`` is ``"thread"`` by default, not
        ``"process"``: with TensorFlow loaded the sandbox spawns its child (no fork), which imports TensorFlow
        again (tens of seconds: 47 s for a 26-weight MLP) and receives the Keras model and loss by pickle.  A
        pickled Keras loss comes back at floatx (Keras 3's ``Loss.get_config()`` has no ``dtype``), so the loss is
        set to ``dtype`` again in the child (a correct float64 Hessian failed there by 1e-7 before).

    Returns
    -------
    ModuleCheckResult
        Truthy when everything passed; ``route`` and ``served`` say how it was judged.

    Examples
    --------
    >>> import keras, numpy as np, tensorflow as tf
    >>> net = keras.Sequential([keras.Input((2,), dtype="float64"), keras.layers.Dense(2, "tanh", dtype="float64"),
    ...                         keras.layers.Dense(1, dtype="float64")])
    >>> x, t = np.random.default_rng(0).normal(size=(3, 2)), np.zeros((3, 1))
    >>> def mine(model, loss, x, t):
    ...     with tf.GradientTape(persistent=True) as outer:
    ...         with tf.GradientTape() as inner:
    ...             E = loss(t, model(x))
    ...         g = tf.concat([tf.reshape(d, [-1]) for d in inner.gradient(E, model.trainable_variables)], 0)
    ...     rows = outer.jacobian(g, model.trainable_variables)
    ...     return tf.concat([tf.reshape(r, [g.shape[0], -1]) for r in rows], 1)
    >>> check_module(mine, net, keras.losses.MeanSquaredError(), x, t).passed
    True
    """
    if returns not in RETURNS:
        raise UsageError(f"returns={returns!r}: choose one of {', '.join(RETURNS)}")
    if not callable(fn):
        raise UsageError(f"fn: a {type(fn).__name__} is not callable; pass the function under test")
    if not isinstance(model, keras.Model):
        raise UsageError(f"model: a {type(model).__name__}, not a keras.Model")
    if not model.built or not model.trainable_variables:
        raise UsageError(f"model {model.name}: not built or without trainable weights; call it once first")
    name = _dtype_name(dtype if dtype is not None else model.trainable_variables[0].dtype)
    flat = FlatKeras(model, loss, inputs, targets)
    problem, why = _imports(model, loss, inputs, targets, flat)
    label = f"{type(model).__name__} {model.name}"
    if problem is not None:
        return _check_imported(fn, model, loss, inputs, targets, problem, returns, name, against, timeout, label,
                               flat.groups, isolation)
    if returns == "ggn":
        raise UnsupportedModel(f"returns='ggn' needs a model that imports; this one does not: {why}")
    refs, not_served = module_references(flat)
    A = _user_matrix(fn, _user_args(model, loss, inputs, targets, name), returns, flat.groups, name, flat.n)
    return module_refs.judge(A, refs, {"import": why, **not_served}, module_refs.mask_of(returns, flat.groups),
                             name, returns, label, flat.param_names, flat.groups)


def _check_imported(fn: Callable[..., Any], model: Any, loss: Any, x: Any, t: Any, problem: Problem, returns: str,
                    dtype: str, against: Sequence[str], timeout: float | None, label: str,
                    groups: np.ndarray, isolation: str) -> ModuleCheckResult:
    """Judge on the import with :func:`~hessverify.checking.check.check`, translating between the two orders."""
    idx = keras_index(problem)  # problem entry i is Keras' flat entry idx[i]
    W = problem.n_params
    made = _user_args(model, loss, x, t, dtype)

    def under_test(p: Problem, *vectors: Any) -> Any:
        # the loss at dtype where fn runs (loss_at is the loss itself when it is): a Keras loss sent to a sandbox
        # child by pickle comes back at floatx (Keras 3's Loss.get_config() has no dtype)
        args = (made[0], loss_at(made[1], dtype), *made[2:])
        if returns == "hvp":
            v = np.zeros(W)
            v[idx] = vectors[0]
            out = fn(*args, tf.constant(v, dtype=dtype))
            return _as_array(out, (W,), "fn(model, loss, inputs, targets, v)")[idx]
        M = _user_matrix(fn, args, returns, groups, dtype, W)[np.ix_(idx, idx)]
        if returns == "diagonal":
            return np.diag(M).copy()
        if returns == "blocks":
            return [M[b.slice, b.slice] for b in problem.architecture.blocks]
        return M

    result = check(under_test, problem, returns=returns, against=against, timeout=timeout,  # type: ignore[arg-type]
                   precision=dtype, isolation=isolation)
    fields = {k: getattr(result, k) for k in CheckResult.__dataclass_fields__}
    return ModuleCheckResult(**fields, route="imported", served=tuple(result.against), model=label)
