"""Tests of hessverify.check: the three contracts, lists and strategies, readable failures."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import hessverify
from hessverify import FunctionUnderTestError, Problem, UsageError, assert_hessian_close, check
from hessverify.checking.strategies import problems
from hessverify.methods import backprop

CASE = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")


def perturbed(p: Problem) -> np.ndarray:
    """backprop's Hessian with one wrong entry pair, W2[0,1] x W1[1,1] (a symmetric bug)."""
    H = backprop.hessian(p)
    i, j = p.architecture.param_index("W2[0,1]"), p.architecture.param_index("W1[1,1]")
    H[i, j] += 1e-9
    H[j, i] += 1e-9
    return H


def test_a_correct_hessian_passes_against_every_reference() -> None:
    result = check(lambda p: hessverify.hessian(p, "autograd"), CASE)
    assert result.passed and bool(result)
    assert [c.reference for c in result.comparisons] == ["backprop", "autograd", "fd"]
    assert set(result.bounds) == {"backprop", "autograd", "fd"} and "gamma" in result.bounds["autograd"]


def test_a_wrong_entry_is_named_by_its_parameters() -> None:
    result = check(perturbed, [CASE], against=("backprop",))
    assert not result.passed and result.problem is CASE
    w = result.failures[0].worst_entry
    assert {w.row, w.col} == {"W2[0,1]", "W1[1,1]"}
    assert w.abs_error == pytest.approx(1e-9, rel=1e-3) and w.bound < 1e-12
    assert "W2[0,1]" in result.summary() and "bound" in result.summary()


def test_hvp_and_diagonal_contracts() -> None:
    assert check(lambda p, v: backprop.hessian(p) @ v, CASE, returns="hvp", against=("autograd",)).passed
    assert check(lambda p: np.diag(backprop.hessian(p)), CASE, returns="diagonal", against=("fd",)).passed
    # the diagonal of the perturbed Hessian is untouched, its off-diagonal entries are not
    assert check(lambda p: np.diag(perturbed(p)), CASE, returns="diagonal").passed
    assert not check(lambda p, v: perturbed(p) @ v, CASE, returns="hvp", against=("backprop",)).passed


def test_a_wrong_shape_or_an_exception_is_the_functions_failure_not_a_crash() -> None:
    with pytest.raises(FunctionUnderTestError, match=r"expected \(9, 9\)") as bad_shape:
        check(lambda p: np.zeros((2, 2)), CASE, against=("backprop",))
    assert bad_shape.value.exit_code == 5 and bad_shape.value.problem is CASE
    with pytest.raises(FunctionUnderTestError, match="ZeroDivisionError") as raised:
        check(lambda p: 1 / 0, CASE, against=("backprop",))
    # forked, the traceback names this file; spawned (another test loaded JAX or TensorFlow in this process), the
    # function was sent as code, and its frame is the sent code's
    assert ("test_check.py" in raised.value.where or "<dynamic-code>" in raised.value.where)


def test_a_strategy_shrinks_to_a_minimal_problem() -> None:
    def drops_every_second_derivative_of_f(p: Problem) -> np.ndarray:
        # wrong wherever an activation curves: the minimal witness is one curved unit
        H = backprop.hessian(p)
        return H if all(a in ("identity", "relu") for a in p.activations) else H + 1.0

    result = check(drops_every_second_derivative_of_f, problems(kinds=False), against=("backprop",), max_examples=50, seed=3)
    assert not result.passed and result.problem is not None
    # one input, one pattern, one unit a layer: the exact network can vary with the shrinker's state
    arch = result.problem.architecture
    assert arch.inputs == 1 and result.problem.n_patterns == 1 and all(lay.units == 1 for lay in arch.layers)
    assert hessverify.parse_case(result.problem.to_toml()).n_params == result.problem.n_params


def test_assert_hessian_close_raises_a_readable_error(tmp_path) -> None:
    """The message names the entry, the bound and where the case file is; it does not carry the case file."""
    assert_hessian_close(backprop.hessian, CASE, against=("autograd",))
    with pytest.raises(AssertionError, match=r"(?s)W2\[0,1\].*bound") as raised:
        assert_hessian_close(perturbed, CASE, against=("autograd",), case_dir=tmp_path)
    message = str(raised.value)
    assert "[params]" not in message and "values = [" not in message and len(message.splitlines()) < 10
    (written,) = tmp_path.iterdir()
    assert str(written) in message
    assert np.array_equal(hessverify.load_case(written).params, CASE.params)
    assert raised.value.result.case_toml == written.read_text()  # type: ignore[attr-defined]


