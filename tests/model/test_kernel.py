"""The assembly kernel: every path it can take gives the Hessian, and depth costs no recursion.

The kernel forms a block pair by pair between wide layers and a row of layers
at a time elsewhere, in pieces, in pattern chunks, in flushes, on a thread
pool; each path is forced here on chains and graphs and held to autograd (an
independent implementation) within the derived rounding bound.  Deep chains
are held to Pearlmutter's R-operator (``rop``, which shares no assembly code
with the kernel) through Hessian-vector products.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest

import hessverify
from hessverify.engine.bounds import magnitude_hessian
from hessverify.io.cases import seeded_data
from hessverify.methods import block_diagonal, diagonal, rop
from hessverify.model import kernel
from hessverify.model.forward import deltas_from
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.model.well_posed import ensure_well_posed
from hessverify.references import autograd_ref

from ..methods.conftest import assert_within, exact_bound, load, matvec_bound

CASES = ["tanh-6-12-8-2", "softmax-4-5-3-cross-entropy", "nobias-2-3-2-tanh-sigmoid", "graph-dense-2-3-3-3-2-mean",
         "graph-residual-mlp-2-4-4-4-1-tanh", "graph-out-of-order-2-3-2-2-bce", "graph-input-to-output-3-4-2-sigmoid-ce"]

PATHS = {
    # every block pair by pair, in pieces of one unit's rows
    "pairs": {"PAIR_MIN_SIZE": 1, "PAIR_MAX_LAYERS": 10**6, "BLOCK_FLOATS": 1},
    # every block a row of layers at a time, one column per gathered piece
    "rows": {"PAIR_MIN_SIZE": 10**9, "BATCH_FLOATS": 1},
    # the waiting tasks run after every row, and the patterns go three at a time
    "flushes": {"HELD_SHARE": 10**12},
    # two threads
    "pool": {"PARALLEL_MIN_WORK": 0.0},
}


def _force(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    for name, value in PATHS[path].items():
        monkeypatch.setattr(kernel, name, value)
    if path == "flushes":
        monkeypatch.setattr(kernel, "pattern_chunks", lambda arch, n: [slice(i, min(n, i + 3)) for i in range(0, n, 3)])
    if path == "pool":
        monkeypatch.setattr(kernel, "_blas_threads", lambda: 2)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("name", CASES)
def test_every_path_gives_the_hessian(name: str, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = load(name)
    bound = exact_bound(case)  # before the kernel is forced: the bound is the default path's
    _force(monkeypatch, path)
    H = hessverify.hessian(case)
    assert_within(f"backprop ({path}) vs autograd", case, H, autograd_ref.hessian(case), bound)
    assert np.array_equal(H, H.T)


@pytest.mark.parametrize("path", ["pairs", "rows"])
@pytest.mark.parametrize("name", CASES[:4])
def test_the_magnitudes_do_not_depend_on_the_path(name: str, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rounding model runs the kernel on magnitudes: each path is the same polynomial, summed in another order."""
    case = load(name)
    M = magnitude_hessian(case)
    _force(monkeypatch, path)
    M_path = magnitude_hessian(case)
    assert np.all(M_path >= 0)
    np.testing.assert_allclose(M_path, M, rtol=1e-12, atol=0)


def _chain(depth: int, patterns: int = 3) -> Problem:
    """One tanh unit per layer, no biases, every weight 1: the signal neither dies nor saturates with depth.

    ``z_l = tanh(z_{l-1})`` falls like ``sqrt(3 / 2l)`` and ``dE/dz_l`` like ``l^{3/2}``, so every entry of the
    Hessian is far from 0 even 10 000 layers down (about 6e-11 at the smallest).
    """
    arch = Architecture(1, tuple(Layer(1, "tanh", bias=False) for _ in range(depth)))
    x, t = seeded_data(arch, "sse", 0, patterns)
    return Problem(arch, "sse", np.ones(depth), x, t, id=f"critical-chain-{depth}")


