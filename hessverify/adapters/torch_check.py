r"""Check a user's curvature code on the user's own ``nn.Module``: :func:`check_module` and :func:`check_hvp`.

The function under test gets the user's model (a copy at the dtype asked
for), the loss function, the inputs and the targets, and returns, by
``returns``:

* ``"hessian"``: ``fn(model, loss_fn, inputs, targets) -> (W, W)``;
* ``"hvp"``: ``fn(model, loss_fn, inputs, targets, v) -> (W,)``, ``H v``;
* ``"diagonal"``: ``fn(model, loss_fn, inputs, targets) -> (W,)``;
* ``"blocks"``: ``fn(...) -> [B_1, B_2, ...]``, one square block per module
  that owns parameters, in ``model.parameters()`` order;
* ``"ggn"``: ``fn(...) -> (W, W)``, the generalised Gauss-Newton matrix;

rows and columns in the flat ``model.parameters()`` order.

Where the model imports (:func:`hessverify.adapters.torch_import.import_module`)
and the import's loss equals the model's, the result is judged by
:func:`hessverify.checking.check.check` with every method and reference of the
registry and its derived rounding bounds.  Where it does not (a custom
``torch.autograd.Function``, an op outside the schema), the references are
built from the user's own forward in float64 (:func:`module_references`):

* ``rev-rev``: reverse over reverse, double backward row by row;
* ``fwd-rev``: forward over reverse (``torch.autograd.forward_ad`` through the
  backward pass): the same derivatives by other formulas (tangents of the
  backward ops, not their adjoints);
* ``fd``: central differences of the gradient at steps ``h`` and ``2h``,
  extrapolated, with the error estimate of Richardson extrapolation
  (``|D(h) - D(2h)| / 3``) plus the rounding of the gradients over the step.

Finite differences use the first derivative only, so a second-order path that
the backward cuts (a custom Function whose backward detaches) makes both AD
references disagree with ``fd``: each AD reference is first held to ``fd``
within ``fd``'s error estimate and serves only if it agrees; the result names
the references that served and why the others did not.  The user's result is
then held to each serving reference within an estimated bound
(:data:`ESTIMATED_FACTOR`): no rounding model of an arbitrary forward exists.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from hessverify.adapters.torch_import import import_module, loss_spec, torch_index
from hessverify.checking import module_refs
from hessverify.checking.check import DEFAULT_AGAINST, RETURNS, CheckResult, check
from hessverify.checking.module_refs import ESTIMATED_FACTOR, ModuleCheckResult
from hessverify.checking.sandbox import DEFAULT_TIMEOUT
from hessverify.errors import FunctionUnderTestError, UnsupportedModel, UsageError
from hessverify.model.problem import Problem

__all__ = ["ESTIMATED_FACTOR", "FlatModel", "ModuleCheckResult", "check_module", "module_references"]

_UNIT = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}


# -- the user's model as a function of one flat vector ---------------------------------------------------------


class FlatModel:
    """``E(theta)`` of the user's model in float64, ``theta`` the flat ``model.parameters()`` vector (module text)."""

    def __init__(self, model: nn.Module, loss_fn: Any, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.model = copy.deepcopy(model).to(torch.float64)
        self.loss_fn = loss_fn
        self.x = inputs.detach().to(torch.float64) if inputs.is_floating_point() else inputs.detach()
        self.t = targets.detach().to(torch.float64) if targets.is_floating_point() else targets.detach()
        named = list(self.model.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.theta = torch.cat([p.detach().reshape(-1) for _, p in named])
        self._written = written_loss(loss_fn, self.t, self.model, self.x)

    @property
    def n(self) -> int:
        return int(self.theta.numel())

    def E(self, theta: torch.Tensor) -> torch.Tensor:
        params, pos = {}, 0
        for name, shape in zip(self.names, self.shapes):
            k = int(np.prod(shape, dtype=np.int64))
            params[name] = theta[pos:pos + k].reshape(shape)
            pos += k
        return self.loss_fn(torch.func.functional_call(self.model, params, (self.x,)), self.t)

    def E_written(self, theta: torch.Tensor) -> torch.Tensor:
        """``E`` with a known loss written out in elementary operations (:func:`written_loss`), else :meth:`E`."""
        if self._written is None:
            return self.E(theta)
        params, pos = {}, 0
        for name, shape in zip(self.names, self.shapes):
            k = int(np.prod(shape, dtype=np.int64))
            params[name] = theta[pos:pos + k].reshape(shape)
            pos += k
        return self._written(torch.func.functional_call(self.model, params, (self.x,)))

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        th = theta.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(self.E(th), th, allow_unused=True)
        return torch.zeros_like(th) if g is None else g.detach()

    def grad_numpy(self, theta: np.ndarray) -> np.ndarray:
        return self.grad(torch.as_tensor(theta)).numpy()

    @functools.cached_property
    def grad_noise(self) -> np.ndarray:
        """The float64 gradient's rounding noise at ``theta`` (:func:`module_refs.gradient_noise`), once."""
        return module_refs.gradient_noise(self.grad_numpy, self.theta.numpy())

    @property
    def param_names(self) -> tuple[str, ...]:
        """``l1.weight[0,1]``: each entry of the flat vector by its tensor's name and index."""
        out: list[str] = []
        for name, shape in zip(self.names, self.shapes):
            out += [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*tuple(shape))]
        return tuple(out)

    @property
    def groups(self) -> np.ndarray:
        """For each flat entry, the index of the module that owns its tensor (the ``blocks`` of ``returns``)."""
        owners: list[str] = []
        out = []
        for name, shape in zip(self.names, self.shapes):
            owner = name.rsplit(".", 1)[0] if "." in name else ""
            if owner not in owners:
                owners.append(owner)
            out += [owners.index(owner)] * int(np.prod(shape, dtype=np.int64))
        return np.asarray(out)


def written_loss(loss_fn: Any, targets: torch.Tensor, model: nn.Module,
                 x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A known loss (:func:`~hessverify.adapters.torch_import.loss_spec`) as ``E(outputs)`` in elementary operations,
    or ``None``: the forward-over-reverse reference reads it, since ``F.mse_loss``'s forward-mode derivative of its
    backward raises in PyTorch 2.13 ("ZeroTensors are immutable")."""
    try:
        spec = loss_spec(loss_fn)
        with torch.no_grad():
            shape = model(x).shape
        t = torch.as_tensor(spec.targets(targets, shape))
    except Exception:
        return None
    N, K = t.shape
    per_output = spec.name in ("mse", "huber", "binary_cross_entropy")
    scale = 1.0 if spec.reduction == "sum" else 1.0 / (N * K if per_output else N)
    delta = dict(spec.options).get("delta", 1.0)

    def E(outputs: torch.Tensor) -> torch.Tensor:
        y = outputs.reshape(N, K)
        r = y - t
        if spec.name == "mse":
            e = r * r
        elif spec.name == "huber":
            e = torch.where(r.abs() <= delta, 0.5 * r * r, delta * (r.abs() - 0.5 * delta))
        elif spec.name == "cross_entropy":
            e = -t * torch.log_softmax(y, dim=-1)
        else:  # binary cross-entropy on logits: max(y, 0) - t y + log(1 + e^-|y|)
            e = torch.relu(y) - t * y + torch.log1p(torch.exp(-y.abs()))
        return e.sum() * scale

    return E


def reverse_over_reverse(flat: FlatModel) -> np.ndarray:
    """Row ``i``: the gradient of ``g_i`` by a second backward pass through the first one's graph."""
    th = flat.theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(flat.E(th), th, create_graph=True)
    rows = []
    for i in range(flat.n):
        (r,) = torch.autograd.grad(g[i], th, retain_graph=True, allow_unused=True) if g.requires_grad else (None,)
        rows.append(np.zeros(flat.n) if r is None else r.detach().numpy())
    return np.stack(rows)


def forward_over_reverse(flat: FlatModel) -> np.ndarray:
    """Column ``j``: the tangent of the gradient along ``e_j``, forward-mode AD carried through the backward pass
    (a known loss written out, :func:`written_loss`)."""
    cols = []
    for j in range(flat.n):
        th = flat.theta.clone().requires_grad_(True)
        v = torch.zeros_like(th)
        v[j] = 1.0
        with fwAD.dual_level():
            dual = fwAD.make_dual(th, v)
            (g,) = torch.autograd.grad(flat.E_written(dual), th)
            tangent = fwAD.unpack_dual(g).tangent
        cols.append(np.zeros(flat.n) if tangent is None else tangent.detach().numpy())
    return np.stack(cols, axis=1)


def fd_of_gradient(flat: FlatModel) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of the gradient with their error estimate
    (:func:`hessverify.checking.module_refs.fd_of_gradient`)."""
    return module_refs.fd_of_gradient(flat.grad_numpy, flat.theta.numpy())


def module_references(flat: FlatModel) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """The references from the user's own forward that serve, ``name -> (H, error)``, and why the others did not.

    ``fd`` always serves (it needs the gradient only); an AD reference serves
    when it agrees with ``fd`` within ``fd``'s error plus its own rounding
    (:func:`hessverify.checking.module_refs.serving_references`).
    """
    return module_refs.serving_references(
        fd_of_gradient(flat), {"rev-rev": lambda: reverse_over_reverse(flat),
                               "fwd-rev": lambda: forward_over_reverse(flat)}, flat.param_names)


# -- the user's function ---------------------------------------------------------------------------------------------


def _dtype_of(model: nn.Module, dtype: Any) -> torch.dtype:
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters()), torch.float64)
    if dtype not in _UNIT:
        raise UsageError(f"dtype={dtype!r}: choose torch.float64, torch.float32, torch.float16 or torch.bfloat16")
    return dtype


def _format(dtype: torch.dtype) -> str:
    """The name of the floating-point format of a torch dtype (``"float32"`` of ``torch.float32``)."""
    return str(dtype).removeprefix("torch.")


def _user_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The copy of the model the user's function gets: at ``dtype``, every parameter requiring grad.

    The Hessian checked is over every parameter of ``model.parameters()``, a
    frozen one (``requires_grad=False``) too, as the import and the
    references take them; so the copy has them all on, and the usual
    ``torch.autograd.grad(E, list(model.parameters()))`` gives that Hessian
    (on a frozen parameter it raised "One of the differentiated Tensors does
    not require grad", reported as the function's failure).
    """
    m = copy.deepcopy(model).to(dtype)
    for p in m.parameters():
        p.requires_grad_(True)
    return m


def _user_args(model: nn.Module, loss_fn: Any, x: torch.Tensor, t: torch.Tensor, dtype: torch.dtype) -> tuple:
    """What the user's function gets: a copy of the model at ``dtype`` (:func:`_user_model`), the loss, the data at
    ``dtype``."""
    m = _user_model(model, dtype)
    cast = (lambda a: a.detach().to(dtype) if a.is_floating_point() else a.detach())  # noqa: E731
    return m, loss_fn, cast(x), cast(t)


def _as_array(out: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(out, dtype=np.float64) if out is not None else None
    if arr is None or arr.shape != shape:
        raise FunctionUnderTestError(f"{what} returned {None if arr is None else arr.shape}, expected {shape}")
    return arr


def _user_matrix(fn: Callable[..., Any], args: tuple, returns: str, groups: np.ndarray, dtype: torch.dtype,
                 W: int) -> np.ndarray:
    """The user's result as a ``(W, W)`` float64 matrix in ``model.parameters()`` order (zeros where not given)."""
    try:
        if returns == "hvp":
            cols = []
            for j in range(W):
                v = torch.zeros(W, dtype=dtype)
                v[j] = 1.0
                cols.append(_as_array(fn(*args, v), (W,), "fn(model, loss_fn, inputs, targets, v)"))
            return np.stack(cols, axis=1)
        out = fn(*args)
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


# -- check_module -------------------------------------------------------------------------------------------------


def _imports(model: nn.Module, loss_fn: Any, x: torch.Tensor, t: torch.Tensor) -> tuple[Problem | None, str]:
    """The problem when the model imports and the import's loss is the model's, else ``None`` and why not."""
    try:
        problem = import_module(model, loss_fn, x, t)
    except UnsupportedModel as exc:
        return None, str(exc)
    from hessverify.engine.objective import error

    flat = FlatModel(model, loss_fn, x, t)
    with torch.no_grad():
        mine = float(flat.E(flat.theta))
    theirs = float(error(problem))
    if abs(mine - theirs) > 1e-10 * max(abs(mine), abs(theirs), 1e-300):
        return None, f"the import's loss {theirs!r} differs from the model's {mine!r}"
    return problem, ""


def check_module(fn: Callable[..., Any], model: nn.Module, loss_fn: Any, inputs: torch.Tensor,
                 targets: torch.Tensor, *, returns: str = "hessian", dtype: Any = None,
                 against: Sequence[str] = DEFAULT_AGAINST, timeout: float | None = DEFAULT_TIMEOUT) -> ModuleCheckResult:
    """Hold the user's curvature code for the user's own model to references (module text).

    Parameters
    ----------
    fn:
        ``fn(model, loss_fn, inputs, targets)`` (``returns="hvp"``: and ``v``), see the module text.
    model, loss_fn, inputs, targets:
        The user's ``nn.Module``, its loss and one batch.
    returns:
        ``"hessian"``, ``"hvp"``, ``"diagonal"``, ``"blocks"`` or ``"ggn"``.
    dtype:
        The dtype ``fn`` computes in (default: the model's); the result is
        judged at that format's rounding.
    against:
        For an importable model: the registry's references (as :func:`hessverify.check`).

    Returns
    -------
    ModuleCheckResult
        Truthy when everything passed; ``served`` names the references that judged.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh(), torch.nn.Linear(2, 1)).double()
    >>> x, t = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)
    >>> def mine(model, loss_fn, x, t):
    ...     flat = torch.cat([p.reshape(-1) for p in model.parameters()]).detach()
    ...     names = [n for n, _ in model.named_parameters()]
    ...     def E(theta):
    ...         ps, pos = {}, 0
    ...         for n, p in model.named_parameters():
    ...             ps[n] = theta[pos:pos + p.numel()].reshape(p.shape)
    ...             pos += p.numel()
    ...         return loss_fn(torch.func.functional_call(model, ps, (x,)), t)
    ...     return torch.autograd.functional.hessian(E, flat)
    >>> check_module(mine, net, torch.nn.MSELoss(), x, t).passed
    True
    """
    if returns not in RETURNS:
        raise UsageError(f"returns={returns!r}: choose one of {', '.join(RETURNS)}")
    if not callable(fn):
        raise UsageError(f"fn: a {type(fn).__name__} is not callable; pass the function under test")
    if not isinstance(model, nn.Module):
        raise UsageError(f"model: a {type(model).__name__}, not a torch.nn.Module")
    dtype = _dtype_of(model, dtype)
    name = type(model).__name__
    problem, why = _imports(model, loss_fn, inputs, targets)
    if problem is not None:
        return _check_imported(fn, model, loss_fn, inputs, targets, problem, returns, dtype, against, timeout, name)
    if returns == "ggn":
        raise UnsupportedModel(f"returns='ggn' needs a model that imports; this one does not: {why}")
    return _check_by_module_references(fn, model, loss_fn, inputs, targets, returns, dtype, why, name)


def _check_imported(fn: Callable[..., Any], model: nn.Module, loss_fn: Any, x: torch.Tensor, t: torch.Tensor,
                    problem: Problem, returns: str, dtype: torch.dtype, against: Sequence[str],
                    timeout: float | None, name: str) -> ModuleCheckResult:
    """Judge on the import with :func:`~hessverify.checking.check.check`, translating between the two orders."""
    idx = torch_index(problem)  # problem entry i is model.parameters() entry idx[i]
    W = problem.n_params
    groups = FlatModel(model, loss_fn, x, t).groups
    args = _user_args(model, loss_fn, x, t, dtype)

    def under_test(p: Problem, *vectors: Any) -> Any:
        if returns == "hvp":
            v = np.zeros(W)
            v[idx] = vectors[0]
            out = fn(*args, torch.as_tensor(v, dtype=dtype))
            return _as_array(out, (W,), "fn(model, loss_fn, inputs, targets, v)")[idx]
        M = _user_matrix(fn, args, returns, groups, dtype, W)[np.ix_(idx, idx)]
        if returns == "diagonal":
            return np.diag(M).copy()
        if returns == "blocks":
            return [M[b.slice, b.slice] for b in problem.architecture.blocks]
        return M

    result = check(under_test, problem, returns=returns, against=against, timeout=timeout,  # type: ignore[arg-type]
                   precision=_format(dtype))
    fields = {k: getattr(result, k) for k in CheckResult.__dataclass_fields__}
    return ModuleCheckResult(**fields, route="imported", served=tuple(result.against), model=name)


def _check_by_module_references(fn: Callable[..., Any], model: nn.Module, loss_fn: Any, x: torch.Tensor,
                                t: torch.Tensor, returns: str, dtype: torch.dtype, why: str,
                                name: str) -> ModuleCheckResult:
    flat = FlatModel(model, loss_fn, x, t)
    refs, not_served = module_references(flat)
    not_served = {"import": why, **not_served}
    W = flat.n
    A = _user_matrix(fn, _user_args(model, loss_fn, x, t, dtype), returns, flat.groups, dtype, W)
    return module_refs.judge(A, refs, not_served, module_refs.mask_of(returns, flat.groups), _format(dtype),
                             returns, name, flat.param_names, flat.groups)
