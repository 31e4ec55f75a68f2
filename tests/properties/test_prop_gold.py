"""Property: no method or reference ever disagrees with the gold reference beyond its bound.

The gold reference is ``symbolic`` (exact rationals where the network allows
it, else 50 digits).  The problems are made of special values
(:func:`hessverify.checking.strategies.special_problems`): exact zeros, whole zero
layers, +-1, halves, small integers, dead and saturated units, repeated
patterns, one pattern with the mean.  That is where a bound that forgets an
error (the complex step's truncation at an exact zero) raises a false alarm.

Every exact method is compared with every reference, and every other
reference with the gold one, each side under its own bound.  A reference
that cannot serve at a problem is recorded as not applicable, never as a
disagreement.  The ``thorough`` profile runs the profile's full count
(5000); any other profile runs :data:`QUICK_EXAMPLES`, so CI keeps a small,
fast version of it.

The second property does the same where outputs saturate (issue 24): the
strategies' saturated draws (:func:`hessverify.checking.strategies.saturate`),
every one saturated here, on networks small enough for the gold reference.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from props_util import assert_property, note_problem, quiet_autograd

from hessverify import Problem, verify_problem
from hessverify.checking.strategies import SATURATION_LEVELS, near_kink, problems, saturate, special_problems

QUICK_EXAMPLES = 25
THOROUGH = 5000

REFERENCES = ["symbolic", "autograd", "complex_step", "fd", "richardson"]


def _examples() -> int:
    current = settings.default.max_examples
    return current if current >= THOROUGH else min(current, QUICK_EXAMPLES)


@settings(max_examples=_examples())
@given(special_problems())
def test_nothing_disagrees_with_the_gold_reference_on_special_values(problem: Problem) -> None:
    note_problem(problem)
    with quiet_autograd():
        comparisons = verify_problem(problem, references=REFERENCES, approximations=[])
    gold = [c for c in comparisons if c.reference == "symbolic"]
    assert gold, "nothing was compared with the gold reference"
    for c in comparisons:
        assert_property(f"gold {c.method} vs {c.reference}", problem, c)


SATURATED = st.tuples(problems(max_layers=2, max_units=3, max_inputs=2, max_patterns=3, saturation=False,
                               kinds=False),  # saturate() scales a dense output layer
                      st.floats(*SATURATION_LEVELS)).map(lambda drawn: saturate(*drawn)).filter(
                          # saturating can carry a residual onto a loss's kink (a sigmoid output at 1 - 5e-15, a
                          # target of 0, Huber's delta of 1), where the Hessian does not exist and verify refuses
                          # the problem (exit 3): the draws keep away from kinks, as problems() does
                          lambda problem: not near_kink(problem))


@settings(max_examples=_examples())
@given(SATURATED)
def test_nothing_disagrees_with_the_gold_reference_at_saturated_outputs(problem: Problem) -> None:
    note_problem(problem)
    with quiet_autograd():
        comparisons = verify_problem(problem, references=REFERENCES, approximations=[])
    assert any(c.reference == "symbolic" for c in comparisons), "nothing was compared with the gold reference"
    for c in comparisons:
        assert_property(f"gold {c.method} vs {c.reference} (saturated)", problem, c)
