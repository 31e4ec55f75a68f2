"""Conformance of the libraries: their own second-order code on Hypothesis problems, held to ours.

Each entry of :data:`QUANTITIES` runs one library's curvature code on a
network built from that library's *own* parts (its activations, its loss
classes) and maps the result to the hessverify quantity it should equal,
with the scale convention written down beside it: the Hessian (held to
backprop), the GGN ``J^T H_loss J`` (held to ``gauss_newton`` and its
independent autograd reference), or the empirical Fisher (held to
``fisher`` and its autograd reference), in full, on the diagonal, or in
the blocks the routine computes.  An exact routine is held to the float64
rounding bound (:func:`hessverify.engine.compare.bound_for`, as
:func:`hessverify.checking.check` does; for the empirical Fisher
:func:`hessverify.engine.bounds.fisher_rounding_bound`), plus the rounding model
at the format it computes in for ``precision="float32"``; an approximation
(KFAC, KFLR and KFRA where they are not exact) is reported with its
distance to the exact GGN blocks, never as a failure.  Problems are drawn
by :func:`hessverify.checking.strategies.problems`; a failure is shrunk to a minimal
problem, which :func:`run` returns as a case file.  :func:`check_quantity`
is the check of one routine on one problem.

Conventions (``N`` patterns, ``K`` outputs, ``E`` as in docs/cases.md, ``E = c L``):

* ``nn.MSELoss(reduction="sum")`` is ``sum ||y - t||^2`` with no 1/2: ``E = 1/2 L``;
  ``reduction="mean"`` divides by ``N K``, hessverify's mean by ``N``: ``E = K/2 L``;
* ``nn.CrossEntropyLoss`` with probability targets: ``E = L`` for sum and mean (mean divides by N);
* ``nn.BCEWithLogitsLoss``: sum ``E = L``; mean divides by ``N K``: ``E = K L``;
* the ``output`` loss has no library class: ``sum`` of the outputs (``/ N`` for mean);
* JAX has no loss classes: the losses are written from ``jax.nn`` (``log_softmax``, ``softplus``), ``E = L``;
* the Hessian, the GGN and their parts scale as ``E``: ``c`` times the library's;
* the empirical Fisher scales as the square of the per-pattern gradients: :func:`ef_scale`;
* BackPACK's CrossEntropyLoss Hessian is ``diag(p) - p p^T``, right for targets summing to one
  (rows are normalised); its BCEWithLogitsLoss takes one output and targets 0 or 1.

The activations are the libraries' own (``F.softplus``, ``F.gelu``,
``jax.nn.gelu(approximate=False)``, ...); their faults are what this finds.
BackPACK is run on the activations it has second-order modules for
(identity, sigmoid, tanh, relu); curvlinops on every activation with an
``nn`` module (all but sin); both on the three loss classes.
:data:`NOT_COVERED` lists what each library has that is not run.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.compare import Comparison
from hessverify.errors import FunctionUnderTestError, UsageError, exception_line
from hessverify.model.problem import Problem

__all__ = ["FAULTS", "JAX_COMPOSITIONS", "KIND_FAMILIES", "LIBRARIES", "NOT_COVERED", "PRECISION_NAMES", "QUANTITIES",
           "TORCH_COMPOSITIONS", "Fault", "Quantity", "Row", "check_quantity",
           "add_library_options", "ef_scale", "merge", "report_records", "rows_markdown", "run", "run_one", "write_report"]

LIBRARIES: tuple[str, ...] = ("torch.func", "jax", "backpack", "curvlinops", "tensorflow")
"""Libraries ``hessverify conformance --library`` knows."""

NOT_COVERED: dict[str, str] = {
    "torch.func": "activations elu, selu, leaky_relu, mish, hardswish, softsign, logsigmoid, tanh-approximate gelu; "
                  "losses L1Loss, HuberLoss, SmoothL1Loss, NLLLoss on log-probabilities, KLDivLoss, "
                  "GaussianNLLLoss, PoissonNLLLoss, class-index targets, weighted losses, label smoothing",
    "backpack": "sin, softplus, gelu, silu (no second-order module); activations elu, selu, leaky_relu, logsigmoid; "
                "CrossEntropyLoss with class-index targets, label smoothing or weights; the output loss (no loss "
                "class); BCEWithLogitsLoss on more than one output or targets other than 0 and 1 (NotImplementedError "
                "in BackPACK); not run: HBP's PCH curvatures, the CHEN expectation approximation, the batch-average "
                "HBP Hessian on several patterns, DiagGGNMC, KFAC with more than one sample, the Batch* extensions",
    "curvlinops": "KFACLinearOperator, EKFAC, FisherMCLinearOperator (Monte-Carlo GGN) and the Jacobian operators "
                  "(not run yet); the sin activation (no nn module); the output loss (no loss class); "
                  "EFLinearOperator with CrossEntropyLoss takes class indices only (run on one-hot targets)",
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
    fn: Callable[[Problem, str], FloatArray]  # fn(problem, precision): the library computing in that format
    # what it returns: "hessian", "diagonal", "ggn" (as hessverify.check.RETURNS), or "ggn_diagonal",
    # "hessian_blocks", "ggn_blocks" (one block per parameter tensor, NaN elsewhere), "fisher" (empirical Fisher)
    returns: str = "hessian"
    draw: dict[str, Any] = field(default_factory=dict)  # problems(**draw): what the routine supports
    adapt: Callable[[Problem], Problem | None] | None = None  # the problem as the routine assumes it, or None
    approximation: bool = False  # reported with its distance to the exact quantity, never a failure
    families: tuple[str, ...] = ()  # networks of these kinds (kind_problems); () the dense networks (problems)
    exclude: tuple[str, ...] = ()  # diagnosed faults (FAULTS) whose problems are not drawn
    probe: bool = False  # a setting the library is not known to support: if it raises, "not covered", not a failure

    @property
    def networks(self) -> str:
        """What the row draws: ``dense`` or the kind families, and the diagnosed faults left out."""
        drawn = ", ".join(self.families) if self.families else "dense"
        return drawn + (f" (without {', '.join(self.exclude)})" if self.exclude else "")


@dataclass(frozen=True)
class Fault:
    """A diagnosed fault (docs/conformance.md): the problems it shows on, so a row can leave them out and say how
    the routine does on the rest."""

    name: str
    applies: Callable[[Problem], bool]
    summary: str


def _normalises_parameters(problem: Problem, *, affine: bool) -> bool:
    """Whether a LayerNorm, or a BatchNorm with batch statistics, reads a layer's output (so its input depends on
    parameters), with a weight if ``affine``."""
    for i, layer in enumerate(problem.architecture.layers):
        batch_stats = layer.kind == "batch_norm" and layer.opts["mode"] == "train"
        if (layer.kind == "layer_norm" or batch_stats) and i > 0 and (layer.opts["affine"] or not affine):
            return True
    return False


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("MSELoss mean under forward mode", lambda p: p.loss in ("sse", "mse") and p.reduction == "mean",
          "forward-mode AD through nn.MSELoss(reduction='mean')'s backward raises 'ZeroTensors are immutable' "
          "(PyTorch; pytorch#123996)"),
    Fault("norm weight under vmap", lambda p: _normalises_parameters(p, affine=True),
          "torch.func's batching rule of the LayerNorm/BatchNorm backward forms the weight's gradient from the "
          "saved mean and 1/std, which carry no derivative: nested transforms drop its dependence on the input "
          "(PyTorch)"),
    Fault("norm forward rules", lambda p: _normalises_parameters(p, affine=False),
          "the forward-mode rules of layer_norm and batch_norm (batch statistics) use the saved mean and 1/std as "
          "constants: anything over forward mode is wrong (PyTorch; pytorch#196700, pytorch#196699)"),
    Fault("nn.MultiheadAttention fused kernel", lambda p: any(l.kind == "attention" for l in p.architecture.layers),
          "nn.MultiheadAttention(need_weights=False) runs _scaled_dot_product_flash_attention_for_cpu, whose backward "
          "has no derivative and which has no forward-mode rule: double backward and jvp of grad raise (PyTorch)"),
    Fault("jax.nn.dot_product_attention float32 softmax", lambda p: any(l.kind == "attention"
                                                                         for l in p.architecture.layers),
          "jax.nn.dot_product_attention converts the scores to float32 for the softmax whatever the inputs' dtype: "
          "a float64 network's attention is float32-accurate (JAX)"),
    Fault("BackPACK pooling in float32", lambda p: any(l.kind.startswith("avg_pool") for l in p.architecture.layers),
          "BackPACK's AvgPool derivatives build a float32 tensor in a float64 network: 'expected scalar type Double "
          "but found Float'"),
    Fault("BackPACK HBP residual on a feature map",
          lambda p: any(l.kind.startswith("conv") and l.activation not in ("identity", "relu")
                        for l in p.architecture.layers),
          "HBP's batch average adds an activation's residual diagonal only for flat features: after a convolution "
          "it is (C, L) and add_diag_to_mat asserts (BackPACK)"),
)}
"""The faults diagnosed in docs/conformance.md, by name: rows that would meet one again leave its problems out."""


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
    approximation: bool = False
    case: Problem | None = None  # the problem the comparisons below are from: the failing one, else the worst
    comparisons: list[Comparison] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)  # an approximation's, one per problem tried
    networks: str = "dense"  # Quantity.networks
    not_covered: str = ""  # a probe the library refused: its exception, type and message

    def to_dict(self) -> dict[str, Any]:
        return {"library": self.library, "version": self.version, "quantity": self.quantity, "equals": self.equals,
                "networks": self.networks, "not_covered": self.not_covered,
                "precision": self.precision, "tried": self.tried, "failures": self.failures,
                "worst_margin": self.worst_margin, "convention": self.convention,
                "approximation": self.approximation, **self.extra,
                "failure_summary": self.failure_summary,
                "failure_case": self.failure.to_toml() if self.failure is not None else None}

    def to_record(self) -> dict[str, Any]:
        """All of the row as JSON: what a campaign's unit carries from its worker to the merge and to ``--resume``."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)
                   if f.name not in ("failure", "case", "comparisons", "extra", "distances")},
                "extra": dict(self.extra), "distances": list(self.distances),
                "failure": self.failure.to_toml() if self.failure is not None else None,
                "case": self.case.to_toml() if self.case is not None else None,
                "comparisons": [c.to_dict() for c in self.comparisons]}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Row:
        """The row :meth:`to_record` wrote."""
        from hessverify.io.cases import parse_case

        def case(text: str | None) -> Problem | None:
            return None if text is None else parse_case(text)

        plain = {k: v for k, v in record.items() if k not in ("failure", "case", "comparisons", "extra", "distances")}
        return cls(**plain, extra=dict(record["extra"]), distances=list(record["distances"]),
                   failure=case(record["failure"]), case=case(record["case"]),
                   comparisons=[Comparison.from_dict(c) for c in record["comparisons"]])


