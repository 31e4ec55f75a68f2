"""Property: every exact method equals every reference within its derived bound."""

from __future__ import annotations

from hypothesis import given
from props_util import assert_property, note_problem, quiet_autograd

from hessverify import Problem, verify_problem
from hessverify.checking.strategies import problems


@given(problems())
def test_every_method_agrees_with_every_reference(problem: Problem) -> None:
    note_problem(problem)
    with quiet_autograd():
        comparisons = verify_problem(problem)
    assert comparisons, "verify_problem compared nothing: no exact method or no reference registered"
    for c in comparisons:
        assert_property(f"agreement {c.method} vs {c.reference}", problem, c)


@given(problems(activations=["relu", "identity"], output_activations=["identity", "relu"], min_layers=2))
def test_relu_networks_agree_away_from_kinks(problem: Problem) -> None:
    # relu networks get their own run: the strategy rejects net inputs near the kink, and
    # this checks that what remains is never reported as a discrepancy
    note_problem(problem)
    with quiet_autograd():
        for c in verify_problem(problem):
            assert_property(f"agreement (relu) {c.method} vs {c.reference}", problem, c)
