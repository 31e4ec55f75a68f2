r"""Matrix-free: hold a user's Hessian diagonal or trace to exact entries and Hutchinson estimates with intervals.

:func:`check_diagonal` calls the user's ``fn(model, loss_fn, inputs, targets)``,
which returns the diagonal of ``H`` (``returns="diagonal"``, shape ``(W,)``, in
``model.parameters()`` order: BackPACK's ``DiagHessian``, a hand-written
diagonal) or its trace (``returns="trace"``, a number), for models whose
Hessian cannot be held.  Two checks, neither forming ``H``:

* **Exact entries** (diagonal only): ``entries`` random coordinates ``i``
  and one in each parameter tensor, ``H_ii = (H e_i)_i`` from
  :func:`hessverify.adapters.torch_hvp.check_hvp`'s three independent HVPs
  (reverse over reverse, forward over reverse, Richardson finite differences of
  the gradient; an AD reference serves only where it agrees with ``fd``), each
  entry judged with that module's per-tensor normwise bound.  One wrong
  tensor's diagonal is caught by its own entry.
* **Hutchinson block traces** (Hutchinson 1990; Bekas, Kokiopoulou and Saad
  2007 for the diagonal): for Rademacher ``z`` (``z_i = +-1``),
  ``E[z_i (H z)_i] = H_ii``, so for each parameter tensor ``B``

  .. math::

     q_B = \sum_{i \in B} z_i (H z)_i,\qquad E[q_B] = \operatorname{tr} H_{BB} = \sum_{i\in B} H_{ii},

  estimated by the mean of ``samples`` draws (one HVP each, ``rev-rev``),
  with a Student-t interval from their sample variance.  The user's block
  sums ``sum_{i in B} d_i`` (and the trace, ``sum_B``) must lie in the
  interval at a family-wise level ``alpha`` (Bonferroni over the blocks and
  the trace), widened by the rounding of both sums (:data:`HVP_FACTOR` ``u
  sum |d_i|`` at the user's format).  Wrong entries that the exact
  coordinates miss still move their block's sum.  The interval is a normal
  approximation of a bounded variable's mean: at the default ``alpha =
  1e-6`` a correct diagonal fails about once in a million checks at most, if
  the approximation holds; ``samples`` of 64 or more keep it honest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from hessverify.adapters.torch_check import _UNIT, FlatModel, _dtype_of, _user_args
from hessverify.adapters.torch_hvp import (
    DEFAULT_MAX_MEMORY,
    DEFAULT_MAX_SECONDS,
    _references,
    _rss,
    estimate_hvp_check,
    hvp_rev_rev,
)
from hessverify.checking.module_refs import HVP_FACTOR, HvpCheckResult, ProbeRecord, judge_probe
from hessverify.errors import BudgetError, FunctionUnderTestError, UsageError

__all__ = ["DIAGONAL_RETURNS", "check_diagonal"]

DIAGONAL_RETURNS = ("diagonal", "trace")
"""What the function under test of :func:`check_diagonal` returns."""


def _user_value(fn: Callable[..., Any], model: nn.Module, loss_fn: Any, x: torch.Tensor, t: torch.Tensor,
                returns: str, n: int) -> np.ndarray:
    try:
        out = fn(model, loss_fn, x, t)
    except Exception as exc:
        raise FunctionUnderTestError(f"{type(exc).__name__}: {exc}", cause=exc) from None
    value = out.detach().to(torch.float64).cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, float)
    want = (n,) if returns == "diagonal" else ()
    if value.shape != want and not (returns == "trace" and value.shape == (1,)):
        raise FunctionUnderTestError(f"the {returns} has shape {value.shape}, expected {want}")
    return value.reshape(want)


def _coordinates(flat: FlatModel, entries: int, rng: np.random.Generator) -> list[int]:
    sizes = np.cumsum([0] + [int(np.prod(s)) for s in flat.shapes])
    chosen = [int(rng.integers(sizes[k], sizes[k + 1])) for k in range(len(flat.shapes)) if sizes[k + 1] > sizes[k]]
    chosen += [int(i) for i in rng.choice(flat.n, size=min(entries, flat.n), replace=False)]
    return sorted(set(chosen))


def _hutchinson(flat: FlatModel, d: np.ndarray | None, trace: float | None, samples: int, alpha: float, u: float,
                rng: np.random.Generator) -> list[ProbeRecord]:
    """Block traces (and the trace) of ``H`` by Hutchinson's estimator, the user's sums held to their intervals."""
    sizes = np.cumsum([0] + [int(np.prod(s)) for s in flat.shapes])
    blocks = [(flat.names[k], slice(int(sizes[k]), int(sizes[k + 1]))) for k in range(len(flat.shapes))]
    q = np.empty((samples, len(blocks) + 1))
    z = torch.as_tensor(rng.integers(0, 2, flat.n) * 2.0 - 1.0)
    refs, not_served = _references(flat, z)  # rev-rev serves only where it agrees with fd (no cut path)
    if "rev-rev" not in refs:
        return [ProbeRecord("Hutchinson", False, tuple(refs), not_served, float("inf"),
                            "rev-rev's HVP does not serve (see not served), so the estimates have no reference")]
    for s in range(samples):
        if s:
            z = torch.as_tensor(rng.integers(0, 2, flat.n) * 2.0 - 1.0)
        zhz = (z * hvp_rev_rev(flat, z)).numpy()
        q[s, :-1] = [zhz[b].sum() for _, b in blocks]
        q[s, -1] = zhz.sum()
    mean, se = q.mean(axis=0), q.std(axis=0, ddof=1) / np.sqrt(samples)
    tested = (len(blocks) if d is not None else 0) + 1
    crit = float(stats.t.ppf(1.0 - alpha / (2 * tested), samples - 1))
    rows: list[tuple[str, float, float]] = []  # (name, the user's sum, its rounding)
    if d is not None:
        rows += [(name, float(d[b].sum()), float(np.abs(d[b]).sum())) for name, b in blocks]
        trace, absolute = float(d.sum()), float(np.abs(d).sum())
    else:
        absolute = abs(float(trace))  # type: ignore[arg-type]
    rows.append(("trace", float(trace), absolute))  # type: ignore[arg-type]
    out = []
    for k, (name, user, size) in enumerate(rows):
        j = k if name != "trace" else len(blocks)
        width = crit * se[j] + HVP_FACTOR * (u + 2.0 ** -53) * max(size, abs(mean[j]))
        margin = abs(user - mean[j]) / max(width, 1e-300)
        out.append(ProbeRecord(
            f"Hutchinson {'trace' if name == 'trace' else 'tr ' + name}", margin <= 1.0, ("rev-rev",), {}, margin,
            f"user {user:.10g}, estimate {mean[j]:.10g} +- {crit * se[j]:.3g} ({samples} samples, "
            f"t = {crit:.2f} at family-wise alpha {alpha:g}), rounding {width - crit * se[j]:.3g}"))
    return out


def check_diagonal(fn: Callable[..., Any], model: nn.Module, loss_fn: Any, inputs: torch.Tensor,
                   targets: torch.Tensor, *, returns: str = "diagonal", entries: int = 8, samples: int = 64,
                   alpha: float = 1e-6, dtype: Any = None, seed: int = 0, max_memory: float = DEFAULT_MAX_MEMORY,
                   max_seconds: float = DEFAULT_MAX_SECONDS) -> HvpCheckResult:
    """Hold ``fn(model, loss_fn, inputs, targets)``, the diagonal of ``H`` or its trace, to exact entries and
    Hutchinson intervals (module text), never forming ``H``.

    Raises
    ------
    BudgetError
        The estimate is over ``max_memory`` bytes or ``max_seconds``; nothing was run.

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    >>> x, t = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    >>> def diagonal(model, loss_fn, x, t):  # row by row: fine for a small model
    ...     params = list(model.parameters())
    ...     flat = torch.cat([p.reshape(-1) for p in params])
    ...     def E(theta):
    ...         out, i = [], 0
    ...         for p in params:
    ...             out.append(theta[i:i + p.numel()].reshape(p.shape)); i += p.numel()
    ...         names = [n for n, _ in model.named_parameters()]
    ...         return loss_fn(torch.func.functional_call(model, dict(zip(names, out)), (x,)), t)
    ...     return torch.autograd.functional.hessian(E, flat).diagonal()
    >>> check_diagonal(diagonal, net, torch.nn.MSELoss(), x, t).passed
    True
    """
    if not callable(fn):
        raise UsageError(f"fn: a {type(fn).__name__} is not callable")
    if not isinstance(model, nn.Module):
        raise UsageError(f"model: a {type(model).__name__}, not a torch.nn.Module")
    if returns not in DIAGONAL_RETURNS:
        raise UsageError(f"returns={returns!r}: choose one of {', '.join(DIAGONAL_RETURNS)}")
    for name, value, low in (("entries", entries, 0), ("samples", samples, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f"{name}={value!r}: a whole number, {low} or more")
    if not (isinstance(alpha, float) and 0.0 < alpha < 1.0):
        raise UsageError(f"alpha={alpha!r}: a family-wise false-alarm level between 0 and 1")
    dtype = _dtype_of(model, dtype)
    start, rss0 = time.perf_counter(), _rss()
    flat = FlatModel(model, loss_fn, inputs, targets)
    rng = np.random.default_rng(seed)
    coords = _coordinates(flat, entries, rng) if returns == "diagonal" else []
    est = estimate_hvp_check(flat, len(coords))
    est["seconds"] += est["gradient_seconds"] * 4 * samples  # one rev-rev HVP a sample
    if est["bytes"] > max_memory:
        raise BudgetError(f"check_diagonal would need about {est['bytes'] / 2**30:.1f} GiB (W = {flat.n}); allow more "
                          "with max_memory= or use a smaller batch")
    if est["seconds"] > max_seconds:
        raise BudgetError(f"check_diagonal would take about {est['seconds']:.0f} s ({len(coords)} entries, {samples} "
                          f"samples, {est['gradient_seconds']:.2f} s a gradient); allow more with max_seconds= or fewer")
    value = _user_value(fn, *_user_args(model, loss_fn, inputs, targets, dtype), returns, flat.n)
    u = _UNIT[dtype]
    sizes = np.cumsum([0] + [int(np.prod(s)) for s in flat.shapes])

    def name_of(i: int) -> str:
        k = int(np.searchsorted(sizes, i, side="right")) - 1
        return f"{flat.names[k]}[{','.join(map(str, np.unravel_index(i - sizes[k], tuple(flat.shapes[k]))))}]"

    records = []
    for i in coords:
        e = torch.zeros(flat.n, dtype=torch.float64)
        e[i] = 1.0
        refs, not_served = _references(flat, e)
        if not refs:
            records.append(ProbeRecord(f"entry {name_of(i)}", False, (), not_served, float("inf"), "no reference served"))
            continue
        A = next(iter(refs.values()))[0].copy()  # the column H e_i, with the user's diagonal entry in its place
        A[i] = value[i]
        records.append(judge_probe(f"entry {name_of(i)}", A, refs, not_served, u, name_of, sizes))
    if not np.all(np.isfinite(value)):
        bad = np.flatnonzero(~np.isfinite(np.atleast_1d(value)))
        records.append(ProbeRecord("finite", False, (), {}, float("inf"),
                                   f"{bad.size} entries are NaN or inf, first {name_of(int(bad[0])) if value.ndim else ''}"))
    else:
        records += _hutchinson(flat, value if returns == "diagonal" else None,
                               None if returns == "diagonal" else float(value), samples, alpha, u, rng)
    measured = {"seconds": time.perf_counter() - start, "rss_bytes": max(0.0, _rss() - rss0)}
    return HvpCheckResult(all(r.passed for r in records), flat.n, records, est, measured, what="check_diagonal")
