"""Conformance of the libraries: their own second-order code on Hypothesis problems, held to ours.

Each entry of :data:`QUANTITIES` runs one library's curvature code on a
network built from that library's *own* parts (its activations, its loss
classes) and maps the result to the hessverify quantity it should equal,
with the scale convention written down beside it.  It is then compared with
hessverify's backprop Hessian within the float64 rounding bound
(:func:`hessverify.compare.bound_for`), as :func:`hessverify.check` does, on
problems drawn by :func:`hessverify.strategies.problems`; a failure is shrunk
to a minimal problem, which :func:`run` returns as a case file.

Conventions (``N`` patterns, ``K`` outputs, ``E`` as in docs/cases.md):

* ``nn.MSELoss(reduction="sum")`` is ``sum ||y - t||^2`` with no 1/2: ``E = 1/2 L``;
  ``reduction="mean"`` divides by ``N K``, hessverify's mean by ``N``: ``E = K/2 L``;
* ``nn.CrossEntropyLoss`` with probability targets: ``E = L`` for sum and mean (mean divides by N);
* ``nn.BCEWithLogitsLoss``: sum ``E = L``; mean divides by ``N K``: ``E = K L``;
* the ``output`` loss has no library class: ``sum`` of the outputs (``/ N`` for mean);
* JAX has no loss classes: the losses are written from ``jax.nn`` (``log_softmax``, ``softplus``), ``E = L``.

The activations are the libraries' own (``F.softplus``, ``F.gelu``,
``jax.nn.gelu(approximate=False)``, ...); their faults are what this finds.
BackPACK's ``DiagHessian`` is run on the activations it has second-order
modules for (identity, sigmoid, tanh, relu) with ``MSELoss``; curvlinops on
every activation with an ``nn`` module (all but sin) and the three loss
classes.  :data:`NOT_COVERED` lists what each library has that the
schema lacks, and what of it is not run yet.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hessverify._typing import FloatArray
from hessverify.errors import FunctionUnderTestError, UsageError
from hessverify.model.problem import Problem

__all__ = ["LIBRARIES", "NOT_COVERED", "QUANTITIES", "Quantity", "Row", "merge", "rows_markdown", "run", "run_one",
           "write_report"]

LIBRARIES: tuple[str, ...] = ("torch.func", "jax", "backpack", "curvlinops")
"""Libraries ``hessverify conformance --library`` knows."""

NOT_COVERED: dict[str, str] = {
    "torch.func": "activations elu, selu, leaky_relu, mish, hardswish, softsign, logsigmoid, tanh-approximate gelu; "
                  "losses L1Loss, HuberLoss, SmoothL1Loss, NLLLoss on log-probabilities, KLDivLoss, "
                  "GaussianNLLLoss, PoissonNLLLoss, class-index targets, weighted losses, label smoothing",
    "backpack": "DiagGGNExact, the exact HBP block settings and the KFAC/KFLR/KFRA approximations (not run yet); "
                "sin, softplus, gelu, silu (no second-order module); CrossEntropyLoss and BCEWithLogitsLoss in "
                "DiagHessian (not run yet); activations elu, selu, leaky_relu, logsigmoid",
    "curvlinops": "EFLinearOperator, KFACLinearOperator and the Monte-Carlo GGN (not run yet); the sin activation "
                  "(no nn module); the output loss (no loss class)",
    "jax": "activations elu, selu, leaky_relu, celu, mish, hard_tanh, log_sigmoid, tanh-approximate gelu "
           "(jax.nn.gelu's default); losses: JAX has none of its own (optax's are not run)",
}
"""What each library offers that the case schema cannot express: not checked, and said so."""


@dataclass(frozen=True)
class Quantity:
    """One library routine, mapped to the hessverify quantity it should equal."""

    library: str
    name: str
    equals: str
    convention: str
    fn: Callable[[Problem], FloatArray]
    returns: str = "hessian"  # the form check_problem compares (hessverify.check.RETURNS)
    draw: dict[str, Any] = field(default_factory=dict)  # problems(**draw): what the routine supports


@dataclass
class Row:
    """One line of the conformance table."""

    library: str
    version: str
    quantity: str
    equals: str
    precision: str
    tried: int
    failures: int
    worst_margin: float
    convention: str
    failure: Problem | None = None
    failure_summary: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"library": self.library, "version": self.version, "quantity": self.quantity, "equals": self.equals,
                "precision": self.precision, "tried": self.tried, "failures": self.failures,
                "worst_margin": self.worst_margin, "convention": self.convention,
                "failure_summary": self.failure_summary,
                "failure_case": self.failure.to_toml() if self.failure is not None else None}


# -- PyTorch, from its own parts ---------------------------------------------------

def _torch_criterion(problem: Problem) -> tuple[Callable[[Any, Any], Any], float]:
    """PyTorch's loss class for the problem's loss and reduction, and ``c`` with ``E = c L``."""
    import torch

    red, k = problem.reduction, problem.targets.shape[1]
    if problem.loss == "sse":
        crit, c = torch.nn.MSELoss(reduction=red), (0.5 if red == "sum" else k / 2)
    elif problem.loss == "cross_entropy":
        crit, c = torch.nn.CrossEntropyLoss(reduction=red), 1.0
    elif problem.loss == "binary_cross_entropy":
        crit, c = torch.nn.BCEWithLogitsLoss(reduction=red), (1.0 if red == "sum" else float(k))
    else:
        def crit(y: Any, _t: Any) -> Any:
            return y.sum() / (y.shape[0] if red == "mean" else 1)
        c = 1.0
    return crit, c


def _torch_objective(problem: Problem) -> tuple[Callable[[Any], Any], float, Any]:
    """``(L(theta), c, theta)`` with ``E = c L``: nn.functional activations and nn loss classes."""
    import torch
    import torch.nn.functional as F

    acts: dict[str, Callable[[Any], Any]] = {
        "identity": lambda a: a, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softplus": F.softplus,
        "sin": torch.sin, "gelu": lambda a: F.gelu(a, approximate="none"), "silu": F.silu, "relu": F.relu,
    }
    x = torch.tensor(problem.inputs, dtype=torch.float64)
    t = torch.tensor(problem.targets, dtype=torch.float64)
    crit, c = _torch_criterion(problem)

    def L(theta: Any) -> Any:
        h = x
        for blk, layer in zip(problem.architecture.blocks, problem.architecture.layers):
            w = theta[blk.w_slice].reshape(blk.units, blk.fan_in)
            h = acts[layer.activation](F.linear(h, w, theta[blk.b_slice] if blk.bias else None))
        return crit(h, t)

    return L, c, torch.tensor(problem.params, dtype=torch.float64)


def _torch_hessian(problem: Problem) -> FloatArray:
    import torch

    L, c, theta = _torch_objective(problem)
    return c * torch.func.hessian(L)(theta).numpy()


def _torch_jacrev2(problem: Problem) -> FloatArray:
    import torch

    L, c, theta = _torch_objective(problem)
    return c * torch.func.jacrev(torch.func.jacrev(L))(theta).numpy()


def _torch_hvp(problem: Problem) -> FloatArray:
    import torch

    L, c, theta = _torch_objective(problem)
    grad = torch.func.grad(L)
    cols = [torch.func.jvp(grad, (theta,), (e,))[1] for e in torch.eye(theta.numel(), dtype=torch.float64)]
    return c * torch.stack(cols, dim=1).numpy()


def _torch_functional(problem: Problem) -> FloatArray:
    import torch

    L, c, theta = _torch_objective(problem)
    return c * torch.autograd.functional.hessian(L, theta).numpy()


# -- BackPACK and curvlinops: an nn.Sequential of the library's modules --------------

_MODULE_ACTIVATIONS = ("identity", "sigmoid", "tanh", "softplus", "gelu", "silu", "relu")  # sin has no nn module
_BACKPACK_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu")  # BackPACK's second-order modules among ours


def _sequential(problem: Problem) -> tuple[Any, Any, Any]:
    """``(model, inputs, targets)``: ``nn.Linear`` and activation modules at the problem's point, float64."""
    import torch

    from hessverify.torch import to_module

    modules = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "softplus": torch.nn.Softplus,
               "gelu": torch.nn.GELU, "silu": torch.nn.SiLU, "relu": torch.nn.ReLU}
    net = to_module(problem)
    parts: list[Any] = []
    for linear, act in zip(net.layers, net.activations):
        parts.append(linear)
        if act != "identity":
            parts.append(modules[act]())
    return (torch.nn.Sequential(*parts), torch.tensor(problem.inputs, dtype=torch.float64),
            torch.tensor(problem.targets, dtype=torch.float64))


