"""Example: a cross-layer Hessian block with a wrong index, caught and shrunk by ``hessverify sweep``.

:func:`hessian` is a small, correct second-order backpropagation written
from the lecture notes (Bishop 1992), one pattern at a time.
:func:`hessian_buggy` is the same code with one index wrong in the term
that only cross-layer blocks have (``W_m'`` multiplies ``z_{m'-1}``, which
depends on ``W_m``): it takes the slope ``f'`` of unit ``k'`` of layer
``m'`` where the formula needs unit ``j'`` of layer ``m'-1``.  Same-layer
blocks, and every one-layer network, are untouched, so the bug needs two
layers to show.

Run::

    hessverify sweep --method-under-test examples/wrong_cross_layer_index.py:hessian_buggy --seed 0

It exits 1 and prints a two-layer network as a case file (see
``examples/README.md`` for the minimal networks found).
"""

from __future__ import annotations

import numpy as np

from hessverify import Problem
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.losses import LOSSES


def _flat_index(problem: Problem, layer: int, unit: int, inp: int) -> int:
    """Flat index of ``W_layer[unit, inp]``, or of ``b_layer[unit]`` when ``inp`` is the fan-in (the bias column)."""
    blk = problem.architecture.blocks[layer - 1]
    if inp < blk.fan_in:
        return blk.offset + unit * blk.fan_in + inp
    return blk.offset + blk.w_size + unit


def _hessian(problem: Problem, *, wrong_index: bool) -> np.ndarray:
    arch = problem.architecture
    L = arch.depth
    W = problem.weights
    b = [bias if bias is not None else np.zeros(w.shape[0]) for bias, w in zip(problem.biases, W, strict=True)]
    acts = [ACTIVATIONS[name] for name in problem.activations]
    loss = LOSSES[problem.loss]
    H = np.zeros((problem.n_params, problem.n_params))
    for x, t in zip(problem.inputs, problem.targets, strict=True):
        # forward: a_l = W_l z_{l-1} + b_l, z_l = f(a_l); lists are indexed by layer, 0 = input
        z, f1, f2 = [x], [np.ones(0)], [np.ones(0)]
        for l in range(1, L + 1):
            a = W[l - 1] @ z[l - 1] + b[l - 1]
            z.append(acts[l - 1].f(a))
            f1.append(acts[l - 1].df(a))
            f2.append(acts[l - 1].d2f(a))
        g = problem.scale * loss.grad(z[L][None], t[None])[0]  # dE/dy
        h = problem.scale * loss.hess(z[L][None], t[None])[0]  # d2E/dy dy^T
        # backward: delta_l = dE/da_l and Q_l = d2E/da_l da_l^T
        delta, Q = [np.ones(0)] * (L + 1), [np.ones((0, 0))] * (L + 1)
        for l in range(L, 0, -1):
            delta[l] = g * f1[l]
            Q[l] = f1[l][:, None] * h * f1[l][None, :]
            Q[l] += np.diag(g * f2[l])  # the curvature of the unit itself
            g, h = W[l - 1].T @ delta[l], W[l - 1].T @ Q[l] @ W[l - 1]
        # forward Jacobians between net inputs: B[l, m] = da_l / da_m
        B = {}
        for m in range(1, L + 1):
            B[m, m] = np.eye(len(f1[m]))
            for l in range(m + 1, L + 1):
                B[l, m] = W[l - 1] @ (f1[l - 1][:, None] * B[l - 1, m])
        # every pair of layers m <= m'; a bias is a weight whose input is 1
        zin = [np.append(z[l - 1], 1.0) if arch.layers[l - 1].bias else z[l - 1] for l in range(1, L + 1)]
        for m in range(1, L + 1):
            for mp in range(m, L + 1):
                K = B[mp, m].T @ Q[mp]
                for k, j, kp, jp in np.ndindex(K.shape[0], len(zin[m - 1]), K.shape[1], len(zin[mp - 1])):
                    value = K[k, kp] * zin[m - 1][j] * zin[mp - 1][jp]
                    if mp > m and jp < len(z[mp - 1]):
                        # W_m' multiplies z_{m'-1}, which itself depends on W_m (Bishop 1992, eq. 22)
                        # the bug reads the slope of unit k' of layer m' instead of unit j' of layer m'-1
                        slope = f1[mp][kp] if wrong_index else f1[mp - 1][jp]
                        value += delta[mp][kp] * slope * B[mp - 1, m][jp, k] * zin[m - 1][j]
                    r, c = _flat_index(problem, m, k, j), _flat_index(problem, mp, kp, jp)
                    H[r, c] += value
                    if mp > m:
                        H[c, r] += value
    return H


def hessian(problem: Problem) -> np.ndarray:
    """The correct Hessian."""
    return _hessian(problem, wrong_index=False)


def hessian_buggy(problem: Problem) -> np.ndarray:
    """The bug: ``f'_{m'}[k']`` in place of ``f'_{m'-1}[j']`` in the cross-layer term."""
    return _hessian(problem, wrong_index=True)
