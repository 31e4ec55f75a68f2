"""The ``certified`` reference: balls that hold the exact Hessian, narrow, and a verify that catches a planted bug."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import mpmath
import numpy as np
import pytest

import hessverify
from hessverify.cli import main
from hessverify.engine.bounds import chain_length, magnitude_hessian
from hessverify.engine.verify import verify_problem
from hessverify.errors import NotDifferentiableError
from hessverify.model import activations
from hessverify.model.network import Architecture, Layer
from hessverify.symbolic import reference

flint = pytest.importorskip("flint", reason="the certified reference needs python-flint (hessverify[certified])")

from hessverify.references import certified  # noqa: E402  (after the skip: it imports python-flint lazily anyway)

ACTIVATIONS = ["tanh", "sigmoid", "softplus", "gelu", "silu", "sin", "relu", "identity"]
LOSSES = ["sse", "cross_entropy", "binary_cross_entropy", "output"]


def _dyadic(x: flint.arb) -> Fraction:
    """An arb midpoint or radius (a binary float of any size) as an exact Fraction."""
    man, exp = x.man_exp()
    man, exp = int(man), int(exp)
    return Fraction(man << exp) if exp >= 0 else Fraction(man, 1 << -exp)


def _holds(ball: flint.arb, exact: Fraction) -> bool:
    return abs(_dyadic(ball.mid()) - exact) <= _dyadic(ball.rad())


def _held_out(seed: int, loss: str) -> hessverify.Problem:
    """A seeded network of three random activations (relu away from its kink) that no test was written for."""
    rng = np.random.default_rng(seed)
    acts = [str(a) for a in rng.choice(ACTIVATIONS, size=2)]
    outputs = 1 if loss == "binary_cross_entropy" else int(rng.integers(2, 4))
    arch = Architecture(int(rng.integers(1, 4)), (Layer(int(rng.integers(1, 4)), acts[0]),
                                                  Layer(int(rng.integers(1, 4)), acts[1]),
                                                  Layer(outputs, "identity" if loss != "output" else "tanh")))
    n = int(rng.integers(1, 5))
    x = rng.standard_normal((n, arch.inputs))
    if loss == "cross_entropy":
        t = rng.dirichlet(np.ones(outputs), size=n)
    elif loss == "binary_cross_entropy":
        t = rng.random((n, outputs))
    else:
        t = rng.standard_normal((n, outputs))
    return hessverify.Problem(arch, loss, rng.standard_normal(arch.n_params), x, t,
                              str(rng.choice(["sum", "mean"])), id=f"held-out-{seed}-{loss}")


def _random_linear(seed: int) -> hessverify.Problem:
    rng = np.random.default_rng(seed)
    sizes = [int(v) for v in rng.integers(1, 4, size=3)]
    arch = Architecture(sizes[0], tuple(Layer(u, "identity", bool(rng.random() < 0.7)) for u in sizes[1:]))
    n = int(rng.integers(1, 5))
    return hessverify.Problem(arch, str(rng.choice(["sse", "output"])), rng.standard_normal(arch.n_params),
                              rng.standard_normal((n, arch.inputs)), rng.standard_normal((n, arch.outputs)),
                              str(rng.choice(["sum", "mean"])), id=f"linear-{seed}")


@pytest.mark.parametrize("seed", range(4))
def test_the_balls_hold_the_exact_rational_hessian(seed: int) -> None:
    problem = _random_linear(seed)
    exact = reference.hessian_exact(problem)
    H = certified.enclosure(problem)
    bad = [idx for idx in np.ndindex(H.shape) if not _holds(H[idx], exact[idx])]
    assert not bad, f"{problem.id}: entries {bad[:3]} outside their balls"


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("seed", range(3))
def test_held_out_networks_are_enclosed_narrowly_and_hold_the_50_digit_value(seed: int, loss: str) -> None:
    problem = _held_out(100 + seed, loss)
    try:
        H = certified.enclosure(problem)
    except NotDifferentiableError:  # a relu net input exactly at 0: nothing to certify, said so
        pytest.skip("a relu unit at its kink")
    for h in H.ravel():  # narrower than 1e-30 relative (or a point)
        assert h.rad() == 0 or h.rad() <= 1e-30 * abs(h.mid()), f"{problem.id}: {h}"
    # the high-precision reference at 50 digits lies in every ball widened by its own error bound
    digits = 50
    hp = reference.hessian_mpmath(problem, digits=digits)
    own = (chain_length(problem) + 2) * 10.0 ** (1 - digits) * magnitude_hessian(problem)
    with mpmath.workdps(80):
        for idx in np.ndindex(H.shape):
            mid, rad = _dyadic(H[idx].mid()), _dyadic(H[idx].rad())
            gap = abs(hp[idx] - mpmath.mpf(mid.numerator) / mid.denominator)
            assert gap <= float(rad) * (1 + 1e-10) + own[idx] + 1e-300, (problem.id, idx)


def test_every_activation_and_loss_is_evaluated_in_balls() -> None:
    # one network per activation, each loss: no function of the tables is missing from the arb namespace
    for act in ACTIVATIONS:
        for loss in LOSSES:
            outputs = 1 if loss == "binary_cross_entropy" else 2
            arch = Architecture(2, (Layer(2, act), Layer(outputs, "identity")))
            rng = np.random.default_rng(7)
            t = rng.random((2, outputs)) if loss != "cross_entropy" else np.array([[0.3, 0.7], [0.6, 0.4]])
            problem = hessverify.Problem(arch, loss, rng.standard_normal(arch.n_params) + 0.1,
                                         rng.standard_normal((2, 2)), t, id=f"{act}-{loss}")
            value, err = certified.hessian_with_error(problem)
            gold, gold_err = reference.hessian_with_error(problem)
            assert np.all(np.abs(value - gold) <= err + gold_err), problem.id


def test_relu_at_its_kink_is_refused() -> None:
    arch = Architecture(1, (Layer(1, "relu"), Layer(1, "identity")))
    problem = hessverify.Problem(arch, "sse", np.array([1.0, -1.0, 1.0, 0.0]), np.array([[1.0]]),
                                 np.array([[0.5]]), id="kink")
    with pytest.raises(NotDifferentiableError, match="holds the kink"):
        certified.enclosure(problem)


def test_the_error_covers_radius_and_rounding() -> None:
    case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    H = certified.enclosure(case)
    value, err = certified.hessian_with_error(case)
    for idx in np.ndindex(H.shape):
        mid, rad = _dyadic(H[idx].mid()), _dyadic(H[idx].rad())
        assert rad + abs(mid - Fraction(value[idx])) <= Fraction(err[idx])
    assert np.all(certified.radius(case) <= err)


def test_verify_with_the_certified_reference_passes(shipped_case: hessverify.Problem) -> None:
    if not shipped_case.architecture.is_dense or shipped_case.loss_options:
        pytest.skip("the certified reference encloses the dense closed form; layer kinds and loss settings are not in it")
    comps = verify_problem(shipped_case, methods=["backprop", "pairwise"], references=["certified"])
    assert comps and all(c.passed and c.bound_kind == "certified" for c in comps), [
        (c.method, c.reference, c.margin) for c in comps]


def test_a_planted_bug_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # tanh'' one part in 1e7 off in the NumPy column the methods use; the certified reference reads the SymPy one
    tanh = activations.ACTIVATIONS["tanh"]
    monkeypatch.setitem(activations.ACTIVATIONS, "tanh",
                        dataclasses.replace(tanh, d2f=lambda a: tanh.d2f(a) * (1 + 1e-7)))
    case = hessverify.load_case("cases/tanh-6-12-8-2.toml")
    (c,) = verify_problem(case, methods=["backprop"], references=["certified"])
    assert not c.passed and c.bound_kind == "certified"


def test_the_command_line_computes_and_verifies_with_it(tmp_path: pytest.TempPathFactory,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "H.npy"  # type: ignore[operator]
    assert main(["hessian", "cases/xor-2-2-1-sigmoid.toml", "--method", "certified", "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), reference.hessian(hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")))
    assert main(["verify", "cases/xor-2-2-1-sigmoid.toml", "--reference", "certified"]) == 0
    assert "0 failed" in capsys.readouterr().out
