"""Tests of hessverify.budget: estimates that cover what is measured, refusals that give the figure."""

from __future__ import annotations

import tracemalloc

import pytest

from hessverify import BudgetError, UsageError, load_case
from hessverify.engine.budget import _BASE, check_derive, check_memory, default_limit, estimate, limit, parse_size
from hessverify.engine.registry import METHODS
from hessverify.io.cases import seeded_data, seeded_params
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem


def _problem(n_in: int, hidden: int, out: int, n: int) -> Problem:
    arch = Architecture(n_in, (Layer(hidden, "tanh"), Layer(out, "sigmoid")))
    x, t = seeded_data(arch, "sse", 0, n)
    return Problem(arch, "sse", seeded_params(arch, 1, 0.5), x, t, id="budget-test")


@pytest.mark.parametrize("size,expected", [("4G", 4 * 2**30), ("512M", 512 * 2**20), ("1.5GiB", int(1.5 * 2**30)),
                                           ("2000000", 2_000_000)])
def test_sizes_parse(size: str, expected: int) -> None:
    assert parse_size(size) == expected


@pytest.mark.parametrize("size", ["", "lots", "-1G", "10"])
def test_bad_sizes_are_usage_errors(size: str) -> None:
    with pytest.raises(UsageError):
        parse_size(size)


def test_the_default_is_a_share_of_the_machine() -> None:
    total = int(open("/proc/meminfo").read().split()[1]) * 1024
    assert 2**20 <= default_limit() <= total // 4 + 1


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"symbolic"}))
def test_the_estimate_covers_the_measured_peak(name: str) -> None:
    # a shape not among those the figures were fitted on (W = 603, N = 300)
    problem = _problem(20, 25, 3, 300)
    tracemalloc.start()
    try:
        METHODS[name].fn(problem)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= estimate(problem, [name], kept=1) - _BASE  # without the fixed slack: the model itself


def test_past_the_budget_is_refused_with_the_figure() -> None:
    problem = _problem(40, 50, 2, 10)
    with limit(2**20), pytest.raises(BudgetError, match=r"would need about .* MiB of memory, more than the budget "
                                                         r"of 1.0 MiB"):
        check_memory(problem, ["backprop"])
    with limit(2**34):
        check_memory(problem, ["backprop"])


def test_the_symbolic_reference_and_derive_are_held_to_the_time_budget() -> None:
    big = _problem(20, 100, 2, 2)  # W = 2302: minutes of mpmath
    with pytest.raises(BudgetError, match="symbolic reference would take about"):
        check_memory(big, ["symbolic"])
    with pytest.raises(BudgetError, match="derive --explicit"):
        check_derive(_problem(60, 200, 2, 1), explicit=True)
    check_derive(load_case("cases/xor-2-2-1-sigmoid.toml"), explicit=True)


def test_time_past_max_time_is_refused_with_the_figure() -> None:
    from hessverify.engine.budget import check_seconds, estimate_seconds

    slow = _problem(40, 20, 2, 5000)  # W = 862, N = 5000: minutes of fd, complex step, Richardson
    names = ["backprop", "fd", "complex_step", "richardson"]
    assert estimate_seconds(slow, names) > 60 > estimate_seconds(load_case("cases/xor-2-2-1-sigmoid.toml"), names)
    with pytest.raises(BudgetError, match=r"would take about .*, more than the --max-time of 60 s; the largest "
                                          r"share is budget-test \(W = 862, N = 5000\)"):
        check_seconds([(slow, names)], 60)
    check_seconds([(slow, names)], 0)  # 0: no limit


def _chain(depth: int) -> Problem:
    arch = Architecture(1, tuple(Layer(1, "tanh") for _ in range(depth)))
    x, t = seeded_data(arch, "sse", 0, 4)
    return Problem(arch, "sse", seeded_params(arch, 2, 1.0), x, t, id=f"chain-{depth}")


def test_the_time_estimate_counts_the_passes_over_the_layers() -> None:
    """A 300-layer chain (W = 600, N = 4): autograd took 316 s where alpha N W^2 + beta W said 4 s."""
    from hessverify.engine.budget import estimate_seconds
    from hessverify.engine.components import layer_passes

    deep = _chain(300)
    wide = _problem(5, 80, 7, 4)  # W = 1047: more parameters, two layers
    assert estimate_seconds(deep, ["autograd"]) > 300 > 30 > estimate_seconds(wide, ["autograd"])
    assert layer_passes(deep, "column") == 298 * 600 and layer_passes(deep, "layer") == 298
    assert layer_passes(deep, "unit") == 298 * 300  # a pass per unit, each through the layers
    assert layer_passes(wide, "column") == 0  # two layers: what the figures were measured on
    # 10 000 layers: backprop within the default --max-time, every per-parameter reference far past it
    chain = _chain(10_000)
    assert estimate_seconds(chain, ["backprop"]) < 60
    assert min(estimate_seconds(chain, [name]) for name in ("autograd", "fd", "complex_step", "richardson")) > 3600


def test_derive_refuses_a_network_deeper_than_sympy_can_walk() -> None:
    """SymPy walks a nested expression recursively: 150 one-unit layers exhausted the recursion limit."""
    from hessverify.engine.budget import MAX_DERIVE_DEPTH

    check_derive(_chain(MAX_DERIVE_DEPTH), explicit=False)
    with pytest.raises(BudgetError, match=f"{MAX_DERIVE_DEPTH + 1} layers, more than the {MAX_DERIVE_DEPTH}"):
        check_derive(_chain(MAX_DERIVE_DEPTH + 1), explicit=False)
