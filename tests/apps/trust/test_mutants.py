"""The bug catalogue: the plain implementation is right, and the shipped cases kill every mutant."""

from __future__ import annotations

import hypothesis
import numpy as np
import pytest

import hessverify
from hessverify.apps.trust.mutants import MUTANTS, hessian
from hessverify.engine.bounds import rounding_bound
from hessverify.engine.compare import compare
from hessverify.references import autograd_ref
from tests.conftest import CASE_PATHS


@pytest.fixture(scope="module")
def references() -> list[tuple[hessverify.Problem, np.ndarray, np.ndarray]]:
    # the catalogue mutates the dense kernel's second-order backpropagation: the dense cases with the classic losses
    cases = [c for c in (hessverify.load_case(p) for p in CASE_PATHS)
             if c.architecture.is_dense and not c.loss_options and c.loss not in ("mse", "huber")]
    return [(c, autograd_ref.hessian(c), rounding_bound(c)) for c in cases]


def test_the_catalogue_has_at_least_20_bugs() -> None:
    assert len(MUTANTS) >= 20
    assert all(m.description for m in MUTANTS.values())


def test_the_unmutated_implementation_is_correct(references) -> None:  # type: ignore[no-untyped-def]
    for case, R, B in references:
        c = compare(case, "plain", "autograd", hessian(case), R, B, "rounding")
        assert c.passed, (case.id, c.worst_entry)


@pytest.mark.parametrize("name", list(MUTANTS))
def test_every_mutant_is_caught_by_some_shipped_case(name: str, references) -> None:  # type: ignore[no-untyped-def]
    killers = [case.id for case, R, B in references
               if not compare(case, name, "autograd", MUTANTS[name].fn(case), R, B, "rounding").passed]
    assert killers, f"{name} ({MUTANTS[name].description}) survives every shipped case"


@pytest.mark.parametrize("name", ["skip_second_order_dropped", "skip_delta_not_accumulated"])
def test_a_bug_only_a_skip_from_a_hidden_layer_shows_is_found_and_shrunk_to_a_small_graph(name: str) -> None:
    """The sweep's strategy draws graphs by default: the bug is found, and shrinking leaves the skip connection
    from a hidden layer (without it the bug vanishes) and little else.  (``hessverify sweep`` with its defaults
    finds it too, at seed 0 in 8 examples; here the strategy is narrowed to keep the shrinking short and the
    finding independent of the seed.)"""
    from hessverify.checking.check import check
    from hessverify.checking.strategies import problems

    # three layers, so that about one draw in four has a hidden layer read twice: found whatever the seed
    # (the ci profile derandomizes, and then the seed is not used)
    strategy = problems(min_layers=3, max_layers=3, max_units=2, max_inputs=2, max_patterns=2, kinds=False)
    result = check(MUTANTS[name].fn, strategy, against=("autograd",), max_examples=100, seed=0, timeout=None)
    assert not result.passed and result.problem is not None
    arch = result.problem.architecture
    hidden_skips = [(j, l) for l in arch.bottom_up for j in arch.parents(l) if j >= 1 and len(arch.children(j)) > 1]
    assert hidden_skips, arch.describe()  # a hidden layer read by several later ones
    assert arch.depth <= 3 and result.problem.n_params <= 8, arch.describe()


# -- issue 24: bugs that show only where an output saturates -------------------------------------------------------


def _unsaturated(activation: str, loss: str) -> hessverify.Problem:
    from hessverify.model.losses import valid_targets

    rng = np.random.default_rng(24)
    arch = hessverify.Architecture(2, (hessverify.Layer(3, "tanh"), hessverify.Layer(2, activation)))
    targets = valid_targets(loss, np.array([[0.0, 0.5], [0.5, 0.0], [0.25, 0.75]]))
    return hessverify.Problem(arch, loss, rng.uniform(-1, 1, arch.n_params), rng.uniform(-2, 2, (3, 2)), targets)


def _both_signs(p: hessverify.Problem) -> list[hessverify.Problem]:
    """``p`` and ``p`` with its output layer negated: saturated at both ends."""
    from dataclasses import replace

    flipped = p.params.copy()
    flipped[p.architecture.block(2).slice] *= -1.0
    return [p, replace(p, params=flipped)]


@pytest.mark.parametrize("name,activation,loss", [
    ("sigmoid_output_clipped", "sigmoid", "sse"),
    ("loss_probabilities_clipped", "identity", "cross_entropy"),
    ("loss_probabilities_clipped", "identity", "binary_cross_entropy"),
    ("bce_hessian_through_probabilities", "identity", "binary_cross_entropy"),
])
def test_a_saturation_bug_shows_only_where_the_output_saturates(name: str, activation: str, loss: str) -> None:
    from hessverify.apps.trust.mutants import SATURATION_BUGS
    from hessverify.checking.check import check
    from hessverify.checking.strategies import saturate

    assert name in SATURATION_BUGS
    plain = _unsaturated(activation, loss)
    assert check(MUTANTS[name].fn, _both_signs(plain), against=("autograd",), isolation="none").passed
    for level in (20.0, 40.0):
        saturated = _both_signs(saturate(plain, level))
        assert not check(MUTANTS[name].fn, saturated, against=("autograd",), isolation="none").passed, level
        assert check(hessian, saturated, isolation="none").passed  # no false alarm there


@pytest.mark.skipif(hypothesis.settings.default.max_examples < 5000,
                    reason="the thorough profile's: three default sweeps of 300 examples and a correct one")
def test_a_default_sweep_of_300_examples_catches_every_saturation_bug() -> None:
    from hessverify.apps.trust.mutants import SATURATION_BUGS
    from hessverify.checking.check import check
    from hessverify.checking.strategies import problems

    for name in SATURATION_BUGS:
        assert not check(MUTANTS[name].fn, problems(), max_examples=300, seed=0, isolation="none").passed, name
    assert check(hessian, problems(), max_examples=300, seed=0, isolation="none").passed
