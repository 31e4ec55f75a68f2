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
  parameters: a list, one dict a layer keyed by its tensors' short names,
  ``{"W": (units, fan_in), "b": (units,)}`` for a dense layer (no ``"b"``
  without bias), PyTorch's shapes for the other kinds (a conv's ``"W"`` is
  ``(channels, in_channels / groups, *kernel)``; attention has ``"Win"``,
  ``"bin"``, ``"Wout"``, ``"bout"``).  ``jax.flatten_util.ravel_pytree(params)``
  flattens it in the public order except for attention (its keys sort
  ``Win, Wout, bin, bout``): :func:`flat_params` is the public order always;
  ``param_map`` maps each public tensor name to its place
  (``{"W1": (0, "W"), "b1": (0, "b"), ...}``).  ``inputs`` are
  ``(N, *input_shape)`` (integer token ids for an embedding network);
* :func:`loss_fn`: ``E`` from outputs (flattened per pattern) and targets, with the reduction;
* :func:`to_case`: all of these for one problem, as a :class:`JaxCase`;
* :func:`check_model`: hold a user's JAX curvature code (full Hessian,
  Hessian-vector product, diagonal, layer blocks, Gauss-Newton matrix) to
  hessverify's references, as ``jax.test_util.check_grads`` is called;
* :func:`cases`: Hypothesis problems converted to :class:`JaxCase`;
* :func:`import_module`, :func:`check_module`, :func:`check_hvp`: the user's own equinox model and loss, imported
  into the schema or judged by references from its own forward (:mod:`hessverify.adapters.jax_import`,
  :mod:`hessverify.adapters.jax_check`, :mod:`hessverify.adapters.jax_hvp`; equinox needed for these).

The layers are JAX's own functions where it has them (``jax.lax.conv_general_dilated``,
``jax.lax.reduce_window``, ``jax.nn.standardize``, ``jax.nn.dot_product_attention``),
and the activations stay accurate in both tails: softplus branches on the
sign with each branch fed an argument clamped to its own side (so the branch
not taken never produces inf or NaN that ``where`` would multiply by 0),
gelu is ``a/2 erfc(-a / sqrt 2)``.  The table, written once for the adapter
and the conformance rows, is :mod:`hessverify.adapters.jax_table`.

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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import jax as _jax  # the JAX package (absolute import), not this module
    import jax.numpy as _jnp
except ImportError as exc:  # one line that says what to install
    raise ImportError("hessverify.adapters.jax needs JAX: pip install 'hessverify[jax]'") from exc

from hessverify.adapters import jax_table as _table
from hessverify.adapters.jax_check import ModuleCheckResult, check_module
from hessverify.adapters.jax_hvp import HvpCheckResult, check_hvp
from hessverify.adapters.jax_import import import_module
from hessverify.adapters.jax_table import softplus, stable_gelu
from hessverify.checking.check import DEFAULT_AGAINST, RETURNS, CheckResult, check
from hessverify.checking.sandbox import DEFAULT_ISOLATION, DEFAULT_TIMEOUT
from hessverify.errors import FunctionUnderTestError, UsageError
from hessverify.model.losses import get_loss
from hessverify.model.problem import Problem

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "RETURNS",
    "HvpCheckResult",
    "JaxCase",
    "ModuleCheckResult",
    "cases",
    "check_hvp",
    "check_model",
    "check_module",
    "flat_params",
    "import_module",
    "loss",
    "loss_fn",
    "softplus",
    "stable_gelu",
    "to_case",
    "to_function",
]

Array = Any
Params = list[dict[str, Array]]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {n: a.accurate for n, a in _table.ACTIVATIONS.items()}
"""Every activation of the case schema, in ``jax.numpy`` (docs/cases.md; the accurate column of the table)."""


def _per_pattern(name: str) -> Callable[[Array, Array], Array]:
    row = _table.LOSSES[name]
    return lambda y, t: row.per_pattern(y, t, softplus)


LOSSES: dict[str, Callable[[Array, Array], Array]] = {n: _per_pattern(n) for n in _table.LOSSES}
"""Per-pattern error ``e(y, t) -> (N,)`` of every loss of the case schema."""


def _dtype(dtype: Any) -> Any:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise UsageError(f"dtype={dtype!r}: choose float64, float32, float16 or bfloat16") from None
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16), np.dtype(_jnp.bfloat16)):
        raise UsageError(f"dtype={dtype}: choose float64, float32, float16 or bfloat16")
    if dtype == np.float64 and not _jax.config.jax_enable_x64:
        raise UsageError('JAX computes in float32 unless float64 is enabled: call jax.config.update("jax_enable_x64", '
                         "True) first (hessverify.jax)")
    return dtype