def _holds_up_against_rop(problem: Problem, H: np.ndarray) -> None:
    """``H v`` against the R-operator's, for a few directions, within the matrix-vector bound."""
    fp = ensure_well_posed(problem)
    V = np.random.default_rng(0).standard_normal((3, problem.n_params))
    Hv = rop.hvp_many(problem.architecture, fp, V)
    B = exact_bound(problem)
    for v, hv in zip(V, Hv, strict=True):
        assert_within("backprop H v vs rop", problem, H @ v, hv, matvec_bound(problem, H, v, B))
    np.testing.assert_array_equal(diagonal.diagonal(problem), np.diag(H))
    assert np.array_equal(H, H.T) and np.all(np.isfinite(H)) and np.all(H != 0)


def test_a_chain_deeper_than_the_recursion_limit() -> None:
    """1 500 layers: the recursion per layer stopped at about 300 (CI's variant of the 10 000-layer test below)."""
    problem = _chain(1500)
    H = hessverify.hessian(problem)
    _holds_up_against_rop(problem, H)
    blocks = block_diagonal.blocks(problem)
    assert len(blocks) == 1500 and all(b.shape == (1, 1) for b in blocks)


@pytest.mark.slow
def test_a_chain_of_ten_thousand_layers() -> None:
    """Issue 24's done-when: a chain of 10 000 one-unit layers is computed (H is 800 MB; minutes with the bound)."""
    problem = _chain(10_000)
    H = hessverify.hessian(problem)
    _holds_up_against_rop(problem, H)


def _live_rows(arch: Architecture) -> tuple[int, int]:
    """The most rows of ``M`` and of ``J`` the sweep keeps alive at once, when nobody else holds them."""
    arch_problem = Problem(arch, "sse", np.full(arch.n_params, 0.3), np.ones((2, arch.inputs)),
                           np.zeros((2, arch.outputs)), id="rows")
    q = kernel.quantities(ensure_well_posed(arch_problem))
    delta = deltas_from(arch, q.df, q.weights, q.g_y)
    m_refs: list[weakref.ref[np.ndarray]] = []
    j_refs: list[weakref.ref[np.ndarray]] = []
    most = (0, 0)
    for row in kernel.sweep(arch, q, delta):
        m_refs.append(weakref.ref(row.M))
        assert row.J is not None
        j_refs.append(weakref.ref(row.J))
        del row
        most = (max(most[0], sum(r() is not None for r in m_refs)), max(most[1], sum(r() is not None for r in j_refs)))
    return most


def test_a_chain_keeps_two_rows_whatever_its_depth() -> None:
    for depth in (3, 40):
        assert _live_rows(Architecture(1, tuple(Layer(1, "tanh") for _ in range(depth)))) == (2, 2)


def test_a_graph_keeps_the_rows_a_skip_connection_spans() -> None:
    # layer 5 reads 4 and 1: at layer 1 the M rows of 2..5 are read again (M_{5 j} for j between, from row j),
    # and the J rows of its children 2 and 5
    layers = (Layer(2, "tanh"),) + tuple(Layer(2, "tanh") for _ in range(3)) + (Layer(1, "identity", sources=(4, 1)),)
    assert _live_rows(Architecture(1, layers)) == (5, 3)


def test_the_chain_window_gives_the_same_q_as_the_full_rows() -> None:
    """``backward_second_order`` sweeps a chain with each row cut to the layer and its child: the same ``Q``."""
    case = load("tanh-6-12-8-2")
    arch = case.architecture
    q = kernel.quantities(ensure_well_posed(case))
    _, Q = kernel.backward_second_order(arch, q)
    delta = deltas_from(arch, q.df, q.weights, q.g_y)
    for row in kernel.sweep(arch, q, delta, full=True, jacobians=False):
        np.testing.assert_allclose(Q[row.layer], row.Q, rtol=1e-13, atol=0)
