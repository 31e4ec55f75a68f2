"""How far each propagated quantity may be from its computed value: the forward half of the rounding model.

For every quantity a pass propagates (the layer outputs ``z``, ``f'``, ``f''``,
the weights and the loss derivatives at the output) :func:`values_and_errors`
gives its magnitude and a bound on its inherited error in units of
``gamma_k`` (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
sec. 3.1): the rounding of the dot products that made it, the magnitudes of
the terms that textbook formulas for ``f``, ``f'``, ``f''`` and the loss
derivatives add (the ``terms``, ``grad_mag`` and ``hess_mag`` columns of the
tables), and a Taylor remainder.  :mod:`hessverify.engine.bounds` runs the assembly
kernel on these to bound a whole Hessian; :func:`hessverify.model.well_posed.ensure_well_posed`
uses the net inputs' errors to tell a relu unit that float64 cannot place on
one side of its kink.  The text of :mod:`hessverify.engine.bounds` derives each term.
"""

from __future__ import annotations

import numpy as np

from hessverify.base.precision import FLOAT64, Precision
from hessverify.base.typing import FloatArray
from hessverify.model.activations import get_activation
from hessverify.model.build import graph_of
from hessverify.model.forward import ForwardPass, forward
from hessverify.model.graph_rounding import graph_chain_length
from hessverify.model.kernel import Quantities
from hessverify.model.losses import loss_of
from hessverify.model.network import layer_input
from hessverify.model.problem import Problem

__all__ = ["ACTIVATION_ULPS", "LOSS_ULPS", "chain_length", "net_input_errors", "values_and_errors"]

ACTIVATION_ULPS = 8
"""Roundings allowed per activation evaluation (libm's exp, tanh, erf: <= 2 ulp each, plus the arithmetic around them)."""

LOSS_ULPS = 8
"""Roundings allowed for evaluating the loss derivatives at the output (softmax, logsumexp)."""


def chain_length(problem: Problem) -> int:
    """``k``: the longest chain of roundings in any entry of the Hessian."""
    arch = problem.architecture
    if not arch.is_dense:
        return graph_chain_length(graph_of(problem), problem.n_patterns)
    k = LOSS_ULPS + problem.n_patterns + 2  # the final sum over patterns, the reduction
    for l in arch.bottom_up:
        k += arch.fan_in(l) + 1  # forward dot product and bias
        k += arch.layer(l).units + 2  # backward dot products (delta and Q)
        k += ACTIVATION_ULPS
        if not arch.is_chain:  # dE/dz_l and M sum over every layer that reads z_l: longer sums
            k += sum(arch.layer(c).units + 1 for c in arch.children(l))
    return k


def net_input_errors(problem: Problem, fp: ForwardPass | None = None, precision: Precision = FLOAT64
                     ) -> list[FloatArray]:
    """For each layer, how far each net input may be from its computed value, in units of gamma.

    A relu net input closer to its kink than ``gamma`` times this is on no
    side of the kink that the precision can vouch for.
    """
    return values_and_errors(problem, fp, precision)[2]


def values_and_errors(problem: Problem, fp: ForwardPass | None = None, precision: Precision = FLOAT64
                      ) -> tuple[Quantities, Quantities, list[FloatArray]]:
    """``|q|`` for every propagated quantity, its error in units of gamma, and the net inputs' errors."""
    fp = forward(problem) if fp is None else fp
    arch = problem.architecture
    loss = loss_of(problem)
    g = precision.gamma(chain_length(problem))
    empty = fp.df[0]
    depth = arch.depth
    v = Quantities([np.abs(fp.z[0])] + [empty] * depth, [empty] * (depth + 1), [empty] * (depth + 1),
                   [empty] * (depth + 1), np.empty(0), np.empty(0))
    e = Quantities([np.zeros_like(fp.z[0])] + [empty] * depth, [empty] * (depth + 1), [empty] * (depth + 1),
                   [empty] * (depth + 1), np.empty(0), np.empty(0))
    net_errors: list[FloatArray] = [empty] * (depth + 1)
    params = dict(zip(arch.bottom_up, arch.unpack(problem.params), strict=True))
    for l in arch.bottom_up:
        w, b = params[l]
        act = get_activation(arch.layer(l).activation)
        a = fp.a[l]
        z_prev = layer_input(v.z, l, arch)
        # the net input: the error it inherits plus the rounding of its own dot product
        e_a = layer_input(e.z, l, arch) @ np.abs(w).T + z_prev @ np.abs(w).T + np.abs(b)
        net_errors[l] = e_a
        remainder = act.deriv_max * g * e_a * e_a  # Taylor remainder, second order in the error
        f_terms, df_terms, d2f_terms = act.terms(a)
        v.z[l] = np.abs(fp.z[l])
        v.df[l] = np.abs(fp.df[l])
        v.d2f[l] = np.abs(fp.d2f[l])
        v.weights[l] = np.abs(w)
        e.z[l] = f_terms + np.abs(fp.df[l]) * e_a + remainder
        e.df[l] = df_terms + np.abs(fp.d2f[l]) * e_a + remainder
        e.d2f[l] = d2f_terms + np.abs(act.d3f(a)) * e_a + remainder
        e.weights[l] = np.zeros_like(w)  # the parameters are exact
    y, t = fp.y, problem.targets
    # the loss derivatives: their own terms, plus the forward error of the output y they are
    # evaluated at (|H_y| e_y for the gradient; hess_slope times the terms for the Hessian)
    h_terms = np.abs(loss.hess_mag(y, t))
    e_y = e.z[arch.output_layer]
    v.g_y = problem.scale * np.abs(fp.g_y)
    v.h_y = problem.scale * np.abs(fp.h_y / problem.scale)
    e.g_y = problem.scale * (loss.grad_mag(y, t) + np.einsum("nij,nj->ni", h_terms, e_y))
    e.h_y = problem.scale * h_terms * (1.0 + loss.hess_slope * np.max(e_y, axis=1))[:, None, None]
    return v, e, net_errors