def loss_fn(problem: Problem) -> Callable[[Array, Array], Array]:
    """``E(outputs, targets)``: the loss summed (``sum``) or averaged (``mean``) over patterns (over patterns and
    outputs for ``mse`` and ``huber``, as PyTorch's classes average)."""
    _table.require(problem)
    row, options = _table.LOSSES[str(problem.loss)], dict(problem.loss_options)
    mean, per_output = problem.reduction == "mean", get_loss(problem.loss).mean_over_outputs

    def E(outputs: Array, targets: Array) -> Array:
        y = outputs.reshape(outputs.shape[0], -1)  # the outputs flattened per pattern
        e = row.per_pattern(y, targets, softplus, **options)
        return _jnp.sum(e) / (y.shape[0] * (y.shape[1] if per_output else 1)) if mean else _jnp.sum(e)

    return E


def _inputs(problem: Problem, dtype: Any) -> Array:
    """``problem.inputs`` as ``apply`` takes them: ``(N, *input_shape)``, token ids as integers."""
    arch = problem.architecture
    x = np.asarray(problem.inputs).reshape((problem.n_patterns,) + arch.shape)
    if arch.layers[0].kind_def.reads_ids:
        return _jnp.asarray(np.round(x).astype(np.int32))
    return _jnp.asarray(x, dtype=dtype)


def flat_params(problem: Problem, params: Params) -> Array:
    """``params`` (one dict a layer) as the flat vector in the public order."""
    return _table.flatten(problem.architecture, params)


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
    _table.require(problem)
    arch = problem.architecture
    params = _table.unflatten(arch, _jnp.asarray(problem.params, dtype=dtype))
    param_map = {t.label: (t.layer - 1, t.name) for t in arch.tensors}
    return _table.apply_fn(arch), params, param_map


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
    arch = problem.architecture
    x = _inputs(problem, dtype)
    t = _jnp.asarray(problem.targets, dtype=dtype)
    reduce = loss_fn(problem)  # refuses first what the table has no row for
    apply = _table.apply_fn(arch)

    def E(theta: Array) -> Array:
        return reduce(apply(_table.unflatten(arch, _jnp.asarray(theta, dtype=dtype)), x), t)

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
        ``(N, *input_shape)`` (``(N, inputs)`` for a dense network; integer token ids for an embedding
        network) and ``(N, outputs)`` arrays.
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
    return JaxCase(problem, apply, params, param_map, _inputs(problem, dtype),
                   _jnp.asarray(problem.targets, dtype=dtype), loss_fn(problem), loss(problem, dtype=dtype),
                   _jnp.asarray(problem.params, dtype=dtype))


def cases(*, dtype: Any = np.float64, **kwargs: Any) -> Any:
    """A Hypothesis strategy of :class:`JaxCase`: :func:`hessverify.checking.strategies.problems` (same keywords) mapped."""
    from hessverify.checking.strategies import problems

    _dtype(dtype)  # refuse float64 without x64 now, not inside the test run
    return problems(**_table.within({"kinds": False, **kwargs})).map(lambda p: to_case(p, dtype=dtype))


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
    isolation: str = DEFAULT_ISOLATION,
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
    if not isinstance(returns, str) or returns not in RETURNS:
        raise UsageError(f"returns={returns!r}: choose one of {', '.join(RETURNS)}")
    dtype = _dtype(dtype)
    if not callable(fn):
        raise UsageError(f"fn: {type(fn).__name__!r} is not callable; pass the function under test")
    under_test = _UnderTest(fn, dtype)

    if precision is None:  # judged at the format it computes in, however the tensors reach NumPy
        precision = str(dtype).replace("torch.", "")
    return check(under_test, problems, against=against, returns=returns,  # type: ignore[arg-type]
                 max_examples=max_examples, seed=seed, timeout=timeout, precision=precision, isolation=isolation)


class _UnderTest:
    """``fn`` of a :class:`JaxCase` as a function of a problem, its arrays handed back as NumPy.

    A class, not a closure, so that it can be sent to a spawned child process
    (:mod:`hessverify.checking.sandbox`; a process with a JAX backend is not
    forked), where it enables float64 first if it computes in float64;
    ``__wrapped__`` lets a fault be reported in the user's own frames.
    """

    def __init__(self, fn: Callable[..., Any], dtype: Any) -> None:
        self.fn, self.dtype = fn, dtype
        self.__wrapped__ = fn

    def __call__(self, problem: Problem, *vectors: Any) -> Any:
        if self.dtype == np.float64 and not _jax.config.jax_enable_x64:
            _jax.config.update("jax_enable_x64", True)  # a fresh process: as the caller had it
        case = to_case(problem, dtype=self.dtype)
        out = self.fn(case, *[_jnp.asarray(v, dtype=self.dtype) for v in vectors])
        if out is not None and not isinstance(out, (_jax.Array, list, tuple, np.ndarray)):
            raise FunctionUnderTestError(f"fn returned a {type(out).__name__}, expected a JAX array", problem=problem)
        return _to_numpy(out)