def _backpack_diag_hessian(problem: Problem) -> FloatArray:
    import torch
    from backpack import backpack, extend
    from backpack.extensions import DiagHessian

    model, x, t = _sequential(problem)
    crit, c = _torch_criterion(problem)
    model, crit = extend(model), extend(crit)
    with backpack(DiagHessian()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Full backward hook is firing")  # the inputs need no gradient
        crit(model(x), t).backward()
    return c * torch.cat([q.diag_h.reshape(-1) for q in model.parameters()]).detach().numpy()


def _curvlinops_dense(problem: Problem, operator: str) -> FloatArray:
    import curvlinops
    import torch

    model, x, t = _sequential(problem)
    crit, c = _torch_criterion(problem)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Full backward hook is firing")
        op = getattr(curvlinops, operator)(model, crit, list(model.parameters()), [(x, t)])
        return c * (op @ torch.eye(problem.n_params, dtype=torch.float64)).detach().numpy()


def _curvlinops_hessian(problem: Problem) -> FloatArray:
    return _curvlinops_dense(problem, "HessianLinearOperator")


def _curvlinops_ggn(problem: Problem) -> FloatArray:
    return _curvlinops_dense(problem, "GGNLinearOperator")


# -- JAX, from jax.nn -------------------------------------------------------------

def _jax_objective(problem: Problem) -> tuple[Callable[[Any], Any], float, Any]:
    import jax
    import jax.numpy as jnp

    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)  # float64 conformance: the command turns it on
    acts: dict[str, Callable[[Any], Any]] = {
        "identity": lambda a: a, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "softplus": jax.nn.softplus,
        "sin": jnp.sin, "gelu": lambda a: jax.nn.gelu(a, approximate=False), "silu": jax.nn.silu,
        "relu": jax.nn.relu,
    }
    x, t = jnp.asarray(problem.inputs), jnp.asarray(problem.targets)
    per = {
        "sse": lambda y: 0.5 * jnp.sum((y - t) ** 2, axis=-1),
        "cross_entropy": lambda y: -jnp.sum(t * jax.nn.log_softmax(y, axis=-1), axis=-1),
        "binary_cross_entropy": lambda y: jnp.sum(jax.nn.softplus(y) - t * y, axis=-1),
        "output": lambda y: jnp.sum(y, axis=-1),
    }[problem.loss]
    reduce = jnp.mean if problem.reduction == "mean" else jnp.sum

    def L(theta: Any) -> Any:
        h = x
        for blk, layer in zip(problem.architecture.blocks, problem.architecture.layers):
            a = h @ theta[blk.w_slice].reshape(blk.units, blk.fan_in).T
            if blk.bias:
                a = a + theta[blk.b_slice]
            h = acts[layer.activation](a)
        return reduce(per(h))

    return L, 1.0, jnp.asarray(problem.params)