# -- PyTorch, from its own parts (the table of hessverify.adapters.torch_table) --------------------

def _torch_criterion(problem: Problem) -> tuple[Callable[[Any, Any], Any], float]:
    """PyTorch's loss class for the problem's loss and reduction, and ``c`` with ``E = c L`` (the table's)."""
    from hessverify.adapters.torch_table import LOSSES

    loss = LOSSES[str(problem.loss)]
    return (loss.criterion(str(problem.reduction), **dict(problem.loss_options)),
            loss.scale(str(problem.reduction), problem.targets.shape[1]))


def _torch_dtype(precision: str) -> Any:
    import torch

    return getattr(torch, precision)


def _np(c: float, tensor: Any) -> FloatArray:
    """``c`` times a library result, as float64 (the result keeps its own format's values: widening is exact)."""
    return c * tensor.detach().to(dtype=_torch_dtype("float64")).numpy()


def _torch_objective(problem: Problem, precision: str = "float64", attention: str = "weights"
                     ) -> tuple[Callable[[Any], Any], float, Any]:
    """``(L(theta), c, theta)`` with ``E = c L``: PyTorch's modules, its activation functions and loss classes.

    ``attention``: how ``nn.MultiheadAttention`` is called (:data:`hessverify.adapters.torch_table.ATTENTION_CALLS`;
    by default its own default call, ``attn(x, x, x)``).
    """
    import torch

    from hessverify.adapters.torch_table import outputs

    dtype = _torch_dtype(precision)
    y, _ = outputs(problem, dtype, builtin=True, attention=attention)
    t = torch.tensor(problem.targets, dtype=dtype)
    crit, c = _torch_criterion(problem)

    def L(theta: Any) -> Any:
        return crit(y(theta), t)

    return L, c, torch.tensor(problem.params, dtype=dtype)


def _double_backward(L: Callable[[Any], Any], theta: Any) -> Any:
    """Row ``i`` of the Hessian as the gradient of ``dL/dtheta_i``: ``torch.autograd.grad`` twice."""
    import torch

    z = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(L(z), z, create_graph=True)
    rows = []
    for i in range(z.numel()):
        (row,) = torch.autograd.grad(g[i], z, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(z) if row is None else row)
    return torch.stack(rows)


def _torch_columns(L: Callable[[Any], Any], theta: Any, how: str) -> Any:
    """The Hessian from Hessian-vector products of ``torch.func.grad``: ``jvp`` (columns) or ``vjp`` (rows)."""
    import torch

    grad = torch.func.grad(L)
    basis = torch.eye(theta.numel(), dtype=theta.dtype)
    if how == "jvp":
        return torch.stack([torch.func.jvp(grad, (theta,), (e,))[1] for e in basis], dim=1)
    _, pull = torch.func.vjp(grad, theta)
    return torch.stack([pull(e)[0] for e in basis])


def _functional(outer: str, vectorize: bool) -> Callable[[Callable[[Any], Any], Any], Any]:
    def H(L: Callable[[Any], Any], theta: Any) -> Any:
        import torch

        return torch.autograd.functional.hessian(L, theta, vectorize=vectorize, outer_jacobian_strategy=outer)

    return H


def _func(outer: str, inner: str) -> Callable[[Callable[[Any], Any], Any], Any]:
    def H(L: Callable[[Any], Any], theta: Any) -> Any:
        import torch

        return getattr(torch.func, outer)(getattr(torch.func, inner)(L))(theta)

    return H


def _func_hessian(L: Callable[[Any], Any], theta: Any) -> Any:
    import torch

    return torch.func.hessian(L)(theta)


TORCH_COMPOSITIONS: dict[str, Callable[[Callable[[Any], Any], Any], Any]] = {
    "torch.func.hessian": _func_hessian,
    "torch.func.jacrev(jacrev)": _func("jacrev", "jacrev"),
    "torch.func.jacfwd(jacrev)": _func("jacfwd", "jacrev"),
    "torch.func.jacrev(jacfwd)": _func("jacrev", "jacfwd"),
    "torch.func.jacfwd(jacfwd)": _func("jacfwd", "jacfwd"),
    "torch.autograd.functional.hessian": _functional("reverse-mode", False),
    "torch.autograd.functional.hessian(outer_jacobian_strategy='forward-mode', vectorize=True)":
        _functional("forward-mode", True),
    "double backward (torch.autograd.grad twice)": _double_backward,
    "torch.func.jvp(grad) (H e_j)": lambda L, theta: _torch_columns(L, theta, "jvp"),
    "torch.func.vjp(grad) (e_j^T H)": lambda L, theta: _torch_columns(L, theta, "vjp"),
}
"""Every way PyTorch offers to form a Hessian, ``H(L, theta)``: torch.func's four pairings of ``jacrev`` and
``jacfwd`` (reverse over reverse, forward over reverse, reverse over forward, forward over forward) and its
``hessian`` (``jacfwd(jacrev)``), ``torch.autograd.functional.hessian`` with both outer strategies, double
backward, and Hessian-vector products by ``jvp`` and by ``vjp`` of ``grad``."""


def _torch_composition(how: str, attention: str = "weights") -> Callable[[Problem, str], FloatArray]:
    """The routine of one composition: the problem's Hessian by ``TORCH_COMPOSITIONS[how]``, scaled to ``E``."""
    H = TORCH_COMPOSITIONS[how]

    def routine(problem: Problem, precision: str = "float64") -> FloatArray:
        L, c, theta = _torch_objective(problem, precision, attention)
        return _np(c, H(L, theta))

    return routine


_torch_hessian = _torch_composition("torch.func.hessian")
_torch_jacrev2 = _torch_composition("torch.func.jacrev(jacrev)")
_torch_hvp = _torch_composition("torch.func.jvp(grad) (H e_j)")
_torch_functional = _torch_composition("torch.autograd.functional.hessian")


# -- BackPACK and curvlinops: the library's modules ---------------------------------------

_MODULE_ACTIVATIONS = ("identity", "sigmoid", "tanh", "softplus", "gelu", "silu", "relu")  # sin has no nn module
_BACKPACK_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu")  # BackPACK's second-order modules among ours


