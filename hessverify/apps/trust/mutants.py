"""A catalogue of realistic bugs in second-order backpropagation.

:func:`hessian` is a second, deliberately plain implementation of the exact
Hessian of any feed-forward graph (Bishop 1992; the same decomposition as
:mod:`hessverify.methods.backprop`, written with ``einsum`` over patterns):
a Gauss-Newton part through the loss Hessian, a curvature part through each
activation's ``f''``, and the bilinear part where a later weight multiplies
an earlier layer's output.  With ``bug=None`` it is correct, and a test holds
it to ``autograd``.  Each entry of :data:`MUTANTS` switches on one small,
realistic mistake: one line changed, as a person writing this code might get
it wrong.  ``hessverify.apps.trust.detection`` measures how many of them the
shipped cases and random sweeps catch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
from scipy.special import expit, softmax

from hessverify.base.typing import FloatArray
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.forward import forward
from hessverify.model.problem import Problem

__all__ = ["MUTANTS", "SATURATION_BUGS", "Mutant", "hessian"]

_EPS = 1e-7
"""The clipping epsilon of the saturation bugs: Keras' ``epsilon()``, what a loss clips probabilities by."""

# the f'' that a confused implementation might take from the wrong row of the table (a row not named here,
# a new activation's, is confused with tanh's, and tanh's with sigmoid's)
_OTHER = {"tanh": "sigmoid", "sigmoid": "tanh", "softplus": "tanh", "sin": "tanh",
          "gelu": "silu", "silu": "gelu", "identity": "tanh", "relu": "tanh"}


def _other(activation: str) -> str:
    return _OTHER.get(activation, "tanh")


