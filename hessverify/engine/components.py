"""Components: a method or a reference described once, as a type.

A :class:`Component` says everything the engine needs of one way of computing
curvature, in one place: how to compute it on a :class:`~hessverify.engine.point.Point`,
its own error estimate (if it has one), where it serves by default, the form of
its result (:mod:`hessverify.engine.forms`), the tolerance it brings to a
comparison (:class:`Tolerance`: how its side of the bound is derived and why),
and what it costs (:class:`Cost`: memory and time, for the budgets).  A method
or reference is one module under :mod:`hessverify.methods` or
:mod:`hessverify.references` that declares ``COMPONENT`` (or ``COMPONENTS``);
the registry (:mod:`hessverify.engine.registry`) finds it there.

The names that used to be compared as strings are types here: :class:`Role`
(method, reference, approximation) and :class:`BoundKind` (how a comparison's
bound was derived).  Both are ``StrEnum`` s, so they read and serialise as
the strings ``results.json`` has always held.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.forms import HessianForm, form_named
from hessverify.engine.point import Point, as_problem
from hessverify.model.problem import Problem

__all__ = ["EXACT", "UNKNOWN_COST", "BoundKind", "Component", "Cost", "Lazy", "Method", "Passes", "Role", "Tolerance",
           "layer_passes"]


class Role(StrEnum):
    """How ``hessverify verify`` uses a component."""

    METHOD = "method"  # an exact method under test, compared with every reference
    REFERENCE = "reference"  # an independent reference the methods are held to
    APPROXIMATION = "approximation"  # a curvature approximation: its error against the exact Hessian, never a failure


class BoundKind(StrEnum):
    """How a comparison's entrywise bound was derived (``results.json``'s ``bound_kind``)."""

    ROUNDING = "rounding"  # both sides exact in floating point: the rounding model, gamma_k M per side
    FD_ESTIMATE = "fd_estimate"  # a finite-difference side: a safety factor times its own error estimate
    ROUNDING_TRUNCATION = "rounding+truncation"  # the complex step: rounding plus its truncation estimate
    HIGH_PRECISION = "high_precision"  # the symbolic gold reference: its own rounding to float64
    CERTIFIED = "certified"  # ball arithmetic: the enclosure's radius plus its rounding to float64
    APPROXIMATION = "approximation"  # an approximation's error record: never a failure
    NOT_APPLICABLE = "not_applicable"  # a reference that cannot serve at this point: not a comparison
    FISHER_ROUNDING = "fisher_rounding"  # the empirical Fisher's own rounding model


@dataclass(frozen=True)
class Tolerance:
    """How one side of a comparison contributes to its bound.

    ``rounding_sides`` is 1 for a floating-point computation held to the
    rounding model (``gamma_k M``: an exact method, ``autograd``,
    ``complex_step``) and 0 for a side whose own estimate covers its rounding
    (``fd``, ``richardson``) or that is the truth to far below it
    (``symbolic``, ``certified``).  ``safety`` multiplies the side's own error
    estimate, where it has one.
    """

    kind: BoundKind
    reason: str
    rounding_sides: int = 1
    safety: float = 1.0

    @property
    def estimates_itself(self) -> bool:
        """Whether this side's bound needs its own error estimate (its rounding is not the rounding model's)."""
        return self.rounding_sides == 0 or self.safety != 1.0


EXACT = Tolerance(BoundKind.ROUNDING, "exact in floating point: within gamma_k M of the truth (hessverify.engine.bounds)")
"""The side of an exact method: the rounding model alone."""


Passes = Literal["layer", "unit", "column", "chunk"]
"""What a component repeats once per layer: one pass over the layers (``layer``), a pass per unit
(``unit``), per parameter (``column``: ``W`` gradients or vector products), or per chunk of directions
(``chunk``, the R-operator's)."""


CALIBRATED_DEPTH = 2
"""Layers of the networks ``Cost.seconds`` was measured on: their passes are in it already."""


def layer_passes(problem: Problem, passes: Passes) -> float:
    """Layer steps of a component on ``problem`` beyond :data:`CALIBRATED_DEPTH`: its passes (:data:`Passes`)
    times the extra layers.

    Each step is a handful of small array operations whatever the layer's
    size: negligible for a few layers, hours for a chain of thousands.
    """
    arch = problem.architecture
    depth = float(max(arch.depth - CALIBRATED_DEPTH, 0))
    # a layer's units: its output's size per pattern (a dense layer's units; any kind's output entries)
    sizes = [int(np.prod(shape)) for shape in arch.shapes[1:]]
    if passes == "column":
        return depth * problem.n_params
    if passes == "unit":
        return depth * sum(sizes)
    if passes == "chunk":  # rop's chunks: a (P, N, units) array of about 2^22 floats, all layers' 2^24 at most
        widest = max([arch.inputs] + sizes)
        units = sum(sizes)
        return depth * (1.0 + problem.n_params * problem.n_patterns * max(widest, units / 2) / 2**22)
    return depth


@dataclass(frozen=True)
class Cost:
    """Peak memory and run time of a component, as calibrated formulas in ``W`` (parameters) and ``N`` (patterns).

    ``memory = (a, b)``: peak bytes ``a 8 W^2 + b 8 N W + fixed_bytes``;
    ``seconds = (alpha, beta)``: ``alpha N W^2 + beta W``, plus
    ``per_layer`` seconds for each of the component's :func:`layer_passes`
    (what depth costs: a chain of 10 000 one-unit layers asks a reference
    for ``W`` passes through 10 000 layers).  A component with a cost model
    of its own (the symbolic reference's program size) gives ``seconds_of``.
    The figures are measured (``docs/trust.md``, "Budgets"; the per-layer
    ones on deep chains, ``docs/methods.md``, "Depth") and rounded up.
    """

    memory: tuple[float, float] = (4.0, 6.0)
    seconds: tuple[float, float] = (3e-8, 1e-3)
    fixed_bytes: float = 0.0
    seconds_of: Callable[[Problem], float] | None = None
    per_layer: float = 1e-3
    passes: Passes = "column"

    def peak_bytes(self, problem: Problem) -> float:
        a, b = self.memory
        W, N = problem.n_params, problem.n_patterns
        return a * 8.0 * W * W + b * 8.0 * N * W + self.fixed_bytes

    def seconds_for(self, problem: Problem) -> float:
        if self.seconds_of is not None:
            return float(self.seconds_of(problem))
        alpha, beta = self.seconds
        W, N = problem.n_params, problem.n_patterns
        return alpha * N * W * W + beta * W + self.per_layer * layer_passes(problem, self.passes)


UNKNOWN_COST = Cost()
"""A generous guess for a component that declares no cost (a function under test registered by a sweep)."""


@dataclass(frozen=True)
class Lazy:
    """A function named by module and attribute, imported on its first call (for a component whose code lives
    in a heavy module: the symbolic reference's SymPy program)."""

    module: str
    attr: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{self.module}.{self.attr}"


@dataclass(frozen=True)
class Component:
    """One method or reference, described once (module text).

    ``fn(problem)`` computes the result in its form's raw value.  A built-in
    component's functions also accept the problem's
    :class:`~hessverify.engine.point.Point`; either way they read the one point
    of the problem (:meth:`~hessverify.engine.point.Point.of`), so handing them
    the problem loses nothing and any function of a problem (one under test, a
    user's own approximation) is a component too.
    """

    name: str
    fn: Callable[..., Any]
    role: Role
    form: type[HessianForm]  # or its old name, "matrix" / "vector" / "blocks"
    summary: str
    # its own entrywise error estimate beside the value, when it knows one (fd, complex_step, symbolic)
    with_error: Callable[..., tuple[Any, FloatArray]] | None = None
    # whether verify uses it by default on a point (too costly otherwise), and why not, in one line
    applies: Callable[..., bool] | None = None
    left_out: Callable[..., str] | None = None
    # False: verify runs it only when named, and never lists it as skipped (certified, an optional extra)
    by_default: bool = True
    tolerance: Tolerance = EXACT
    cost: Cost = UNKNOWN_COST
    rank: int = 1000  # the order in listings: methods, then approximations, then references
    source: str = field(default="", compare=False)  # the module that declares it

    def __post_init__(self) -> None:
        if isinstance(self.form, str):
            object.__setattr__(self, "form", form_named(self.form))
        object.__setattr__(self, "role", Role(self.role))

    @property
    def kind(self) -> str:
        """The form's short name: ``"matrix"``, ``"vector"`` or ``"blocks"``."""
        return self.form.kind

    def _arg(self, at: Point | Problem) -> Any:
        return as_problem(at)

    def compute(self, at: Point | Problem) -> Any:
        """The raw result at a point (or a problem's point)."""
        return self.fn(self._arg(at))

    def compute_with_error(self, at: Point | Problem) -> tuple[Any, FloatArray | None]:
        """The raw result and its own error estimate (``None`` where it has none)."""
        if self.with_error is not None:
            value, err = self.with_error(self._arg(at))
            return value, np.asarray(err, dtype=np.float64)
        return self.compute(at), None

    def result(self, at: Point | Problem) -> HessianForm:
        """The result wrapped in its form."""
        return self.form(self.compute(at))

    def serves_by_default(self, at: Point | Problem) -> bool:
        """Whether ``verify`` uses this component on a point unless told otherwise."""
        return self.by_default and (self.applies is None or bool(self.applies(self._arg(at))))

    def why_left_out(self, at: Point | Problem) -> str:
        """One line: why ``verify`` leaves it out by default here."""
        if self.left_out is not None:
            return str(self.left_out(self._arg(at)))
        return f"{self.name}: skipped by default on this problem; name it to force it"


Method = Component
"""The former name of :class:`Component`."""