def _sequential(problem: Problem, precision: str = "float64") -> tuple[Any, Any, Any]:
    """``(model, inputs, targets)``: an ``nn.Sequential`` of the table's modules and activation modules."""
    import torch

    from hessverify.adapters.torch_table import ACTIVATIONS, Network, inputs_tensor

    arch = problem.architecture
    if not arch.is_chain or any(l.kind in ("add", "attention") for l in arch.layers):
        raise ValueError(f"{arch.describe()}: an nn.Sequential holds chains of one-input modules only")
    dtype = _torch_dtype(precision)
    net = Network(problem, dtype, builtin=True)
    parts: list[Any] = []
    for module, act in zip(net.layers, net.activations):
        parts.append(module)
        if act != "identity":
            parts.append(ACTIVATIONS[act].module())  # type: ignore[misc]
    return (torch.nn.Sequential(*parts), inputs_tensor(problem, dtype),
            torch.tensor(problem.targets, dtype=dtype))


def _backpack_targets(problem: Problem) -> Problem | None:
    """The problem as BackPACK's second-order losses assume it, or ``None`` where they do not apply.

    ``CrossEntropyLoss``: BackPACK's loss Hessian is ``diag(p) - p p^T`` per
    pattern, the Hessian of ``-sum t log softmax(y)`` only when the targets
    sum to one (in general it is ``(sum t)`` times that), so each row of
    targets is divided by its sum.  ``BCEWithLogitsLoss``: BackPACK takes
    one output only and targets 0 or 1 (``NotImplementedError`` otherwise),
    so other problems are not drawn and targets are rounded to 0 or 1.
    """
    t = problem.targets
    if problem.loss == "cross_entropy":
        sums = t.sum(axis=1, keepdims=True)
        if np.any(sums <= 0):
            return None
        t = t / sums
    elif problem.loss == "binary_cross_entropy":
        if t.shape[1] != 1:
            return None
        t = (t > 0.5).astype(np.float64)
    return replace(problem, targets=t)


def _backpack_backward(problem: Problem, extension: Any, precision: str) -> tuple[Any, float]:
    """One backward pass of BackPACK's ``extension`` through the problem's network and loss class: ``(model, c)``."""
    from backpack import backpack, extend

    model, x, t = _sequential(problem, precision)
    crit, c = _torch_criterion(problem)
    model, crit = extend(model), extend(crit)
    with backpack(extension), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Full backward hook is firing")  # the inputs need no gradient
        crit(model(x), t).backward()
    return model, c


def _backpack_diagonal(problem: Problem, precision: str, extension: Any, field: str) -> FloatArray:
    import torch

    model, c = _backpack_backward(problem, extension, precision)
    return _np(c, torch.cat([getattr(q, field).reshape(-1) for q in model.parameters()]))


def _backpack_diag_hessian(problem: Problem, precision: str = "float64") -> FloatArray:
    from backpack.extensions import DiagHessian

    return _backpack_diagonal(problem, precision, DiagHessian(), "diag_h")


def _backpack_diag_ggn_exact(problem: Problem, precision: str = "float64") -> FloatArray:
    from backpack.extensions import DiagGGNExact

    return _backpack_diagonal(problem, precision, DiagGGNExact(), "diag_ggn_exact")


def _backpack_kronecker(problem: Problem, precision: str, extension: Any, field: str) -> FloatArray:
    """BackPACK's block of each parameter tensor (the Kronecker product of its factors) in a ``(W, W)`` matrix.

    HBP and its KFAC/KFLR/KFRA settings give one block per parameter tensor:
    ``[A, B]`` for a weight (``A`` over the outputs, ``B`` over the inputs,
    ``kron(A, B)`` in PyTorch's row-major order, ``W[k, j]`` at ``k fan_in + j``,
    which is the public order) and ``[A]`` for a bias; no weight-bias and no
    between-layer blocks.  Entries it does not compute are NaN here and not
    compared (:func:`_parameter_blocks`).
    """
    model, c = _backpack_backward(problem, extension, precision)
    out = np.full((problem.n_params, problem.n_params), np.nan)
    start = 0
    for q in model.parameters():
        # the product of the factors in float64: exact for float32 factors, one rounding for float64 ones
        factors = [_np(1.0, f) for f in getattr(q, field)]
        block = factors[0]
        for f in factors[1:]:
            block = np.kron(block, f)
        out[start:start + q.numel(), start:start + q.numel()] = c * block
        start += q.numel()
    return out


def _backpack_hbp_hessian(problem: Problem, precision: str = "float64") -> FloatArray:
    from backpack.extensions import HBP
    from backpack.extensions.curvature import Curvature
    from backpack.extensions.secondorder.hbp import BackpropStrategy, ExpectationApproximation, LossHessianStrategy

    ext = HBP(Curvature.HESSIAN, LossHessianStrategy.SUM, BackpropStrategy.BATCH_AVERAGE,
              ExpectationApproximation.BOTEV_MARTENS)
    return _backpack_kronecker(problem, precision, ext, "hbp")


def _backpack_kflr(problem: Problem, precision: str = "float64") -> FloatArray:
    from backpack.extensions import KFLR

    return _backpack_kronecker(problem, precision, KFLR(), "kflr")


def _backpack_kfra(problem: Problem, precision: str = "float64") -> FloatArray:
    from backpack.extensions import KFRA

    return _backpack_kronecker(problem, precision, KFRA(), "kfra")


def _backpack_kfac(problem: Problem, precision: str = "float64") -> FloatArray:
    import torch
    from backpack.extensions import KFAC

    with torch.random.fork_rng():  # its Monte-Carlo sample of the loss Hessian, seeded and not leaking out
        torch.manual_seed(0)
        return _backpack_kronecker(problem, precision, KFAC(mc_samples=1), "kfac")


