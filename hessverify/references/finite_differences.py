"""``fd``: central differences of the analytic gradient, with an error estimate.

Column ``j`` of the Hessian is approximated by

.. math::

   D_j(h) = \\frac{g(\\theta + h_j e_j) - g(\\theta - h_j e_j)}{2 h_j}
          = H e_j + \\frac{h_j^2}{6} \\partial_j^3 g + O(h_j^4),

and the result is symmetrised, ``(D + D^T) / 2``.

Step.  With ``u`` the unit roundoff, the truncation error ``h^2 |g'''| / 6``
and the rounding error ``~ u G / h`` (``G`` the magnitude of the gradient's
terms) balance at ``h ~ (3 u G / |g'''|)^{1/3}``; without knowledge of
``g'''`` the standard choice scales ``u^{1/3}`` by the parameter's size,
``h_j = u^{1/3} max(|theta_j|, 1)``, rounded so that ``theta_j +- h_j`` are
exact (Nocedal & Wright, *Numerical Optimization*, 2nd ed., sec. 8.1).

Error estimate, per entry, the sum of

* truncation, by comparing with the step ``2h``: ``D(2h) - D(h) ~ 3 c h^2``,
  so ``|D(h) - D(2h)| / 3`` estimates the ``h^2`` term (Richardson);
* rounding: each gradient entry carries at most ``gamma_k G`` of rounding
  error (:func:`hessverify.engine.bounds.magnitude_gradient`), divided by ``h_j``,
  where ``G`` is taken at ``theta``; at ``theta +- h_j e_j`` the terms have
  grown by up to ``h_j M`` (``M`` the magnitude Hessian,
  :func:`hessverify.engine.bounds.magnitude_hessian`), so ``gamma_k (G / h_j + M)``.
  The ``M`` part matters where ``G`` is 0 at ``theta`` (zero weights, which
  the special-value property test draws): there ``G / h`` alone claimed an
  fd entry of 0.1 exact to 5e-18, below its own last rounding;
* the asymmetry ``|D - D^T| / 2``, which is zero in exact arithmetic and so
  is itself a sample of the error.

The bound a comparison holds ``fd`` to is ``FD_SAFETY`` times this estimate.

Kinks.  Where a step ``theta +- 2 h_j e_j`` moves a relu net input across
its kink, the difference quotient mixes two smooth pieces and its error is
not ``O(h^2)``: column and row ``j`` are then not trusted, and their error
estimate is ``inf`` (a comparison counts them as unchecked, never as agreeing
or disagreeing).

The pieces :mod:`hessverify.references.richardson` shares are here, once:
exactly representable steps (:func:`exact_steps`), the central differences
of the gradient at several multiples of the step (:func:`central_differences`)
and the assembly of an entrywise estimate (:func:`error_estimate`).
"""

from __future__ import annotations

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.bounds import UNIT_ROUNDOFF
from hessverify.engine.components import CALIBRATED_DEPTH, BoundKind, Component, Cost, Role, Tolerance, layer_passes
from hessverify.engine.forms import FullHessian
from hessverify.engine.point import Point, as_point
from hessverify.model.forward import gradient_batch_points, gradients
from hessverify.model.problem import Problem
from hessverify.model.well_posed import kinked_values

__all__ = [
    "FD_SAFETY", "central_differences", "difference_seconds", "error_estimate", "exact_steps", "hessian", "hessian_with_error",
    "kink_columns", "steps",
]



def exact_steps(theta: FloatArray, base: float) -> FloatArray:
    """Per-parameter steps ``base max(|theta|, 1)``, rounded so that ``theta +- h`` (and ``2h``, ``4h``) are exact."""
    h = base * np.maximum(np.abs(theta), 1.0)
    return (theta + h) - theta


def steps(theta: FloatArray) -> FloatArray:
    """Per-parameter steps ``u^(1/3) max(|theta|, 1)``, exactly representable."""
    return exact_steps(theta, np.cbrt(UNIT_ROUNDOFF))


COLUMN_BATCH_FLOATS = 2**20
"""Most floats (8 MiB) of the parameter vectors whose gradients :func:`central_differences` asks for at once
(their gradients take as much again, and :func:`~hessverify.model.forward.gradients` at most as much besides)."""


