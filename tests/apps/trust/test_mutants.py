"""The bug catalogue: the plain implementation is right, and the shipped cases kill every mutant."""

from __future__ import annotations

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
    cases = [hessverify.load_case(p) for p in CASE_PATHS]
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