def _jax_hessian(problem: Problem) -> FloatArray:
    import jax

    L, c, theta = _jax_objective(problem)
    return c * np.asarray(jax.jit(jax.hessian(L))(theta))


def _jax_jacfwd_jacrev(problem: Problem) -> FloatArray:
    import jax

    L, c, theta = _jax_objective(problem)
    return c * np.asarray(jax.jit(jax.jacfwd(jax.jacrev(L)))(theta))


def _jax_hvp(problem: Problem) -> FloatArray:
    import jax
    import jax.numpy as jnp

    L, c, theta = _jax_objective(problem)
    grad = jax.grad(L)
    hvp = jax.jit(jax.vmap(lambda v: jax.jvp(grad, (theta,), (v,))[1]))
    return c * np.asarray(hvp(jnp.eye(theta.size))).T


_SSE = "MSELoss: E = L/2 (sum), E = K L/2 (mean over N K)"
_TORCH = f"{_SSE}; CrossEntropyLoss: E = L; BCEWithLogitsLoss: E = L (sum), E = K L (mean over N K)"
_JAX = "losses written from jax.nn: E = L; float64 by jax_enable_x64"
_LOSS_CLASSES = ("sse", "cross_entropy", "binary_cross_entropy")  # the output loss has no nn class
_BACKPACK = {"activations": _BACKPACK_ACTIVATIONS, "output_activations": _BACKPACK_ACTIVATIONS, "losses": ("sse",)}
_CURVLINOPS = {"activations": _MODULE_ACTIVATIONS, "output_activations": _MODULE_ACTIVATIONS, "losses": _LOSS_CLASSES}
# after a diagnosed failure, the same routine on the rest, so the table says how it does there
_NO_SILU = tuple(a for a in _MODULE_ACTIVATIONS if a != "silu")
_CURVLINOPS_NO_SILU = {"activations": _NO_SILU, "output_activations": _NO_SILU, "losses": _LOSS_CLASSES}
_NO_MSE = {"losses": ("cross_entropy", "binary_cross_entropy", "output")}

