"""``pairwise``: one Hessian entry at a time, by a second-order backward pass for that pair.

In the spirit of Rojas, *Neural Networks: A Systematic Introduction*
(Springer 1996), sec. 8.4.3 ("Second-order backpropagation"): the second
derivative with respect to two weights is read off one forward pass and
one backward pass that start at the unit the first weight feeds, with no
Hessian of anything larger than a scalar per pattern.

Take ``w = W_m[k, j]`` and ``w' = W_m'[k', j']`` with ``m <= m'`` (a bias is
a weight whose input ``x_j`` is the constant 1), and write ``x_l`` for the
input of layer ``l``.  Since ``dE/dw' = sum_n delta_{m',k'} x_{m',j'}``,

.. math::

   \\frac{\\partial^2 E}{\\partial w\\,\\partial w'} = \\sum_n x_{m,j}\\Big(
      x_{m',j'}\\, s_{m',k'} + [m < m']\\, \\delta_{m',k'}\\, c_{m',j'} \\Big),

with, for the source unit ``(m, k)``,

* forward: ``r_l = da_l/da_{m,k}``, ``r_m = e_k``,
  ``c_l = dx_l/da_{m,k}``, the sources' ``f'_p * r_p`` side by side (0 for a
  source that does not depend on ``a_m``), ``r_l = W_l c_l``;
* backward: ``s_l = d2E/da_{m,k} da_l = d delta_l / d a_{m,k}``, from
  ``s_L = f'_L * (H_y (f'_L * r_L)) + g_L * f''_L * r_L`` and
  ``s_{l} = f'_l * (sum_c W_{c,l}^T s_c) + g_l * f''_l * r_l``
  (``g_l = dE/dz_l``, the sum over the layers ``c`` that read ``z_l``,
  ``W_{c,l}`` their columns that do): the chain rule of the first-order
  backward pass, differentiated once more along ``r``.

The first term is the chain through the net input ``a_{m',k'}``, and exists
for every ``m' >= m`` (in a graph two layers that do not depend on each
other meet where a later layer reads both); the second exists only when
``w'`` lies above ``w``, because then the input ``x_{m',j'}`` that ``w'``
multiplies depends on ``w`` too.

:func:`hessian_entry` runs these passes for one pair; :func:`hessian`
runs them once per source unit and reads off every entry whose first
weight feeds that unit, vectorised over patterns.
"""

from __future__ import annotations

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.components import Component, Cost, Role
from hessverify.engine.forms import FullHessian
from hessverify.engine.point import Point, as_problem, checked
from hessverify.errors import UsageError
from hessverify.model import assembly
from hessverify.model.forward import ForwardPass, backward_deltas
from hessverify.model.layout import input_with_bias, public_positions
from hessverify.model.network import Architecture
from hessverify.model.problem import Problem

__all__ = ["hessian", "hessian_entry", "locate", "unit_passes"]


def locate(arch: Architecture, index: int) -> tuple[int, int, int]:
    """``(layer, unit, column)`` of a flat index; the column of a bias is ``fan_in``."""
    layer = int(arch.layer_of_param[index])
    blk = arch.block(layer)
    local = index - blk.offset
    if local < blk.w_size:
        return layer, local // blk.fan_in, local % blk.fan_in
    return layer, local - blk.w_size, blk.fan_in


def unit_passes(arch: Architecture, fp: ForwardPass, m: int, k: int
                ) -> tuple[dict[int, FloatArray], dict[int, FloatArray]]:
    """``s[l] = d2E/da_{m,k} da_l`` (``l = m`` and every later layer) and ``c[l] = dx_l/da_{m,k}`` (``l`` above
    ``m``: its input, the sources side by side), per pattern."""
    n = fp.z[0].shape[0]
    r = np.zeros((n, fp.df[m].shape[1]))
    r[:, k] = 1.0
    rs = {m: r}
    c: dict[int, FloatArray] = {}
    above = arch.above(m)
    for l in above:  # forward: how a_{m,k} moves everything above it
        c[l] = np.concatenate([fp.df[p] * rs[p] if p in rs else np.zeros_like(fp.z[p])
                               for p in arch.parents(l)], axis=1)
        rs[l] = c[l] @ fp.weights[l].T
    s: dict[int, FloatArray] = {}
    out = arch.output_layer
    g = {out: fp.g_y}  # dE/dz_l
    Rg = {out: np.einsum("nij,nj->ni", fp.h_y, fp.df[out] * rs[out]) if out in rs else np.zeros_like(fp.g_y)}
    later = [x for x in arch.top_down if x >= m]
    for l in later:  # backward: differentiate each step of the delta pass
        if l not in g:  # a layer that feeds nothing: E does not depend on it
            g[l] = Rg[l] = np.zeros_like(fp.z[l])
        s[l] = Rg[l] * fp.df[l] + (g[l] * fp.d2f[l] * rs[l] if l in rs else 0.0)
        if l != m:
            for p in arch.parents(l):
                if p >= m:
                    w = fp.weights[l][:, arch.source_slice(l, p)]
                    rg, gp = s[l] @ w, (g[l] * fp.df[l]) @ w
                    Rg[p] = Rg[p] + rg if p in Rg else rg
                    g[p] = g[p] + gp if p in g else gp
    return s, c