def _module(problem: Problem, precision: str = "float64", attention: str = "weights") -> tuple[Any, Any, Any]:
    """``(model, inputs, targets)``: the table's network of PyTorch modules (any graph), outputs ``(N, K)``."""
    import torch

    from hessverify.adapters.torch_table import Network, inputs_tensor

    class Flat(torch.nn.Module):
        """The network's outputs flattened per pattern, as the loss classes take them."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            y = self.net(x)
            return y.reshape(y.shape[0], -1)

    dtype = _torch_dtype(precision)
    model = Flat(Network(problem, dtype, builtin=True, attention=attention))
    return model, inputs_tensor(problem, dtype), torch.tensor(problem.targets, dtype=dtype)


def _curvlinops_dense(problem: Problem, operator: str, precision: str, scale: float,
                      class_indices: bool = False) -> FloatArray:
    import curvlinops
    import torch

    model, x, t = _module(problem, precision)
    if class_indices:  # one-hot targets as the class indices they encode
        t = t.argmax(dim=1)
    crit, _ = _torch_criterion(problem)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Full backward hook is firing")
        op = getattr(curvlinops, operator)(model, crit, list(model.parameters()), [(x, t)])
        return _np(scale, op @ torch.eye(problem.n_params, dtype=_torch_dtype(precision)))


def _curvlinops_hessian(problem: Problem, precision: str = "float64") -> FloatArray:
    return _curvlinops_dense(problem, "HessianLinearOperator", precision, _torch_criterion(problem)[1])


def _curvlinops_ggn(problem: Problem, precision: str = "float64") -> FloatArray:
    return _curvlinops_dense(problem, "GGNLinearOperator", precision, _torch_criterion(problem)[1])


def ef_scale(problem: Problem) -> float:
    """``F / EF``: hessverify's empirical Fisher over curvlinops' ``EFLinearOperator``.

    curvlinops writes the loss ``L = (1/r) sum_n l_n`` (``l_n`` the loss
    class on pattern ``n`` with no reduction: for ``MSELoss`` the squared
    error summed over the ``K`` outputs) and ``EF = (1/r) sum_n grad l_n grad l_n^T``,
    with ``r = 1`` for sum and, for mean, ``r = N`` (``CrossEntropyLoss``) or
    ``N K`` (the others).  hessverify's ``F = s sum_n grad e_n grad e_n^T``
    with ``E = s sum_n e_n`` (``hessverify.methods.fisher``).  With ``E = c L``
    (the loss-class conventions above), ``s e_n = c l_n / r``, so
    ``F = c^2 / (r s) EF``: ``1/4`` for MSELoss(sum), ``K/4`` for
    MSELoss(mean), 1 for CrossEntropyLoss, ``K`` for BCEWithLogitsLoss(mean).
    """
    _, c = _torch_criterion(problem)
    n, k = problem.targets.shape
    r = 1.0 if problem.reduction == "sum" else float(n if problem.loss == "cross_entropy" else n * k)
    return c * c / (r * problem.scale)


def _one_hot_targets(problem: Problem) -> Problem:
    """For ``CrossEntropyLoss``, one-hot targets (1 at each row's largest target): curvlinops' EF takes class indices.

    ``EFLinearOperator`` raises ``RuntimeError: expected target dtype to be
    Long or Byte`` for probability targets, so it is given the class indices
    of one-hot targets, which is the same loss.
    """
    if problem.loss != "cross_entropy":
        return problem
    t = np.zeros_like(problem.targets)
    t[np.arange(t.shape[0]), problem.targets.argmax(axis=1)] = 1.0
    return replace(problem, targets=t)


def _curvlinops_ef(problem: Problem, precision: str = "float64") -> FloatArray:
    return _curvlinops_dense(problem, "EFLinearOperator", precision, ef_scale(problem),
                             class_indices=problem.loss == "cross_entropy")


# -- JAX, from its own parts (the table of hessverify.adapters.jax_table) -------------------------

def _jax_objective(problem: Problem, precision: str = "float64") -> tuple[Callable[[Any], Any], float, Any]:
    """``(L(theta), 1, theta)``: JAX's own layers (``lax.conv_general_dilated``, ``nn.standardize``,
    ``nn.dot_product_attention``, ...) and ``jax.nn`` activations, the losses written from ``jax.nn``."""
    import jax
    import jax.numpy as jnp

    from hessverify.adapters.jax_table import LOSSES, apply_fn, unflatten

    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)  # float64 conformance: the command turns it on
    dtype = getattr(jnp, precision)
    arch = problem.architecture
    x = np.asarray(problem.inputs).reshape((problem.n_patterns,) + arch.shape)
    x = jnp.asarray(np.round(x).astype(np.int32)) if arch.layers[0].kind_def.reads_ids else jnp.asarray(x, dtype=dtype)
    t = jnp.asarray(problem.targets, dtype=dtype)
    apply, per = apply_fn(arch, builtin=True), LOSSES[str(problem.loss)].per_pattern
    options, scale, n = dict(problem.loss_options), problem.scale, problem.n_patterns

    def L(theta: Any) -> Any:
        return scale * jnp.sum(per(apply(unflatten(arch, theta), x).reshape(n, -1), t, jax.nn.softplus, **options))

    return L, 1.0, jnp.asarray(problem.params, dtype=dtype)


def _jnp(c: float, array: Any) -> FloatArray:
    return c * np.asarray(array).astype(np.float64)


def _jax_pair(outer: str, inner: str) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    def op(L: Callable[[Any], Any]) -> Callable[[Any], Any]:
        import jax

        return getattr(jax, outer)(getattr(jax, inner)(L))

    return op


def _jax_products(how: str) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """The Hessian from Hessian-vector products of ``jax.grad``, vmapped over the basis: ``jvp`` or ``vjp``."""
    def op(L: Callable[[Any], Any]) -> Callable[[Any], Any]:
        import jax
        import jax.numpy as jnp

        grad = jax.grad(L)

        def H(theta: Any) -> Any:
            basis = jnp.eye(theta.size, dtype=theta.dtype)
            if how == "jvp":
                return jax.vmap(lambda v: jax.jvp(grad, (theta,), (v,))[1])(basis).T
            _, pull = jax.vjp(grad, theta)
            return jax.vmap(lambda v: pull(v)[0])(basis)

        return H

    return op


def _jax_hessian_op(L: Callable[[Any], Any]) -> Callable[[Any], Any]:
    import jax

    return jax.hessian(L)


JAX_COMPOSITIONS: dict[str, Callable[[Callable[[Any], Any]], Callable[[Any], Any]]] = {
    "jax.hessian": _jax_hessian_op,
    "jax.jacrev(jax.jacrev)": _jax_pair("jacrev", "jacrev"),
    "jax.jacfwd(jax.jacrev)": _jax_pair("jacfwd", "jacrev"),
    "jax.jacrev(jax.jacfwd)": _jax_pair("jacrev", "jacfwd"),
    "jax.jacfwd(jax.jacfwd)": _jax_pair("jacfwd", "jacfwd"),
    "jax.jvp(jax.grad) (H e_j)": _jax_products("jvp"),
    "jax.vjp(jax.grad) (e_j^T H)": _jax_products("vjp"),
}
"""Every way JAX offers to form a Hessian, ``op(L) -> H(theta)``, each run under ``jax.jit`` as people do:
the four pairings of ``jacrev`` and ``jacfwd``, ``jax.hessian`` (``jacfwd(jacrev)``), and Hessian-vector
products by ``jvp`` and by ``vjp`` of ``grad``."""


def _jax_composition(how: str) -> Callable[[Problem, str], FloatArray]:
    op = JAX_COMPOSITIONS[how]

    def routine(problem: Problem, precision: str = "float64") -> FloatArray:
        import jax

        L, c, theta = _jax_objective(problem, precision)
        return _jnp(c, jax.jit(op(L))(theta))

    return routine


_jax_hessian = _jax_composition("jax.hessian")
_jax_jacfwd_jacrev = _jax_composition("jax.jacfwd(jax.jacrev)")
_jax_hvp = _jax_composition("jax.jvp(jax.grad) (H e_j)")


_SSE = "MSELoss: E = L/2 (sum), E = K L/2 (mean over N K)"
_TORCH = f"{_SSE}; CrossEntropyLoss: E = L; BCEWithLogitsLoss: E = L (sum), E = K L (mean over N K)"
_JAX = "losses written from jax.nn: E = L; float64 by jax_enable_x64"
_BACKPACK_TARGETS = "CrossEntropyLoss targets rows summing to one; BCEWithLogitsLoss one output, targets 0 or 1"
_BP = f"{_TORCH}; {_BACKPACK_TARGETS}"
_KRON = (f"{_BP}; one block per parameter tensor, kron(A, B) of its factors [A over outputs, B over inputs] "
         "(row-major W[k, j]), bias [A]; no weight-bias or between-layer blocks")
_EF = ("curvlinops EF = (1/r) sum_n grad l_n grad l_n^T, r = 1 (sum), N (CrossEntropyLoss, mean), N K (others, "
       "mean); hessverify F = s sum_n grad e_n grad e_n^T; F = c^2/(r s) EF with E = c L; CrossEntropyLoss with "
       "one-hot targets given as class indices")
_LOSS_CLASSES = ("sse", "cross_entropy", "binary_cross_entropy")  # the output loss has no nn class
# BackPACK and curvlinops take an nn.Sequential: chains only (graphs=False)
_BACKPACK = {"activations": _BACKPACK_ACTIVATIONS, "output_activations": _BACKPACK_ACTIVATIONS,
             "losses": _LOSS_CLASSES, "graphs": False}
_ONE_PATTERN = {**_BACKPACK, "max_patterns": 1}
_PATTERNS = {**_BACKPACK, "min_patterns": 2}  # an approximation of the GGN blocks only where it can differ
# BackPACK's summed loss Hessian (the strategy of KFRA and HBP's batch average) is missing for
# BCEWithLogitsLoss and built in float32 for MSELoss (docs/conformance.md): CrossEntropyLoss is what is left
_CE = ("cross_entropy",)
_ONE_PATTERN_NO_BCE = {**_ONE_PATTERN, "losses": ("sse", "cross_entropy")}
_ONE_PATTERN_CE = {**_ONE_PATTERN, "losses": _CE}
_PATTERNS_CE = {**_PATTERNS, "losses": _CE}
_CURVLINOPS = {"activations": _MODULE_ACTIVATIONS, "output_activations": _MODULE_ACTIVATIONS, "losses": _LOSS_CLASSES,
               "graphs": False}
# after a diagnosed failure, the same routine on the rest, so the table says how it does there
_NO_SILU = tuple(a for a in _MODULE_ACTIVATIONS if a != "silu")
_CURVLINOPS_NO_SILU = {"activations": _NO_SILU, "output_activations": _NO_SILU, "losses": _LOSS_CLASSES,
                       "graphs": False}
_MSE_MEAN = {"losses": ("sse",), "reductions": ("mean",)}

KIND_FAMILIES: tuple[str, ...] = ("conv1d", "conv2d", "layer_norm", "batch_norm", "add", "attention", "embedding")
"""The networks of other layer kinds each composition is run on, one row a family
(:data:`hessverify.adapters.kind_problems.FAMILIES`)."""

_MSE_FAULT = "MSELoss mean under forward mode"
_VMAP_FAULT = "norm weight under vmap"
_FORWARD_FAULT = "norm forward rules"
# what each torch composition meets: forward mode through MSELoss's backward; the norms' batching rule under an
# inner jacrev (torch.func's vmap over the backward); the norms' forward rules under an inner jacfwd
_TORCH_MEETS: dict[str, tuple[str, ...]] = {
    "torch.func.hessian": (_VMAP_FAULT,),
    "torch.func.jacrev(jacrev)": (_VMAP_FAULT,),
    "torch.func.jacfwd(jacrev)": (_VMAP_FAULT,),
    "torch.func.jacrev(jacfwd)": (_FORWARD_FAULT,),
    "torch.func.jacfwd(jacfwd)": (_FORWARD_FAULT,),
    "torch.autograd.functional.hessian(outer_jacobian_strategy='forward-mode', vectorize=True)": (_MSE_FAULT,),
    "torch.func.jvp(grad) (H e_j)": (_MSE_FAULT,),
}


def _torch_quantities() -> tuple[Quantity, ...]:
    """Every composition on dense networks and on each kind family; the MSELoss fault (found on dense networks, on
    every network the same) left out of the forward-mode rows but its own; after each diagnosed norm fault, the
    same composition on the norm families without it."""
    rows: list[Quantity] = []
    for how in TORCH_COMPOSITIONS:
        routine = _torch_composition(how)
        mse = tuple(f for f in _TORCH_MEETS.get(how, ()) if f == _MSE_FAULT)
        rows.append(Quantity("torch.func", how, "Hessian", _TORCH, routine, exclude=mse))
        if mse:  # the fault itself, on the problems it shows on
            rows.append(Quantity("torch.func", how, "Hessian", _TORCH, routine, draw=_MSE_MEAN))
        for family in KIND_FAMILIES:
            rows.append(Quantity("torch.func", how, "Hessian", _TORCH, routine, families=(family,), exclude=mse))
        norms = tuple(f for f in _TORCH_MEETS.get(how, ()) if f != _MSE_FAULT)
        if norms:
            rows.append(Quantity("torch.func", how, "Hessian", _TORCH, routine, families=("layer_norm", "batch_norm"),
                                 exclude=norms))
    for how in ("double backward (torch.autograd.grad twice)", "torch.func.jvp(grad) (H e_j)"):
        rows.append(Quantity("torch.func", f"{how}, nn.MultiheadAttention(need_weights=False)", "Hessian", _TORCH,
                             _torch_composition(how, attention="fused"), families=("attention",)))
    return tuple(rows)


def _jax_quantities() -> tuple[Quantity, ...]:
    rows: list[Quantity] = []
    for how in JAX_COMPOSITIONS:
        routine = _jax_composition(how)
        rows.append(Quantity("jax", how, "Hessian", _JAX, routine))
        rows += [Quantity("jax", how, "Hessian", _JAX, routine, families=(family,)) for family in KIND_FAMILIES]
    return tuple(rows)


def _sequential_kinds(problem: Problem) -> Problem | None:
    """The problem as BackPACK takes it (:func:`_backpack_targets`), if its network is an ``nn.Sequential`` of
    modules BackPACK extends for this: no attention after an embedding, BatchNorm in eval mode (BackPACK refuses
    training mode: 'Encountered BatchNorm module in training mode')."""
    for layer in problem.architecture.layers:
        if layer.kind in ("attention", "add") or (layer.kind == "batch_norm" and layer.opts["mode"] == "train"):
            return None
    return _backpack_targets(problem)


_BACKPACK_KINDS = {"activations": _BACKPACK_ACTIVATIONS, "output_activations": _BACKPACK_ACTIVATIONS,
                   "losses": _LOSS_CLASSES}
_CONV = ("conv1d", "conv2d")
_POOL_FAULT = "BackPACK pooling in float32"
_RESIDUAL_FAULT = "BackPACK HBP residual on a feature map"


def _backpack_kind_quantities() -> tuple[Quantity, ...]:
    """BackPACK on the kinds it extends (Conv1d/2d, AvgPool1d/2d, Flatten; BatchNorm in eval mode and Embedding
    for DiagGGNExact); probes on the others, which say what BackPACK refuses."""
    one = {**_BACKPACK_KINDS, "max_patterns": 1}
    rows = [
        Quantity("backpack", "backpack DiagHessian", "Hessian diagonal", _BP, _backpack_diag_hessian, "diagonal",
                 _BACKPACK_KINDS, _backpack_targets, families=_CONV),
        Quantity("backpack", "backpack DiagHessian", "Hessian diagonal", _BP, _backpack_diag_hessian, "diagonal",
                 _BACKPACK_KINDS, _backpack_targets, families=_CONV, exclude=(_POOL_FAULT,)),
        Quantity("backpack", "backpack DiagGGNExact", "GGN diagonal", _BP, _backpack_diag_ggn_exact, "ggn_diagonal",
                 _BACKPACK_KINDS, _backpack_targets, families=_CONV, exclude=(_POOL_FAULT,)),
        Quantity("backpack", "backpack DiagGGNExact", "GGN diagonal", _BP, _backpack_diag_ggn_exact, "ggn_diagonal",
                 _BACKPACK_KINDS, _sequential_kinds, families=("batch_norm", "embedding")),
        Quantity("backpack", "backpack HBP(hessian, loss Hessian sum, batch average), N = 1",
                 "Hessian, per-parameter blocks", _KRON, _backpack_hbp_hessian, "hessian_blocks",
                 {**one, "losses": _CE}, _backpack_targets, families=_CONV),
        Quantity("backpack", "backpack HBP(hessian, loss Hessian sum, batch average), N = 1",
                 "approximates the Hessian per-parameter blocks (Kronecker factors of a convolution: KFC)", _KRON,
                 _backpack_hbp_hessian, "hessian_blocks", {**one, "losses": _CE}, _backpack_targets, True,
                 families=_CONV, exclude=(_POOL_FAULT, _RESIDUAL_FAULT)),
        Quantity("backpack", "backpack KFLR (HBP: ggn, exact loss Hessian, sqrt), N = 1",
                 "approximates the GGN per-parameter blocks (Kronecker factors of a convolution: KFC)", _KRON,
                 _backpack_kflr, "ggn_blocks", one, _backpack_targets, True, families=_CONV, exclude=(_POOL_FAULT,)),
    ]
    for name, fn, returns in (("backpack DiagHessian", _backpack_diag_hessian, "diagonal"),
                              ("backpack DiagGGNExact", _backpack_diag_ggn_exact, "ggn_diagonal"),
                              ("backpack KFLR (HBP: ggn, exact loss Hessian, sqrt), N = 1", _backpack_kflr,
                               "ggn_blocks")):
        for family in ("layer_norm", "batch_norm", "embedding", "attention", "add"):
            if name == "backpack DiagGGNExact" and family in ("embedding",):
                continue  # extended: run above
            rows.append(Quantity("backpack", name, "probe", _BP, fn, returns, one, _backpack_targets,
                                 families=(family,), probe=True))
    return tuple(rows)


def _curvlinops_kind_quantities() -> tuple[Quantity, ...]:
    draw = {"activations": _MODULE_ACTIVATIONS, "output_activations": _MODULE_ACTIVATIONS, "losses": _LOSS_CLASSES}
    rows: list[Quantity] = []
    for family in KIND_FAMILIES:
        rows.append(Quantity("curvlinops", "curvlinops HessianLinearOperator @ I", "Hessian", _TORCH,
                             _curvlinops_hessian, "hessian", draw, families=(family,)))
        rows.append(Quantity("curvlinops", "curvlinops GGNLinearOperator @ I", "GGN J^T H_loss J", _TORCH,
                             _curvlinops_ggn, "ggn", draw, families=(family,)))
    rows.append(Quantity("curvlinops", "curvlinops HessianLinearOperator @ I", "Hessian", _TORCH, _curvlinops_hessian,
                         "hessian", draw, families=("layer_norm", "batch_norm"), exclude=(_VMAP_FAULT,)))
    return tuple(rows)


QUANTITIES: dict[str, tuple[Quantity, ...]] = {
    "torch.func": _torch_quantities(),
    "jax": _jax_quantities(),
    "backpack": (
        Quantity("backpack", "backpack DiagHessian", "Hessian diagonal", _BP, _backpack_diag_hessian,
                 "diagonal", _BACKPACK, _backpack_targets),
        Quantity("backpack", "backpack DiagGGNExact", "GGN diagonal", _BP, _backpack_diag_ggn_exact,
                 "ggn_diagonal", _BACKPACK, _backpack_targets),
        Quantity("backpack", "backpack HBP(hessian, loss Hessian sum, batch average), N = 1",
                 "Hessian, per-parameter blocks", _KRON, _backpack_hbp_hessian, "hessian_blocks", _ONE_PATTERN,
                 _backpack_targets),
        Quantity("backpack", "backpack HBP(hessian, loss Hessian sum, batch average), N = 1, losses but "
                 "BCEWithLogitsLoss", "Hessian, per-parameter blocks", _KRON, _backpack_hbp_hessian, "hessian_blocks",
                 _ONE_PATTERN_NO_BCE, _backpack_targets),
        Quantity("backpack", "backpack HBP(hessian, loss Hessian sum, batch average), N = 1, CrossEntropyLoss",
                 "Hessian, per-parameter blocks", _KRON, _backpack_hbp_hessian, "hessian_blocks", _ONE_PATTERN_CE,
                 _backpack_targets),
        Quantity("backpack", "backpack KFLR (HBP: ggn, exact loss Hessian, sqrt), N = 1", "GGN, per-parameter blocks",
                 _KRON, _backpack_kflr, "ggn_blocks", _ONE_PATTERN, _backpack_targets),
        Quantity("backpack", "backpack KFRA (HBP: ggn, loss Hessian sum, batch average), N = 1",
                 "GGN, per-parameter blocks", _KRON, _backpack_kfra, "ggn_blocks", _ONE_PATTERN, _backpack_targets),
        Quantity("backpack", "backpack KFRA (HBP: ggn, loss Hessian sum, batch average), N = 1, losses but "
                 "BCEWithLogitsLoss", "GGN, per-parameter blocks", _KRON, _backpack_kfra, "ggn_blocks",
                 _ONE_PATTERN_NO_BCE, _backpack_targets),
        Quantity("backpack", "backpack KFRA (HBP: ggn, loss Hessian sum, batch average), N = 1, CrossEntropyLoss",
                 "GGN, per-parameter blocks", _KRON, _backpack_kfra, "ggn_blocks", _ONE_PATTERN_CE, _backpack_targets),
        Quantity("backpack", "backpack KFAC (1 Monte-Carlo sample)", "approximates the GGN per-parameter blocks",
                 _KRON, _backpack_kfac, "ggn_blocks", _BACKPACK, _backpack_targets, approximation=True),
        Quantity("backpack", "backpack KFLR, N >= 2", "approximates the GGN per-parameter blocks",
                 _KRON, _backpack_kflr, "ggn_blocks", _PATTERNS, _backpack_targets, approximation=True),
        Quantity("backpack", "backpack KFRA, N >= 2, CrossEntropyLoss", "approximates the GGN per-parameter blocks",
                 _KRON, _backpack_kfra, "ggn_blocks", _PATTERNS_CE, _backpack_targets, approximation=True),
        *_backpack_kind_quantities(),
    ),
    "curvlinops": (
        Quantity("curvlinops", "curvlinops HessianLinearOperator @ I", "Hessian", _TORCH, _curvlinops_hessian,
                 "hessian", _CURVLINOPS),
        Quantity("curvlinops", "curvlinops HessianLinearOperator @ I, activations but silu", "Hessian",
                 _TORCH, _curvlinops_hessian, "hessian", _CURVLINOPS_NO_SILU),
        Quantity("curvlinops", "curvlinops GGNLinearOperator @ I", "GGN J^T H_loss J", _TORCH, _curvlinops_ggn,
                 "ggn", _CURVLINOPS),
        Quantity("curvlinops", "curvlinops EFLinearOperator @ I", "empirical Fisher s sum_n grad e_n grad e_n^T",
                 _EF, _curvlinops_ef, "fisher", _CURVLINOPS, _one_hot_targets),
        *_curvlinops_kind_quantities(),
    ),
}
"""Every library routine that is checked, by library: on dense networks (``networks = dense``) and on networks
of each kind family."""

PRECISION_NAMES: tuple[str, ...] = ("float64", "float32")
"""The formats ``--precision`` runs the libraries in (float16 and bfloat16: not measured yet, refused)."""


def add_library_options(parser: Any) -> None:
    """``--library`` and ``--precision``, as ``hessverify conformance`` and ``hessverify campaign conformance``
    take them (an :class:`argparse.ArgumentParser`)."""
    parser.add_argument("--library", nargs="+", required=True, metavar="NAME", help=f"of {', '.join(LIBRARIES)}")
    parser.add_argument("--networks", nargs="+", metavar="FAMILY",
                        help="only the rows on these network families (dense, conv1d, conv2d, layer_norm, batch_norm, "
                             "add, attention, embedding; default: every row)")
    parser.add_argument("--precision", default="float64", choices=("float64", "float32", "float16", "bfloat16"),
                        help="format the libraries compute in and are judged at (default float64; float32 too; "
                             "float16 and bfloat16 are refused for now)")


def _version(library: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    if library == "tensorflow":  # the tensorflow or the tensorflow-cpu distribution
        return tensorflow_conformance.version()

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
            extra = {"torch.func": "torch", "jax": "jax", "tensorflow": "tensorflow"}.get(lib, "conformance")
            raise UsageError(f"--library {lib}: not installed; pip install 'hessverify[{extra}]'")
    if precision not in PRECISION_NAMES:
        raise UsageError(f"--precision {precision}: choose from {', '.join(PRECISION_NAMES)} (the rounding model "
                         f"of {precision} is not yet measured against the libraries)")


# -- one problem ----------------------------------------------------------------------

def _parameter_groups(problem: Problem) -> np.ndarray:
    """For each parameter in the public order, the index of its tensor (``W1``, ``b1``, ``Win2``, ...)."""
    groups = np.empty(problem.n_params, dtype=np.int64)
    for i, tensor in enumerate(problem.architecture.tensors):
        groups[tensor.slice] = i
    return groups


def _mask(problem: Problem, returns: str) -> np.ndarray:
    """The entries a result of this form computes: the diagonal, or each parameter tensor's block."""
    if returns == "ggn_diagonal":
        return np.eye(problem.n_params, dtype=bool)
    g = _parameter_groups(problem)
    return g[:, None] == g[None, :]


