"""Property: a drawn problem written with ``to_toml`` reads back bit for bit with ``parse_case``.

``hessverify sweep`` prints its minimal problem this way, so a saved case
must replay exactly the problem that failed.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given

from hessverify import Problem, parse_case
from hessverify.checking.strategies import problems


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    # bitwise: tells 0.0 from -0.0, which == does not
    return a.shape == b.shape and bool(np.array_equal(a.view(np.int64), b.view(np.int64)))


@given(problems())
def test_to_toml_round_trips_exactly(problem: Problem) -> None:
    text = problem.to_toml()
    back = parse_case(text)
    assert back.architecture == problem.architecture, "property 'round trip': architecture changed"
    assert (back.loss, back.reduction, back.id, back.description) == (
        problem.loss, problem.reduction, problem.id, problem.description), "property 'round trip': metadata changed"
    for field in ("params", "inputs", "targets"):
        assert _same_bits(getattr(back, field), getattr(problem, field)), f"property 'round trip': {field} changed"
    assert back.to_toml() == text, "property 'round trip': writing the re-read problem gives other text"
