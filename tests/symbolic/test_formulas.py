"""The general second-order backprop formulas against direct differentiation, for random architectures."""

from __future__ import annotations

import random

import pytest
import sympy

from hessverify.model.activations import ACTIVATIONS
from hessverify.model.losses import LOSSES
from hessverify.model.network import Architecture, Layer
from hessverify.symbolic import formulas
from hessverify.symbolic.expressions import NetworkSymbols, definitions, explicit_error

DIGITS = 30
# Both sides at DIGITS digits: a few hundred roundings of relative size 10^(1-DIGITS) on terms of order
# one (weights and data in [-1, 1]); a wrong formula is off by order one.
TOLERANCE = 10.0 ** (5 - DIGITS)


def random_architecture(rng: random.Random, max_depth: int) -> Architecture:
    depth = rng.randint(1, max_depth)
    layers = tuple(Layer(rng.randint(1, 2), rng.choice(sorted(ACTIVATIONS)), rng.random() < 0.7)
                   for _ in range(depth))
    return Architecture(rng.randint(1, 2), layers)


def one_pair_per_kind(arch: Architecture, rng: random.Random) -> list[tuple[str, str]]:
    """A random pair of each kind that the architecture has (output, hidden, layers; with and without bias)."""
    names = arch.param_names
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for i, p in enumerate(names):
        for q in names[i:]:
            by_kind.setdefault(formulas.kind(arch, p, q), []).append((p, q))
    return [rng.choice(pairs) for _, pairs in sorted(by_kind.items())]


@pytest.mark.parametrize("seed", range(8))
def test_formula_matches_direct_differentiation(seed: int) -> None:
    rng = random.Random(seed)
    arch = random_architecture(rng, max_depth=3 if seed < 6 else 4)
    loss = rng.choice(sorted(LOSSES))
    pairs = one_pair_per_kind(arch, rng)
    results = formulas.check(arch, loss, pairs=pairs, seed=seed, digits=DIGITS)
    bad = [r for r in results if not r[3] <= TOLERANCE]
    assert not bad, f"{arch.describe()} {loss}: formula and sympy.diff differ at {bad}"
    assert {r[2] for r in results} == {formulas.kind(arch, p, q) for p, q in pairs}


DEEP_CHAIN = Architecture(1, tuple(Layer(1, "tanh") for _ in range(4)))


def test_first_layer_of_a_deep_chain() -> None:
    # Depth 4, one unit a layer: W1 with every parameter, so B runs through up to three layers.
    pairs = [("W1[0,0]", q) for q in DEEP_CHAIN.param_names]
    results = formulas.check(DEEP_CHAIN, "sse", pairs=pairs, digits=DIGITS)
    assert {r[2] for r in results} == {"hidden", "layers", "hidden+bias", "layers+bias"}
    assert max(r[3] for r in results) <= TOLERANCE


@pytest.mark.slow
def test_every_pair_of_a_deep_chain() -> None:
    # about 25 s: sympy.diff of the explicit error for all 36 pairs
    results = formulas.check(DEEP_CHAIN, "sse", digits=DIGITS)
    assert len(results) == DEEP_CHAIN.n_params * (DEEP_CHAIN.n_params + 1) // 2
    assert max(r[3] for r in results) <= TOLERANCE


def test_a_wrong_formula_is_caught() -> None:
    # The check has teeth: drop the bilinear term and it fails on a pair of different layers.
    arch = Architecture(1, (Layer(1, "tanh"), Layer(1, "sigmoid")))
    s = NetworkSymbols(arch)
    e = explicit_error(s, "sse")
    defs = definitions(s, "sse")
    full = formulas.entry(s, "W1[0,0]", "W2[0,0]")
    main_only = full.subs(s.delta[2][0], 0)
    point = {v: sympy.Rational(1, 3 + i) for i, v in enumerate(list(s.params) + list(s.x) + list(s.t))}
    direct = sympy.diff(e, s.param("W1[0,0]"), s.param("W2[0,0]")).xreplace(point)
    as_numbers = {k: v for k, v in point.items()}
    for k, v in defs.items():
        as_numbers[k] = v.xreplace(as_numbers)
    assert abs(sympy.N(full.xreplace(as_numbers) - direct, DIGITS)) < TOLERANCE
    assert abs(sympy.N(main_only.xreplace(as_numbers) - direct, DIGITS)) > 1e-3


def test_kinds() -> None:
    arch = Architecture(2, (Layer(3, "tanh"), Layer(2, "tanh"), Layer(1, "identity")))
    assert formulas.kind(arch, "W3[0,1]", "W3[0,0]") == "output"
    assert formulas.kind(arch, "W2[0,1]", "W2[1,2]") == "hidden"
    assert formulas.kind(arch, "W1[0,1]", "b3[0]") == "layers+bias"
    assert formulas.kind(arch, "b2[1]", "b2[0]") == "hidden+bias"
    with pytest.raises(KeyError):
        formulas.kind(arch, "W4[0,0]", "b1[0]")


def test_expand_reaches_the_explicit_form() -> None:
    # Expanding every name gives a function of weights and data only, equal to direct differentiation.
    arch = Architecture(1, (Layer(1, "sin"), Layer(1, "identity")))
    s = NetworkSymbols(arch)
    explicit = formulas.expand(formulas.entry(s, "W1[0,0]", "W2[0,0]"), definitions(s, "sse"))
    assert explicit.free_symbols <= set(s.params) | set(s.x) | set(s.t)
    direct = sympy.diff(explicit_error(s, "sse"), s.param("W1[0,0]"), s.param("W2[0,0]"))
    assert sympy.simplify(explicit - direct) == 0


@pytest.mark.parametrize("kind_", sorted(formulas.KINDS))
@pytest.mark.parametrize("bias", ["", "first", "second", "both"])
def test_general_formula_display(kind_: str, bias: str) -> None:
    from .test_lecture import assert_renders

    e = formulas.general_formula(kind_, bias=bias)
    assert_renders(e.latex())
    # a bias in the upper layer has no bilinear term: its input does not depend on the lower weights
    has_bilinear = "delta(m')" in str(e)
    assert has_bilinear == (kind_ == "layers" and bias in ("", "first"))
    assert str(e).startswith("d2e/d" + ("b" if bias in ("first", "both") else "W"))
