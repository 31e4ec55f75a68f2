"""Derived error bounds: the rounding model, for float64 or any other :class:`~hessverify.precision.Precision`.

Two exact methods compute the same sums of products in different orders, so
each differs from the true Hessian by rounding only.  Standard running error
analysis (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
sec. 3.1, eq. 3.4-3.5) bounds the error of a computed sum of products by

.. math::

   |\\hat s - s| \\le \\gamma_k \\sum_i |x_i|\\,|y_i|, \\qquad
   \\gamma_k = \\frac{k u}{1 - k u}, \\quad u = 2^{-53} \\text{ in float64},

where the right-hand side is the sum of the *magnitudes of the terms*, not
of the result (the result can cancel to zero while the terms are large).

The magnitude Hessian ``M`` is the Hessian assembly of the model's kernel
(:mod:`hessverify.model.kernel`, the one ``backprop`` uses) run on the
absolute values of every propagated quantity
(:mod:`hessverify.model.rounding`), with three corrections so that errors made *before*
the final sums are covered too:

* a net input computed as a sum carries an error of up to ``delta = gamma A``
  with ``A = |W| |z| + |b|``; by Taylor's theorem it moves ``f``, ``f'``
  and ``f''`` by at most ``|f'| delta``, ``|f''| delta`` and ``|f'''| delta``
  at the point, plus a remainder ``L delta^2`` (``L`` the ``deriv_max``
  column of the activation table), so each magnitude gets ``|f^(k+1)| A +
  L gamma A^2``;
* ``f``, ``f'`` and ``f''`` themselves enter with the magnitudes of the
  terms that textbook formulas for them add (the ``terms`` column of the
  activation table): ``1 - t^2`` for tanh', say, whose rounding error is
  an ulp of 1 however small the result;
* the loss derivatives enter with the magnitudes of their own terms (the
  ``grad_mag`` and ``hess_mag`` columns of the loss table), widened by the
  forward error of the output ``y`` they are evaluated at;
* ``k``, the length of the longest chain of roundings, counts every sum of
  the forward pass, the backward pass and the final sum over patterns, plus a
  fixed allowance per layer for evaluating the activation functions (a few
  ulps each in libm).

Each of two exact methods is then within ``gamma_k M`` of the truth, so they
agree within ``2 gamma_k M`` entry by entry.  This is a worst-case bound:
typical rounding errors are smaller by a factor near ``sqrt(k)``, which is
why measured margins (error / bound) are far below 1.

Precision.  Every function takes ``precision`` (default
:data:`~hessverify.precision.FLOAT64`): its unit roundoff sets ``gamma_k`` and
its underflow floor the absolute allowance.  The magnitudes are those of the
float64 forward pass; for a narrower format they differ from that format's
own values by a relative ``O(u)``, far inside the bound's worst-case slack.
This module imports :mod:`hessverify.model` and nothing above it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from hessverify.base.precision import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, PRECISIONS, Precision, get_precision
from hessverify.base.typing import FloatArray
from hessverify.model import graph_rounding
from hessverify.model.build import graph_of, graph_values
from hessverify.model.forward import gradient_from
from hessverify.model.kernel import Quantities, hessian_from_quantities
from hessverify.model.problem import Problem
from hessverify.model.rounding import ACTIVATION_ULPS, LOSS_ULPS, chain_length, net_input_errors, values_and_errors

__all__ = [
    "ACTIVATION_ULPS", "BFLOAT16", "FLOAT16", "FLOAT32", "FLOAT64", "LOSS_ULPS", "PRECISIONS", "UNDERFLOW_FLOOR",
    "UNIT_ROUNDOFF", "Precision", "chain_length", "fisher_rounding_bound", "gamma", "get_precision", "magnitude_gradient",
    "magnitude_hessian", "net_input_errors", "rounding_bound",
]

UNIT_ROUNDOFF = FLOAT64.unit_roundoff
"""``u`` for float64 with round-to-nearest (:data:`~hessverify.precision.FLOAT64`)."""

UNDERFLOW_FLOOR = FLOAT64.underflow_floor
"""An absolute allowance of about 2.4e-296 for underflow in float64.