def test_a_failure_says_which_blocks_hold_the_error() -> None:
    """perturbed() changes one W2 x W1 entry and its mirror: all of the error is in that block pair."""
    result = check(perturbed, CASE, against=("autograd",))
    assert "by block W2 x W1 (100%)" in result.where
    assert "by block W2 x W1 (100%)" in result.summary()
    assert result.localisations["autograd"].top[0].abs_error == pytest.approx(1e-9, rel=1e-3)
    assert result.case_toml is not None and hessverify.parse_case(result.case_toml).n_params == CASE.n_params


def test_a_strategy_that_passes_gives_its_largest_margin_and_precision() -> None:
    result = check(lambda p: hessverify.hessian(p, "autograd"), problems(max_layers=2), against=("backprop", "fd"),
                   max_examples=5, seed=0)
    assert result.passed and result.n_problems == 5
    # the worst comparison against each reference, over every example: a margin to show
    assert sorted(c.reference for c in result.comparisons) == ["backprop", "fd"]
    worst = max(c.margin for c in result.comparisons)
    assert 0 <= worst <= 1
    summary = result.summary()
    assert "judged in float64" in summary and f"largest margin {worst:.2g}" in summary


def test_the_summary_says_what_shrinking_dropped() -> None:
    """From 6-12-8-2 (three layers with biases, 32 patterns) to 2-3(nobias)-2 (5 patterns), counted by hand."""
    big = hessverify.load_case("cases/tanh-6-12-8-2.toml")
    small = hessverify.load_case("cases/nobias-2-3-2-tanh-sigmoid.toml")
    result = hessverify.CheckResult(False, 3, "hessian", ("autograd",), small, shrunk_from=big)
    assert result.shrinking.startswith("dropped 1 layer, 2 bias vectors, 17 units, 4 inputs, 27 patterns from")
    residual = hessverify.load_case("cases/graph-residual-mlp-2-4-4-4-1-tanh.toml")
    result = hessverify.CheckResult(False, 3, "hessian", ("autograd",), CASE, shrunk_from=residual)
    assert result.shrinking.startswith("dropped 2 layers, 2 bias vectors, 10 units, 2 patterns, 2 skip connections")
    assert "shrinking: dropped 2 layers" in result.summary()
    assert hessverify.CheckResult(False, 1, "hessian", ("autograd",), CASE).shrinking == ""


def test_the_fixture_is_the_same_function_with_the_plugins_timeout(hessverify_assert_close: object) -> None:
    assert hessverify_assert_close.func is assert_hessian_close  # type: ignore[attr-defined]
    assert hessverify_assert_close.keywords == {"timeout": 60.0}  # type: ignore[attr-defined]


def test_bad_arguments_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="returns="):
        check(backprop.hessian, CASE, returns="jacobian")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="unknown method 'jax'"):
        check(backprop.hessian, CASE, against=("jax",))


# -- shrinking: whole layers, fresh descriptions -------------------------------------

def _dead_identity_layer_problem() -> Problem:
    """1-1(identity,nobias)-1(sigmoid,nobias)-1(identity,nobias), the first layer dead (weight 0)."""
    from hessverify.model.network import Architecture, Layer

    arch = Architecture(1, (Layer(1, "identity", False), Layer(1, "sigmoid", False), Layer(1, "identity", False)))
    return Problem(arch, "sse", np.array([0.0, 0.7, 1.3]), np.array([[1.0]]), np.array([[0.5]]), "sum",
                   id="generated-1-1-1-1", description="drawn by hessverify.strategies: 1-1-1-1")


def _last_entry_wrong(p: Problem) -> np.ndarray:
    H = backprop.hessian(p)
    H[-1, -1] += 1e-3
    return H


def test_the_shrinker_removes_a_dead_identity_layer() -> None:
    from hessverify.checking.check import check_problem, reduce_problem

    problem = _dead_identity_layer_problem()
    comps = check_problem(_last_entry_wrong, problem, against=("autograd",))
    assert not all(c.passed for c in comps)
    reduced, comps, calls = reduce_problem(problem, comps, lambda p: check_problem(
        _last_entry_wrong, p, against=("autograd",)))
    assert calls > 0 and not all(c.passed for c in comps)
    # the dead identity layer is gone: what is left starts with the sigmoid
    assert reduced.architecture.depth < 3
    assert reduced.architecture.layers[0].activation != "identity" or reduced.architecture.depth == 1


