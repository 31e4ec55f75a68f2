r"""Matrix-free: hold a user's JAX Hessian-vector product to independent HVPs on probes, never forming ``H``.

:func:`check_hvp` calls the user's ``hvp_fn(model, loss_fn, inputs, targets, v) -> (W,)``
on ``probes`` random vectors (Rademacher, ``v_i = +-1``) and on one probe per
module that owns parameters (random on that module's entries, zero elsewhere,
so one layer's block of ``H`` is exercised on its own), ``v`` in the order of
the model's flat leaves, and holds each ``H v`` to three references from the
user's own forward, computed in float64:

* ``rev-rev``: ``jax.grad(lambda th: jax.grad(E)(th) @ v)``, reverse over reverse;
* ``fwd-rev``: ``jax.jvp(jax.grad(E), (theta,), (v,))``, the tangent of the gradient along ``v``;
* ``fd``: ``(g(theta + h v) - g(theta - h v)) / 2h`` at ``h`` and ``2h``, Richardson-extrapolated,
  with its error estimate (:func:`hessverify.checking.module_refs.fd_hvp`).

As in :func:`~hessverify.adapters.jax_check.check_module`, an AD reference
serves on a probe only where it agrees with ``fd`` within ``fd``'s error, so a
cut second-order path is caught.  The bound of a probe is normwise per leaf
(:func:`hessverify.checking.module_refs.judge_probe`):
``|(A v)_i - (R v)_i| <= e_i + C u ||(R v)_{T(i)}||_inf``, ``T(i)`` the leaf of entry ``i``,
``C`` :data:`~hessverify.checking.module_refs.HVP_FACTOR`.

Before any probe one gradient is compiled and timed, and XLA's memory
analysis of it read where the backend gives one; the time and memory of the
whole check are estimated from them and refused
(:class:`~hessverify.errors.BudgetError`) over ``max_memory`` or ``max_seconds``.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hessverify.adapters.jax_check import _UNIT, FlatModel, _dtype_of, _is_model, _need_x64, _UserCall
from hessverify.checking.module_refs import (
    HVP_FACTOR,
    HvpCheckResult,
    ProbeRecord,
    fd_hvp,
    judge_probe,
    probe_vector,
    serving_hvp_references,
)
from hessverify.errors import BudgetError, FunctionUnderTestError, UsageError, exception_text

__all__ = ["HVP_FACTOR", "HvpCheckResult", "ProbeRecord", "check_hvp", "estimate_hvp_check"]

DEFAULT_MAX_MEMORY = 4 * 2 ** 30
DEFAULT_MAX_SECONDS = 600.0


def _probes(flat: FlatModel, k: int, seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = [(f"random {i}", rng.integers(0, 2, flat.n).astype(np.float64) * 2 - 1) for i in range(k)]
    groups = flat.groups
    for j, owner in enumerate(flat.owners):
        v = np.zeros(flat.n)
        idx = np.flatnonzero(groups == j)
        v[idx] = probe_vector(rng.standard_normal(idx.size))
        out.append((f"layer {owner or '(root)'}", v))
    return out


def estimate_hvp_check(flat: FlatModel, n_probes: int) -> dict[str, float]:
    """Time one compiled gradient and read XLA's memory analysis of it; scale to the whole check.

    Per probe: the user's HVP (about 4 gradients), ``rev-rev`` (4), ``fwd-rev``
    (3) and ``fd`` (4 gradients), and once 7 for fd's rounding noise.  Memory: the gradient's temporaries three
    times over (an HVP keeps the first pass's values and builds its own) plus
    16 float64 vectors of ``W``.
    """
    import jax

    temp = 0.0
    try:
        analysis = jax.jit(jax.grad(flat.E)).lower(flat.theta).compile().memory_analysis()  # type: ignore[attr-defined]
        temp = float(getattr(analysis, "temp_size_in_bytes", 0) or 0)
    except Exception:  # a backend without memory analysis: the vectors only
        pass
    flat.grad(flat.theta)  # compiled
    start = time.perf_counter()
    flat.grad(flat.theta)
    seconds = time.perf_counter() - start
    return {"gradient_seconds": seconds, "seconds": seconds * (15 * n_probes + 7), "saved_bytes": temp,
            "bytes": 3.0 * temp + 16.0 * 8 * flat.n}


def _rss() -> float:
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: kilobytes


def check_hvp(hvp_fn: Callable[..., Any], model: Any, loss_fn: Any, inputs: Any, targets: Any, *, probes: int = 4,
              dtype: Any = None, seed: int = 0, max_memory: float = DEFAULT_MAX_MEMORY,
              max_seconds: float = DEFAULT_MAX_SECONDS) -> HvpCheckResult:
    """Hold ``hvp_fn(model, loss_fn, inputs, targets, v) -> H v`` to independent HVPs on probes (module text).

    ``probes`` random probes, plus one per module that owns parameters.  ``v``
    is given at ``dtype`` (default: the model's) in the order of the model's
    flat leaves; the result is judged at that format.

    Raises
    ------
    BudgetError
        The estimate is over ``max_memory`` bytes or ``max_seconds``; nothing was run.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, equinox as eqx
    >>> jax.config.update("jax_enable_x64", True)
    >>> mlp = eqx.nn.MLP(2, 1, 2, 1, activation=jnp.tanh, key=jax.random.key(0), dtype=jnp.float64)
    >>> x, t = jax.random.normal(jax.random.key(1), (3, 2)), jax.random.normal(jax.random.key(2), (3, 1))
    >>> def hvp(model, loss_fn, x, t, v):
    ...     params, static = eqx.partition(model, eqx.is_inexact_array)
    ...     flat, unravel = jax.flatten_util.ravel_pytree(params)
    ...     E = lambda th: loss_fn(jax.vmap(eqx.combine(unravel(th), static))(x), t)
    ...     return jax.jvp(jax.grad(E), (flat,), (v,))[1]
    >>> check_hvp(hvp, mlp, lambda y, t: jnp.mean((y - t) ** 2), x, t, probes=2).passed
    True
    """
    if not callable(hvp_fn):
        raise UsageError(f"hvp_fn: a {type(hvp_fn).__name__} is not callable")
    _is_model(model)
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 0:
        raise UsageError(f"probes={probes!r}: a whole number of random probes, 0 or more")
    _need_x64()
    dtype = _dtype_of(model, dtype)
    start, rss0 = time.perf_counter(), _rss()
    flat = FlatModel(model, loss_fn, inputs, targets)
    vectors = _probes(flat, probes, seed)
    est = estimate_hvp_check(flat, len(vectors))
    if est["bytes"] > max_memory:
        raise BudgetError(f"check_hvp would need about {est['bytes'] / 2**30:.1f} GiB (W = {flat.n}, a gradient's "
                          f"temporaries {est['saved_bytes'] / 2**20:.0f} MiB); allow more with max_memory= or use a "
                          "smaller batch")
    if est["seconds"] > max_seconds:
        raise BudgetError(f"check_hvp would take about {est['seconds']:.0f} s ({len(vectors)} probes, "
                          f"{est['gradient_seconds']:.2f} s a gradient); allow more with max_seconds= or fewer probes")
    call = _UserCall(hvp_fn, model, loss_fn, inputs, targets, dtype)
    sizes = np.cumsum([0] + [int(np.prod(s, dtype=np.int64)) for s in flat.shapes])

    def name_of(i: int) -> str:
        k = int(np.searchsorted(sizes, i, side="right")) - 1
        return f"{flat.names[k]}[{','.join(map(str, np.unravel_index(i - sizes[k], flat.shapes[k])))}]"

    records = []
    for label, v in vectors:
        try:
            out = call(v)
        except Exception as exc:
            raise FunctionUnderTestError(f"{type(exc).__name__}: {exc} (probe {label})", cause=exc) from None
        try:
            A = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError):
            A = np.empty(0)
        if A.shape != (flat.n,):
            raise FunctionUnderTestError(f"hvp_fn returned shape {A.shape}, expected ({flat.n},) (probe {label})")
        fd, fd_err = fd_hvp(flat.grad, flat.theta, v, flat.grad_noise)
        ad: dict[str, np.ndarray] = {}
        not_served: dict[str, str] = {}
        for name in ("rev-rev", "fwd-rev"):
            try:
                ad[name] = flat.run(f"hvp {name}", flat.theta, v)
            except Exception as exc:
                not_served[name] = exception_text(exc, 100)
        refs = serving_hvp_references(fd, fd_err, ad, not_served)
        records.append(judge_probe(label, A, refs, not_served, _UNIT[dtype], name_of, sizes))
    measured = {"seconds": time.perf_counter() - start, "rss_bytes": max(0.0, _rss() - rss0)}
    return HvpCheckResult(all(r.passed for r in records), flat.n, records, est, measured)