The relative model ``|error| <= u |x|`` fails below ``2^-1022``: a product of
two numbers near 1e-160 underflows to 0 (or to a subnormal) with an error of
up to ``2^-1022``, and later products can scale that by the network's larger
quantities.  Entries that differ by less than this are treated as equal;
anything a person would call a Hessian entry is far above it.  Other formats:
:attr:`Precision.underflow_floor`."""


def gamma(k: int, precision: Precision | str = FLOAT64) -> float:
    """Higham's ``gamma_k = k u / (1 - k u)`` for the precision's ``u``."""
    return get_precision(precision).gamma(k)


def _propagated(v: Quantities, e: Quantities, g: float, assemble: Callable[[Quantities], FloatArray]) -> FloatArray:
    """``A(v') + D A(v')[e]`` at ``v' = v + gamma e``: a bound on terms plus inherited error.

    Every factor of every term is at most ``v`` in size and carries an error of
    at most ``gamma e``.  The assembly only adds and multiplies, so on
    non-negative inputs it is a polynomial with non-negative coefficients and
    ``A(v + gamma e) - A(v) <= gamma D A(v + gamma e)[e]`` (mean value theorem,
    ``D A`` increasing): all orders of the inherited error, not only the first,
    which matters where an error is larger than its value (a softplus that
    underflows, a dead relu).  The directional derivative is taken by complex
    step, exact for a polynomial up to terms of relative size
    ``(h e / v')^2 <= (h / gamma)^2``; ``h = gamma 2^-20`` makes those
    immaterial while keeping ``h`` large enough that tiny terms (1e-250 at
    weights of 1e-8) do not underflow.
    """
    h = g * 2.0**-20

    def shifted(a: list[FloatArray], b: list[FloatArray]) -> list[FloatArray]:
        return [(x + g * y) + 1j * h * y if x.size else x for x, y in zip(a, b)]

    direction = Quantities(shifted(v.z, e.z), shifted(v.df, e.df), shifted(v.d2f, e.d2f),
                           shifted(v.weights, e.weights),
                           (v.g_y + g * e.g_y) + 1j * h * e.g_y, (v.h_y + g * e.h_y) + 1j * h * e.h_y)
    with np.errstate(over="ignore", invalid="ignore"):  # terms near the float64 limit: an infinite bound
        out = assemble(direction)
        # both parts also hold terms of relative size (h / gamma)^2 with either sign: immaterial,
        # except that they can turn an exact zero into a tiny negative number
        return np.maximum(out.real + out.imag / h, 0.0)


Propagated = tuple[Quantities, Quantities, list[FloatArray]]


def magnitude_hessian(problem: Problem, precision: Precision | str = FLOAT64, *,
                      quantities: Propagated | None = None) -> FloatArray:
    """``M``: per Hessian entry, its terms in absolute value plus their inherited errors.

    ``quantities``: :func:`~hessverify.model.rounding.values_and_errors` of the problem in this precision, if
    the caller has them (a :class:`~hessverify.engine.point.Point` does)."""
    precision = get_precision(precision)
    if not problem.architecture.is_dense:  # layer kinds: the same model over the network's graph
        return graph_rounding.magnitude_hessian(graph_of(problem), graph_values(problem),
                                                precision.gamma(chain_length(problem)))
    v, e, _ = values_and_errors(problem, precision=precision) if quantities is None else quantities
    return _propagated(v, e, precision.gamma(chain_length(problem)),
                       lambda q: hessian_from_quantities(problem.architecture, q))


def magnitude_gradient(problem: Problem, precision: Precision | str = FLOAT64, *,
                       quantities: Propagated | None = None) -> FloatArray:
    """The same for the gradient: its terms plus their inherited errors."""
    precision = get_precision(precision)
    if not problem.architecture.is_dense:
        return graph_rounding.magnitude_gradient(graph_of(problem), graph_values(problem),
                                                 precision.gamma(chain_length(problem)))
    v, e, _ = values_and_errors(problem, precision=precision) if quantities is None else quantities
    return _propagated(v, e, precision.gamma(chain_length(problem)),
                       lambda q: gradient_from(problem.architecture, q.z, q.df, q.weights, q.g_y))


def rounding_bound(problem: Problem, methods: int = 2, precision: Precision | str = FLOAT64) -> FloatArray:
    """Entrywise bound on the difference of ``methods`` exact results computed in ``precision``.

    Each method is within ``gamma_k M`` of the truth; two methods differ by at
    most ``2 gamma_k M``, plus the precision's underflow floor.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> B64, B32 = rounding_bound(case), rounding_bound(case, precision="float32")
    >>> bool(((B32 / B64) > 1e8).all())
    True
    """
    precision = get_precision(precision)
    M = magnitude_hessian(problem, precision)
    return methods * precision.gamma(chain_length(problem)) * M + precision.underflow_floor


def fisher_rounding_bound(problem: Problem, methods: int = 2, precision: Precision | str = FLOAT64) -> FloatArray:
    """Entrywise bound on the difference of ``methods`` empirical Fishers computed in ``precision``.

    The empirical Fisher is ``F = s sum_n g_n g_n^T`` with ``g_n`` the
    gradient of pattern ``n``'s error (``hessverify.methods.fisher``).  Its
    terms are not among the Hessian's, so :func:`rounding_bound` does not
    cover it.  Each computed ``g_n`` is within ``gamma_k M_n`` of the truth,
    ``M_n`` the gradient magnitude of pattern ``n`` alone
    (:func:`magnitude_gradient`, which also bounds ``|g_n|``), so one outer
    product is off by at most ``(2 gamma_k + gamma_k^2) M_n M_n^T``; forming
    it, summing ``N`` of them and scaling by ``s`` adds at most
    ``gamma_{N+2}`` of the terms' magnitudes (Higham 2002, eq. 3.5), each at
    most ``(1 + gamma_k)^2 M_n M_n^T``.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> F = fisher_rounding_bound(case)
    >>> F.shape == (case.n_params, case.n_params) and bool((F > 0).all())
    True
    """
    precision = get_precision(precision)
    g = precision.gamma(chain_length(problem))
    outer = np.zeros((problem.n_params, problem.n_params))
    if any(layer.kind_def.couples_patterns(layer.opts) for layer in problem.architecture.layers):
        # a batch-norm layer in training mode: pattern n alone is another function (its own batch), so M_n is
        # bounded by the magnitude of the whole sum's terms, among which g_n's terms are
        M = magnitude_gradient(replace(problem, reduction="sum", loss_options=problem.loss_options), precision)
        outer += problem.n_patterns * np.outer(M, M)
    for n in range(0 if outer.any() else problem.n_patterns):
        one = replace(problem.subset(slice(n, n + 1)), reduction="sum")  # e_n itself
        M = magnitude_gradient(one, precision)
        outer += np.outer(M, M)
    per_method = problem.scale * ((2 * g + g * g) + precision.gamma(problem.n_patterns + 2) * (1 + g) ** 2) * outer
    return methods * per_method + precision.underflow_floor
