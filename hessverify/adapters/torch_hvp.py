r"""Matrix-free: hold a user's Hessian-vector product to independent HVPs on probes, never forming ``H``.

:func:`check_hvp` calls the user's ``hvp_fn(model, loss_fn, inputs, targets, v) -> (W,)``
on ``probes`` random vectors (Rademacher, ``v_i = +-1``) and on one probe per
module that owns parameters (random on that module's entries, zero elsewhere,
so one layer's block of ``H`` is exercised on its own), and holds each ``H v``
to three references from the user's own forward, computed in float64:

* ``rev-rev``: ``d/dtheta (g(theta) . v)``, a second backward pass through the first;
* ``fwd-rev``: the tangent of ``g`` along ``v`` (``torch.autograd.forward_ad`` through the backward);
* ``fd``: ``(g(theta + h v) - g(theta - h v)) / 2h`` at ``h`` and ``2h``, Richardson-extrapolated,
  with the error estimate of :func:`hessverify.adapters.torch_check.fd_of_gradient`.

As in :func:`~hessverify.adapters.torch_check.check_module`, an AD reference
serves on a probe only where it agrees with ``fd`` within ``fd``'s error, so a
cut second-order path is caught.  The bound of a probe is normwise (no entry
of ``|H|`` is known without ``H``):

.. math:: |(A v)_i - (R v)_i| \le e_i + C\,u\,\|(R v)_{T(i)}\|_\infty

with ``e`` the reference's own error (``fd``'s estimate; for AD the spread of
the two AD references), ``u`` the unit roundoff of the user's dtype, ``C``
:data:`HVP_FACTOR` and ``T(i)`` the
parameter tensor of entry ``i``: normwise per tensor, since one tensor's
entries of ``H v`` can be a thousand times smaller than another's (measured:
with the norm over all of ``H v``, a 0.1 % error in the 1,048,576-entry
weight block of ``benchmarks/hvp_at_scale.py`` passed in float32).

Before any probe, one gradient is timed and the bytes autograd saves are
counted (``saved_tensors_hooks``); the memory and time of the whole check are
estimated from them and refused (:class:`~hessverify.errors.BudgetError`) over
``max_memory`` or ``max_seconds``.  The result shows the estimate beside what
was measured.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from hessverify.adapters.torch_check import _UNIT, FlatModel, _dtype_of, _user_args
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


# -- three HVPs from the user's forward ----------------------------------------------------------------------------


def hvp_rev_rev(flat: FlatModel, v: torch.Tensor) -> torch.Tensor:
    th = flat.theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(flat.E(th), th, create_graph=True)
    if not g.requires_grad:  # the gradient does not depend on theta: H v = 0 as far as autograd knows
        return torch.zeros_like(th)
    (hv,) = torch.autograd.grad(g @ v, th, allow_unused=True)
    return torch.zeros_like(th) if hv is None else hv.detach()


def hvp_fwd_rev(flat: FlatModel, v: torch.Tensor) -> torch.Tensor:
    th = flat.theta.clone().requires_grad_(True)
    with fwAD.dual_level():
        (g,) = torch.autograd.grad(flat.E_written(fwAD.make_dual(th, v)), th)
        tangent = fwAD.unpack_dual(g).tangent
    return torch.zeros_like(th) if tangent is None else tangent.detach()


def hvp_fd(flat: FlatModel, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Richardson-extrapolated central differences of the gradient along ``v``, and their (normwise) error
    estimate: :func:`hessverify.checking.module_refs.fd_hvp` of the model's float64 gradient."""
    hv, err = fd_hvp(flat.grad_numpy, flat.theta.numpy(), v.numpy(), flat.grad_noise)
    return torch.as_tensor(hv), torch.as_tensor(err)


# -- probes ----------------------------------------------------------------------------------------------------------


def _probes(flat: FlatModel, k: int, seed: int) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(k):
        out.append((f"random {i}", torch.randint(0, 2, (flat.n,), generator=g, dtype=torch.float64) * 2 - 1))
    groups = flat.groups
    owners = _owners(flat)
    for j, owner in enumerate(owners):
        v = torch.zeros(flat.n, dtype=torch.float64)
        idx = torch.as_tensor(np.flatnonzero(groups == j))
        v[idx] = torch.as_tensor(probe_vector(torch.randn(idx.numel(), generator=g, dtype=torch.float64).numpy()))
        out.append((f"layer {owner or '(root)'}", v))
    return out


def _owners(flat: FlatModel) -> list[str]:
    owners: list[str] = []
    for name in flat.names:
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if owner not in owners:
            owners.append(owner)
    return owners


# -- the estimate ---------------------------------------------------------------------------------------------------