QUANTITIES: dict[str, tuple[Quantity, ...]] = {
    "torch.func": (
        Quantity("torch.func", "torch.func.hessian", "Hessian", _TORCH, _torch_hessian),
        Quantity("torch.func", "torch.func.jacrev(jacrev)", "Hessian", _TORCH, _torch_jacrev2),
        Quantity("torch.func", "torch.func.jvp(grad) (H e_j)", "Hessian, column by column", _TORCH, _torch_hvp),
        Quantity("torch.func", "torch.func.jvp(grad) (H e_j), losses but MSELoss", "Hessian, column by column",
                 _TORCH, _torch_hvp, "hessian", _NO_MSE),
        Quantity("torch.func", "torch.autograd.functional.hessian", "Hessian", _TORCH, _torch_functional),
    ),
    "jax": (
        Quantity("jax", "jax.hessian", "Hessian", _JAX, _jax_hessian),
        Quantity("jax", "jax.jacfwd(jax.jacrev)", "Hessian", _JAX, _jax_jacfwd_jacrev),
        Quantity("jax", "jax.jvp(jax.grad) (H e_j)", "Hessian, column by column", _JAX, _jax_hvp),
    ),
    "backpack": (
        Quantity("backpack", "backpack DiagHessian", "Hessian diagonal", _TORCH, _backpack_diag_hessian,
                 "diagonal", _BACKPACK),
    ),
    "curvlinops": (
        Quantity("curvlinops", "curvlinops HessianLinearOperator @ I", "Hessian", _TORCH, _curvlinops_hessian,
                 "hessian", _CURVLINOPS),
        Quantity("curvlinops", "curvlinops HessianLinearOperator @ I, activations but silu", "Hessian",
                 _TORCH, _curvlinops_hessian, "hessian", _CURVLINOPS_NO_SILU),
        Quantity("curvlinops", "curvlinops GGNLinearOperator @ I", "GGN J^T H_loss J", _TORCH, _curvlinops_ggn,
                 "ggn", _CURVLINOPS),
    ),
}
"""Every library routine that is checked, by library."""


