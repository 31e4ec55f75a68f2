"""Property tests: on random small networks every exact method agrees with backprop, within the derived bound."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hessverify
from hessverify.io.cases import seeded_data, seeded_params
from hessverify.methods import backprop, block_diagonal, diagonal, gauss_newton, pairwise, rop
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.forward import forward
from hessverify.model.losses import LOSSES
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem

from .conftest import assert_within, exact_bound, matvec_bound, psd_floor

# relu is left out: a random point may put a net input exactly on the kink, where there is no Hessian
SMOOTH = sorted(a for a in ACTIVATIONS if a != "relu")


@st.composite
def problems(draw: st.DrawFn) -> Problem:
    depth = draw(st.integers(1, 3))
    layers = tuple(
        Layer(draw(st.integers(1, 4)), draw(st.sampled_from(SMOOTH)), draw(st.booleans())) for _ in range(depth)
    )
    arch = Architecture(draw(st.integers(1, 3)), layers)
    loss = draw(st.sampled_from(sorted(LOSSES)))
    seed = draw(st.integers(0, 2**16))
    x, t = seeded_data(arch, loss, seed, draw(st.integers(1, 5)))
    params = seeded_params(arch, seed, draw(st.sampled_from([0.3, 1.0, 2.0])))
    return Problem(arch, loss, params, x, t, draw(st.sampled_from(["sum", "mean"])), id="random")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_exact_methods_agree_with_backprop(case: Problem) -> None:
    H = backprop.hessian(case)
    B = exact_bound(case)
    assert_within("rop", case, rop.hessian(case), H, B)
    assert_within("pairwise", case, pairwise.hessian(case), H, B)
    assert_within("diagonal", case, diagonal.diagonal(case), np.diag(H), np.diag(B))
    for blk, got in zip(case.architecture.blocks, block_diagonal.blocks(case), strict=True):
        assert_within(f"block {blk.layer}", case, got, H[blk.slice, blk.slice], B[blk.slice, blk.slice])
    v = np.linspace(-1.0, 1.0, case.n_params)
    assert_within("hvp", case, hessverify.hvp(case, v), H @ v, matvec_bound(case, H, v))


@settings(max_examples=30, deadline=None)
@given(problems())
def test_ggn_is_psd_and_exact_at_zero_residual(case: Problem) -> None:
    G = gauss_newton.hessian(case)
    assert float(np.linalg.eigvalsh(G)[0]) >= -psd_floor(case, G)  # every loss in the table is convex
    from dataclasses import replace

    sse = replace(case, loss="sse")
    zero = replace(sse, targets=forward(sse).y.copy())
    assert_within("GGN at zero residual", zero, gauss_newton.hessian(zero), backprop.hessian(zero), exact_bound(zero))
