"""The per-case analysis: inertia with its zero threshold, approximations handled generically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hessverify
from hessverify.engine.registry import METHODS, Method
from hessverify.reports.analysis import analyse_case, as_matrix, inertia, zero_threshold
from hessverify.engine.run import Run

ROOT = Path(__file__).resolve().parents[2]


def _case(name: str) -> hessverify.Problem:
    return hessverify.load_case(ROOT / "cases" / f"{name}.toml")


def test_saddle_has_both_signs_and_zeros() -> None:
    p = _case("saddle-2-3-1-tanh-zero")
    a = analyse_case(Run.from_matrices(p, [], None))
    s = a.spectrum
    assert s is not None
    assert (s.positive, s.negative, s.zero) == (4, 3, 6)
    assert s.kind == "indefinite"
    assert s.positive + s.negative + s.zero == p.n_params
    # a saddle because the gradient vanishes here, by autograd's independent gradient
    from hessverify.references.autograd_ref import gradient as autograd_gradient

    assert np.linalg.norm(autograd_gradient(p)) < 1e-12
    assert a.grad_norm is not None and a.grad_norm < 1e-12
    assert a.point.endswith(": a saddle")


def test_indefinite_away_from_a_stationary_point_is_not_called_a_saddle() -> None:
    from hessverify.references.autograd_ref import gradient as autograd_gradient

    p = _case("xor-2-2-1-sigmoid")
    a = analyse_case(Run.from_matrices(p, [], None))
    assert a.spectrum is not None and a.spectrum.negative and a.spectrum.positive
    assert np.linalg.norm(autograd_gradient(p)) > 1e-3
    assert "saddle" not in a.point.replace("so not a saddle", "")
    assert a.point.startswith("indefinite; not a stationary point (|g| = ")
    assert a.to_dict()["point"] == a.point


@pytest.mark.parametrize("diag, grad, words", [
    ([1.0, 2.0], 0.0, "a minimum"), ([-1.0, -2.0], 0.0, "a maximum"), ([-1.0, 0.0], 0.0, "degenerate"),
    ([1.0, 2.0], 0.5, "so not a minimum or maximum"), ([-1.0, 2.0], 1e-9, "a saddle")])
def test_point_words_need_the_gradient(diag: list[float], grad: float, words: str) -> None:
    from hessverify.reports.analysis import point_words

    assert words in point_words(inertia(np.diag(diag), 1e-12), grad)


def test_zero_threshold_covers_rounding_and_solver() -> None:
    p = _case("xor-2-2-1-sigmoid")
    H = hessverify.hessian(p)
    ev = np.linalg.eigvalsh(H)
    tau = zero_threshold(p, ev)
    assert tau > 0
    assert tau >= p.n_params * 2.0**-53 * np.abs(ev).max()
    assert tau < np.abs(ev).min()  # xor's Hessian here is nonsingular: nothing counted zero
    assert inertia(H, tau).zero == 0


def test_threshold_decides_the_count() -> None:
    H = np.diag([-2.0, -1e-20, 0.0, 1e-20, 3.0])
    i = inertia(H, 1e-12)
    assert (i.positive, i.negative, i.zero) == (1, 1, 3)


def test_as_matrix_kinds() -> None:
    p = _case("xor-2-2-1-sigmoid")
    H = hessverify.hessian(p)
    assert np.array_equal(as_matrix(p, "vector", np.diag(H)), np.diag(np.diag(H)))
    blocks = [H[b.slice, b.slice] for b in p.architecture.blocks]
    D = as_matrix(p, "blocks", blocks)
    b1, b2 = p.architecture.blocks
    assert np.array_equal(D[b1.slice, b1.slice], H[b1.slice, b1.slice])
    assert not D[b2.slice, b1.slice].any()
    with pytest.raises(ValueError, match="layer 1 block should be"):
        as_matrix(p, "blocks", [np.zeros((2, 2)), blocks[1]])


def test_approximations_are_found_in_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    p = _case("xor-2-2-1-sigmoid")
    H = hessverify.hessian(p)
    monkeypatch.setitem(METHODS, "twice", Method("twice", lambda q: 2 * hessverify.hessian(q), "approximation",
                                                 "matrix", "twice the Hessian (test)"))
    monkeypatch.setitem(METHODS, "short", Method("short", lambda q: np.ones(3), "approximation", "vector",
                                                 "a diagonal of the wrong length (test)"))
    a = analyse_case(Run.from_matrices(p, [], {"autograd": H}))
    by_name = {x.name: x for x in a.approximations}
    assert by_name["twice"].rel_frobenius_error == pytest.approx(1.0)
    assert by_name["twice"].cosine == pytest.approx(1.0)
    assert "unusable result: a diagonal needs 9 entries" in by_name["short"].error


def test_no_approximations_registered_means_none_reported() -> None:
    assert not [m for m in METHODS.values() if m.role == "approximation" and m.name in {"twice", "short"}]
    a = analyse_case(Run.from_matrices(_case("xor-2-2-1-sigmoid"), [], None))
    assert len(a.approximations) == len([m for m in METHODS.values() if m.role == "approximation"])


def _record(p: hessverify.Problem, method: str, reference: str, passed: bool, bound_kind: str = "rounding"):
    from hessverify.engine.compare import Comparison, WorstEntry

    worst = WorstEntry(p.param_names[0], p.param_names[0], 1.0, 1.0, 0.0, 1.0)
    return Comparison(p.id, method, reference, passed, 0.0, 0.0, 0.0, 1.0, bound_kind, 0.0 if passed else 2.0, 0.0,
                      worst)


def test_a_diagonal_method_is_judged_on_its_diagonal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A "vector" exact method computes the diagonal; the rest of the matrix is not its error."""
    from hessverify.reports.figures import heatmaps_svg

    p = _case("xor-2-2-1-sigmoid")
    H = hessverify.hessian(p)
    d = np.diag(H).copy()
    k = p.architecture.param_index("W1[1,1]")
    d[k] *= 2.0
    monkeypatch.setitem(METHODS, "diag-exact", Method("diag-exact", lambda q: d, "method", "vector", "test"))
    a = analyse_case(Run.from_matrices(p, [_record(p, "diag-exact", "autograd", passed=False)], {"diag-exact": d, "autograd": H}))
    assert np.isnan(a.matrices["diag-exact"][0, 1]) and a.matrices["diag-exact"][k, k] == d[k]
    loc = a.localisations[("diag-exact", "autograd")]
    assert loc.shape == "diagonal" and loc.top[0].row == "W1[1,1]"
    assert a.exact_name == "autograd"
    assert heatmaps_svg(a)  # NaN entries are drawn grey, not refused


