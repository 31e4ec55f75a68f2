"""Localisation: planted errors of each shape must be named, with the right block, in words.

Each test plants one kind of bug in an exact Hessian and checks the shape,
the words that open the description and the block or parameters named.
The comparison threshold is the real one: the rounding bound against
autograd, and fd's own error estimate against finite differences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hessverify
from hessverify.engine.bounds import rounding_bound
from hessverify.engine.compare import bound_for
from hessverify.references import finite_differences
from hessverify.reports.localise import SHAPE_PHRASES, Layout, localise

ROOT = Path(__file__).resolve().parents[2]
CASES = ["xor-2-2-1-sigmoid", "gelu-silu-3-4-3-2-bce", "nobias-2-3-2-tanh-sigmoid"]


@pytest.fixture(scope="module", params=CASES)
def setting(request: pytest.FixtureRequest) -> tuple[hessverify.Problem, np.ndarray, np.ndarray, np.ndarray]:
    """(problem, exact Hessian, autograd reference, rounding bound)."""
    p = hessverify.load_case(ROOT / "cases" / f"{request.param}.toml")
    return p, hessverify.hessian(p), hessverify.hessian(p, "autograd"), rounding_bound(p)


def _index(p: hessverify.Problem, name: str) -> int:
    return p.architecture.param_index(name)


def test_no_error_is_no_error(setting) -> None:
    p, H, R, B = setting
    loc = localise(p, H, R, B)
    assert loc.shape == "none" and loc.over == 0
    assert loc.words.startswith(SHAPE_PHRASES["none"])


def test_whole_block_names_the_tensor_pair(setting) -> None:
    p, H, R, B = setting
    b1, b2 = p.architecture.blocks[:2]
    A = H.copy()
    A[b2.w_slice, b1.w_slice] += 0.05
    A[b1.w_slice, b2.w_slice] += 0.05
    loc = localise(p, A, R, B)
    assert loc.shape == "block"
    assert loc.words.startswith("one whole block: W2 x W1 and its mirror W1 x W2")
    assert "layer 2 x layer 1" in loc.words
    assert loc.blocks[0].name == "W2 x W1" and loc.blocks[0].share == pytest.approx(1.0)


def test_block_scaled_by_a_constant_says_so(setting) -> None:
    p, H, R, B = setting
    b2 = p.architecture.blocks[1]
    A = H.copy()
    A[b2.w_slice, b2.w_slice] *= 3.0
    loc = localise(p, A, R, B)
    assert loc.shape == "block" and "W2 x W2" in loc.words
    assert loc.factor == pytest.approx(3.0)
    assert "times 3" in loc.words


def test_row_and_column_names_the_parameter(setting) -> None:
    p, H, R, B = setting
    k = _index(p, "W1[1,0]")
    v = np.random.default_rng(0).normal(size=p.n_params)
    A = H.copy()
    A[k, :] += v
    A[:, k] += v
    loc = localise(p, A, R, B)
    assert loc.shape == "row_column"
    assert loc.words.startswith("a row and column: the rows and columns of W1[1,0]")
    assert loc.params == ("W1[1,0]",)


def test_diagonal_only(setting) -> None:
    p, H, R, B = setting
    A = H.copy()
    A[np.diag_indices_from(A)] += 0.01
    loc = localise(p, A, R, B)
    assert loc.shape == "diagonal"
    assert loc.words.startswith("only the diagonal")
    assert all(t.row == t.col for t in loc.top)


def test_asymmetry_names_the_wrong_triangle(setting) -> None:
    p, H, R, B = setting
    b1, b2 = p.architecture.blocks[:2]
    A = H.copy()
    A[b2.w_slice, b1.w_slice] += 0.05  # the mirror W1 x W2 is left right
    loc = localise(p, A, R, B)
    assert loc.shape == "asymmetry"
    assert loc.words.startswith("an asymmetry")
    assert "the error is in block W2 x W1 while its mirror W1 x W2 agrees" in loc.words


@pytest.mark.parametrize(("factor", "hint"), [(2.0, "missing factor 1/2"), (-1.0, "sign error"),
                                               (1.7, "")])
def test_everything_scaled(setting, factor: float, hint: str) -> None:
    p, H, R, B = setting
    loc = localise(p, factor * H, R, B)
    assert loc.shape == "scaled"
    assert loc.words.startswith("everything scaled by a constant factor")
    assert loc.factor == pytest.approx(factor)
    assert hint in loc.words


def test_mean_for_sum_is_named_as_one_over_n(setting) -> None:
    p, H, R, B = setting
    loc = localise(p, H / p.n_patterns, R, B)
    assert loc.shape == "scaled"
    assert f"1/N with N = {p.n_patterns}" in loc.words


def test_scattered_entries(setting) -> None:
    p, H, R, B = setting
    A = H.copy()
    names = p.param_names
    W = p.n_params
    picks = [(0, W - 1), (1, 2), (W - 3, W - 2)]
    for i, j in picks:  # symmetric, off the diagonal, no row in common, within and across layers
        A[i, j] += 0.1
        A[j, i] += 0.1
    loc = localise(p, A, R, B)
    assert loc.shape == "scattered"
    named = {(t.row, t.col) for t in loc.top} | {(t.col, t.row) for t in loc.top}
    assert all((names[i], names[j]) in named for i, j in picks)


def test_nonfinite_entries_are_named(setting) -> None:
    p, H, R, B = setting
    A = H.copy()
    A[0, 1] = np.nan
    loc = localise(p, A, R, B)
    assert loc.shape == "nonfinite"
    assert f"{p.param_names[0]} x {p.param_names[1]}" in loc.words


def test_against_finite_differences_with_fds_own_bound() -> None:
    """fd differs from the exact Hessian everywhere by ~1e-10; only the planted block is over fd's bound."""
    p = hessverify.load_case(ROOT / "cases" / "gelu-silu-3-4-3-2-bce.toml")
    H = hessverify.hessian(p)
    R, err = finite_differences.hessian_with_error(p)
    bound, _ = bound_for(p, "fd", reference_error=err)
    b2, b3 = p.architecture.blocks[1:3]
    A = H.copy()
    A[b3.b_slice, b2.b_slice] *= 1.01
    A[b2.b_slice, b3.b_slice] *= 1.01
    loc = localise(p, A, R, bound)
    assert loc.shape == "block"
    assert loc.words.startswith("one whole block: b3 x b2")


