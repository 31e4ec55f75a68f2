"""The ``symbolic`` reference against ``backprop`` and ``autograd``, and its three number systems."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import mpmath
import numpy as np
import pytest
import sympy

import hessverify
from hessverify.engine.bounds import chain_length, magnitude_hessian
from hessverify.engine.compare import bound_for
from hessverify.engine.verify import verify_problem
from hessverify.errors import NotDifferentiableError
from hessverify.model.network import Architecture, Layer
from hessverify.references import autograd_ref
from hessverify.symbolic import reference
from hessverify.symbolic.expressions import NetworkSymbols, explicit_error

CASE_PATHS = [p for p in sorted((Path(__file__).resolve().parents[2] / "cases").glob("*.toml"))
              if hessverify.load_case(p).architecture.is_dense]
"""The dense shipped cases: this module's closed form is theirs (other kinds: tests/symbolic/test_kinds.py)."""


@pytest.fixture(params=CASE_PATHS, ids=[p.stem for p in CASE_PATHS])
def shipped_case(request: pytest.FixtureRequest) -> hessverify.Problem:
    return hessverify.load_case(request.param)

_GOLD: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def gold(problem: hessverify.Problem) -> tuple[np.ndarray, np.ndarray]:
    """The symbolic value and its error bound, computed once per case."""
    if problem.id not in _GOLD:
        from hessverify.symbolic import kinds  # networks and losses the dense closed form does not take

        dense = problem.architecture.is_dense and not problem.loss_options
        _GOLD[problem.id] = (reference if dense else kinds).hessian_with_error(problem)
    return _GOLD[problem.id]


def test_every_shipped_case_is_small_enough() -> None:
    # The module docstring promises it; verify relies on it for full coverage.
    for path in CASE_PATHS:
        case = hessverify.load_case(path)
        assert reference.small_enough(case), f"{case.id}: cost {reference.estimated_cost(case)}"


@pytest.mark.parametrize("method", ["backprop", "autograd"])
def test_symbolic_agrees_with_exact_float64_methods(shipped_case: hessverify.Problem, method: str) -> None:
    # An exact float64 method is within gamma_k M of the truth; the gold value is the truth
    # up to its own measured rounding to float64 (compare.TOLERANCES["symbolic"]).
    value, err = gold(shipped_case)
    A = hessverify.hessian(shipped_case, method)
    bound, _ = bound_for(shipped_case, "symbolic", reference_error=err)
    worst = np.unravel_index(np.argmax(np.abs(A - value) / bound), A.shape)
    names = shipped_case.param_names
    assert np.all(np.abs(A - value) <= bound), (
        f"{shipped_case.id}: {method} vs symbolic at {names[worst[0]]} x {names[worst[1]]}: "
        f"{A[worst]!r} vs {value[worst]!r}, bound {bound[worst]:.3g}")


def test_float64_evaluation_of_the_closed_form(shipped_case: hessverify.Problem) -> None:
    # The float64 lambdify path is one more exact float64 method: within gamma_k M of the truth.
    if not shipped_case.architecture.is_dense or shipped_case.loss_options:
        with pytest.raises(ValueError, match="dense closed form"):  # refused, never evaluated as another problem
            reference.hessian_float64(shipped_case)
        return
    value, err = gold(shipped_case)
    H = reference.hessian_float64(shipped_case)
    bound, _ = bound_for(shipped_case, "symbolic", reference_error=err)
    assert np.all(np.abs(H - value) <= bound)


def test_high_precision_is_not_float64() -> None:
    # At 50 digits the value carries digits that float64 cannot hold: it was not computed in float64.
    case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    H = reference.hessian_mpmath(case, digits=50)
    with mpmath.workdps(50):
        residual = [abs(h - mpmath.mpf(float(h))) for h in H.ravel()]
        assert max(residual) > 0
        assert all(isinstance(h, mpmath.mpf) for h in H.ravel())


