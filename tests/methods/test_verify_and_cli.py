"""The new methods inside ``verify_problem`` and ``hessverify hessian``."""

from __future__ import annotations

import numpy as np
import pytest

import hessverify
from hessverify.cli import main
from hessverify.engine.compare import APPROXIMATION_NOTE
from hessverify.engine.registry import METHODS

from .conftest import CASES, load

NEW_EXACT = ["rop", "pairwise", "block_diagonal", "diagonal"]
APPROXIMATIONS = ["becker_lecun", "gauss_newton", "fisher"]


def test_registry_roles_and_kinds() -> None:
    kinds = {name: (METHODS[name].role, METHODS[name].kind) for name in NEW_EXACT + APPROXIMATIONS}
    assert kinds == {
        "rop": ("method", "matrix"), "pairwise": ("method", "matrix"),
        "block_diagonal": ("method", "blocks"), "diagonal": ("method", "vector"),
        "becker_lecun": ("approximation", "vector"), "gauss_newton": ("approximation", "matrix"),
        "fisher": ("approximation", "matrix"),
    }


@pytest.mark.parametrize("name", ["tanh-6-12-8-2", "relu-3-5-2", "nobias-2-3-2-tanh-sigmoid"])
def test_every_exact_method_passes_against_every_reference(name: str) -> None:
    results = hessverify.verify_problem(load(name))
    seen = {(c.method, c.reference) for c in results if c.bound_kind != "approximation"}
    assert {(m, r) for m in NEW_EXACT for r in ("autograd", "fd")} <= seen
    failed = [f"{c.method} vs {c.reference}: {c.worst_entry}" for c in results if not c.passed]
    assert not failed, failed


def test_partial_methods_are_compared_on_their_own_entries() -> None:
    case = load("xor-2-2-1-sigmoid")
    res = {(c.method, c.reference): c for c in hessverify.verify_problem(case, ["diagonal", "block_diagonal"],
                                                                          ["autograd"])}
    d = res[("diagonal", "autograd")]
    assert d.extra["compared_entries"] == "diagonal" and d.worst_entry.row == d.worst_entry.col
    b = res[("block_diagonal", "autograd")]
    layer = case.architecture.layer_of_param
    names = case.param_names
    assert layer[names.index(b.worst_entry.row)] == layer[names.index(b.worst_entry.col)]


def test_a_wrong_diagonal_fails_naming_the_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from hessverify import registry

    case = load("xor-2-2-1-sigmoid")
    good = METHODS["diagonal"].fn

    def broken(problem: hessverify.Problem) -> np.ndarray:
        d = good(problem)
        d[case.architecture.param_index("W2[0,1]")] *= 1 + 1e-9
        return d

    monkeypatch.setitem(registry.METHODS, "diagonal", replace(METHODS["diagonal"], fn=broken))
    (c,) = hessverify.verify_problem(case, ["diagonal"], ["autograd"])
    assert not c.passed and c.failing_entries == 1
    assert (c.worst_entry.row, c.worst_entry.col) == ("W2[0,1]", "W2[0,1]")


def test_approximations_are_reported_not_failed() -> None:
    case = load("tanh-6-12-8-2")
    approx = [c for c in hessverify.verify_problem(case, references=["autograd"]) if c.bound_kind == "approximation"]
    assert sorted(c.method for c in approx) == sorted(APPROXIMATIONS)
    for c in approx:
        assert c.passed and c.reference == "backprop" and c.extra["approximation"] is True
        assert c.note.startswith(APPROXIMATION_NOTE)
        assert c.max_abs_error > 0  # on this case each really is an approximation


@pytest.mark.parametrize("name", list(METHODS))
def test_cli_hessian_writes_every_method(name: str, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "h.npy"
    assert main(["hessian", str(CASES["xor-2-2-1-sigmoid"]), "--method", name, "--out", str(out)]) == 0
    saved = np.load(out)
    W = 9
    assert saved.shape == ((W,) if METHODS[name].kind == "vector" else (W, W))
    assert np.all(np.isfinite(saved))


def test_cli_blocks_as_npz(tmp_path) -> None:
    out = tmp_path / "b.npz"
    assert main(["hessian", str(CASES["tanh-6-12-8-2"]), "--method", "block_diagonal", "--out", str(out)]) == 0
    with np.load(out) as z:
        assert sorted(z.files) == ["layer1", "layer2", "layer3"]
        blocks = hessverify.hessian(load("tanh-6-12-8-2"), "block_diagonal")
        for i, b in enumerate(blocks, start=1):
            assert np.array_equal(z[f"layer{i}"], b)


def test_cli_npz_for_a_vector_is_a_usage_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["hessian", str(CASES["xor-2-2-1-sigmoid"]), "--method", "diagonal", "--out", str(tmp_path / "d.npz")])
    assert rc == 2
    assert "must end in .npy" in capsys.readouterr().err
