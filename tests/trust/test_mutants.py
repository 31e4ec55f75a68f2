"""The bug catalogue: the plain implementation is right, and the shipped cases kill every mutant."""

from __future__ import annotations

import numpy as np
import pytest

import hessverify
from hessverify.bounds import rounding_bound
from hessverify.compare import compare
from hessverify.references import autograd_ref
from hessverify.trust.mutants import MUTANTS, hessian

from ..conftest import CASE_PATHS


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
