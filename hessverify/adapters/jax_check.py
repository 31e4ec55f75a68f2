r"""Check a user's curvature code on the user's own equinox model: :func:`check_module`.

The function under test gets the user's model (a copy at the dtype asked
for), the loss function, the inputs and the targets, and returns, by
``returns``:

* ``"hessian"``: ``fn(model, loss_fn, inputs, targets) -> (W, W)``;
* ``"hvp"``: ``fn(model, loss_fn, inputs, targets, v) -> (W,)``, ``H v``;
* ``"diagonal"``: ``fn(model, loss_fn, inputs, targets) -> (W,)``;
* ``"blocks"``: ``fn(...) -> [B_1, B_2, ...]``, one square block per module
  that owns parameters (the leaves' paths without their last key), in leaf order;
* ``"ggn"``: ``fn(...) -> (W, W)``, the generalised Gauss-Newton matrix;

rows and columns in the order of the model's flat leaves,
``jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))``, each
leaf raveled row-major.  The model is a function of one pattern; the batch's
error is ``loss_fn(jax.vmap(model)(inputs), targets)`` (averaged where the loss
returns per-pattern values, as :mod:`hessverify.adapters.jax_import` reads it).

Where the model imports (:func:`hessverify.adapters.jax_import.import_module`)
and the import's loss equals the model's, the result is judged by
:func:`hessverify.checking.check.check` with every method and reference of the
registry and its derived rounding bounds.  Where it does not (a user
``eqx.Module`` with its own ``__call__``, a ``jax.custom_vjp`` activation, a
layer outside the schema), the references are built from the user's own
forward in float64 (:func:`module_references`):

* ``rev-rev``: ``jax.jacrev(jax.jacrev(E))``, reverse over reverse;
* ``fwd-rev``: ``jax.jacfwd(jax.jacrev(E))``, forward over reverse: the
  tangents of the backward pass's operations, not their adjoints;
* ``fd``: central differences of ``jax.grad(E)`` at ``h`` and ``2h``, extrapolated,
  with the Richardson error estimate (:func:`hessverify.checking.module_refs.fd_of_gradient`).

Finite differences use the first derivative only, so a second-order path the
backward cuts (a ``jax.custom_vjp`` whose ``bwd`` applies ``stop_gradient``)
makes both AD references disagree with ``fd``: each AD reference is first
held to ``fd`` within ``fd``'s error estimate and serves only if it agrees;
the result names the references that served and why the others did not.  The
user's result is held to each serving reference within the estimated bound of
:data:`~hessverify.checking.module_refs.ESTIMATED_FACTOR`.

float64 needs ``jax.config.update("jax_enable_x64", True)`` first; without it
these functions raise a :class:`~hessverify.errors.UsageError` saying so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hessverify.adapters.jax_import import (
    apply_batch,
    batch_loss,
    import_module,
    jax_index,
    merge_model,
    model_kind,
    split_model,
)
from hessverify.checking import module_refs
from hessverify.checking.check import DEFAULT_AGAINST, RETURNS, CheckResult, check
from hessverify.checking.module_refs import ModuleCheckResult
from hessverify.checking.sandbox import DEFAULT_ISOLATION, DEFAULT_TIMEOUT
from hessverify.errors import FunctionUnderTestError, UnsupportedModel, UsageError
from hessverify.model.problem import Problem

__all__ = ["FlatModel", "ModuleCheckResult", "check_module", "module_references"]

_UNIT = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


def _modules() -> tuple[Any, Any]:
    import jax
    import jax.numpy as jnp

    return jax, jnp


def _is_model(model: Any) -> str:
    """The model's kind (:func:`~hessverify.adapters.jax_import.model_kind`), or a UsageError naming what it is."""
    try:
        return model_kind(model)
    except UnsupportedModel as exc:
        raise UsageError(str(exc)) from None


