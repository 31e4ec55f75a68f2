"""Precision: the formats the rounding model can judge, and bounds that follow them."""

from __future__ import annotations

import numpy as np
import pytest

import hessverify
from hessverify.base.precision import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, PRECISIONS, Precision, get_precision
from hessverify.engine.bounds import UNDERFLOW_FLOOR, UNIT_ROUNDOFF, chain_length, magnitude_hessian, rounding_bound
from hessverify.methods import backprop
from hessverify.model.kernel import Quantities, hessian_from_quantities, quantities
from hessverify.model.well_posed import ensure_well_posed


def test_the_formats_have_their_ieee_unit_roundoffs() -> None:
    # u = 2^-p for p significand bits (IEEE 754-2008; bfloat16: 8 bits)
    assert [p.unit_roundoff for p in (FLOAT64, FLOAT32, FLOAT16, BFLOAT16)] == [2.0**-53, 2.0**-24, 2.0**-11, 2.0**-8]
    assert FLOAT64.unit_roundoff == np.finfo(np.float64).eps / 2
    assert FLOAT32.unit_roundoff == np.finfo(np.float32).eps / 2
    assert FLOAT16.unit_roundoff == np.finfo(np.float16).eps / 2
    # the floors sit above the smallest normal number of each format
    assert FLOAT64.underflow_floor > np.finfo(np.float64).tiny and FLOAT32.underflow_floor > np.finfo(np.float32).tiny
    assert FLOAT16.underflow_floor > np.finfo(np.float16).tiny


def test_float64_is_what_the_bounds_module_always_used() -> None:
    assert UNIT_ROUNDOFF == FLOAT64.unit_roundoff == 2.0**-53
    assert UNDERFLOW_FLOOR == FLOAT64.underflow_floor == 2.0**-1022 * 2.0**40


@pytest.mark.parametrize(("spec", "expected"), [
    ("float32", FLOAT32), (np.float16, FLOAT16), (np.dtype("float64"), FLOAT64), (FLOAT32, FLOAT32),
    ("bfloat16", BFLOAT16),
])
def test_lookup_by_name_dtype_or_itself(spec: object, expected: Precision) -> None:
    assert get_precision(spec) is expected


@pytest.mark.parametrize("bad", ["float8", np.int32, 3])
def test_an_unknown_precision_names_the_choices(bad: object) -> None:
    with pytest.raises(ValueError, match="choose one of float64, float32, float16, bfloat16"):
        get_precision(bad)


def test_gamma_refuses_a_chain_longer_than_the_format_can_bound() -> None:
    assert FLOAT16.gamma(2) == pytest.approx(2 * 2.0**-11 / (1 - 2 * 2.0**-11), rel=1e-15)
    with pytest.raises(hessverify.UsageError, match="2048 roundings is too long for float16.*at most 2047"):
        FLOAT16.gamma(2**11)


def test_the_rounding_chain_of_a_deep_network_is_said_where_it_is_too_long() -> None:
    """k grows by about 13 per one-unit layer: 10 000 layers are far inside float64, past float16 (one line)."""
    from hessverify.model.network import Architecture, Layer

    arch = Architecture(1, tuple(Layer(1, "tanh") for _ in range(10_000)))
    problem = hessverify.Problem(arch, "sse", np.full(arch.n_params, 0.5), np.ones((2, 1)), np.zeros((2, 1)))
    k = chain_length(problem)
    assert 10_000 * 13 <= k < 10_000 * 14 and FLOAT64.gamma(k) < 1e-10
    with pytest.raises(hessverify.UsageError, match="too long for bfloat16"):
        BFLOAT16.gamma(k)


def test_public_names() -> None:
    assert hessverify.Precision is Precision and hessverify.FLOAT32 is FLOAT32 and hessverify.get_precision("float16") is FLOAT16
    assert set(PRECISIONS) == {"float64", "float32", "float16", "bfloat16"}


def test_a_narrower_format_widens_the_bound_at_least_by_its_unit_roundoff(shipped_case: hessverify.Problem) -> None:
    B64 = rounding_bound(shipped_case) - FLOAT64.underflow_floor
    B32 = rounding_bound(shipped_case, precision=FLOAT32) - FLOAT32.underflow_floor
    ratio = FLOAT32.gamma(chain_length(shipped_case)) / FLOAT64.gamma(chain_length(shipped_case))
    assert np.all(B32 >= ratio * B64 * (1 - 1e-12))
    # M itself grows with the precision's gamma (the inherited errors count more), never shrinks
    assert np.all(magnitude_hessian(shipped_case, "float32") >= magnitude_hessian(shipped_case) * (1 - 1e-12))


def _float32_assembly(case: hessverify.Problem) -> np.ndarray:
    """backprop's assembly with every propagated quantity rounded to float32 and summed in float32."""
    q = quantities(ensure_well_posed(case))

    def f32(xs: list[np.ndarray]) -> list[np.ndarray]:
        return [x.astype(np.float32) for x in xs]

    q32 = Quantities(f32(q.z), f32(q.df), f32(q.d2f), f32(q.weights), q.g_y.astype(np.float32),
                     q.h_y.astype(np.float32))
    return hessian_from_quantities(case.architecture, q32).astype(np.float64)


@pytest.mark.parametrize("name", ["tanh-6-12-8-2", "softmax-4-5-3-cross-entropy", "xor-2-2-1-sigmoid"])
def test_a_float32_hessian_fails_the_float64_bound_and_passes_the_float32_one(name: str) -> None:
    case = hessverify.load_case(f"cases/{name}.toml")
    H32, H64 = _float32_assembly(case), backprop.hessian(case)
    assert H32.dtype == np.float64 and not np.array_equal(H32, H64)
    error = np.abs(H32 - H64)
    assert np.any(error > rounding_bound(case)), "float32 rounding should be far outside a float64 bound"
    assert np.all(error <= rounding_bound(case, precision="float32"))