def test_default_threshold_without_a_bound(setting) -> None:
    p, H, R, _ = setting
    assert localise(p, H, R).shape == "none"
    assert localise(p, 2 * H, R).shape == "scaled"


def test_wrong_shapes_are_refused() -> None:
    p = hessverify.load_case(ROOT / "cases" / "xor-2-2-1-sigmoid.toml")
    with pytest.raises(ValueError, match=r"needs two \(9, 9\) matrices"):
        localise(p, np.zeros((3, 3)), np.zeros((9, 9)))


def test_entries_the_reference_cannot_vouch_for_are_left_out(setting) -> None:
    """An infinite bound or a NaN reference entry (fd across a kink) is unchecked, as in compare."""
    p, H, R, B = setting
    b1, b2 = p.architecture.blocks[:2]
    A = H.copy()
    A[b2.w_slice, b1.w_slice] += 0.05
    A[b1.w_slice, b2.w_slice] += 0.05
    A[0, 0] += 1.0  # would spoil the block, but the reference is not trusted there
    bound = B.copy()
    bound[0, 0] = np.inf
    R2 = R.copy()
    R2[1, 1] = np.nan
    loc = localise(p, A, R2, bound)
    assert loc.shape == "block" and loc.words.startswith("one whole block: W2 x W1")


def test_cross_layer_blocks_only(setting) -> None:
    p, H, R, B = setting
    A = H.copy()
    for i, b in enumerate(p.architecture.blocks):
        for c in p.architecture.blocks[:i]:  # every pair of two different layers, both triangles
            A[b.slice, c.slice] *= 1.1
            A[c.slice, b.slice] *= 1.1
    loc = localise(p, A, R, B)
    if p.architecture.depth == 2:
        assert loc.shape == "block"  # two layers have one cross-layer pair: that is one whole block
        return
    assert loc.shape == "cross_layer"
    assert loc.words.startswith("only the cross-layer blocks")
    assert "layer pairs layer 1 x layer 1, layer 2 x layer 2" in loc.words


def test_within_layer_blocks_only(setting) -> None:
    p, H, R, B = setting
    A = H.copy()
    for b in p.architecture.blocks:
        A[b.slice, b.slice] *= 1.1
        A[b.offset, b.offset] = H[b.offset, b.offset]  # not a pure diagonal or whole-matrix scale
    A[1, 0] = H[1, 0]
    A[0, 1] = H[0, 1]
    loc = localise(p, A, R, B)
    assert loc.shape == "within_layer"
    assert loc.words.startswith("only the within-layer blocks")


@pytest.mark.parametrize(("bug", "shape", "words"), [
    ("dropped_cross_layer_term", "cross_layer", "only the cross-layer blocks"),
    ("wrong_sign_cross_term", "cross_layer", "only the cross-layer blocks"),
    ("upper_triangle_only", "asymmetry", "an asymmetry"),
    ("tiny_error_in_one_block", "block", "one whole block: layer 2 x layer 1"),
    ("bias_input_is_first_input", "row_column", "a row and column: the rows and columns of b1[0], b1[1]"),
])
def test_bugs_from_the_catalogue_are_named(bug: str, shape: str, words: str) -> None:
    """Realistic bugs (hessverify.trust.mutants), not only planted patterns."""
    from hessverify.apps.trust.mutants import MUTANTS

    p = hessverify.load_case(ROOT / "cases" / "gelu-silu-3-4-3-2-bce.toml")
    loc = localise(p, MUTANTS[bug].fn(p), hessverify.hessian(p, "autograd"), rounding_bound(p))
    assert loc.shape == shape
    assert loc.words.startswith(words)