def hessian(problem: Problem, bug: str | None = None) -> FloatArray:  # noqa: C901 - one switch per bug
    """The exact Hessian, or with one planted ``bug`` (a key of :data:`MUTANTS`)."""
    arch = problem.architecture
    fp = forward(problem)
    L = arch.depth
    n = problem.n_patterns
    W = fp.weights
    acts = [layer.activation for layer in arch.layers]
    F1 = list(fp.df)
    F2 = list(fp.d2f)
    if bug == "sigmoid_output_clipped":
        for l, a in enumerate(acts, start=1):
            if a == "sigmoid":  # f' and f'' from the output, clipped away from 0 and 1 as a loss clips for its log
                z = np.clip(fp.z[l], _EPS, 1.0 - _EPS)
                F1[l], F2[l] = z * (1.0 - z), z * (1.0 - z) * (1.0 - 2.0 * z)
    if bug == "f2_of_other_activation":
        F2 = [F2[0]] + [ACTIVATIONS[_other(a)].d2f(fp.a[l]) for l, a in enumerate(acts, start=1)]
    if bug == "f1_in_place_of_f2":
        F2 = [F2[0]] + [F1[l] for l in range(1, L + 1)]
    if bug == "f2_at_output_not_net_input":
        F2 = [F2[0]] + [ACTIVATIONS[a].d2f(fp.z[l]) for l, a in enumerate(acts, start=1)]
    h_y = fp.h_y
    if bug == "lost_half_in_sse" and problem.loss == "sse":
        h_y = 2.0 * h_y  # the 1/2 of 1/2 ||y - t||^2 forgotten in the second derivative
    if bug == "softmax_hessian_diagonal_only" and problem.loss == "cross_entropy":
        h_y = h_y * np.eye(h_y.shape[1])  # diag(p) kept, - p p^T dropped
    if bug == "mean_applied_twice" and problem.reduction == "mean":
        h_y = h_y / n
    if bug == "mean_forgotten_in_loss_hessian" and problem.reduction == "mean":
        h_y = h_y * n
    if bug == "bce_hessian_sigma_only" and problem.loss == "binary_cross_entropy":
        s = 1.0 / (1.0 + np.exp(-fp.y))
        h_y = problem.scale * np.einsum("ni,ij->nij", s, np.eye(s.shape[1]))  # sigma, not sigma (1 - sigma)
    if bug == "loss_probabilities_clipped" and problem.loss in ("cross_entropy", "binary_cross_entropy"):
        # the probabilities clipped to [eps, 1 - eps], as a loss clips them for its log (Keras' epsilon),
        # and the gradient and Hessian taken from the clipped ones
        total = np.sum(problem.targets, axis=1)[:, None]
        if problem.loss == "cross_entropy":
            p = np.clip(softmax(fp.y, axis=1), _EPS, 1.0 - _EPS)
            g_y, h_y = total * p - problem.targets, total[:, :, None] * (
                np.einsum("ni,ij->nij", p, np.eye(p.shape[1])) - p[:, :, None] * p[:, None, :])
        else:
            p = np.clip(expit(fp.y), _EPS, 1.0 - _EPS)
            g_y, h_y = p - problem.targets, np.einsum("ni,ij->nij", p * (1.0 - p), np.eye(p.shape[1]))
        fp = replace(fp, g_y=problem.scale * g_y)
        h_y = problem.scale * h_y
    if bug == "bce_hessian_through_probabilities" and problem.loss == "binary_cross_entropy":
        # d2/dy2 of -t log p - (1 - t) log(1 - p), p = sigma(y), by the chain rule through p:
        # e''(p) sigma'^2 + e'(p) sigma'', exact in exact arithmetic, but 1 - p loses its digits as p saturates
        t, y = problem.targets, fp.y
        p = expit(y)
        d1 = ACTIVATIONS["sigmoid"].df(y)
        d2 = ACTIVATIONS["sigmoid"].d2f(y)
        with np.errstate(divide="ignore", invalid="ignore"):
            e1 = -t / p + (1.0 - t) / (1.0 - p)
            e2 = t / p**2 + (1.0 - t) / (1.0 - p) ** 2
            h_y = problem.scale * np.einsum("ni,ij->nij", e2 * d1**2 + e1 * d2, np.eye(y.shape[1]))
    weight = np.ones(n)
    if bug == "last_pattern_skipped":
        weight[-1] = 0.0

    # which columns of W_c read z_p: in the listed order, or (bug) in ascending order of the sources
    def sources(c: int) -> list[int]:
        listed = list(arch.parents(c))
        return sorted(listed) if bug == "concatenation_order_wrong" else listed

    def cols(c: int, p: int) -> slice:
        start = sum(arch.inputs if q == 0 else arch.layer(q).units for q in sources(c)[:sources(c).index(p)])
        return slice(start, start + (arch.inputs if p == 0 else arch.layer(p).units))

    def readers(l: int, second_order: bool = False) -> list[int]:
        """The layers that read z_l; (bug) the second-order sums forget the skip connections."""
        kids = list(arch.children(l))
        if second_order and bug == "skip_second_order_dropped":
            kids = [c for c in kids if max(arch.parents(c)) == l]  # only the edge from the nearest source
        return kids

    # backward, first order: dE/dz_l summed over the layers that read z_l, delta_l = dE/da_l
    gz = [np.empty(0)] * (L + 1)
    delta = [np.empty(0)] * (L + 1)
    for l in range(L, 0, -1):
        if l == L:
            gz[l] = fp.g_y
        else:
            gz[l] = np.zeros((n, arch.layer(l).units))
            for c in readers(l):
                if bug == "skip_delta_not_accumulated":
                    gz[l] = delta[c] @ W[c][:, cols(c, l)]  # overwritten by each reader, not added
                else:
                    gz[l] = gz[l] + delta[c] @ W[c][:, cols(c, l)]
        delta[l] = gz[l] * F1[l]

    # backward, second order (Bishop 1992, general topology): M[(i, j)] = d2E/da_i da_j for i <= j,
    # M_ij = f'_i sum_c W_ci^T M_cj (i < j); M_ii = f'_i Z_ii f'_i + diag(g_i f''_i) with
    # Z_ii = d2E/dz_i dz_i = sum_{c, c'} W_ci^T M_cc' W_c'i (the loss Hessian at the output)
    M: dict[tuple[int, int], FloatArray] = {}

    def m_(i: int, j: int) -> FloatArray:
        if i > j:
            return np.swapaxes(m_(j, i), 1, 2)
        if (i, j) in M:
            return M[(i, j)]
        ui, uj = arch.layer(i).units, arch.layer(j).units
        if i < j:
            out = np.zeros((n, ui, uj))
            for c in readers(i, second_order=True):
                out += np.einsum("ki,nkj->nij", W[c][:, cols(c, i)], m_(c, j))
            out = F1[i][:, :, None] * out
        else:
            if i == L:
                Z = h_y
            else:
                Z = np.zeros((n, ui, ui))
                for c in readers(i, second_order=True):
                    for cp in readers(i, second_order=True):
                        Z = Z + np.einsum("ki,nkl,lj->nij", W[c][:, cols(c, i)], m_(c, cp), W[cp][:, cols(cp, i)])
            if bug == "q_without_f1_sandwich":
                out = Z.copy()
            else:
                out = np.einsum("ni,nij,nj->nij", F1[i], Z, F1[i])
            skip_curvature = (bug == "dropped_f2_term" or bug == "gauss_newton_only"
                              or (bug == "curvature_loop_off_by_one" and i == 1))
            if not skip_curvature:
                out += np.einsum("ni,ij->nij", gz[i] * F2[i], np.eye(ui))
        M[(i, j)] = out
        return out

    # forward: J[(l, m)] = da_l/da_m, summed over the sources of l that depend on a_m
    J: dict[tuple[int, int], FloatArray] = {}
    for m in range(1, L + 1):
        J[(m, m)] = np.broadcast_to(np.eye(F1[m].shape[1]), (n, F1[m].shape[1], F1[m].shape[1]))
        for l in range(m + 1, L + 1):
            parts = [np.einsum("ij,nj,njk->nik", W[l][:, cols(l, p)], F1[p], J[(p, m)])
                     for p in arch.parents(l) if (p, m) in J]
            if parts:
                J[(l, m)] = sum(parts[1:], parts[0])

    # inputs of each layer, with a 1 appended for the bias
    def inputs(l: int) -> FloatArray:
        z = np.concatenate([fp.z[p] for p in sources(l)], axis=1)
        if not arch.layers[l - 1].bias:
            return z
        one = np.ones((n, 1))
        if bug == "bias_input_is_first_input":
            one = z[:, :1].copy()
        return np.concatenate([z, one], axis=1)

    H = np.zeros((arch.n_params, arch.n_params))
    for m in range(1, L + 1):
        for mp in range(m, L + 1):
            zm, zmp = inputs(m), inputs(mp)
            block = np.einsum("n,nkq,nj,np->kjqp", weight, m_(m, mp), zm, zmp)
            if mp > m and bug not in ("dropped_cross_layer_term", "gauss_newton_only"):
                d = delta[mp] if bug != "delta_without_f1" else gz[mp]
                sign = -1.0 if bug == "wrong_sign_cross_term" else 1.0
                for p in arch.parents(mp):  # W_m' multiplies z_p, which depends on W_m if p is m or above it
                    if (p, m) in J:
                        cross = np.einsum("n,nq,nj,np,npk->kjqp", weight, d, zm, F1[p], J[(p, m)])
                        block[:, :, :, cols(mp, p)] += sign * cross
            if bug == "tiny_error_in_one_block" and (m, mp) == (1, min(2, L)):
                block = block * (1.0 + 1e-7)
            if bug == "bias_weight_cross_dropped" and mp > m:
                block[:, -1, :, :] = 0.0 if arch.layers[m - 1].bias else block[:, -1, :, :]
            _place(H, arch, m, mp, block, transposed=(bug == "weights_column_major" and m == mp))
    if bug == "upper_triangle_only":
        return np.triu(H)
    return H + np.triu(H, 1).T


