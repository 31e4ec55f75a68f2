"""``certified``: every Hessian entry as a ball that is guaranteed to contain its exact value.

The closed form of :mod:`hessverify.symbolic.reference` (the same compiled
program, the same block formula, Bishop 1992, eq. 22) evaluated in ball
arithmetic: python-flint's ``arb`` (Johansson, "Arb: efficient
arbitrary-precision midpoint-radius interval arithmetic", IEEE Trans.
Comput. 66, 2017).  Every operation, ``+ - * /`` and ``exp``, ``log``,
``sqrt``, ``tanh``, ``erf``, ``sin``, ``cos`` alike, returns a ball that
contains the exact result for every point of its arguments' balls; the float64
weights and data enter as exact points.  So each entry ``[m +/- r]`` contains
the exact Hessian entry of the case, whatever rounding happened on the way:
a proof, not an estimate, and no rounding model (:mod:`hessverify.engine.bounds`)
is involved.

Precision is adaptive: the evaluation starts at :data:`START_BITS` and
doubles (up to :data:`MAX_BITS`) until every nonzero entry's radius is below
:data:`TARGET` relative to its midpoint; an entry that is exactly zero comes
out as the point 0.  A net input whose ball touches an activation's kink
(relu at 0) is refused (:class:`~hessverify.errors.NotDifferentiableError`):
there the derivative the program chose would not be proven.

Every activation and loss of the tables has its SymPy form in those
functions (sigmoid and softplus through ``exp`` and ``log``, gelu through
``erf``, softmax/log-sum-exp through ``exp`` and ``log``, relu as a
comparison).

As a reference (:func:`hessian_with_error`) the value is the midpoint
rounded to float64 and the error ``radius + |midpoint - value|``, rounded
up: the comparison bound of kind ``certified`` is that plus the other
side's rounding (``compare.TOLERANCES``).  Needs the extra
``hessverify[certified]`` (python-flint); verify runs it when it is named
(``--reference certified``).

Examples
--------
>>> import hessverify
>>> case = hessverify.load_case("cases/single-neuron-tanh.toml")
>>> H = enclosure(case)  # doctest: +SKIP
>>> H[0, 1]  # doctest: +SKIP
[0.370127473655113039751318... +/- ...e-7...]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.components import BoundKind, Component, Cost, Role, Tolerance
from hessverify.engine.forms import FullHessian
from hessverify.engine.point import Point, as_problem
from hessverify.errors import NotDifferentiableError, UsageError
from hessverify.model.problem import Problem
from hessverify.model.well_posed import kinked_net_inputs

__all__ = ["COMPONENT", "MAX_BITS", "START_BITS", "TARGET", "available", "enclosure", "hessian", "hessian_with_error",
           "radius"]

START_BITS = 256
"""Working precision of the first evaluation, in bits."""
MAX_BITS = 4096
"""Largest working precision tried; past it the enclosures are returned as wide as they are."""
TARGET = 1e-40
"""Radius sought, relative to the midpoint, for every nonzero entry."""

def available() -> bool:
    """Whether python-flint is installed (the extra ``hessverify[certified]``)."""
    try:
        import flint  # noqa: F401
    except ImportError:
        return False
    return True


def _arb() -> Any:
    try:
        from flint import arb
    except ImportError:
        raise UsageError("the certified reference needs python-flint: pip install 'hessverify[certified]'") from None
    return arb


@contextlib.contextmanager
def _precision(bits: int) -> Iterator[None]:
    from flint import ctx

    old, ctx.prec = ctx.prec, bits
    try:
        yield
    finally:
        ctx.prec = old


def _check_kinks(problem: Problem, q: dict[tuple[Any, ...], np.ndarray]) -> None:
    """Refuse a net input whose ball holds a kink: the program's branch there is not proven."""
    arch = problem.architecture
    net_inputs = {l: q[("a", l)] for l in arch.bottom_up}
    for l, kink, a in kinked_net_inputs(arch, net_inputs):
        touches = np.frompyfunc(lambda v, k=kink: bool(v.contains(k)), 1, 1)(a).astype(bool)
        if touches.any():
            n, unit = np.argwhere(touches)[0]
            raise NotDifferentiableError(
                f"not twice differentiable at this point: {arch.layer(l).activation} unit {unit} of layer {l} "
                f"has net input {a[n, unit]}, which holds the kink {kink:g}, for pattern {n}")