def test_approximation_records_stay_out_of_the_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    from hessverify.reports import markdown

    p = _case("xor-2-2-1-sigmoid")
    monkeypatch.setitem(METHODS, "approx", Method("approx", lambda q: hessverify.hessian(q), "approximation",
                                                  "matrix", "test"))
    results = [_record(p, "backprop", "autograd", True), _record(p, "approx", "backprop", True, "approximation")]
    md = markdown(results, [], [p], [analyse_case(Run.from_matrices(p, results, None))])
    assert "| case | backprop |" in md
    assert "| approx | backprop |" not in md
    assert "| approx | matrix | " in md  # it is in the approximations table instead


def test_the_rings_use_exactly_the_bound_that_decided() -> None:
    """The bound kept for a comparison is the one it was decided by: fd's includes its own estimate."""
    import hessverify
    from hessverify.engine.compare import BOUND_KEY
    from hessverify.references.finite_differences import FD_SAFETY
    from hessverify.reports.analysis import analyse_case

    case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    kept: dict = {}
    comps = hessverify.verify_problem(case, methods=["backprop", "fd"], references=["autograd", "fd", "symbolic"],
                                      matrices=kept)
    a = analyse_case(Run.from_matrices(case, comps, kept))
    for c in comps:
        key = (c.method, c.reference)
        if key in a.bounds:
            np.testing.assert_array_equal(a.bounds[key], kept[BOUND_KEY.format(method=c.method, reference=c.reference)])
            # the worst entry's bound in the comparison is the ringed bound at that entry
            i, j = case.param_names.index(c.worst_entry.row), case.param_names.index(c.worst_entry.col)
            assert a.bounds[key][i, j] == c.worst_entry.bound
    fd_bound = a.bounds[("backprop", "fd")]
    assert np.all(fd_bound >= FD_SAFETY * kept["fd.error"])
    assert ("fd", "autograd") in a.bounds and np.all(a.bounds[("fd", "autograd")] >= FD_SAFETY * kept["fd.error"])
