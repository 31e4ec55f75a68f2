"""Example: a cross-layer Hessian block with a wrong index, caught and shrunk by ``hessverify sweep``.

:func:`hessian` is a small, correct second-order backpropagation written
from the lecture notes (Bishop 1992), one pattern at a time.
:func:`hessian_buggy` is the same code with one index wrong in the term
that only cross-layer blocks have (``W_m'`` multiplies its input ``z_s``,
which depends on ``W_m``): it takes the slope ``f'`` of unit ``k'`` of layer
``m'`` where the formula needs unit ``i`` of the source ``s`` (in a chain,
unit ``j'`` of layer ``m'-1``).  Same-layer blocks, and every one-layer
network, are untouched, so the bug needs two layers to show.  Both functions
take any feed-forward graph (a layer's ``from``, ``arch.parents(l)``), so
``hessverify sweep`` can draw graphs.

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
    W = [None] + problem.weights  # indexed by layer, as in the notes
    b = [None] + [bias if bias is not None else np.zeros(w.shape[0]) for bias, w in zip(problem.biases, W[1:],
                                                                                          strict=True)]
    acts = [None] + [ACTIVATIONS[name] for name in problem.activations]
    loss = LOSSES[problem.loss]

    def W_from(c: int, p: int) -> np.ndarray:
        """The columns of W_c that read z_p (a layer reads the layers arch.parents(c) side by side)."""
        return W[c][:, arch.source_slice(c, p)]

    H = np.zeros((problem.n_params, problem.n_params))
    for x, t in zip(problem.inputs, problem.targets, strict=True):
        # forward: a_l = W_l x_l + b_l with x_l the outputs of the layers l reads (0 = the input), z_l = f(a_l)
        z, xin, f1, f2 = [x], [np.ones(0)], [np.ones(0)], [np.ones(0)]
        for l in range(1, L + 1):
            xin.append(np.concatenate([z[p] for p in arch.parents(l)]))
            a = W[l] @ xin[l] + b[l]
            z.append(acts[l].f(a))
            f1.append(acts[l].df(a))
            f2.append(acts[l].d2f(a))
        # backward, first order: g_l = dE/dz_l sums over the layers that read z_l; delta_l = g_l f'_l
        g, delta = [np.ones(0)] * (L + 1), [np.ones(0)] * (L + 1)
        for l in range(L, 0, -1):
            if l == L:
                g[l] = problem.scale * loss.grad(z[L][None], t[None])[0]  # dE/dy
            else:
                g[l] = sum((W_from(c, l).T @ delta[c] for c in arch.children(l)), np.zeros(len(z[l])))
            delta[l] = g[l] * f1[l]
        # backward, second order: M[i, j] = d2E/da_i da_j^T for layers i <= j (Bishop 1992, any feed-forward graph)
        M: dict[tuple[int, int], np.ndarray] = {}

        def M_(i: int, j: int, M: dict[tuple[int, int], np.ndarray] = M) -> np.ndarray:
            return M[i, j] if i <= j else M[j, i].T

        for i in range(L, 0, -1):
            for j in range(L, i, -1):
                M[i, j] = f1[i][:, None] * sum((W_from(c, i).T @ M_(c, j) for c in arch.children(i)),
                                               np.zeros((len(z[i]), len(z[j]))))
            if i == L:
                h = problem.scale * loss.hess(z[L][None], t[None])[0]  # d2E/dy dy^T
                M[i, i] = f1[i][:, None] * h * f1[i][None, :]
            else:
                M[i, i] = sum((M[i, c] @ W_from(c, i) for c in arch.children(i)),
                              np.zeros((len(z[i]), len(z[i])))) * f1[i][None, :]
            M[i, i] = M[i, i] + np.diag(g[i] * f2[i])  # the curvature of the unit itself
        # forward Jacobians between net inputs: B[l, m] = da_l / da_m, summed over the sources of l
        B = {}
        for m in range(1, L + 1):
            B[m, m] = np.eye(len(f1[m]))
            for l in range(m + 1, L + 1):
                parts = [W_from(l, p) @ (f1[p][:, None] * B[p, m]) for p in arch.parents(l) if (p, m) in B]
                if parts:
                    B[l, m] = sum(parts[1:], parts[0])
        # every pair of layers m <= m'; a bias is a weight whose input is 1
        zin = [np.ones(0)] + [np.append(xin[l], 1.0) if arch.layers[l - 1].bias else xin[l] for l in range(1, L + 1)]
        for m in range(1, L + 1):
            for mp in range(m, L + 1):
                # block[k, j, k', j'] = d2e / dW_m[k, j] dW_m'[k', j'] (j = fan-in: the bias)
                block = np.einsum("ac,j,p->ajcp", M[m, mp], zin[m], zin[mp])
                if mp > m:
                    for s in arch.parents(mp):
                        if (s, m) in B:
                            # W_m' multiplies z_s (its inputs cols), which itself depends on W_m when s is m or
                            # above it (Bishop 1992, eq. 22): + delta_m'[k'] f'_s[i] B[s, m][i, k] zin_m[j]
                            # the bug reads the slope of unit k' of layer m' instead of unit i of its source s
                            slopes = "c,c,ik,j->kjci" if wrong_index else "c,i,ik,j->kjci"
                            cross = np.einsum(slopes, delta[mp], f1[mp] if wrong_index else f1[s], B[s, m], zin[m])
                            block[:, :, :, arch.source_slice(mp, s)] += cross
                rows = [_flat_index(problem, m, k, j) for k, j in np.ndindex(block.shape[:2])]
                cols = [_flat_index(problem, mp, kp, jp) for kp, jp in np.ndindex(block.shape[2:])]
                flat = block.reshape(len(rows), len(cols))
                H[np.ix_(rows, cols)] += flat
                if mp > m:
                    H[np.ix_(cols, rows)] += flat.T
    return H


def hessian(problem: Problem) -> np.ndarray:
    """The correct Hessian."""
    return _hessian(problem, wrong_index=False)


def hessian_buggy(problem: Problem) -> np.ndarray:
    """The bug: ``f'_{m'}[k']`` in place of ``f'_{m'-1}[j']`` in the cross-layer term."""
    return _hessian(problem, wrong_index=True)