def _evaluate(problem: Problem, bits: int) -> np.ndarray:
    from hessverify.symbolic.reference import _scale, block_formula, per_pattern  # SymPy: only when it runs

    arb = _arb()
    with _precision(bits):
        q = per_pattern(problem, "arb", arb)
        _check_kinks(problem, q)
        H = block_formula(problem, q, arb)
        if problem.reduction == "mean":  # 1/N, or 1/(N K) for PyTorch's element-wise means (mse, huber)
            H = H * _scale(problem, arb(1))
        # an entry that is a product of exact integers (a relu's f' = 0) comes out as an int: a point ball
        return np.frompyfunc(arb, 1, 1)(np.asarray(H, dtype=object))


def _narrow(H: np.ndarray) -> bool:
    """Every entry a point, or a ball of radius at most :data:`TARGET` of its midpoint."""
    for h in H.ravel():
        r = h.rad()
        if r != 0 and not (r <= abs(h.mid()) * TARGET):
            return False
    return True


def enclosure(problem: Problem | Point, bits: int | None = None) -> np.ndarray:
    """The Hessian as a ``(W, W)`` object array of ``arb`` balls, each containing the exact entry.

    With ``bits`` one evaluation at that precision; without, the adaptive
    precision of the module text.
    """
    problem = as_problem(problem)
    if bits is not None:
        return _evaluate(problem, bits)
    bits = START_BITS
    while True:
        H = _evaluate(problem, bits)
        if bits >= MAX_BITS or _narrow(H):
            return H
        bits *= 2


def _float_parts(H: np.ndarray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Each ball's midpoint rounded to float64, its radius, and ``radius + |midpoint - value|``, rounded up."""
    arb = _arb()
    value = np.empty(H.shape)
    rad = np.empty(H.shape)
    err = np.empty(H.shape)
    for idx, h in np.ndenumerate(H):
        v = float(h.mid())
        value[idx] = v
        rad[idx] = float(h.rad()) * (1 + 2.0**-50)
        # every point of the ball is within abs_upper of v: an arb upper bound, made a float no smaller
        err[idx] = float((h - arb(v)).abs_upper()) * (1 + 2.0**-50) + 2.0**-1074
    return value, rad, err


def radius(problem: Problem | Point) -> FloatArray:
    """The radius of every entry's enclosure (rounded up to float64)."""
    return _float_parts(enclosure(problem))[1]


def hessian_with_error(problem: Problem | Point) -> tuple[FloatArray, FloatArray]:
    """The midpoints rounded to float64, and ``radius + rounding``: every exact entry lies within it."""
    value, _, err = _float_parts(enclosure(problem))
    return value, err


def hessian(problem: Problem | Point) -> FloatArray:
    """The midpoints of the enclosures, rounded to float64."""
    return hessian_with_error(problem)[0]


COMPONENT = Component(
    "certified", hessian, Role.REFERENCE, FullHessian,
    "closed form in ball arithmetic (python-flint's arb): every entry enclosed, its radius proven; when named",
    with_error=hessian_with_error, by_default=False,
    tolerance=Tolerance(BoundKind.CERTIFIED,
                        "every exact entry lies in its ball (python-flint arb): the radius plus the midpoint's rounding "
                        "to float64, plus the other side's rounding (gamma_k M for an exact float64 method)",
                        rounding_sides=0),
    # arb balls as Python objects in (W, W) arrays; one arb multiply-add per product of the block formula
    # (tanh-6-12-8-2, W = 206, N = 32: 2.6 s on a loaded machine), doubled for a second precision
    cost=Cost(memory=(40.0, 8.0), seconds=(4e-6, 1e-3)),
    rank=160,
)