def _random_linear(seed: int) -> hessverify.Problem:
    rng = np.random.default_rng(seed)
    sizes = [int(v) for v in rng.integers(1, 4, size=int(rng.integers(2, 4)))]
    layers = tuple(Layer(u, "identity", bool(rng.random() < 0.7)) for u in sizes[1:])
    arch = Architecture(sizes[0], layers)
    n = int(rng.integers(1, 5))
    return hessverify.Problem(arch, str(rng.choice(["sse", "output"])), rng.standard_normal(arch.n_params),
                              rng.standard_normal((n, arch.inputs)), rng.standard_normal((n, arch.outputs)),
                              str(rng.choice(["sum", "mean"])), id=f"linear-{seed}")


@pytest.mark.parametrize("seed", range(6))
def test_high_precision_against_exact_rationals(seed: int) -> None:
    problem = _random_linear(seed)
    assert reference.exact_allowed(problem)
    exact = reference.hessian_exact(problem)
    digits = 30
    H = reference.hessian_mpmath(problem, digits=digits)
    # mpmath at `digits` digits: a chain of k roundings of relative size 10^(1-digits) on terms of
    # magnitude M (with M's own float64 rounding far below that).
    bound = chain_length(problem) * 10.0 ** (1 - digits) * magnitude_hessian(problem)
    with mpmath.workdps(60):
        diff = [abs(mpmath.mpf(h) - mpmath.mpf(e.numerator) / e.denominator)
                for h, e in zip(H.ravel(), exact.ravel(), strict=True)]
    assert all(float(d) <= b for d, b in zip(diff, bound.ravel(), strict=True))


def test_exact_rationals_equal_direct_differentiation() -> None:
    # sympy.hessian of the explicit error with the data as exact rationals: equality, not closeness.
    problem = _random_linear(3)
    s = NetworkSymbols(problem.architecture)
    e = explicit_error(s, problem.loss)
    total = sympy.S.Zero
    for x, t in zip(problem.inputs, problem.targets, strict=True):
        data = {sym: sympy.Rational(float(v)) for sym, v in zip(list(s.x) + list(s.t), list(x) + list(t), strict=True)}
        total += e.xreplace(data)
    if problem.reduction == "mean":
        total /= problem.n_patterns
    point = {p: sympy.Rational(float(v)) for p, v in zip(s.params, problem.params, strict=True)}
    direct = sympy.hessian(total, s.params).xreplace(point)
    exact = reference.hessian_exact(problem)
    for i in range(problem.n_params):
        for j in range(problem.n_params):
            assert exact[i, j] == Fraction(int(direct[i, j].p), int(direct[i, j].q))


def test_exact_is_refused_where_the_network_is_not_polynomial() -> None:
    case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    assert not reference.exact_allowed(case)
    with pytest.raises(ValueError, match="polynomial"):
        reference.hessian_exact(case)


def test_relu_exactly_at_its_kink_is_reported() -> None:
    arch = Architecture(1, (Layer(1, "relu"), Layer(1, "identity")))
    problem = hessverify.Problem(arch, "sse", np.array([1.0, -1.0, 1.0, 0.0]), np.array([[1.0]]),
                                 np.array([[0.5]]), id="kink")
    with pytest.raises(NotDifferentiableError, match="exactly 0"):
        reference.hessian_mpmath(problem)


def test_verify_uses_symbolic_only_when_small_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    case = hessverify.load_case("cases/single-neuron-tanh.toml")
    pairs = {(c.method, c.reference) for c in verify_problem(case)}
    # every other method and reference is held to the gold value
    assert {("backprop", "symbolic"), ("autograd", "symbolic"), ("fd", "symbolic")} <= pairs
    monkeypatch.setattr(reference, "MAX_COST", 0)
    assert not any("symbolic" in pair for pair in {(c.method, c.reference) for c in verify_problem(case)})
    # asked for by name, it runs whatever the cost
    named = verify_problem(case, methods=["backprop"], references=["symbolic"])
    assert [(c.method, c.reference, c.passed) for c in named] == [("backprop", "symbolic", True)]