def estimate_hvp_check(flat: FlatModel, n_probes: int) -> dict[str, float]:
    """Time one gradient and count the bytes autograd saves for it; scale to the whole check.

    Per probe: the user's HVP (taken as a double backward, about 4 gradients),
    ``rev-rev`` (4), ``fwd-rev`` (3) and ``fd`` (4 gradients), and once 7 for fd's rounding noise.  Memory: the
    saved tensors three times over (a double backward keeps the first pass's
    graph and builds its own) plus 16 float64 vectors of ``W``.
    """
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    th = flat.theta.clone().requires_grad_(True)
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        e = flat.E(th)
    torch.autograd.grad(e, th, allow_unused=True)
    seconds = time.perf_counter() - start
    return {"gradient_seconds": seconds, "seconds": seconds * (15 * n_probes + 7), "saved_bytes": float(saved[0]),
            "bytes": 3.0 * saved[0] + 16.0 * 8 * flat.n}


def _rss() -> float:
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: kilobytes


# -- check_hvp --------------------------------------------------------------------------------------------------------


def _references(flat: FlatModel, v: torch.Tensor) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    fd, fd_err = (t.numpy() for t in hvp_fd(flat, v))
    ad: dict[str, np.ndarray] = {}
    not_served: dict[str, str] = {}
    for name, compute in (("rev-rev", hvp_rev_rev), ("fwd-rev", hvp_fwd_rev)):
        try:
            ad[name] = compute(flat, v).numpy()
        except Exception as exc:
            not_served[name] = exception_text(exc, 100)
    return serving_hvp_references(fd, fd_err, ad, not_served), not_served


def check_hvp(hvp_fn: Callable[..., Any], model: nn.Module, loss_fn: Any, inputs: torch.Tensor,
              targets: torch.Tensor, *, probes: int = 4, dtype: Any = None, seed: int = 0,
              max_memory: float = DEFAULT_MAX_MEMORY, max_seconds: float = DEFAULT_MAX_SECONDS) -> HvpCheckResult:
    """Hold ``hvp_fn(model, loss_fn, inputs, targets, v) -> H v`` to independent HVPs on probes (module text).

    ``probes`` random probes, plus one per module that owns parameters.  ``v``
    is given at ``dtype`` (default: the model's) in ``model.parameters()``
    order; the result is judged at that format.

    Raises
    ------
    BudgetError
        The estimate is over ``max_memory`` bytes or ``max_seconds``; nothing was run.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh(), torch.nn.Linear(2, 1)).double()
    >>> x, t = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)
    >>> def hvp(model, loss_fn, x, t, v):
    ...     params = list(model.parameters())
    ...     g = torch.autograd.grad(loss_fn(model(x), t), params, create_graph=True)
    ...     gv = sum((gi.reshape(-1) * vi).sum() for gi, vi in zip(g, v.split([p.numel() for p in params])))
    ...     return torch.cat([h.reshape(-1) for h in torch.autograd.grad(gv, params)])
    >>> check_hvp(hvp, net, torch.nn.MSELoss(), x, t, probes=2).passed
    True
    """
    if not callable(hvp_fn):
        raise UsageError(f"hvp_fn: a {type(hvp_fn).__name__} is not callable")
    if not isinstance(model, nn.Module):
        raise UsageError(f"model: a {type(model).__name__}, not a torch.nn.Module")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 0:
        raise UsageError(f"probes={probes!r}: a whole number of random probes, 0 or more")
    dtype = _dtype_of(model, dtype)
    start, rss0 = time.perf_counter(), _rss()
    flat = FlatModel(model, loss_fn, inputs, targets)
    vectors = _probes(flat, probes, seed)
    est = estimate_hvp_check(flat, len(vectors))
    if est["bytes"] > max_memory:
        raise BudgetError(f"check_hvp would need about {est['bytes'] / 2**30:.1f} GiB (W = {flat.n}, autograd saves "
                          f"{est['saved_bytes'] / 2**20:.0f} MiB a pass); allow more with max_memory= or use a "
                          "smaller batch")
    if est["seconds"] > max_seconds:
        raise BudgetError(f"check_hvp would take about {est['seconds']:.0f} s ({len(vectors)} probes, "
                          f"{est['gradient_seconds']:.2f} s a gradient); allow more with max_seconds= or fewer probes")
    user_model, _, x, t = _user_args(model, loss_fn, inputs, targets, dtype)
    sizes = np.cumsum([0] + [int(np.prod(s)) for s in flat.shapes])

    def name_of(i: int) -> str:
        k = int(np.searchsorted(sizes, i, side="right")) - 1
        return f"{flat.names[k]}[{','.join(map(str, np.unravel_index(i - sizes[k], tuple(flat.shapes[k]))))}]"

    records = []
    for label, v in vectors:
        try:
            out = hvp_fn(user_model, loss_fn, x, t, v.to(dtype))
        except Exception as exc:
            raise FunctionUnderTestError(f"{type(exc).__name__}: {exc} (probe {label})", cause=exc) from None
        A = out.detach().to(torch.float64).cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, float)
        if A.shape != (flat.n,):
            raise FunctionUnderTestError(f"hvp_fn returned shape {A.shape}, expected ({flat.n},) (probe {label})")
        refs, not_served = _references(flat, v)
        records.append(judge_probe(label, A, refs, not_served, _UNIT[dtype], name_of, sizes))
    measured = {"seconds": time.perf_counter() - start, "rss_bytes": max(0.0, _rss() - rss0)}
    return HvpCheckResult(all(r.passed for r in records), flat.n, records, est, measured)
