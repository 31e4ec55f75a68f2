"""Every method on feed-forward graphs (skip connections) against references that build the graph themselves.

The graphs here are not in ``cases/``: residual links, an input-to-output
link, dense connectivity, sources listed out of order, a layer read by
several later ones, and a layer that feeds nothing.  Each exact method is
held to ``autograd`` (its own graph forward pass) and to the symbolic
reference, the approximations to their definitions in
:mod:`hessverify.references.curvature_ref`, all within the rounding bound.
"""

from __future__ import annotations

import numpy as np
import pytest

from hessverify.engine.registry import METHODS
from hessverify.io.cases import seeded_data
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.references import autograd_ref, curvature_ref
from hessverify.symbolic.reference import hessian_mpmath
from tests.methods.conftest import assert_within, exact_bound

GRAPHS = {
    "residual": (2, [Layer(3, "tanh"), Layer(3, "tanh"), Layer(3, "sigmoid", sources=(2, 1)),
                     Layer(1, "identity", sources=(3, 2))], "sse"),
    "input-to-output": (3, [Layer(3, "softplus"), Layer(2, "identity", sources=(1, 0))], "cross_entropy"),
    "dense": (2, [Layer(2, "gelu"), Layer(2, "tanh", sources=(0, 1)), Layer(2, "silu", sources=(0, 1, 2)),
                  Layer(2, "identity", sources=(0, 1, 2, 3))], "binary_cross_entropy"),
    "out-of-order": (2, [Layer(3, "tanh"), Layer(2, "sin", bias=False, sources=(1, 0)),
                         Layer(2, "identity", sources=(2, 0, 1))], "sse"),
    "skip-from-hidden-only": (2, [Layer(2, "tanh"), Layer(2, "tanh"), Layer(2, "tanh"),
                                  Layer(1, "identity", sources=(3, 1))], "sse"),
    "dead-branch": (2, [Layer(2, "tanh"), Layer(3, "sigmoid", sources=(0,)), Layer(1, "identity", sources=(1,))],
                    "sse"),
}


def _problem(name: str, seed: int = 5) -> Problem:
    inputs, layers, loss = GRAPHS[name]
    arch = Architecture(inputs, tuple(layers))
    x, t = seeded_data(arch, loss, seed, 4)
    params = 0.8 * np.random.default_rng(seed).standard_normal(arch.n_params)
    return Problem(arch, loss, params, x, t, "mean" if seed % 2 else "sum", id=f"graph-{name}")


def _dense(problem: Problem, value: object, form: object) -> np.ndarray:
    """A method's result as the part of the full matrix it computes: full, diagonal or block diagonal."""
    if isinstance(value, list):
        out = np.zeros((problem.n_params, problem.n_params))
        for blk, block in zip(problem.architecture.blocks, value, strict=True):
            out[blk.slice, blk.slice] = block
        return out
    return np.asarray(value)


def _like(problem: Problem, value: object, H: np.ndarray) -> np.ndarray:
    if isinstance(value, list):
        out = np.zeros_like(H)
        for blk in problem.architecture.blocks:
            out[blk.slice, blk.slice] = H[blk.slice, blk.slice]
        return out
    return np.diag(H) if np.ndim(value) == 1 else H


EXACT = ["backprop", "rop", "pairwise", "block_diagonal", "diagonal"]
APPROX = {"gauss_newton": curvature_ref.gauss_newton, "fisher": curvature_ref.fisher,
          "becker_lecun": curvature_ref.becker_lecun}


@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("method", EXACT)
def test_exact_methods_agree_with_autograd_on_graphs(graph: str, method: str) -> None:
    problem = _problem(graph)
    H = autograd_ref.hessian(problem)
    value = METHODS[method].fn(problem)
    bound = exact_bound(problem)
    assert_within(f"{method} vs autograd", problem, _dense(problem, value, None), _like(problem, value, H),
                  _like(problem, value, bound))


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_backprop_agrees_with_the_symbolic_reference_on_graphs(graph: str) -> None:
    problem = _problem(graph, seed=6)
    exact = np.asarray(hessian_mpmath(problem), dtype=np.float64)
    assert_within("backprop vs symbolic", problem, METHODS["backprop"].fn(problem), exact, exact_bound(problem) / 2)


@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("method", sorted(APPROX))
def test_approximations_match_their_definitions_on_graphs(graph: str, method: str) -> None:
    problem = _problem(graph)
    value = np.asarray(METHODS[method].fn(problem))
    ref = APPROX[method](problem)
    bound = exact_bound(problem)
    if method == "fisher":
        from tests.methods.conftest import fisher_bound
        bound = fisher_bound(problem)
    assert_within(f"{method} vs its definition", problem, value, ref, np.diag(bound) if value.ndim == 1 else bound)


def test_a_skip_connection_changes_the_hessian() -> None:
    """The skip's terms matter: dropping the link gives another Hessian (so agreement above is not vacuous)."""
    problem = _problem("skip-from-hidden-only")
    H = METHODS["backprop"].fn(problem)
    chain = Architecture(2, tuple(Layer(2, "tanh") for _ in range(3)) + (Layer(1, "identity"),))
    theta = problem.params.copy()
    blk = problem.architecture.block(4)
    W4 = theta[blk.w_slice].reshape(1, 4)
    theta_chain = np.concatenate([theta[:blk.offset], W4[:, :2].reshape(-1), theta[blk.b_slice]])
    other = Problem(chain, "sse", theta_chain, problem.inputs, problem.targets, problem.reduction)
    n = chain.block(4).offset
    assert not np.allclose(H[:n, :n], METHODS["backprop"].fn(other)[:n, :n], rtol=1e-3)


def test_hessian_entry_reads_the_graph_for_every_pair() -> None:
    """One pair at a time (the pair passes), against autograd: pairs in unrelated branches, on the skip, biases."""
    from hessverify.methods.pairwise import hessian_entry

    problem = _problem("out-of-order")
    H = autograd_ref.hessian(problem)
    n = problem.n_params
    E = np.array([[hessian_entry(problem, i, j) for j in range(n)] for i in range(n)])
    assert_within("hessian_entry vs autograd", problem, E, H, exact_bound(problem))