def _need_x64() -> None:
    import jax

    if not jax.config.jax_enable_x64:
        raise UsageError('the references compute in float64, which JAX gives only when enabled: call '
                         'jax.config.update("jax_enable_x64", True) first (hessverify.jax)')


def _data(a: Any, dtype: Any) -> Any:
    _, jnp = _modules()
    a = jnp.asarray(a)
    return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a


@dataclass(frozen=True)
class _Spec:
    """What ``E(theta)`` needs besides the arrays, hashable: a static argument of ``jax.jit``, so that the
    compiled references serve every check of the same model structure."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    static: Any
    loss_fn: Any

    def E(self, theta: Any, x: Any, t: Any) -> Any:
        import jax

        leaves, pos = [], 0
        for shape in self.shapes:
            k = int(np.prod(shape, dtype=np.int64))
            leaves.append(theta[pos:pos + k].reshape(shape))
            pos += k
        m = merge_model(jax.tree_util.tree_unflatten(self.treedef, leaves), self.static)
        return batch_loss(self.loss_fn)(apply_batch(m, x, self.static), t)


def _derivatives() -> dict[str, Callable[..., Any]]:
    """``grad``, ``rev-rev``, ``fwd-rev`` and the two HVPs of ``E(theta, spec, x, t)``, not yet compiled."""
    import jax

    def E(theta: Any, spec: _Spec, x: Any, t: Any) -> Any:
        return spec.E(theta, x, t)

    def grad(s: Any, spec: _Spec, x: Any, t: Any) -> Any:
        return jax.grad(E)(s, spec, x, t)

    return {
        "grad": grad,
        "rev-rev": jax.jacrev(jax.jacrev(E)),
        "fwd-rev": jax.jacfwd(jax.jacrev(E)),
        "hvp rev-rev": lambda th, spec, x, t, v: jax.grad(lambda s: grad(s, spec, x, t) @ v)(th),
        "hvp fwd-rev": lambda th, spec, x, t, v: jax.jvp(lambda s: grad(s, spec, x, t), (th,), (v,))[1],
    }


_JITTED: dict[str, Callable[..., Any]] = {}


class FlatModel:
    """``E(theta)`` of the user's model in float64, ``theta`` the flat vector of its inexact leaves (module text)."""

    def __init__(self, model: Any, loss_fn: Any, inputs: Any, targets: Any) -> None:
        jax, jnp = _modules()
        _need_x64()
        params, static = split_model(model)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=jnp.float64), params)
        paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
        # nnx's leaves end in the variable's ``.value``: the path is the variable's
        self.paths = [p[:-1] if len(p) > 1 and str(p[-1]) == ".value" else p for p, _ in paths_leaves]
        self.names = [jax.tree_util.keystr(p) for p in self.paths]
        self.shapes = [tuple(leaf.shape) for _, leaf in paths_leaves]
        self.theta = np.concatenate([np.asarray(leaf, np.float64).reshape(-1) for _, leaf in paths_leaves])
        self.loss_fn = loss_fn
        self.x, self.t = _data(inputs, jnp.float64), _data(targets, jnp.float64)
        self.spec = _Spec(treedef, tuple(self.shapes), static, loss_fn)
        try:  # a static argument of jax.jit: compiled once for every check of the same structure
            self.cached = bool(hash(self.spec) == hash(self.spec) and self.spec == self.spec)
        except Exception:  # a static field that does not hash or compare (an integer array, say)
            self.cached = False

    def E(self, theta: Any) -> Any:
        return self.spec.E(theta, self.x, self.t)

    def run(self, name: str, theta: Any, *vectors: Any) -> np.ndarray:
        """A compiled derivative of ``E`` (``grad``, ``rev-rev``, ``fwd-rev``, ``hvp rev-rev``, ``hvp fwd-rev``)."""
        import jax

        if self.cached:
            if not _JITTED:
                _JITTED.update({k: jax.jit(f, static_argnums=1) for k, f in _derivatives().items()})
            out = _JITTED[name](theta, self.spec, self.x, self.t, *vectors)
        else:
            raw, spec = _derivatives()[name], self.spec
            out = jax.jit(lambda th, x, t, *v: raw(th, spec, x, t, *v))(theta, self.x, self.t, *vectors)
        return np.asarray(out, dtype=np.float64)

    @property
    def n(self) -> int:
        return int(self.theta.size)

    @functools.cached_property
    def grad_noise(self) -> np.ndarray:
        """The float64 gradient's rounding noise at ``theta`` (:func:`module_refs.gradient_noise`), once."""
        return module_refs.gradient_noise(self.grad, self.theta)

    def grad(self, theta: np.ndarray) -> np.ndarray:
        return self.run("grad", theta)

    @property
    def param_names(self) -> tuple[str, ...]:
        """``.layers[0].weight[0,1]``: each entry of the flat vector by its leaf's path and index."""
        out: list[str] = []
        for name, shape in zip(self.names, self.shapes):
            out += [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)]
        return tuple(out)

    @property
    def owners(self) -> list[str]:
        """The modules that own parameters, in leaf order: a leaf's path without its last key."""
        import jax

        out: list[str] = []
        for p in self.paths:
            owner = jax.tree_util.keystr(tuple(p[:-1]))
            if owner not in out:
                out.append(owner)
        return out

    @property
    def groups(self) -> np.ndarray:
        """For each flat entry, the index of the module that owns its leaf (the ``blocks`` of ``returns``)."""
        import jax

        owners = self.owners
        out: list[int] = []
        for p, shape in zip(self.paths, self.shapes):
            out += [owners.index(jax.tree_util.keystr(tuple(p[:-1])))] * int(np.prod(shape, dtype=np.int64))
        return np.asarray(out)