def hessian_entry(problem: Problem | Point, i: int | str, j: int | str) -> float:
    """The single entry :math:`\\partial^2 E / \\partial w_i \\partial w_j`.

    Parameters
    ----------
    problem:
        The case.
    i, j:
        Flat indices or public names such as ``"W2[0,1]"`` and ``"b1[0]"``.

    Raises
    ------
    UsageError
        For an index out of range or a name the network does not have.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> H = hessverify.hessian(case)
    >>> e = hessverify.hessian_entry(case, "W2[0,1]", "b1[0]")
    >>> bool(abs(e - H[case.architecture.param_index("W2[0,1]"), 4]) < 1e-15)
    True
    """
    problem = as_problem(problem)
    arch = problem.architecture
    for p in (i, j):
        if not isinstance(p, (str, int, np.integer)) or isinstance(p, bool):
            raise UsageError(f"a parameter is a flat index or a name such as 'W2[0,1]', got {p!r}")
    try:
        a, b = arch.param_index(i), arch.param_index(j)
    except (KeyError, IndexError) as exc:
        raise UsageError(str(exc.args[0]) if exc.args else str(exc)) from None
    problem, fp = checked(problem)
    if not arch.is_dense:  # other layer kinds: d2E[e_a, e_b], forward over forward through their graph
        W = arch.n_params
        return float(fp.graph.second_directional(fp, np.eye(W)[[a]], np.eye(W)[[b]])[0])
    (m, k, col), (mp, kp, colp) = sorted([locate(arch, a), locate(arch, b)])
    s, c = unit_passes(arch, fp, m, k)
    x = input_with_bias(arch, fp.z, m)[:, col]
    xp = input_with_bias(arch, fp.z, mp)[:, colp]
    inner = xp * s[mp][:, kp]
    if mp in arch.above(m) and colp < arch.block(mp).fan_in:  # a bias input does not move
        delta = backward_deltas(arch, fp)[mp]
        inner = inner + delta[:, kp] * c[mp][:, colp]
    return float(np.dot(x, inner))


def hessian(problem: Problem | Point) -> FloatArray:
    """The full Hessian, assembled from the pair passes, one source unit at a time.

    Rojas (1996), sec. 8.4.3.  Slow by design (a reference-style method):
    ``sum_l units_l`` pairs of forward/backward vector passes.
    """
    problem, fp = checked(problem)
    if not problem.architecture.is_dense:
        return assembly.hessian_forward_forward(fp.graph, fp)
    arch = problem.architecture
    delta = backward_deltas(arch, fp)
    xs = {l: input_with_bias(arch, fp.z, l) for l in arch.bottom_up}
    pos = {l: arch.block(l).offset + public_positions(arch.block(l)).reshape(arch.block(l).units, -1)
           for l in arch.bottom_up}
    H = np.empty((arch.n_params, arch.n_params))
    for m in arch.bottom_up:
        x = xs[m]
        for k in range(arch.block(m).units):
            s, c = unit_passes(arch, fp, m, k)
            rows = pos[m][k]
            for mp in (l for l in arch.bottom_up if l >= m):
                xp = xs[mp]
                inner = s[mp][:, :, None] * xp[:, None, :]  # (n, k', j')
                if mp in c:  # x_{m'} moves with a_{m,k}
                    fan = arch.block(mp).fan_in
                    inner[:, :, :fan] += delta[mp][:, :, None] * c[mp][:, None, :]
                vals = np.einsum("nj,nkp->jkp", x, inner).reshape(x.shape[1], -1)
                cols = pos[mp].reshape(-1)
                H[np.ix_(rows, cols)] = vals
                if mp != m:
                    H[np.ix_(cols, rows)] = vals.T
    return H


COMPONENT = Component(
    "pairwise", hessian, Role.METHOD, FullHessian,
    "entry by entry, a second-order backward pass per source unit (Rojas 1996, sec. 8.4.3)",
    cost=Cost(memory=(1.7, 2.8), seconds=(1.3e-9, 1e-6), per_layer=1.5e-4, passes="unit"),
    rank=30,
)
