"""Property: permuting the hidden units of a layer permutes the Hessian's rows and columns.

Reordering the units of hidden layer ``l`` (the rows of ``W_l`` and ``b_l``
and the columns of every layer that reads ``z_l``, the next one and any skip
connection) leaves the network function unchanged, so the
Hessian at the permuted point is ``P H P^T`` with ``P`` the induced
permutation of parameters.  The permuted network sums the same terms in
another order, so the two differ by rounding only: the two-method bound
``2 gamma_k M``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from props_util import assert_property, exact_matrix_methods, note_problem

from hessverify import METHODS, Problem
from hessverify.checking.strategies import problems
from hessverify.engine.bounds import rounding_bound
from hessverify.engine.compare import compare


def permute_hidden_units(problem: Problem, layer: int, perm: list[int]) -> tuple[Problem, np.ndarray]:
    """The problem with layer ``layer``'s units reordered by ``perm``, and the parameter index map.

    Returns ``(permuted, index)`` with ``permuted.params == problem.params[index]``.
    """
    arch = problem.architecture
    index = np.arange(problem.n_params)
    blk = arch.block(layer)
    w = index[blk.w_slice].reshape(blk.units, blk.fan_in)
    index[blk.w_slice] = w[perm].reshape(-1)  # unit i of the new layer is unit perm[i] of the old
    if blk.bias:
        index[blk.b_slice] = index[blk.b_slice][perm]
    for reader in arch.children(layer):  # every layer that reads z_l (skip connections too) reads it reordered
        nxt = arch.block(reader)
        cols = np.arange(nxt.fan_in)
        cols[arch.source_slice(reader, layer)] = cols[arch.source_slice(reader, layer)][perm]
        w2 = index[nxt.w_slice].reshape(nxt.units, nxt.fan_in)
        index[nxt.w_slice] = w2[:, cols].reshape(-1)
    return problem.with_params(problem.params[index]), index


@st.composite
def permuted_problems(draw: st.DrawFn) -> tuple[Problem, int, list[int]]:
    problem = draw(problems(min_layers=2, min_units=2, max_units=3, kinds=False))
    layer = draw(st.integers(1, problem.architecture.depth - 1))
    perm = draw(st.permutations(range(problem.architecture.layers[layer - 1].units)))
    return problem, layer, list(perm)


@given(permuted_problems())
def test_permuting_hidden_units_permutes_the_hessian(drawn: tuple[Problem, int, list[int]]) -> None:
    problem, layer, perm = drawn
    note_problem(problem)
    permuted, index = permute_hidden_units(problem, layer, perm)
    bound = rounding_bound(problem, methods=2)[np.ix_(index, index)]
    for name in exact_matrix_methods():
        H = np.asarray(METHODS[name].fn(problem), dtype=np.float64)
        Hp = np.asarray(METHODS[name].fn(permuted), dtype=np.float64)
        assert_property(f"permutation of layer {layer} units by {perm} ({name})", permuted,
                        compare(permuted, name, "permuted original", Hp, H[np.ix_(index, index)], bound, "rounding"))
