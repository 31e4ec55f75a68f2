"""Tests of hessverify.budget: estimates that cover what is measured, refusals that give the figure."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from hessverify import BudgetError, UsageError, load_case
from hessverify.engine.budget import (
    _BASE,
    DEFAULT_MAX_SECONDS,
    check_derive,
    check_memory,
    default_limit,
    estimate,
    estimated_cost,
    limit,
    parse_size,
    time_limit,
)
from hessverify.engine.registry import METHODS
from hessverify.io.cases import seeded_data, seeded_params
from hessverify.model.kernel import release_working_arrays
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


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"symbolic", "certified"}))  # those two: minutes at this size
def test_the_estimate_covers_the_measured_peak(name: str) -> None:
    # a shape not among those the figures were fitted on (W = 603, N = 300)
    problem = _problem(20, 25, 3, 300)
    release_working_arrays()  # arrays the kernel kept from an earlier test would not be counted
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


def test_the_symbolic_reference_and_derive_follow_max_time() -> None:
    big = _problem(20, 100, 2, 50)  # W = 2302, N = 50
    assert 1 < estimated_cost(big) < DEFAULT_MAX_SECONDS  # within the default budget: runs, however long
    check_memory(big, ["symbolic"])
    with time_limit(1), pytest.raises(BudgetError, match=r"symbolic reference would take about .* more than the "
                                                         r"--max-time of 1 s; raise --max-time"):
        check_memory(big, ["symbolic"])
    with time_limit(0):  # 0: no limit
        check_memory(big, ["symbolic"])
    with time_limit(0.01), pytest.raises(BudgetError, match="derive on .* more than the --max-time"):
        check_derive(big, explicit=False)
    with pytest.raises(BudgetError, match="derive --explicit"):  # a tree too large to write, whatever the time
        check_derive(_problem(60, 200, 2, 1), explicit=True)
    check_derive(load_case("cases/xor-2-2-1-sigmoid.toml"), explicit=True)


def test_a_w_530_symbolic_hessian_is_not_refused_and_max_time_lifts_any_refusal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hessverify.cli import main

    arch = Architecture(4, (Layer(20, "tanh"), Layer(20, "tanh"), Layer(1, "identity")))  # W = 541
    x, t = seeded_data(arch, "sse", 1, 16)
    case = tmp_path / "w541.toml"
    case.write_text(Problem(arch, "sse", seeded_params(arch, 1, 0.5), x, t, id="w541").to_toml())
    problem = load_case(case)
    check_memory(problem, ["symbolic"])  # the checks `hessverify hessian` makes before any work
    assert estimated_cost(problem) < 60
    out = tmp_path / "H.npy"
    assert main(["hessian", str(case), "--method", "symbolic", "--max-time", "0.5", "--out", str(out)]) == 2
    assert "raise --max-time" in capsys.readouterr().err
    assert not out.exists()


# Seconds of hessian_with_error (the 50-digit symbolic reference), each in a fresh process, measured twice by
# `python benchmarks/symbolic_calibration.py --fit` on this project's 2-core machine while other jobs kept its load
# average at 15 to 19: (units, activation, loss, N, graph, (first run, second run)), before K of adjacent layers
# became diag(f') R (a third less program for a chain: the estimate errs high since).  The estimate must stay
# within 3x of each: a refusal must not be a false alarm, nor a wait a surprise.
SYMBOLIC_MEASURED: list[tuple[tuple[int, ...], str, str, int, bool, tuple[float, float]]] = [
    ((4, 8, 8, 1), "tanh", "sse", 32, False, (1.30, 1.04)),                    # W = 121
    ((4, 16, 16, 1), "tanh", "sse", 32, False, (2.77, 3.27)),                  # W = 369
    ((4, 16, 16, 1), "tanh", "sse", 128, False, (6.61, 16.44)),
    ((4, 24, 24, 1), "tanh", "sse", 32, False, (6.16, 11.76)),                 # W = 745
    ((4, 32, 32, 1), "tanh", "sse", 32, False, (12.64, 26.80)),                # W = 1249
    ((4, 32, 32, 1), "tanh", "sse", 8, False, (7.93, 16.67)),
    ((8, 12, 12, 12, 12, 3), "sigmoid", "cross_entropy", 32, False, (7.07, 14.45)),  # W = 615
    ((4, 16, 16, 1), "tanh", "sse", 32, True, (2.63, 5.69)),                   # W = 449, skip connections
    ((10, 40, 5), "gelu", "cross_entropy", 64, False, (12.45, 20.17)),         # W = 645
    ((4, 48, 48, 1), "tanh", "sse", 32, False, (37.62, 90.13)),                # W = 2641
]


@pytest.mark.parametrize("units,act,loss,n,graph,seconds", SYMBOLIC_MEASURED)
def test_the_symbolic_estimate_is_within_3x_of_measured(units: tuple[int, ...], act: str, loss: str, n: int,
                                                        graph: bool, seconds: tuple[float, float]) -> None:
    layers = [Layer(u, act) for u in units[1:-1]] + [Layer(units[-1], "identity")]
    if graph:  # the benchmark's skip connections
        layers[1] = Layer(units[2], act, sources=(1, 0))
        layers[2] = Layer(units[3], "identity", sources=(2, 1))
    arch = Architecture(units[0], tuple(layers))
    x, t = seeded_data(arch, loss, 1, n)
    problem = Problem(arch, loss, seeded_params(arch, 1, 0.5), x, t, id="calibration")
    for measured in seconds:
        assert measured / 3 <= estimated_cost(problem) <= 3 * measured


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


def test_a_chains_program_is_counted_as_the_recursions_say_in_one_pass() -> None:
    """The chain's count in one pass equals the recursions' count pair by pair, written out here from the
    docstring of ``_program_size`` (delta, R and Q per reader; K per later layer; B over the sources)."""
    from hessverify.engine.budget import _chain_program_size
    from hessverify.model.network import Architecture, Layer

    def pair_by_pair(arch: Architecture) -> int:
        u = {l: arch.layer(l).units for l in arch.bottom_up}
        size = arch.n_params
        for m in arch.bottom_up:
            size += sum(u[m] * u[c] * (1 + u[c] + u[m]) for c in arch.children(m))
            size += sum(u[m] * u[l] * u[l] for l in arch.above(m))
            for l in arch.above(m):
                size += u[l] * u[m] * (1 if l == m + 1 else u[l - 1])
        return size

    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(40):
        layers = tuple(Layer(int(rng.integers(1, 6)), "tanh") for _ in range(int(rng.integers(1, 7))))
        arch = Architecture(int(rng.integers(1, 5)), layers)
        assert _chain_program_size(arch) == pair_by_pair(arch)


# Seconds of fd's and richardson's hessian_with_error, measured by `python benchmarks/reference_costs.py` (each in a
# fresh process, load about 1, 7 Dec 2026; chains: one-unit tanh layers, N = 4): (units, N, fd, richardson).  The
# estimates (finite_differences.difference_seconds) must stay within 3x of each, and not far below.
DIFFERENCES_MEASURED: list[tuple[tuple[int, ...], int, float, float]] = [
    ((4, 8, 8, 1), 32, 0.023, 0.032),
    ((6, 12, 8, 2), 64, 0.086, 0.114),
    ((10, 30, 30, 3), 64, 1.03, 2.09),
    ((20, 40, 20, 2), 256, 6.28, 10.46),
    ((40, 20, 2), 5000, 24.98, 34.94),
    ((30, 60, 40, 4), 128, 17.82, 22.77),
    ((1,) * 301, 4, 0.51, 0.59),
    ((1,) * 1001, 4, 10.85, 21.76),
]


@pytest.mark.parametrize("units,n,fd,richardson", DIFFERENCES_MEASURED)
def test_the_difference_estimates_are_within_3x_of_measured(units: tuple[int, ...], n: int, fd: float,
                                                            richardson: float) -> None:
    from hessverify.engine.budget import estimate_seconds

    chain = len(units) > 10
    layers = [Layer(u, "tanh") for u in units[1:-1]] + [Layer(units[-1], "tanh" if chain else "identity")]
    arch = Architecture(units[0], tuple(layers))
    x, t = seeded_data(arch, "sse", 0, n)
    problem = Problem(arch, "sse", seeded_params(arch, 2 if chain else 0, 1.0 if chain else 0.5), x, t, id="cost")
    for name, measured in (("fd", fd), ("richardson", richardson)):
        assert measured / 1.5 <= estimate_seconds(problem, [name]) <= 3 * measured, name