def _place(H: FloatArray, arch, m: int, mp: int, block: FloatArray, transposed: bool) -> None:  # type: ignore[no-untyped-def]
    """Scatter a (unit, input+bias, unit', input'+bias') block into the upper triangle."""
    def index(l: int) -> FloatArray:
        blk = arch.blocks[l - 1]
        idx = np.empty((blk.units, blk.fan_in + (1 if blk.bias else 0)), dtype=np.int64)
        w = np.arange(blk.w_size).reshape(blk.units, blk.fan_in)
        if transposed:  # W_l flattened column-major: a transposed weight layout
            w = np.arange(blk.w_size).reshape(blk.fan_in, blk.units).T
        idx[:, :blk.fan_in] = blk.offset + w
        if blk.bias:
            idx[:, blk.fan_in] = blk.offset + blk.w_size + np.arange(blk.units)
        return idx.reshape(-1)

    rows, cols = index(m), index(mp)
    b = block.reshape(rows.size, cols.size)
    if m == mp:
        b = np.triu(b[np.argsort(rows)][:, np.argsort(cols)])
        rows, cols = np.sort(rows), np.sort(cols)
    H[np.ix_(rows, cols)] += b


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    fn: Callable[[Problem], FloatArray]


_DESCRIPTIONS = {
    "dropped_f2_term": "the f''(a) delta term of the second-order backward pass is dropped",
    "f2_of_other_activation": "f'' is taken from another activation's row of the table",
    "f1_in_place_of_f2": "f'(a) is used where f''(a) belongs",
    "f2_at_output_not_net_input": "f'' is evaluated at the unit's output z instead of its net input a",
    "dropped_cross_layer_term": "the bilinear term between layers (a later weight times an earlier output) is dropped",
    "gauss_newton_only": "both the f'' and the cross-layer terms are dropped: the Gauss-Newton matrix, not the Hessian",
    "wrong_sign_cross_term": "the cross-layer term is subtracted instead of added",
    "delta_without_f1": "the cross-layer term uses dE/dz instead of delta = dE/da (a missing f')",
    "q_without_f1_sandwich": "the backward second-order pass forgets diag(f') on both sides of W^T Q W",
    "weights_column_major": "the diagonal blocks lay W out column-major (a transposed block)",
    "bias_input_is_first_input": "the bias is treated as a weight on the first input instead of on a constant 1",
    "curvature_loop_off_by_one": "the backward loop adding the f'' term stops one layer early (first layer missed)",
    "lost_half_in_sse": "the 1/2 of sse is lost in the loss Hessian (2 I instead of I)",
    "softmax_hessian_diagonal_only": "the softmax cross-entropy Hessian keeps diag(p) and drops -p p^T",
    "mean_applied_twice": "the mean reduction divides the second-order part by N twice",
    "last_pattern_skipped": "the sum over patterns stops one short (the last pattern is skipped)",
    "upper_triangle_only": "only the upper triangle of the Hessian is filled",
    "tiny_error_in_one_block": "a relative error of 1e-7 in the block of layers 1 and 2",
    "bias_weight_cross_dropped": "the cross-layer entries between a bias and later weights are left at zero",
    "mean_forgotten_in_loss_hessian": "the mean reduction's 1/N is forgotten in the loss Hessian",
    "bce_hessian_sigma_only": "the binary cross-entropy Hessian is sigma(y) instead of sigma(y) (1 - sigma(y))",
    "skip_second_order_dropped": "the second-order backward pass follows only the edge from the previous layer: "
                                 "a skip connection's second-order terms are dropped (its delta is kept)",
    "concatenation_order_wrong": "a layer's input is assembled in ascending order of its sources, not in the "
                                 "listed order (from = [2, 0, 1] read as [0, 1, 2])",
    "skip_delta_not_accumulated": "dE/dz of a layer read by several later ones is overwritten by each reader "
                                  "instead of summed: a skip source's delta is not accumulated",
    "sigmoid_output_clipped": "a sigmoid unit's f' and f'' are taken from its output clipped to [1e-7, 1 - 1e-7] "
                              "(z (1 - z), z (1 - z)(1 - 2 z)): wrong only where the unit saturates",
    "loss_probabilities_clipped": "the cross-entropy gradient and Hessian use probabilities (softmax, or sigma of "
                                  "the logits) clipped to [1e-7, 1 - 1e-7], as a loss clips them for its log: "
                                  "wrong only where a probability saturates",
    "bce_hessian_through_probabilities": "the binary cross-entropy Hessian is taken through the probabilities, "
                                         "e''(p) sigma'^2 + e'(p) sigma'' with divisions by p^2 and (1 - p)^2: "
                                         "exact in exact arithmetic, lost as p saturates (inf past |y| = 36.7)",
}

SATURATION_BUGS = ("sigmoid_output_clipped", "loss_probabilities_clipped", "bce_hessian_through_probabilities")
"""The bugs that show only where an output saturates (issue 24): a sweep meets them through
:func:`hessverify.checking.strategies.saturate`."""

MUTANTS: dict[str, Mutant] = {
    name: Mutant(name, text, partial(hessian, bug=name))
    for name, text in _DESCRIPTIONS.items()
}
"""Every planted bug, keyed by name."""