def reverse_over_reverse(flat: FlatModel) -> np.ndarray:
    """``jax.jacrev(jax.jacrev(E))``: each row a reverse pass through the gradient's reverse pass."""
    return flat.run("rev-rev", flat.theta)


def forward_over_reverse(flat: FlatModel) -> np.ndarray:
    """``jax.jacfwd(jax.jacrev(E))``: each column the tangent of the gradient along one direction."""
    return flat.run("fwd-rev", flat.theta)


def fd_of_gradient(flat: FlatModel) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hessverify.checking.module_refs.fd_of_gradient` of the model's float64 gradient."""
    return module_refs.fd_of_gradient(flat.grad, flat.theta)


def module_references(flat: FlatModel) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """The references from the user's own forward that serve, ``name -> (H, error)``, and why the others did not
    (:func:`hessverify.checking.module_refs.serving_references`)."""
    return module_refs.serving_references(fd_of_gradient(flat), {"rev-rev": lambda: reverse_over_reverse(flat),
                                                                 "fwd-rev": lambda: forward_over_reverse(flat)},
                                          flat.param_names)


# -- the user's function ---------------------------------------------------------------------------------------------


def _dtype_of(model: Any, dtype: Any) -> str:
    jax, _ = _modules()
    if dtype is None:
        leaves = jax.tree_util.tree_leaves(split_model(model)[0])
        dtype = leaves[0].dtype if leaves else np.float64
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in _UNIT:
        raise UsageError(f"dtype={dtype!r}: choose float64, float32, float16 or bfloat16")
    return name


def _as_array(out: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        arr = np.asarray(out, dtype=np.float64) if out is not None else None
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != shape:
        raise FunctionUnderTestError(f"{what} returned {None if arr is None else arr.shape}, expected {shape}")
    return arr


class _UserCall:
    """The user's function with its arguments, rebuilt at ``dtype`` on each call.

    The model travels as NumPy leaves and its static part, so that a child
    process (:mod:`hessverify.checking.sandbox`, spawned where JAX is loaded)
    rebuilds it at the right precision after enabling float64 if asked.
    """

    def __init__(self, fn: Callable[..., Any], model: Any, loss_fn: Any, x: Any, t: Any, dtype: str) -> None:
        jax, _ = _modules()
        params, self.static = split_model(model)
        self.params = jax.tree_util.tree_map(np.asarray, params)  # a pytree of NumPy leaves (its treedef does not pickle)
        self.fn, self.loss_fn, self.dtype = fn, loss_fn, dtype
        self.x, self.t = np.asarray(x), np.asarray(t)
        self.__wrapped__ = fn

    def args(self) -> tuple[Any, ...]:
        import jax
        import jax.numpy as jnp

        if self.dtype == "float64" and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)  # a fresh process: as the caller had it
        dt = jnp.dtype(self.dtype)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=dt), self.params)
        return merge_model(params, self.static), self.loss_fn, _data(self.x, dt), _data(self.t, dt)

    def __call__(self, *vectors: Any) -> Any:
        import jax.numpy as jnp

        return self.fn(*self.args(), *[jnp.asarray(v, dtype=jnp.dtype(self.dtype)) for v in vectors])


def _user_matrix(call: _UserCall, returns: str, groups: np.ndarray, W: int) -> np.ndarray:
    """The user's result as a ``(W, W)`` float64 matrix in leaf order (zeros where not given)."""
    try:
        if returns == "hvp":
            cols = []
            for j in range(W):
                v = np.zeros(W)
                v[j] = 1.0
                cols.append(_as_array(call(v), (W,), "fn(model, loss_fn, inputs, targets, v)"))
            return np.stack(cols, axis=1)
        out = call()
    except FunctionUnderTestError:
        raise
    except Exception as exc:
        raise FunctionUnderTestError(f"{type(exc).__name__}: {exc}", cause=exc) from None
    if returns == "diagonal":
        return np.diag(_as_array(out, (W,), "fn(model, loss_fn, inputs, targets)"))
    if returns == "blocks":
        count = int(groups.max()) + 1
        if not isinstance(out, (list, tuple)) or len(out) != count:
            raise FunctionUnderTestError(f"fn returned {type(out).__name__}, expected a list of {count} blocks "
                                         "(one per module that owns parameters)")
        M = np.zeros((W, W))
        for k, block in enumerate(out):
            idx = np.flatnonzero(groups == k)
            M[np.ix_(idx, idx)] = _as_array(block, (idx.size, idx.size), f"block {k}")
        return M
    return _as_array(out, (W, W), "fn(model, loss_fn, inputs, targets)")


class _UnderTest:
    """The user's function as ``check`` calls it: of a problem (and a vector), in the problem's order."""

    def __init__(self, call: _UserCall, returns: str, idx: np.ndarray, groups: np.ndarray) -> None:
        self.call, self.returns, self.idx, self.groups = call, returns, idx, groups
        self.__wrapped__ = call.fn

    def __call__(self, problem: Problem, *vectors: Any) -> Any:
        W, idx = problem.n_params, self.idx
        if self.returns == "hvp":
            v = np.zeros(W)
            v[idx] = np.asarray(vectors[0], dtype=np.float64)
            return _as_array(self.call(v), (W,), "fn(model, loss_fn, inputs, targets, v)")[idx]
        M = _user_matrix(self.call, self.returns, self.groups, W)[np.ix_(idx, idx)]
        if self.returns == "diagonal":
            return np.diag(M).copy()
        if self.returns == "blocks":
            return [M[b.slice, b.slice] for b in problem.architecture.blocks]
        return M


# -- check_module -------------------------------------------------------------------------------------------------


def _imports(flat: FlatModel, model: Any, loss_fn: Any, x: Any, t: Any) -> tuple[Problem | None, str]:
    """The problem when the model imports and the import's loss is the model's, else ``None`` and why not."""
    try:
        problem = import_module(model, loss_fn, x, t)
    except UnsupportedModel as exc:
        return None, str(exc)
    from hessverify.engine.objective import error

    mine = float(flat.E(flat.theta))
    theirs = float(error(problem))
    if abs(mine - theirs) > 1e-10 * max(abs(mine), abs(theirs), 1e-300):
        return None, f"the import's loss {theirs!r} differs from the model's {mine!r}"
    return problem, ""


def check_module(fn: Callable[..., Any], model: Any, loss_fn: Any, inputs: Any, targets: Any, *,
                 returns: str = "hessian", dtype: Any = None, against: Sequence[str] = DEFAULT_AGAINST,
                 timeout: float | None = DEFAULT_TIMEOUT, isolation: str = DEFAULT_ISOLATION) -> ModuleCheckResult:
    """Hold the user's curvature code for the user's own equinox model to references (module text).

    Parameters
    ----------
    fn:
        ``fn(model, loss_fn, inputs, targets)`` (``returns="hvp"``: and ``v``), see the module text.
    model, loss_fn, inputs, targets:
        The user's ``eqx.Module`` (a function of one pattern), its loss of the batch, one batch.
    returns:
        ``"hessian"``, ``"hvp"``, ``"diagonal"``, ``"blocks"`` or ``"ggn"``.
    dtype:
        The dtype ``fn`` computes in (default: the model's); the result is judged at that format's rounding.
    against, timeout, isolation:
        For an importable model: as :func:`hessverify.check`.

    Returns
    -------
    ModuleCheckResult
        Truthy when everything passed; ``route`` and ``served`` say how it was judged.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, equinox as eqx
    >>> jax.config.update("jax_enable_x64", True)
    >>> mlp = eqx.nn.MLP(2, 1, 2, 1, activation=jnp.tanh, key=jax.random.key(0), dtype=jnp.float64)
    >>> x, t = jax.random.normal(jax.random.key(1), (3, 2)), jax.random.normal(jax.random.key(2), (3, 1))
    >>> def mine(model, loss_fn, x, t):
    ...     params, static = eqx.partition(model, eqx.is_inexact_array)
    ...     flat, unravel = jax.flatten_util.ravel_pytree(params)
    ...     E = lambda th: loss_fn(jax.vmap(eqx.combine(unravel(th), static))(x), t)
    ...     return jax.hessian(E)(flat)
    >>> check_module(mine, mlp, lambda y, t: jnp.mean((y - t) ** 2), x, t, isolation="thread").passed
    True
    """
    if returns not in RETURNS:
        raise UsageError(f"returns={returns!r}: choose one of {', '.join(RETURNS)}")
    if not callable(fn):
        raise UsageError(f"fn: a {type(fn).__name__} is not callable; pass the function under test")
    _is_model(model)
    _need_x64()
    dtype = _dtype_of(model, dtype)
    name = type(model).__name__
    flat = FlatModel(model, loss_fn, inputs, targets)
    call = _UserCall(fn, model, loss_fn, inputs, targets, dtype)
    problem, why = _imports(flat, model, loss_fn, inputs, targets)
    if problem is not None:
        under_test = _UnderTest(call, returns, jax_index(problem), flat.groups)
        result = check(under_test, problem, returns=returns, against=against, timeout=timeout,  # type: ignore[arg-type]
                       precision=dtype, isolation=isolation)
        fields = {k: getattr(result, k) for k in CheckResult.__dataclass_fields__}
        return ModuleCheckResult(**fields, route="imported", served=tuple(result.against), model=name)
    if returns == "ggn":
        raise UnsupportedModel(f"returns='ggn' needs a model that imports; this one does not: {why}")
    refs, not_served = module_references(flat)
    not_served = {"import": why, **not_served}
    A = _user_matrix(call, returns, flat.groups, flat.n)
    return module_refs.judge(A, refs, not_served, module_refs.mask_of(returns, flat.groups), dtype, returns,
                             name, flat.param_names, flat.groups)