def _references(problem: Problem, curvature: str) -> list[tuple[str, FloatArray]]:
    """hessverify's matrices a library's curvature is held to: its method, and the independent reference."""
    from hessverify.methods import backprop, fisher, gauss_newton
    from hessverify.references import curvature_ref

    if curvature == "hessian":
        return [("backprop", backprop.hessian(problem))]
    if curvature == "ggn":
        return [("gauss_newton", gauss_newton.hessian(problem)), ("autograd", curvature_ref.gauss_newton(problem))]
    return [("fisher", fisher.hessian(problem)), ("autograd", curvature_ref.fisher(problem))]


def _masked(q: Quantity, problem: Problem, precision: str) -> list[Comparison]:
    """A routine that computes some entries of the Hessian, GGN or empirical Fisher, held to ours there."""
    from hessverify.base.precision import get_precision
    from hessverify.engine.bounds import fisher_rounding_bound
    from hessverify.engine.compare import compare_at
    from hessverify.engine.point import Point

    curvature = {"ggn_diagonal": "ggn", "ggn_blocks": "ggn", "hessian_blocks": "hessian"}.get(q.returns, q.returns)
    refs = _references(problem, curvature)
    A = _call(q, problem, precision)
    if q.returns == "ggn_diagonal":
        A = np.diag(A)
    mask = np.ones(A.shape, dtype=bool) if q.returns == "fisher" else _mask(problem, q.returns)
    if q.approximation:
        name, R = refs[0]
        c = compare_at(problem, q.name, name, A, R, np.ones_like(R), "approximation", mask)
        c.bound = c.worst_entry.bound = float("inf")
        c.passed, c.margin, c.failing_entries = True, 0.0, 0
        c.note = "approximation: its distance to the exact GGN blocks is reported, never a failure"
        c.extra["approximation"] = True
        return [c]
    p = get_precision(precision)
    if curvature == "fisher":
        bound, kind = fisher_rounding_bound(problem), "fisher_rounding"
        if precision != "float64":
            bound, kind = bound + fisher_rounding_bound(problem, precision=p), f"{kind}+{precision}"
    else:
        point = Point.of(problem)
        bound, kind = point.finite_rounding, "rounding"
        if precision != "float64":
            bound, kind = bound + point.at(p).rounding(2), f"{kind}+{precision}"
    return [compare_at(problem, q.name, name, A, R, bound, kind, mask) for name, R in refs]