def _columns_per_batch(n: int, scales: int) -> int:
    """Columns differenced at a time: ``2 scales`` points each, of ``n`` parameters, within :data:`COLUMN_BATCH_FLOATS`."""
    return max(1, COLUMN_BATCH_FLOATS // (2 * scales * max(n, 1)))


def difference_seconds(problem: Problem, scales: int, alpha: float, beta: float, per_layer: float,
                       per_layer_column: float) -> float:
    """Calibrated seconds of :func:`central_differences` with ``scales`` step sizes, and of what surrounds it.

    ``alpha N W^2 + beta W`` (the products and the columns), plus a pass
    through the layers beyond :data:`~hessverify.engine.components.CALIBRATED_DEPTH`
    per batch of points: ``per_layer`` seconds each on a dense network, where
    the points go in batches (:func:`~hessverify.model.forward.gradients`; a
    deep chain holds only a few points a batch), and ``per_layer_column`` per
    column on other layer kinds, whose gradients are taken one point at a time.
    Fitted with ``benchmarks/reference_costs.py`` (docs/methods.md, "Depth").
    """
    W, N = problem.n_params, problem.n_patterns
    base = alpha * N * W * W + beta * W
    if not problem.architecture.is_dense:
        return base + per_layer_column * layer_passes(problem, "column")
    depth = max(problem.architecture.depth - CALIBRATED_DEPTH, 0)
    per_batch = gradient_batch_points(problem)
    cols = _columns_per_batch(W, scales)
    full, rest = divmod(W, cols)
    batches = full * -(-2 * scales * cols // per_batch) + (-(-2 * scales * rest // per_batch) if rest else 0)
    return base + per_layer * depth * batches


def central_differences(problem: Problem, theta: FloatArray, h: FloatArray,
                        scales: tuple[float, ...] = (1.0,)) -> list[FloatArray]:
    """``D(s h)`` for each ``s`` in ``scales``: column ``j`` is ``(g(theta + s h_j e_j) - g(theta - s h_j e_j)) / (2 s h_j)``."""
    n = theta.size
    out = [np.empty((n, n)) for _ in scales]
    # the points theta +- s h_j e_j of a few columns at a time, their gradients in one batch (gradients)
    step = _columns_per_batch(n, len(scales))
    for a in range(0, n, step):
        cols = np.arange(a, min(n, a + step))
        rows = np.arange(cols.size)  # point r of a batch moves parameter cols[r]
        points = np.repeat(theta[None, :], 2 * len(scales) * cols.size, axis=0).reshape(len(scales), 2, cols.size, n)
        for k, s in enumerate(scales):
            points[k, 0, rows, cols] += s * h[cols]
            points[k, 1, rows, cols] -= s * h[cols]
        g = gradients(problem, points.reshape(-1, n)).reshape(points.shape)
        for k, (D, s) in enumerate(zip(out, scales)):
            D[:, cols] = ((g[k, 0] - g[k, 1]) / (2.0 * s * h[cols])[:, None]).T
    return out


def error_estimate(value: FloatArray, truncation: FloatArray, rounding: FloatArray, crossed: FloatArray
                   ) -> FloatArray:
    """Truncation plus rounding, made symmetric, plus the asymmetry ``|V - V^T| / 2``; ``inf`` where a step crosses a kink."""
    est = truncation + rounding
    est = np.maximum(est, est.T) + np.abs(value - value.T) / 2.0
    est[crossed, :] = np.inf
    est[:, crossed] = np.inf
    return est


def kink_columns(problem: Problem, theta: FloatArray, h: FloatArray) -> FloatArray:
    """Boolean mask of the parameters whose steps (``+-2 h``) cross a kink of some unit."""
    crossed = np.zeros(theta.size, dtype=bool)
    base = [np.sign(d) for d in kinked_values(problem, theta)]
    if not base:
        return crossed
    for j in range(theta.size):
        for sign in (-2.0, 2.0):
            t = theta.copy()
            t[j] += sign * h[j]
            if any(np.any(np.sign(d) != b) for d, b in zip(kinked_values(problem, t), base)):
                crossed[j] = True
                break
    return crossed


FD_SAFETY = 4.0
"""Factor between the estimated error and the bound: the Richardson estimate
is itself only accurate to leading order, and can vanish by accident."""


def hessian_with_error(problem: Problem | Point) -> tuple[FloatArray, FloatArray]:
    """The symmetrised central-difference Hessian and its entrywise error estimate."""
    point = as_point(problem)
    point.well_posed()
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing step: reported as not applicable
        return _with_error(point)


def _with_error(point: Point) -> tuple[FloatArray, FloatArray]:
    problem = point.problem
    theta = np.asarray(problem.params, dtype=np.float64)
    h = steps(theta)
    D1, D2 = central_differences(problem, theta, h, (1.0, 2.0))
    truncation = np.abs(D1 - D2) / 3.0
    rounding = point.gamma * (point.magnitude_gradient[:, None] / h[None, :] + point.magnitude_hessian)
    est = error_estimate(D1, truncation, rounding, kink_columns(problem, theta, h))
    return (D1 + D1.T) / 2.0, est


def hessian(problem: Problem | Point) -> FloatArray:
    """Central differences of the backpropagated gradient, symmetrised."""
    return hessian_with_error(problem)[0]


COMPONENT = Component(
    "fd", hessian, Role.REFERENCE, FullHessian,
    "central differences of the gradient, with an error estimate",
    with_error=hessian_with_error,
    tolerance=Tolerance(BoundKind.FD_ESTIMATE,
                        f"central differences: {FD_SAFETY:g} x (Richardson truncation estimate + rounding gamma_k (G / h + M) "
                        "+ asymmetry), plus gamma_k M for the exact side", rounding_sides=0, safety=FD_SAFETY),
    # fixed: the batches of points and their gradients (COLUMN_BATCH_FLOATS, GRADIENTS_BATCH_FLOATS), 3 x 8 MiB
    cost=Cost(memory=(8.5, 3.5), fixed_bytes=3.2e7,
              seconds_of=lambda problem: difference_seconds(problem, 2, 1.2e-8, 2.5e-4, 1e-4, 1.2e-3)),
    rank=120,
)