def test_removing_an_identity_layer_keeps_the_function() -> None:
    from hessverify.checking.check import _smaller
    from hessverify.model.forward import forward

    problem = _dead_identity_layer_problem()
    problem = replace(problem, params=np.array([0.4, 0.7, 1.3]))
    first = next(_smaller(problem))  # the first candidate drops layer 1 (identity) into layer 2
    assert first.architecture.depth == 2
    np.testing.assert_allclose(forward(first).y, forward(problem).y, rtol=1e-15)


def test_reduced_problems_carry_no_stale_description() -> None:
    from hessverify.checking.check import _smaller

    for smaller in _smaller(_dead_identity_layer_problem()):
        assert smaller.architecture.describe() in smaller.description
        assert "drawn by" not in smaller.description


def test_an_approximation_cannot_be_checked_against() -> None:
    with pytest.raises(UsageError, match="gauss_newton cannot be a reference"):
        check(backprop.hessian, CASE, against=("gauss_newton",))


def test_blocks_are_compared_on_the_layer_blocks_only() -> None:
    def blocks(p):
        H = backprop.hessian(p)
        return [H[b.slice, b.slice] for b in p.architecture.blocks]

    assert check(blocks, CASE, returns="blocks", against=("autograd",))

    def off(p):
        out = blocks(p)
        out[0] = out[0] * 1.001
        return out

    result = check(off, CASE, returns="blocks", against=("autograd",))
    assert not result.passed and result.failures[0].worst_entry.row.startswith(("W1", "b1"))
    with pytest.raises(FunctionUnderTestError, match="per-layer blocks"):
        check(lambda p: backprop.hessian(p), CASE, returns="blocks", against=("autograd",))
    with pytest.raises(FunctionUnderTestError, match="block 2"):
        check(lambda p: blocks(p)[:1] + [np.zeros((1, 1))], CASE, returns="blocks", against=("autograd",))


def test_ggn_is_held_to_both_gauss_newton_references() -> None:
    from hessverify.methods import gauss_newton

    result = check(gauss_newton.hessian, CASE, returns="ggn")
    assert result and result.against == ("gauss_newton", "autograd")
    # the Hessian is not the GGN at XOR's point (the f'' terms): caught
    assert not check(backprop.hessian, CASE, returns="ggn")
    with pytest.raises(UsageError, match="Gauss-Newton reference"):
        check(gauss_newton.hessian, CASE, returns="ggn", against=("fd",))


def test_a_float32_result_is_judged_by_float32_rounding() -> None:
    def float32_hessian(p):  # backprop's Hessian rounded to float32: off by float32's rounding only
        return backprop.hessian(p).astype(np.float32)

    assert not check(lambda p: backprop.hessian(p).astype(np.float64) * (1 + 2.0**-24), CASE, against=("autograd",))
    result = check(float32_hessian, CASE, against=("autograd",))  # the dtype says float32
    assert result and "judged in float32 (its rounding added to every bound)" in result.summary()
    assert result.comparisons[0].bound_kind == "rounding+float32"
    # the same numbers judged at float64 (precision= overrides the dtype) are a discrepancy
    assert not check(float32_hessian, CASE, against=("autograd",), precision="float64")
    with pytest.raises(UsageError, match="precision="):
        check(float32_hessian, CASE, precision="float8")


def test_float32_judging_still_catches_a_block_off_by_a_tenth_of_a_percent() -> None:
    def off(p):
        H = backprop.hessian(p)
        b = p.architecture.blocks[0].slice
        H[b, b] *= 1.001
        return H.astype(np.float32)

    result = check(off, CASE, against=("autograd",))
    assert not result and result.failures[0].worst_entry.row.startswith(("W1", "b1"))


def test_a_check_over_a_strategy_draws_its_progress_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal a long check shows its examples, then its shrinking, on standard error (off under pytest
    unless asked: HESSVERIFY_PROGRESS=1)."""
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stderr = Terminal()
    monkeypatch.setattr("sys.stderr", stderr)
    monkeypatch.setenv("HESSVERIFY_PROGRESS", "1")
    result = check(lambda p: backprop.hessian(p) + 1.0, problems(max_layers=1), against=("backprop",),
                   max_examples=5, seed=0)
    assert not result.passed
    drawn = stderr.getvalue()
    assert "checking hessian on random problems" in drawn and "shrinking it" in drawn