def _call(q: Quantity, problem: Problem, precision: str) -> FloatArray:
    """The library routine on a problem; whatever it raises is its failure, kept with the message."""
    import traceback

    try:
        return np.asarray(q.fn(problem, precision), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any exception of the library is the finding
        message = exception_line(exc)
        if not message:  # a bare raise: say where, which is the diagnosis's starting point
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            message = f"(no message) in {frame.name}, {'/'.join(Path(frame.filename).parts[-3:])}:{frame.lineno}"
        raise FunctionUnderTestError(f"{type(exc).__name__}: {message}", problem=problem) from None


def check_quantity(quantity: Quantity, problem: Problem, *, precision: str = "float64") -> list[Comparison]:
    """One library routine on one problem, held to hessverify: one :class:`~hessverify.compare.Comparison` a reference.

    The problem is first put in the form the routine assumes
    (``quantity.adapt``, e.g. BackPACK's targets).  An exact routine is held
    to the float64 rounding bound (plus, for ``precision`` other than
    float64, the rounding model at that format); an approximation
    (``quantity.approximation``) gets one record that always passes, with
    its distance to the exact GGN (``frobenius_rel_error``, on the entries
    it computes).

    Raises
    ------
    FunctionUnderTestError
        The library raised (its message is kept) or the problem is not one
        the routine takes (``adapt`` returned ``None``).
    """
    from hessverify.checking.check import check_problem

    if quantity.adapt is not None:
        adapted = quantity.adapt(problem)
        if adapted is None:
            raise FunctionUnderTestError(f"{quantity.name} does not take this problem", problem=problem)
        problem = adapted
    if quantity.returns in ("hessian", "diagonal", "ggn"):
        against = ("gauss_newton",) if quantity.returns == "ggn" else ("backprop",)
        # the library's own code, run here: its exceptions are findings (run_one), and a child process per
        # problem would only add the start of one (PyTorch's import, with spawn) to every example
        comps = check_problem(lambda p: quantity.fn(p, precision), problem, against=against,
                              returns=quantity.returns, timeout=None, precision=precision, isolation="none")
        for c in comps:
            c.method = quantity.name
        return comps
    return _masked(quantity, problem, precision)


def _run_quantity(q: Quantity, examples: int, seed: int | None, precision: str = "float64") -> Row:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed

    from hessverify.checking.check import describe, reduce_problem
    from hessverify.reports.progress import progress

    state: dict[str, Any] = {"n": 0, "worst": 0.0, "last": None, "first": None, "fault": "", "distances": [],
                             "case": None, "score": 0.0}

    def compare(problem: Problem) -> list[Comparison]:
        return check_quantity(q, problem, precision=precision)

    class _Fail(AssertionError):
        pass

    class _Refused(BaseException):  # passes through Hypothesis unshrunk: a probe the library refused
        pass

    strategy = _strategy(q)

    def failed(problem: Problem, comps: list[Comparison] | None, fault: str) -> None:
        """A failure; while shrinking, only the fault first met counts (another one is another finding)."""
        if state["first"] is not None and fault != state["fault"]:
            return
        state["last"] = (problem, comps, fault if comps is None else "")
        if state["first"] is None:
            state["n"] += 1
            state["first"], state["fault"] = state["n"], fault
            bar.describe(f"{q.library} {q.name}: problem {state['n']} failed; shrinking it")
            bar.restart(None)
        raise _Fail

    @settings(max_examples=examples, deadline=None, database=None, report_multiple_bugs=False,
              phases=[Phase.generate, Phase.shrink], print_blob=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(strategy)
    def one(problem: Problem) -> None:
        try:
            comps = compare(problem)
        except FunctionUnderTestError as exc:  # the library raised: a failure too, kept with its message
            if q.probe and state["first"] is None:
                state["refused"] = (problem, str(exc.message))
                raise _Refused from None
            failed(problem, None, str(exc.message))
            return
        bar()
        if not all(c.passed for c in comps):
            failed(problem, comps, "disagrees")
            return
        if state["first"] is None:
            state["n"] += 1
            # the problem closest to failing (an approximation's: farthest from the exact GGN) is kept for the report
            score = comps[0].frobenius_rel_error if q.approximation else \
                max((c.margin for c in comps if np.isfinite(c.margin)), default=0.0)
            if state["case"] is None or score > state["score"]:
                state["case"], state["score"] = (problem, comps), score
            state["worst"] = max([state["worst"], *(c.margin for c in comps if np.isfinite(c.margin))])
            if q.approximation:
                state["distances"].append(comps[0].frobenius_rel_error)

    if seed is not None:
        one = with_seed(seed)(one)
    row = Row(q.library, _version(q.library), q.name, q.equals, precision, 0, 0, 0.0, q.convention,
              approximation=q.approximation, networks=q.networks)
    try:
        with progress(examples, f"{q.library} {q.name}: problems") as bar:
            one()
    except _Refused:  # not covered: the library's own exception says why
        problem, message = state["refused"]
        row.tried, row.not_covered = state["n"] + 1, message.removeprefix(f"{q.name} raised: ")
        row.case = q.adapt(problem) or problem if q.adapt is not None else problem
        return row
    except _Fail:
        problem, comps, raised = state["last"]
        if comps is not None:  # a discrepancy: finish shrinking structurally, as hessverify.check does
            problem, comps, _ = reduce_problem(problem, comps, compare)
            raised = "; ".join(describe(c) for c in comps if not c.passed)
        else:
            raised = f"{q.name} raised: {raised}"
        if q.adapt is not None:  # the case file as the routine was given it
            problem = q.adapt(problem) or problem
        row.failure, row.failures, row.failure_summary = problem, 1, raised
        row.case, row.comparisons = problem, list(comps or [])
    else:
        row.case, row.comparisons = state["case"] or (None, [])
    row.tried = state["n"]
    row.worst_margin = state["worst"]
    row.distances = [float(d) for d in state["distances"]]
    _summarise_distances(row)
    return row


_TABLES = {"torch.func": "torch_table", "backpack": "torch_table", "curvlinops": "torch_table", "jax": "jax_table",
           "tensorflow": "tensorflow_table"}
"""The table each library's rows are written from (:mod:`hessverify.adapters.rows`)."""


def _strategy(q: Quantity) -> Any:
    """The problems a row draws: dense networks (:func:`hessverify.checking.strategies.problems`), or networks of
    the other layer kinds (:func:`hessverify.adapters.kind_problems.kind_problems`, until the default strategies
    draw kinds), put in the form the routine assumes, without the diagnosed faults it leaves out."""
    from hessverify.adapters.kind_problems import kind_problems
    from hessverify.checking.strategies import problems

    # only the activations and losses the library's table writes (a new one without a row is left out, not failed)
    draw = importlib.import_module(f"hessverify.adapters.{_TABLES[q.library]}").within(dict(q.draw))
    if q.families:
        keys = ("activations", "output_activations", "losses", "reductions", "min_patterns", "max_patterns")
        strategy = kind_problems(families=q.families, **{k: v for k, v in draw.items() if k in keys})
    else:
        strategy = problems(**{"kinds": False, **draw})  # dense networks: the kind families are drawn above
    if q.adapt is not None:
        strategy = strategy.map(q.adapt).filter(lambda p: p is not None)
    if q.exclude:
        faults = [FAULTS[name] for name in q.exclude]
        strategy = strategy.filter(lambda p: not any(f.applies(p) for f in faults))
    return strategy


def _summarise_distances(row: Row) -> None:
    if row.approximation and row.distances:
        d = np.asarray(row.distances)
        row.extra.update(distance_median=float(np.median(d)), distance_max=float(np.max(d)))


def families(q: Quantity) -> tuple[str, ...]:
    """The network families a quantity's row runs on (``"dense"``, ``"conv1d"``, ...), read from its ``networks``."""
    return tuple(part.strip() for part in q.networks.split(" (")[0].split(","))


def selected(library: str, networks: Sequence[str] | None = None) -> list[int]:
    """The indices into ``QUANTITIES[library]`` of the rows on any of ``networks`` (default: every row)."""
    rows = QUANTITIES[library]
    if networks is None:
        return list(range(len(rows)))
    known = {f for q in rows for f in families(q)}
    unknown = [n for n in networks if n not in known]
    if unknown:
        raise UsageError(f"--networks {' '.join(unknown)}: {library} has rows on {', '.join(sorted(known))}")
    return [k for k, q in enumerate(rows) if set(families(q)) & set(networks)]


def run(libraries: list[str], *, examples: int = 100, seed: int | None = 0,
        precision: str = "float64", networks: Sequence[str] | None = None) -> list[Row]:
    """Every quantity of every library in ``libraries`` on ``examples`` Hypothesis problems: one :class:`Row` each.

    A row's ``tried`` counts problems up to and including the first failure
    (Hypothesis stops there and shrinks it); ``failure`` is the minimal
    problem, ``worst_margin`` the largest error/bound seen before it.  The
    libraries compute in ``precision`` and are judged at its rounding.
    ``networks``: only the rows on these network families (``dense``, ``conv1d``, ``attention``, ...).
    """
    from hessverify.reports.progress import track

    check_libraries(libraries, precision)
    quantities = [QUANTITIES[lib][k] for lib in libraries for k in selected(lib, networks)]
    return [_run_quantity(q, examples, seed, precision)
            for q in track(quantities, "conformance", label=lambda q: f"{q.library} {q.name}")]


def run_one(library: str, number: int, *, examples: int = 100, seed: int | None = 0,
            precision: str = "float64") -> Row:
    """Quantity ``number`` of ``library`` (``QUANTITIES[library][number]``) on ``examples`` problems: one :class:`Row`.

    One unit of ``hessverify campaign conformance``; :func:`run` is this over every quantity.
    """
    return _run_quantity(QUANTITIES[library][number], examples, seed, precision)


def merge(rows: list[Row]) -> Row:
    """The rows of one quantity on several seeds as one.

    Problems and failures are added, the worst margin is the largest, an
    approximation's distances are pooled; the case shown is the smallest
    failing problem (fewest parameters, then patterns) with its summary and
    comparisons, else the one closest to failing.
    """
    first = rows[0]
    failing = [r for r in rows if r.failure is not None]
    smallest = min(failing, key=lambda r: (r.failure.n_params, r.failure.n_patterns),  # type: ignore[union-attr]
                   default=None)
    shown = smallest or max(rows, key=lambda r: max(r.distances, default=0.0) if r.approximation else r.worst_margin)
    merged = Row(first.library, first.version, first.quantity, first.equals, first.precision,
                 sum(r.tried for r in rows), sum(r.failures for r in rows), max(r.worst_margin for r in rows),
                 first.convention, smallest.failure if smallest else None,
                 smallest.failure_summary if smallest else "", approximation=first.approximation,
                 case=shown.case, comparisons=list(shown.comparisons),
                 distances=[d for r in rows for d in r.distances], networks=first.networks,
                 not_covered=next((r.not_covered for r in rows if r.not_covered), ""))
    _summarise_distances(merged)
    return merged


def rows_markdown(rows: list[Row]) -> str:
    """The tables of docs/conformance.md: exact quantities, approximations with their distance, what is not covered."""
    lines = ["| library | version | quantity | networks | equals | precision | problems tried | failures | "
             "worst margin |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if not r.approximation and not r.not_covered:
            lines.append(f"| {r.library} | {r.version} | `{r.quantity}` | {r.networks} | {r.equals} | {r.precision} | "
                         f"{r.tried} | {r.failures} | {r.worst_margin:.3g} |")
    approx = [r for r in rows if r.approximation and not r.not_covered]
    if approx:
        lines += ["", "Approximations (never failures): relative Frobenius distance to the exact GGN on the "
                  "blocks they compute, ||A - G||_F / ||G||_F.", "",
                  "| library | version | quantity | networks | approximates | precision | problems tried | raised | "
                  "median distance | largest distance |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in approx:
            med, mx = r.extra.get("distance_median", float("nan")), r.extra.get("distance_max", float("nan"))
            lines.append(f"| {r.library} | {r.version} | `{r.quantity}` | {r.networks} | {r.equals} | {r.precision} | "
                         f"{r.tried} | {r.failures} | {med:.3g} | {mx:.3g} |")
    refused = [r for r in rows if r.not_covered]
    if refused:
        lines += ["", "Not covered (the library refused the setting: its own exception, on the first problem drawn):",
                  "", "| library | version | quantity | networks | exception |", "| --- | --- | --- | --- | --- |"]
        for r in refused:
            lines.append(f"| {r.library} | {r.version} | `{r.quantity}` | {r.networks} | "
                         f"{r.not_covered.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


# -- the report: results.json, report.md and report.html, as hessverify verify --report writes them --------

def report_records(rows: list[Row]) -> tuple[list[Comparison], list[dict[str, str]], list[Problem], list[str]]:
    """The rows as a report's ``(results, not_compared, cases, leading)``.

    Each row gives one case: its minimal failing problem (leading the
    report), else the problem that came closest to failing (for an
    approximation: the one farthest from the exact GGN), with the
    comparisons made on it, under the id ``LIBRARY-ROW-failing|worst``.  A
    library that raised has no comparison: its case is listed as not
    compared (``function_failed``) with the message, and counted in the
    table's failures.
    """
    results: list[Comparison] = []
    skipped: list[dict[str, str]] = []
    cases: list[Problem] = []
    leading: list[str] = []
    for i, r in enumerate(rows, start=1):
        if r.case is None or r.not_covered:  # a refused probe: its exception is in the table
            continue
        failing = r.failure is not None
        cid = f"{r.library.replace('.', '-')}-{i}-{'failing' if failing else 'worst'}"
        what = "minimal failing problem" if failing else \
            ("farthest from the exact GGN" if r.approximation else "closest to its bound")
        if not r.approximation:  # an approximation's distance is in the table, its record in results.json
            cases.append(replace(r.case, id=cid, description=f"{r.quantity} ({r.precision}): {what}"))
        if failing:
            leading.append(cid)
        results += [replace(c, case=cid, method=r.quantity) for c in r.comparisons]
        if failing and not r.comparisons:
            skipped.append({"case": cid, "reason": "function_failed", "message": r.failure_summary})
    return results, skipped, cases, leading


def _html_table(markdown_table: str) -> str:
    """A Markdown table (and the paragraphs between) of :func:`rows_markdown` as HTML."""
    from html import escape

    out, in_table = [], False
    for line in markdown_table.splitlines():
        if line.startswith("| ---"):
            continue
        if line.startswith("|"):
            cells = [escape(c.strip().strip("`")) for c in line.strip("|").split("|")]
            tag = "th" if not in_table else "td"
            out.append(("<table>" if not in_table else "") + "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells)
                       + "</tr>")
            in_table = True
        else:
            if in_table:
                out.append("</table>")
                in_table = False
            if line.strip():
                out.append(f"<p>{escape(line)}</p>")
    return "\n".join(out) + ("</table>" if in_table else "")


def write_report(directory: Path, rows: list[Row], *, command: str, seed: int | None, examples: int,
                 precision: str) -> list[Path]:
    """``results.json``, ``report.md`` and ``report.html`` of a conformance run, as ``verify --report`` writes them,
    and ``cases/LIBRARY-N.toml``, each failure's minimal problem.

    The per-case part is :mod:`hessverify.reports`' (:func:`report_records`
    gives its cases); ``results.json`` adds a ``conformance`` object (the
    table's rows, seed, examples, precision, what is not covered), and both
    pages open with the conformance table.
    """
    from hessverify.io.files import report_set, strict_json, write_output
    from hessverify.reports import check_directory, markdown, results_document
    from hessverify.reports.html import html_document

    check_directory(directory)
    results, skipped, cases, leading = report_records(rows)
    ordered = [c for c in cases if c.id in leading] + [c for c in cases if c.id not in leading]
    doc = results_document(results, skipped, leading=leading)
    doc["conformance"] = {"command": command, "seed": seed, "examples": examples, "precision": precision,
                          "rows": [r.to_dict() for r in rows],
                          "not_covered": {r.library: NOT_COVERED[r.library] for r in rows}}
    table = rows_markdown(rows)
    failures = [f"- {r.library} `{r.quantity}`: {r.failure_summary}" for r in rows if r.failures]
    head = ["# hessverify conformance", "", f"`{command}`", "", table,
            *(["Failures:", "", *failures, ""] if failures else []),
            "Not covered (the case schema cannot express it):", "",
            *(f"- {lib}: {NOT_COVERED[lib]}" for lib in dict.fromkeys(r.library for r in rows)), ""]
    md = "\n".join(head) + "\n" + markdown(results, skipped, ordered, leading=leading).replace(
        "# hessverify report", "## The cases", 1)
    page = html_document(results, skipped, ordered, [], leading)
    section = "<h2>Conformance</h2>" + f"<p><code>{_escape(command)}</code></p>" + _html_table(
        "\n".join(head[4:]))
    page = page.replace("<h1>hessverify report</h1>", "<h1>hessverify conformance</h1>" + section, 1)
    with report_set(directory) as staging:
        (staging / "results.json").write_text(strict_json(doc, indent=1))
        (staging / "report.md").write_text(md)
        (staging / "report.html").write_text(page)
    written = [directory / n for n in ("results.json", "report.md", "report.html")]
    # each failure's minimal problem as a case file beside the report (cases/LIBRARY-N.toml)
    for i, r in enumerate([r for r in rows if r.failures], start=1):
        if r.failure is not None:
            (directory / "cases").mkdir(exist_ok=True)
            case = directory / "cases" / f"{r.library.replace('.', '-')}-{i}.toml"
            written.append(write_output(case, r.failure.to_toml(), option="--report"))
    return written


def _escape(text: str) -> str:
    from html import escape

    return escape(text)


# TensorFlow's rows live in their own module, below this one (it imports TensorFlow only when a row runs)
from hessverify.adapters import tensorflow_conformance  # noqa: E402

QUANTITIES["tensorflow"] = tuple(Quantity(*row) for row in tensorflow_conformance.ROWS)
NOT_COVERED["tensorflow"] = tensorflow_conformance.NOT_COVERED
