"""Derived error bounds: the float64 rounding model.

Two exact methods compute the same sums of products in different orders, so
each differs from the true Hessian by rounding only.  Standard running error
analysis (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
sec. 3.1, eq. 3.4-3.5) bounds the error of a computed sum of products by

.. math::

   |\\hat s - s| \\le \\gamma_k \\sum_i |x_i|\\,|y_i|, \\qquad
   \\gamma_k = \\frac{k u}{1 - k u}, \\quad u = 2^{-53},

where the right-hand side is the sum of the *magnitudes of the terms*, not
of the result (the result can cancel to zero while the terms are large).

The magnitude Hessian ``M`` is the Hessian assembly of
:mod:`hessverify.methods.backprop` run on the absolute values of every
propagated quantity, with three corrections so that errors made *before*
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
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hessverify._typing import FloatArray
from hessverify.methods.backprop import Quantities, hessian_from_quantities
from hessverify.model.activations import get_activation
from hessverify.model.forward import ForwardPass, forward
from hessverify.model.losses import get_loss
from hessverify.model.network import layer_input
from hessverify.model.problem import Problem

__all__ = ["UNIT_ROUNDOFF", "chain_length", "gamma", "magnitude_hessian", "magnitude_gradient", "rounding_bound"]

UNIT_ROUNDOFF = 2.0**-53
"""``u`` for float64 with round-to-nearest."""

ACTIVATION_ULPS = 8
"""Roundings allowed per activation evaluation (libm's exp, tanh, erf: <= 2 ulp each, plus the arithmetic around them)."""

UNDERFLOW_FLOOR = 2.0**-1022 * 2.0**40
"""An absolute allowance of about 2.4e-296 for underflow.

The relative model ``|error| <= u |x|`` fails below ``2^-1022``: a product of
two numbers near 1e-160 underflows to 0 (or to a subnormal) with an error of
up to ``2^-1022``, and later products can scale that by the network's larger
quantities.  Entries that differ by less than this are treated as equal;
anything a person would call a Hessian entry is far above it."""

LOSS_ULPS = 8
"""Roundings allowed for evaluating the loss derivatives at the output (softmax, logsumexp)."""


def gamma(k: int) -> float:
    """Higham's ``gamma_k = k u / (1 - k u)``."""
    ku = k * UNIT_ROUNDOFF
    if ku >= 1:
        raise ValueError(f"chain of {k} roundings is too long for float64 error bounds")
    return ku / (1.0 - ku)


def chain_length(problem: Problem) -> int:
    """``k``: the longest chain of roundings in any entry of the Hessian."""
    arch = problem.architecture
    k = LOSS_ULPS + problem.n_patterns + 2  # the final sum over patterns, the reduction
    for index, layer in enumerate(arch.layers, start=1):
        k += arch.fan_in(index) + 1  # forward dot product and bias
        k += layer.units + 2  # backward dot products (delta and Q)
        k += ACTIVATION_ULPS
    return k


def net_input_errors(problem: Problem, fp: ForwardPass | None = None) -> list[FloatArray]:
    """For each layer, how far each net input may be from its computed value, in units of gamma.

    A relu net input closer to its kink than ``gamma`` times this is on no
    side of the kink that float64 can vouch for.
    """
    return _values_and_errors(problem, fp)[2]


def _values_and_errors(problem: Problem, fp: ForwardPass | None = None
                       ) -> tuple[Quantities, Quantities, list[FloatArray]]:
    """``|q|`` for every propagated quantity, its error in units of gamma, and the net inputs' errors."""
    fp = forward(problem) if fp is None else fp
    loss = get_loss(problem.loss)
    g = gamma(chain_length(problem))
    empty = fp.df[0]
    v = Quantities([np.abs(fp.z[0])], [empty], [empty], [empty], np.empty(0), np.empty(0))
    e = Quantities([np.zeros_like(fp.z[0])], [empty], [empty], [empty], np.empty(0), np.empty(0))
    net_errors: list[FloatArray] = [empty]
    for index, ((w, b), layer) in enumerate(
        zip(problem.architecture.unpack(problem.params), problem.architecture.layers), start=1
    ):
        act = get_activation(layer.activation)
        a = fp.a[index]
        z_prev = layer_input(v.z, index)
        # the net input: the error it inherits plus the rounding of its own dot product
        e_a = layer_input(e.z, index) @ np.abs(w).T + z_prev @ np.abs(w).T + np.abs(b)
        net_errors.append(e_a)
        remainder = act.deriv_max * g * e_a * e_a  # Taylor remainder, second order in the error
        f_terms, df_terms, d2f_terms = act.terms(a)
        v.z.append(np.abs(fp.z[index]))
        v.df.append(np.abs(fp.df[index]))
        v.d2f.append(np.abs(fp.d2f[index]))
        v.weights.append(np.abs(w))
        e.z.append(f_terms + np.abs(fp.df[index]) * e_a + remainder)
        e.df.append(df_terms + np.abs(fp.d2f[index]) * e_a + remainder)
        e.d2f.append(d2f_terms + np.abs(act.d3f(a)) * e_a + remainder)
        e.weights.append(np.zeros_like(w))  # the parameters are exact
    y, t = fp.y, problem.targets
    # the loss derivatives: their own terms, plus the forward error of the output y they are
    # evaluated at (|H_y| e_y for the gradient; hess_slope times the terms for the Hessian)
    h_terms = np.abs(loss.hess_mag(y, t))
    e_y = e.z[-1]
    v.g_y = problem.scale * np.abs(fp.g_y)
    v.h_y = problem.scale * np.abs(fp.h_y / problem.scale)
    e.g_y = problem.scale * (loss.grad_mag(y, t) + np.einsum("nij,nj->ni", h_terms, e_y))
    e.h_y = problem.scale * h_terms * (1.0 + loss.hess_slope * np.max(e_y, axis=1))[:, None, None]
    return v, e, net_errors


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
    out = assemble(direction)
    # both parts also hold terms of relative size (h / gamma)^2 with either sign: immaterial,
    # except that they can turn an exact zero into a tiny negative number
    return np.maximum(out.real + out.imag / h, 0.0)


def magnitude_hessian(problem: Problem) -> FloatArray:
    """``M``: per Hessian entry, its terms in absolute value plus their inherited errors."""
    v, e, _ = _values_and_errors(problem)
    return _propagated(v, e, gamma(chain_length(problem)), lambda q: hessian_from_quantities(problem.architecture, q))


def _gradient_from_quantities(problem: Problem, q: Quantities) -> FloatArray:
    gz = q.g_y
    parts: list[FloatArray] = []
    for blk in reversed(problem.architecture.blocks):
        d = gz * q.df[blk.layer]
        piece = [(d.T @ layer_input(q.z, blk.layer)).reshape(-1)]
        if blk.bias:
            piece.append(d.sum(axis=0))
        parts = piece + parts
        gz = d @ q.weights[blk.layer]
    return np.concatenate(parts)


def magnitude_gradient(problem: Problem) -> FloatArray:
    """The same for the gradient: its terms plus their inherited errors."""
    v, e, _ = _values_and_errors(problem)
    return _propagated(v, e, gamma(chain_length(problem)), lambda q: _gradient_from_quantities(problem, q))


def rounding_bound(problem: Problem, methods: int = 2) -> FloatArray:
    """Entrywise bound on the difference of ``methods`` exact float64 results.

    Each method is within ``gamma_k M`` of the truth; two methods differ by at
    most ``2 gamma_k M``, plus :data:`UNDERFLOW_FLOOR` for underflow.
    """
    M = magnitude_hessian(problem)
    return methods * gamma(chain_length(problem)) * M + UNDERFLOW_FLOOR