def test_autograd_true_error_is_reported() -> None:
    # autograd's own error against the truth is a comparison of its own, within gamma_k M.
    case = hessverify.load_case("cases/softmax-4-5-3-cross-entropy.toml")
    comps = {(c.method, c.reference): c for c in verify_problem(case, references=["autograd", "symbolic"])}
    c = comps[("autograd", "symbolic")]
    assert c.passed and c.bound_kind == "high_precision"
    assert c.max_abs_error == pytest.approx(float(np.max(np.abs(autograd_ref.hessian(case) - gold(case)[0]))))


def test_random_point_of_a_random_architecture() -> None:
    # Beyond the shipped cases: a seeded random network of every smooth activation, against autograd.
    rng = random.Random(5)
    acts = ["sigmoid", "tanh", "softplus", "sin", "gelu", "silu", "identity"]
    arch = Architecture(2, tuple(Layer(rng.randint(1, 3), a) for a in rng.sample(acts, 3)))
    nrng = np.random.default_rng(5)
    problem = hessverify.Problem(arch, "cross_entropy" if arch.outputs > 1 else "sse",
                                 nrng.standard_normal(arch.n_params), nrng.standard_normal((4, 2)),
                                 np.abs(nrng.standard_normal((4, arch.outputs))), id="random")
    value, err = reference.hessian_with_error(problem)
    bound, _ = bound_for(problem, "symbolic", reference_error=err)
    assert np.all(np.abs(autograd_ref.hessian(problem) - value) <= bound)


def _enclosure(problem: hessverify.Problem) -> tuple[np.ndarray, np.ndarray]:
    """The certified balls' midpoints and radii as exact Fractions (skips without python-flint)."""
    pytest.importorskip("flint", reason="the check against certified balls needs python-flint")
    from hessverify.references import certified

    H = certified.enclosure(problem)

    def exact(x: object) -> Fraction:
        man, exp = (int(v) for v in x.man_exp())  # type: ignore[attr-defined]
        return Fraction(man << exp) if exp >= 0 else Fraction(man, 1 << -exp)

    return np.frompyfunc(lambda h: exact(h.mid()), 1, 1)(H), np.frompyfunc(lambda h: exact(h.rad()), 1, 1)(H)


def test_the_gold_bound_holds_against_proven_enclosures(shipped_case: hessverify.Problem) -> None:
    # |value - truth| <= err, with the truth somewhere in a ball: |value - mid| <= err + rad
    if not shipped_case.architecture.is_dense or shipped_case.loss_options:
        pytest.skip("the proven enclosures are of the dense closed form")
    value, err = gold(shipped_case)
    mid, rad = _enclosure(shipped_case)
    for idx in np.ndindex(value.shape):
        assert abs(Fraction(value[idx]) - mid[idx]) <= Fraction(err[idx]) + rad[idx], (shipped_case.id, idx)


@pytest.mark.parametrize("path", ["cases/saturated-3-4-2-sigmoid.toml", "cases/gelu-silu-3-4-3-2-bce.toml"])
def test_twenty_digits_are_within_the_evaluation_bound(path: str) -> None:
    # at 20 digits the evaluation error is visible: within (k + 2) 10^(1 - digits) M of a proven ball
    case = hessverify.load_case(path)
    digits = 20
    H = reference.hessian_mpmath(case, digits=digits)
    mid, rad = _enclosure(case)
    bound = (chain_length(case) + 2) * 10.0 ** (1 - digits) * magnitude_hessian(case)
    with mpmath.workdps(60):
        for idx in np.ndindex(H.shape):
            gap = abs(mpmath.mpf(H[idx]) - mpmath.mpf(mid[idx].numerator) / mid[idx].denominator)
            assert gap <= bound[idx] + float(rad[idx]) * (1 + 1e-9), (case.id, idx)