def _version(library: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    dist = {"torch.func": "torch", "jax": "jax", "backpack": "backpack-for-pytorch",
            "curvlinops": "curvlinops-for-pytorch"}[library]
    try:
        importlib.import_module(dist.split("-")[0])
        return version(dist)
    except (ImportError, PackageNotFoundError):
        return ""


def check_libraries(libraries: list[str], precision: str) -> None:
    """One-line errors, before any work: unknown names, libraries not installed, a precision not judged yet."""
    for lib in libraries:
        if lib not in LIBRARIES:
            raise UsageError(f"--library {lib!r}: choose from {', '.join(LIBRARIES)}")
        if not _version(lib):
            extra = {"torch.func": "torch", "jax": "jax"}.get(lib, "conformance")
            raise UsageError(f"--library {lib}: not installed; pip install 'hessverify[{extra}]'")
    if precision != "float64":
        raise UsageError(f"--precision {precision}: only float64 for now (the libraries' routines are built in "
                         "float64; hessverify.check and check_model judge float32 code already)")


def _run_quantity(q: Quantity, examples: int, seed: int | None) -> Row:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed

    from hessverify.check import USER, describe, reduce_problem
    from hessverify.check import check_problem as check_one
    from hessverify.strategies import problems

    state: dict[str, Any] = {"n": 0, "worst": 0.0, "last": None, "first": None}

    against = ("gauss_newton",) if q.returns == "ggn" else ("backprop",)

    def compare(problem: Problem) -> list[Any]:
        return check_one(q.fn, problem, against=against, returns=q.returns, timeout=None)

    class _Fail(AssertionError):
        pass

    @settings(max_examples=examples, deadline=None, database=None, report_multiple_bugs=False,
              phases=[Phase.generate, Phase.shrink], print_blob=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(problems(**q.draw))
    def one(problem: Problem) -> None:
        try:
            comps = compare(problem)
        except FunctionUnderTestError as exc:  # the library raised: a failure too, kept with its message
            state["last"] = (problem, None, str(exc.message))
            if state["first"] is None:
                state["n"] += 1
                state["first"] = state["n"]
            raise _Fail from None
        if state["first"] is None:
            state["n"] += 1
            state["worst"] = max([state["worst"], *(c.margin for c in comps if np.isfinite(c.margin))])
        if not all(c.passed for c in comps):
            state["last"] = (problem, comps, "")
            if state["first"] is None:
                state["first"] = state["n"]
            raise _Fail

    if seed is not None:
        one = with_seed(seed)(one)
    row = Row(q.library, _version(q.library), q.name, q.equals, "float64", 0, 0, 0.0, q.convention)
    try:
        one()
    except _Fail:
        problem, comps, raised = state["last"]
        if comps is not None:  # a discrepancy: finish shrinking structurally, as hessverify.check does
            problem, comps, _ = reduce_problem(problem, comps, compare)
            raised = "; ".join(describe(c).replace(USER, q.name) for c in comps if not c.passed)
        else:
            raised = f"{q.name} raised: {raised}"
        row.failure, row.failures, row.failure_summary = problem, 1, raised
    row.tried = state["n"]
    row.worst_margin = state["worst"]
    return row


def run(libraries: list[str], *, examples: int = 100, seed: int | None = 0,
        precision: str = "float64") -> list[Row]:
    """Every quantity of every library in ``libraries`` on ``examples`` Hypothesis problems: one :class:`Row` each.

    A row's ``tried`` counts problems up to and including the first failure
    (Hypothesis stops there and shrinks it); ``failure`` is the minimal
    problem, ``worst_margin`` the largest error/bound seen before it.
    """
    check_libraries(libraries, precision)
    return [_run_quantity(q, examples, seed) for lib in libraries for q in QUANTITIES[lib]]


def run_one(library: str, number: int, *, examples: int = 100, seed: int | None = 0) -> Row:
    """Quantity ``number`` of ``library`` (``QUANTITIES[library][number]``) on ``examples`` problems: one :class:`Row`.

    One unit of ``hessverify campaign conformance``; :func:`run` is this over every quantity.
    """
    return _run_quantity(QUANTITIES[library][number], examples, seed)


def merge(rows: list[Row]) -> Row:
    """The rows of one quantity on several seeds as one: problems and failures added, the worst margin, and
    the smallest failing problem (fewest parameters, then patterns) with its summary."""
    first = rows[0]
    failing = [r for r in rows if r.failure is not None]
    smallest = min(failing, key=lambda r: (r.failure.n_params, r.failure.n_patterns), default=None)  # type: ignore[union-attr]
    return Row(first.library, first.version, first.quantity, first.equals, first.precision,
               sum(r.tried for r in rows), sum(r.failures for r in rows), max(r.worst_margin for r in rows),
               first.convention, smallest.failure if smallest else None, smallest.failure_summary if smallest else "")


def write_report(directory: Path, rows: list[Row], *, seed: int | None, examples: int,
                 extra: dict[str, Any] | None = None) -> list[Path]:
    """``conformance.json``, ``conformance.md`` and ``cases/LIBRARY-N.toml`` (each failure's minimal problem)."""
    from hessverify.io import strict_json, write_output

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cases").mkdir(exist_ok=True)
    written = []
    for i, r in enumerate([r for r in rows if r.failures], start=1):
        if r.failure is not None:
            case = directory / "cases" / f"{r.library.replace('.', '-')}-{i}.toml"
            written.append(write_output(case, r.failure.to_toml(), option="--report"))
    written.append(write_output(directory / "conformance.md", rows_markdown(rows), option="--report"))
    doc = {"rows": [r.to_dict() for r in rows], "seed": seed, "examples": examples, **(extra or {})}
    written.append(write_output(directory / "conformance.json", strict_json(doc, indent=1), option="--report"))
    return written


def rows_markdown(rows: list[Row]) -> str:
    """The table of docs/conformance.md."""
    lines = ["| library | version | quantity | equals | precision | problems tried | failures | worst margin |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.library} | {r.version} | `{r.quantity}` | {r.equals} | {r.precision} | {r.tried} | "
                     f"{r.failures} | {r.worst_margin:.3g} |")
    return "\n".join(lines) + "\n"
