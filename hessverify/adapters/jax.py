"""JAX adapter: a problem as JAX functions and arrays, and checking curvature code written in JAX.

Installed with ``pip install 'hessverify[jax]'`` and imported only when
used: ``import hessverify`` never imports JAX, and ``hessverify.adapters.jax`` is
loaded on first access.

float64.  JAX computes in float32 unless told otherwise; hessverify's
bounds are float64 rounding bounds, so enable float64 first::

    import jax
    jax.config.update("jax_enable_x64", True)

Asking for float64 arrays without it raises a :class:`~hessverify.errors.UsageError`
saying so (rather than handing back float32 silently).

* :func:`loss`: ``E`` as a function of the flat parameter array in the
  public order (``problem.param_names``, see docs/cases.md);
* :func:`to_function`: the network as a pure function
  ``apply(params, inputs) -> outputs`` of per-layer parameters, with the
  parameters: a list, one dict a layer, ``{"W": (units, fan_in), "b": (units,)}``
  (no ``"b"`` for a layer without bias).  ``jax.flatten_util.ravel_pytree(params)``
  flattens it in the public order (layers in order, ``"W"`` sorts before
  ``"b"``); ``param_map`` maps each public tensor name to its place
  (``{"W1": (0, "W"), "b1": (0, "b"), ...}``);
* :func:`loss_fn`: ``E`` from outputs and targets, with the reduction;
* :func:`to_case`: all of these for one problem, as a :class:`JaxCase`;
* :func:`check_model`: hold a user's JAX curvature code (full Hessian,
  Hessian-vector product, diagonal, layer blocks, Gauss-Newton matrix) to
  hessverify's references, as ``jax.test_util.check_grads`` is called;
* :func:`cases`: Hypothesis problems converted to :class:`JaxCase`.

The activations are written in ``jax.numpy`` and stay accurate in both
tails: softplus branches on the sign with each branch fed an argument
clamped to its own side (so the branch not taken never produces inf or NaN
that ``where`` would multiply by 0), gelu is ``a/2 erfc(-a / sqrt 2)``.

Examples
--------
>>> import jax
>>> jax.config.update("jax_enable_x64", True)
>>> import hessverify
>>> import hessverify.adapters.jax as hvj
>>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
>>> jax.hessian(hvj.loss(case))(case.params).shape
(9, 9)
>>> apply, params, param_map = hvj.to_function(case)
>>> param_map["b2"], params[1]["W"].shape
((1, 'b'), (1, 2))
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import jax as _jax  # the JAX package (absolute import), not this module
    import jax.numpy as _jnp
    import jax.scipy.special as _jsp
except ImportError as exc:  # one line that says what to install
    raise ImportError("hessverify.adapters.jax needs JAX: pip install 'hessverify[jax]'") from exc

from hessverify.checking.check import DEFAULT_AGAINST, RETURNS, CheckResult, check
from hessverify.checking.sandbox import DEFAULT_TIMEOUT
from hessverify.errors import FunctionUnderTestError, UsageError
from hessverify.model.problem import Problem

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "RETURNS",
    "JaxCase",
    "cases",
    "check_model",
    "loss",
    "loss_fn",
    "softplus",
    "stable_gelu",
    "to_case",
    "to_function",
]

Array = Any
Params = list[dict[str, Array]]


def softplus(a: Array) -> Array:
    """``log(1 + e^a)``: ``a + log1p(e^-a)`` for ``a > 0``, ``log1p(e^a)`` otherwise, each branch on its own side."""
    positive = a > 0
    up = _jnp.where(positive, a, 0.0)
    down = _jnp.where(positive, 0.0, a)
    return _jnp.where(positive, up + _jnp.log1p(_jnp.exp(-up)), _jnp.log1p(_jnp.exp(down)))


def stable_gelu(a: Array) -> Array:
    """``a Phi(a) = a/2 erfc(-a / sqrt 2)``: no cancellation in the left tail (unlike ``1 + erf``)."""
    return 0.5 * a * _jsp.erfc(-a / math.sqrt(2.0))


def _identity(a: Array) -> Array:
    return a


def _silu(a: Array) -> Array:
    return a * _jax.nn.sigmoid(a)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "identity": _identity,
    "sigmoid": _jax.nn.sigmoid,
    "tanh": _jnp.tanh,
    "softplus": softplus,
    "sin": _jnp.sin,
    "gelu": stable_gelu,
    "silu": _silu,
    "relu": _jax.nn.relu,
}
"""Every activation of the case schema, in ``jax.numpy`` (docs/cases.md)."""


def _sse(y: Array, t: Array) -> Array:
    return 0.5 * _jnp.sum((y - t) ** 2, axis=-1)


def _cross_entropy(y: Array, t: Array) -> Array:
    return -_jnp.sum(t * _jax.nn.log_softmax(y, axis=-1), axis=-1)


def _binary_cross_entropy(y: Array, t: Array) -> Array:
    return _jnp.sum(softplus(y) - t * y, axis=-1)


def _output(y: Array, t: Array) -> Array:
    return _jnp.sum(y, axis=-1)


LOSSES: dict[str, Callable[[Array, Array], Array]] = {
    "sse": _sse,
    "cross_entropy": _cross_entropy,
    "binary_cross_entropy": _binary_cross_entropy,
    "output": _output,
}
"""Per-pattern error ``e(y, t) -> (N,)`` of every loss of the case schema."""



def _dtype(dtype: Any) -> Any:
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16), np.dtype(_jnp.bfloat16)):
        raise UsageError(f"dtype={dtype}: choose float64, float32, float16 or bfloat16")
    if dtype == np.float64 and not _jax.config.jax_enable_x64:
        raise UsageError('JAX computes in float32 unless float64 is enabled: call jax.config.update("jax_enable_x64", '
                         "True) first (hessverify.jax)")
    return dtype


def loss_fn(problem: Problem) -> Callable[[Array, Array], Array]:
    """``E(outputs, targets)``: the loss summed (``sum``) or averaged (``mean``) over patterns."""
    per_pattern = LOSSES[problem.loss]
    mean = problem.reduction == "mean"

    def E(outputs: Array, targets: Array) -> Array:
        e = per_pattern(outputs, targets)
        return _jnp.mean(e) if mean else _jnp.sum(e)

    return E


def _apply(problem: Problem) -> Callable[[Params, Array], Array]:
    arch = problem.architecture
    acts = [ACTIVATIONS[layer.activation] for layer in arch.layers]
    sources = [arch.parents(l) for l in arch.bottom_up]  # a layer reads its sources side by side (0: inputs)

    def apply(params: Params, inputs: Array) -> Array:
        outs = [inputs]
        for layer, f, src in zip(params, acts, sources):
            h = outs[src[0]] if len(src) == 1 else _jnp.concatenate([outs[j] for j in src], axis=-1)
            a = h @ layer["W"].T
            if "b" in layer:
                a = a + layer["b"]
            outs.append(f(a))
        return outs[-1]

    return apply


def _unflatten(problem: Problem, theta: Array) -> Params:
    params: Params = []
    for blk in problem.architecture.blocks:
        layer = {"W": theta[blk.w_slice].reshape(blk.units, blk.fan_in)}
        if blk.bias:
            layer["b"] = theta[blk.b_slice]
        params.append(layer)
    return params


def to_function(problem: Problem, *, dtype: Any = np.float64) -> tuple[Callable[[Params, Array], Array], Params,
                                                                       dict[str, tuple[int, str]]]:
    """The network as a pure function: ``(apply, params, param_map)``.

    ``apply(params, inputs) -> outputs``; ``params`` is the problem's point,
    a list of ``{"W": ..., "b": ...}`` (0-based layers); ``param_map`` maps
    ``"W1"`` to ``(0, "W")``, ``"b1"`` to ``(0, "b")``, and so on.

    Examples
    --------
    >>> import jax, hessverify
    >>> jax.config.update("jax_enable_x64", True)
    >>> apply, params, param_map = to_function(hessverify.load_case("cases/nobias-2-3-2-tanh-sigmoid.toml"))
    >>> param_map
    {'W1': (0, 'W'), 'W2': (1, 'W'), 'b2': (1, 'b')}
    """
    dtype = _dtype(dtype)
    params = _unflatten(problem, _jnp.asarray(problem.params, dtype=dtype))
    param_map: dict[str, tuple[int, str]] = {}
    for i, blk in enumerate(problem.architecture.blocks):
        param_map[f"W{blk.layer}"] = (i, "W")
        if blk.bias:
            param_map[f"b{blk.layer}"] = (i, "b")
    return _apply(problem), params, param_map


def loss(problem: Problem, *, dtype: Any = np.float64) -> Callable[[Array], Array]:
    """``E(theta)``: the error as a function of the flat parameter array in the public order.

    .. math::

       E(\\theta) = s \\sum_n e(y_n(\\theta), t_n), \\qquad s = 1 \\text{ (sum) or } 1/N \\text{ (mean)}

    Examples
    --------
    >>> import jax, hessverify
    >>> jax.config.update("jax_enable_x64", True)
    >>> case = hessverify.load_case("cases/linear-3-2-2.toml")
    >>> bool(abs(loss(case)(case.params) - hessverify.error(case)) <= 1e-12 * abs(hessverify.error(case)))
    True
    """
    dtype = _dtype(dtype)
    x = _jnp.asarray(problem.inputs, dtype=dtype)
    t = _jnp.asarray(problem.targets, dtype=dtype)
    apply, reduce = _apply(problem), loss_fn(problem)

    def E(theta: Array) -> Array:
        return reduce(apply(_unflatten(problem, _jnp.asarray(theta, dtype=dtype)), x), t)

    return E


@dataclass
class JaxCase:
    """One problem as JAX objects, what :func:`check_model` hands to the function under test.

    Attributes
    ----------
    problem:
        The :class:`~hessverify.problem.Problem` itself.
    apply, params, param_map:
        :func:`to_function`: ``outputs = apply(params, inputs)``.
    inputs, targets:
        ``(N, inputs)`` and ``(N, outputs)`` arrays.
    loss_fn:
        :func:`loss_fn`: ``E = loss_fn(apply(params, inputs), targets)``.
    loss:
        :func:`loss`: ``E(theta)`` of the flat parameter array.
    flat_params:
        The flat parameter array in the public order (``param_names``).
    """

    problem: Problem
    apply: Callable[[Params, Array], Array]
    params: Params
    param_map: dict[str, tuple[int, str]]
    inputs: Array
    targets: Array
    loss_fn: Callable[[Array, Array], Array]
    loss: Callable[[Array], Array]
    flat_params: Array

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.problem.param_names

    def E(self, params: Params | None = None) -> Array:
        """The error at ``params`` (default: the problem's point)."""
        return self.loss_fn(self.apply(self.params if params is None else params, self.inputs), self.targets)


def to_case(problem: Problem, *, dtype: Any = np.float64) -> JaxCase:
    """Every JAX object of one problem (:class:`JaxCase`)."""
    dtype = _dtype(dtype)
    apply, params, param_map = to_function(problem, dtype=dtype)
    return JaxCase(problem, apply, params, param_map, _jnp.asarray(problem.inputs, dtype=dtype),
                   _jnp.asarray(problem.targets, dtype=dtype), loss_fn(problem), loss(problem, dtype=dtype),
                   _jnp.asarray(problem.params, dtype=dtype))


def cases(*, dtype: Any = np.float64, **kwargs: Any) -> Any:
    """A Hypothesis strategy of :class:`JaxCase`: :func:`hessverify.checking.strategies.problems` (same keywords) mapped."""
    from hessverify.checking.strategies import problems

    _dtype(dtype)  # refuse float64 without x64 now, not inside the test run
    return problems(**{"kinds": False, **kwargs}).map(lambda p: to_case(p, dtype=dtype))


def _to_numpy(value: Any) -> Any:
    if isinstance(value, _jax.Array):
        return np.asarray(value)
    if isinstance(value, (list, tuple)):
        return [_to_numpy(v) for v in value]
    return value


def check_model(
    fn: Callable[..., Any],
    problems: Problem | Iterable[Problem] | Any,
    *,
    returns: str = "hessian",
    against: Sequence[str] = DEFAULT_AGAINST,
    dtype: Any = np.float64,
    max_examples: int = 100,
    seed: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    precision: Any = None,
) -> CheckResult:
    """Hold JAX curvature code to hessverify's references, as ``jax.test_util.check_grads`` is called.

    ``fn`` receives a :class:`JaxCase` (``fn(case, v)`` for ``"hvp"``, ``v``
    a JAX array of shape ``(W,)``) and returns a JAX array, or a list of
    per-layer blocks for ``"blocks"``; the contracts of ``returns``,
    ``against`` and the rest are those of :func:`hessverify.adapters.torch.check_model`
    and :func:`hessverify.checking.check`.  Needs float64 enabled (module text).

    Examples
    --------
    >>> import jax, hessverify
    >>> jax.config.update("jax_enable_x64", True)
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> check_model(lambda c: jax.hessian(c.loss)(c.flat_params), case).passed
    True
    """
    if returns not in RETURNS:
        raise UsageError(f"returns={returns!r}: choose one of {', '.join(RETURNS)}")
    dtype = _dtype(dtype)

    @functools.wraps(fn)  # __wrapped__: a fault is reported in the user's own frames
    def under_test(problem: Problem, *vectors: Any) -> Any:
        case = to_case(problem, dtype=dtype)
        out = fn(case, *[_jnp.asarray(v, dtype=dtype) for v in vectors])
        if out is not None and not isinstance(out, (_jax.Array, list, tuple, np.ndarray)):
            raise FunctionUnderTestError(f"fn returned a {type(out).__name__}, expected a JAX array", problem=problem)
        return _to_numpy(out)

    if precision is None:  # judged at the format it computes in, however the tensors reach NumPy
        precision = str(dtype).replace("torch.", "")
    return check(under_test, problems, against=against, returns=returns,  # type: ignore[arg-type]
                 max_examples=max_examples, seed=seed, timeout=timeout, precision=precision)