def _shares_by_definition(E2: np.ndarray, over: np.ndarray, groups: list[tuple[str, slice]]) -> list[tuple]:
    """Each unordered group pair with its mirror, one by one: ``(rows, cols, mass, over, size)``."""
    out = []
    for a, (ga, sa) in enumerate(groups):
        for gb, sb in groups[: a + 1]:
            mirror = sa != sb
            mass = E2[sa, sb].sum() + (E2[sb, sa].sum() if mirror else 0.0)
            n = int(over[sa, sb].sum() + (over[sb, sa].sum() if mirror else 0))
            if n or mass > 0:
                out.append((ga, gb, mass, n, (sa.stop - sa.start) * (sb.stop - sb.start) * (2 if mirror else 1)))
    return out


def test_the_block_shares_are_the_sums_over_each_pair_and_its_mirror() -> None:
    from hessverify.reports import localise as loc_module

    p = hessverify.load_case(ROOT / "cases" / "graph-dense-2-3-3-3-2-mean.toml")
    rng = np.random.default_rng(5)
    E = rng.standard_normal((p.n_params, p.n_params)) * (rng.random((p.n_params, p.n_params)) < 0.3)
    over = np.abs(E) > 1.0
    for level in ("tensor", "layer"):
        groups = loc_module._groups(p, level)
        got = loc_module._shares(E * E, over, groups)
        want = _shares_by_definition(E * E, over, groups)
        total = float((E * E).sum())
        assert len(got) == len(want)
        by_name = {(b.rows, b.cols): b for b in got}
        for rows, cols, mass, n, size in want:
            b = by_name[(rows, cols)]
            assert (b.over, b.size) == (n, size) and b.share == pytest.approx(mass / total, rel=1e-12)
        assert [b.share for b in got] == sorted((b.share for b in got), reverse=True)


def test_a_deep_network_is_localised_in_bounded_words() -> None:
    """600 layers (1 200 tensors, 720 000 tensor pairs): no loop over pairs, and the lists are cut short."""
    from hessverify.io.cases import seeded_data
    from hessverify.model.network import Architecture, Layer
    from hessverify.reports.localise import LISTED_PAIRS, NAMED

    arch = Architecture(1, tuple(Layer(1, "tanh") for _ in range(600)))
    x, t = seeded_data(arch, "sse", 0, 3)
    p = hessverify.Problem(arch, "sse", np.full(arch.n_params, 0.9), x, t, id="deep")
    H = hessverify.hessian(p)
    A = H * (1.0 + 1e-6 * np.random.default_rng(0).standard_normal(H.shape))
    loc = localise(p, (A + A.T) / 2, H)
    assert loc.shape == "scattered" and "more agree" in loc.words and len(loc.words) < 4000
    assert len(loc.blocks) <= LISTED_PAIRS + len([b for b in loc.blocks if b.over]) and NAMED < 100


def test_a_layer_kinds_tensors_are_named_by_their_own_labels() -> None:
    # a layer-norm network, a graph of layer kinds: each tensor (the norm's weight W2 and bias b2 too) is a group
    # of its own (a diagonal error there once indexed past the tensor list: the groups came from the dense blocks)
    p = hessverify.load_case(ROOT / "cases" / "layernorm-mlp-3-4-2-ce.toml")
    assert not p.architecture.is_dense
    t = p.architecture.layer_tensors(2)[0]
    H = hessverify.hessian(p)
    A = H.copy()
    k = t.offset
    A[k, k] += 0.05
    loc = localise(p, A, H, rounding_bound(p))
    assert loc.shape == "diagonal"
    assert f"in {t.label};" in loc.words
    assert loc.blocks[0].name == f"{t.label} x {t.label}"


def test_a_model_that_is_not_a_problem_is_localised_by_its_own_names() -> None:
    """An ``nn.Module`` judged by module references has no architecture: its layout is read off the entries'
    names (tensors) and their modules (layers), and a block error is found there as on a problem."""
    case = hessverify.load_case("cases/tanh-6-12-8-2.toml")
    blocks = case.architecture.blocks
    modules = np.concatenate([np.full(blk.size, i) for i, blk in enumerate(blocks)])
    # torch's names: module "1" owns "1.weight" and "1.bias", entries "1.weight[k,j]"
    names = [f"{blk.layer}.{'weight' if n.startswith('W') else 'bias'}{n[n.index('['):]}"
             for blk in blocks for n in case.param_names[blk.slice]]
    layout = Layout.of_names("model", names, modules)
    assert [t for t, _ in layout.tensors] == [f"{blk.layer}.{w}" for blk in blocks for w in ("weight", "bias")]
    assert layout.layers == tuple((str(blk.layer), blk.slice) for blk in blocks)
    H = hessverify.hessian(case)
    A = H.copy()
    w2 = layout.tensors[2][1]
    A[w2, w2] *= 1.01
    loc, by_problem = localise(layout, A, H), localise(case, A, H)
    assert loc.shape == by_problem.shape == "block" and loc.factor == pytest.approx(by_problem.factor)
    assert loc.head.startswith(f"{SHAPE_PHRASES['block']}: 2.weight x 2.weight, inside 2 x 2")
