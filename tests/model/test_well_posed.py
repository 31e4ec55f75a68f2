"""The one well-posedness check and the one reading of the activation table's kinks.

The raising cases (a kink hit exactly, one within rounding, overflow) are in
``tests/model/test_forward.py``; here: the helpers every other kink test goes
through, and the former name.
"""

from __future__ import annotations

import numpy as np

from hessverify.model import well_posed
from hessverify.model.forward import forward
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.model.well_posed import check_point, ensure_well_posed, kinked_net_inputs, near_kink


def _relu_problem(bias: float) -> Problem:
    arch = Architecture(1, (Layer(2, "relu"), Layer(1, "tanh"), Layer(1, "relu")))
    params = np.array([1.0, -1.0, bias, bias, 0.5, 0.5, 0.1, 1.0, 0.2])
    return Problem(arch, "sse", params, np.array([[0.3], [-0.7]]), np.zeros((2, 1)))


def test_kinked_net_inputs_lists_every_kink_of_every_layer_with_one() -> None:
    p = _relu_problem(0.05)
    fp = forward(p)
    got = [(l, kink, a.shape) for l, kink, a in kinked_net_inputs(p.architecture, fp.a)]
    assert got == [(1, 0.0, (2, 2)), (3, 0.0, (2, 1))]


def test_near_kink_uses_the_margin() -> None:
    p = _relu_problem(0.05)
    smallest = min(float(np.min(np.abs(a))) for _, _, a in kinked_net_inputs(p.architecture, forward(p).a))
    assert near_kink(p, smallest * 1.01) and not near_kink(p, smallest * 0.99)


def test_the_former_name_is_the_same_check() -> None:
    assert check_point is ensure_well_posed
    assert "ensure_well_posed" in well_posed.__all__ and "check_point" in well_posed.__all__
    p = _relu_problem(0.05)
    assert np.array_equal(ensure_well_posed(p).y, forward(p).y)
