"""The memory and time budget: estimated from the case before anything is allocated.

Every command estimates the peak memory its work will need from the case
(parameters ``W``, patterns ``N``, inputs) and the methods and references
asked for, and refuses work past the budget with a one-line
:class:`~hessverify.errors.BudgetError` (exit status 2) that gives the
figure.  The budget is ``--max-memory``; its default, :func:`default_limit`,
is a safe share of the machine: a quarter of the physical memory, at most
half of what is available now, and within any address-space (``ulimit -v``)
or control-group limit the process runs under.

Each method and reference declares what it costs (its component's
:class:`~hessverify.engine.components.Cost`): peak allocations measured with
``tracemalloc`` on networks of several shapes (``docs/trust.md``,
"Budgets"), rounded up, ``a * 8 W^2 + b * 8 N W`` bytes, and run time
``alpha N W^2 + beta W`` seconds.

Examples
--------
>>> import hessverify
>>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
>>> estimate(case, ["backprop"]) < 100 * 2**20  # the 64 MiB of slack, and little more
True
>>> parse_size("1.5G")
1610612736
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hessverify.engine.components import UNKNOWN_COST, Cost
from hessverify.engine.registry import METHODS
from hessverify.errors import BudgetError, UsageError
from hessverify.model.network import Architecture
from hessverify.model.problem import Problem

__all__ = ["DEFAULT_MAX_SECONDS", "MAX_DERIVE_DEPTH", "SYMBOLIC_SECONDS", "check_derive", "check_memory",
           "estimated_cost", "check_seconds", "check_time", "estimate_seconds", "current_limit",
           "current_time_limit", "default_limit", "estimate", "format_duration", "format_size", "limit", "parse_size",
           "require", "time_limit"]

_BASE = 64 * 2**20  # interpreter-side slack: comparisons, reports, temporaries
_SAFETY = 1.25

_limit: int | None = None  # set by the command line's --max-memory (see limit())
_max_seconds: float | None = None  # set by the command line's --max-time (see time_limit())


def format_size(n: float) -> str:
    """``3.2 GB``-style figure (binary units, as ``--max-memory`` takes them)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def parse_size(text: str) -> int:
    """``4G``, ``512M``, ``1.5GiB``, ``2000000`` (bytes) -> bytes; a one-line :class:`UsageError` otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text or "")
    if not m:
        raise UsageError(f"--max-memory {text!r}: give a size such as 4G, 512M or 1.5GiB")
    value = float(m.group(1)) * 2 ** (10 * " KMGT".index((m.group(2) or " ").upper()))
    if value < 2**20:
        raise UsageError(f"--max-memory {text!r}: at least 1M")
    return int(value)


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _cgroup_room() -> int | None:
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            raw = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if not raw.isdigit() or int(raw) >= 2**60:
            return None
        try:
            used = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            used = 0
        return max(int(raw) - used, 0)
    return None


def _address_space_room() -> int | None:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
        used = pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 0
    return max(soft - used, 0)


def default_limit() -> int:
    """A safe share of the machine: see the module text."""
    info = _meminfo()
    total = info.get("MemTotal", 8 * 2**30)
    candidates = [total // 4, info.get("MemAvailable", total) // 2]
    for room in (_cgroup_room(), _address_space_room()):
        if room is not None:
            candidates.append(int(room * 0.8))
    return max(min(candidates), 2**20)


def current_limit() -> int:
    """The budget in force: ``--max-memory`` if given, else :func:`default_limit`."""
    return _limit if _limit is not None else default_limit()


@contextmanager
def limit(n_bytes: int | None) -> Iterator[None]:
    """Run with ``n_bytes`` as the budget (``None``: the default)."""
    global _limit
    old, _limit = _limit, n_bytes
    try:
        yield
    finally:
        _limit = old


def current_time_limit() -> float:
    """The time budget in force, in seconds: ``--max-time`` if given, else :data:`DEFAULT_MAX_SECONDS`; 0 is none."""
    return DEFAULT_MAX_SECONDS if _max_seconds is None else _max_seconds


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Run with ``seconds`` as the time budget of the checks below the command line (``None``: the default)."""
    global _max_seconds
    old, _max_seconds = _max_seconds, seconds
    try:
        yield
    finally:
        _max_seconds = old


def _cost(name: str) -> Cost:
    """The cost a component declares (:class:`~hessverify.engine.components.Cost`); a generous guess for a name
    the registry does not know (a function under test)."""
    component = METHODS.get(name)
    return component.cost if component is not None else UNKNOWN_COST


def _peak(name: str, problem: Problem) -> float:
    return _cost(name).peak_bytes(problem)


def estimate(problem: Problem, names: Iterable[str], *, kept: int | None = None) -> int:
    """Estimated peak bytes of computing ``names`` on ``problem`` and comparing the results.

    The largest single method's peak, plus every full matrix held at once
    (``kept``, default: one per name, and the bound and error arrays of the
    comparisons), plus the data, with a safety factor.
    """
    names = list(names)
    W, N = problem.n_params, problem.n_patterns
    matrix = 8.0 * W * W
    held = len(names) + 4 if kept is None else kept  # results, and bound, |A - R|, ratio, mask of comparisons
    data = 8.0 * N * (problem.architecture.inputs + problem.architecture.outputs)
    peak = max((_peak(n, problem) for n in names), default=0.0)
    return int(_SAFETY * (peak + held * matrix + data) + _BASE)


def require(needed: float, what: str) -> None:
    """Raise :class:`BudgetError` if ``needed`` bytes exceed the budget; the message gives both figures."""
    budget = current_limit()
    if needed > budget:
        raise BudgetError(f"{what} would need about {format_size(needed)} of memory, more than the budget of "
                          f"{format_size(budget)}; use a smaller case, fewer methods, or raise --max-memory")


SYMBOLIC_SECONDS = (4e-5, 2e-6, 2e-7, 1.0)
"""The symbolic reference's time model ``(build, evaluate, sum, fixed)`` in seconds: see :func:`estimated_cost`.

Fitted (non-negative least squares on the relative error) to ten shapes of
network, W = 121 to 2641, N = 8 to 128, chains, a graph, softmax and
sigmoid/gelu/tanh, measured twice by ``python benchmarks/symbolic_calibration.py
--fit`` on this project's 2-core machine at a load average of 15 to 19
(other jobs): within 0.4x to 2.2x of every measurement
(``tests/engine/test_budget.py`` holds it within 3x of the recorded ones)."""


def _program_size(problem: Problem) -> int:
    """The closed form's products per pattern, counted from the recursions of ``symbolic.expressions.definitions``.

    Per layer ``l`` and each layer ``c`` that reads it: delta, ``R = W^T Q``
    and ``Q`` (``u_l u_c (1 + u_c + u_l)``); per pair ``l < m'``: ``K``
    (``u_l u_m'^2``); per pair ``l`` above ``m``: ``B_{l,m}`` (``u_l u_m``
    times the units of the sources it sums over); and the forward pass, ``W``.
    """
    arch = problem.architecture
    if arch.is_chain:
        return _chain_program_size(arch)
    u = {l: arch.layer(l).units for l in arch.bottom_up}
    size = arch.n_params
    for m in arch.bottom_up:
        size += sum(u[m] * u[c] * (1 + u[c] + u[m]) for c in arch.children(m))
        later = arch.above(m) if arch.is_chain else [l for l in arch.bottom_up if l > m]
        size += sum(u[m] * u[l] * u[l] for l in later)
        for l in arch.above(m):
            size += u[l] * u[m] * sum(1 if p == m else u[p] for p in arch.parents(l) if p == m or p in arch.above(m))
    return size


def _chain_program_size(arch: Architecture) -> int:
    """:func:`_program_size` of a chain in one pass from the top (suffix sums), not a pass per pair of layers: a
    chain of 10,000 layers is counted in milliseconds.  Layer ``l`` above ``m`` reads ``l - 1`` alone, so
    ``B_{l,m}`` sums over ``1`` unit when ``l = m + 1`` and over ``u_{l-1}`` above that."""
    u = [arch.layer(l).units for l in arch.bottom_up]
    size = arch.n_params
    squares = 0  # sum over the layers above m of u_l^2
    pairs = 0  # sum over the layers l >= m + 2 of u_l u_{l-1}
    for i in range(len(u) - 1, -1, -1):
        if i + 1 < len(u):
            size += u[i] * u[i + 1] * (1 + u[i + 1] + u[i])  # delta, R and Q of the one layer that reads it
            size += u[i] * u[i + 1] * 1 + u[i] * pairs  # B over the layers above
        size += u[i] * squares  # K over the layers above
        if i + 1 < len(u):
            pairs += u[i + 1] * u[i]
        squares += u[i] * u[i]
    return size


KINDS_RATE = 1e5
"""mpmath operations a second the symbolic reference of other layer kinds manages at least, building its program
included (measured: 3e5 to 2e6 a second on small cases, 2e5 on W = 2302)."""


def estimated_cost(problem: Problem) -> float:
    """Estimated seconds of the symbolic reference (``hessian_with_error`` at 50 digits).

    ``build P + evaluate N P + sum N W^2 + fixed`` (:data:`SYMBOLIC_SECONDS`):
    ``P`` the products of the closed form per pattern
    (:func:`_program_size`), built once in SymPy and evaluated per pattern in
    :mod:`decimal`; the ``N W^2`` exact sums over patterns on float64 BLAS
    with the per-entry work around them; a fixed start (SymPy's derivatives
    of the activations and the loss).  Here rather than in
    :mod:`hessverify.symbolic.reference` (which re-exports it), so that the
    budgets below the symbolic layer can ask it.
    """
    if not problem.architecture.is_dense:  # other layer kinds: an upper count of their program's operations
        return _kinds_cost(problem) / KINDS_RATE
    build, evaluate, total, fixed = SYMBOLIC_SECONDS
    P, W, N = _program_size(problem), problem.n_params, problem.n_patterns
    return build * P + evaluate * N * P + total * N * W * W + fixed


def _kinds_cost(problem: Problem) -> int:
    """A network of other kinds, from its shapes alone: each layer's output entries times the square of the
    parameters at or below it (the second-order terms of :mod:`hessverify.symbolic.kinds`), over the patterns.

    An upper estimate: a convolution's entry depends on a few of the weights below it, not all; the symbolic
    reference counts its traced program exactly (``hessverify.symbolic.kinds.work``) where tracing is cheap.
    """
    arch = problem.architecture
    below = 0
    total = 0
    for index in arch.bottom_up:
        below += sum(t.size for t in arch.layer_tensors(index))
        total += int(np.prod(arch.shapes[index])) * below**2
    return problem.n_patterns * (total + arch.n_params**2)


def check_time(problem: Problem, names: Iterable[str]) -> None:
    """Refuse the symbolic reference where its estimated run time is past the time budget (``--max-time``)."""
    if "symbolic" not in names:
        return
    budget = current_time_limit()
    seconds = _cost("symbolic").seconds_for(problem)
    if budget > 0 and seconds > budget:
        raise BudgetError(f"{problem.id} (W = {problem.n_params}, N = {problem.n_patterns}): the symbolic reference "
                          f"would take about {format_duration(seconds)}, more than the --max-time of "
                          f"{format_duration(budget)}; raise --max-time, or use autograd, complex_step or richardson")


DERIVE_SECONDS_AT_2302 = 12.0
"""``derive`` on a 20-100(tanh)-2(tanh) network (W = 2302), measured: 12 s, 27 s with ``--explicit``;
the time grows about as W^1.8, and the explicit form's tree with the number of input-to-output paths."""
MAX_EXPLICIT_PATHS = 200_000
MAX_DERIVE_DEPTH = 100
"""Deepest network ``derive`` takes: it writes an entry as one nested SymPy expression, and SymPy walks it
recursively (``free_symbols``), a few Python frames per layer: 100 one-unit layers derive, 150 exhaust the
interpreter's recursion limit (measured)."""


def check_derive(problem: Problem, *, explicit: bool) -> None:
    """Refuse ``derive`` where its estimated run time is past the time budget (:func:`current_time_limit`), or
    the network is deeper than :data:`MAX_DERIVE_DEPTH`."""
    arch = problem.architecture
    if arch.depth > MAX_DERIVE_DEPTH:
        raise BudgetError(f"derive on {problem.id}: {arch.depth} layers, more than the {MAX_DERIVE_DEPTH} whose "
                          "nested expressions SymPy can walk; derive on a shallower network with the same layers")
    seconds = DERIVE_SECONDS_AT_2302 * (problem.n_params / 2302) ** 1.8 * (2.5 if explicit else 1.0)
    # input-to-output paths through the units: a layer's units times the paths into its sources
    into = {0: arch.inputs}
    for l in arch.bottom_up:
        into[l] = int(np.prod(arch.shapes[l])) * sum(into[p] for p in arch.parents(l))
    paths = into[arch.output_layer]
    budget = current_time_limit()
    too_slow = 0 < budget < seconds
    if too_slow or (explicit and paths > MAX_EXPLICIT_PATHS):
        what = f"derive{' --explicit' if explicit else ''} on {problem.id} (W = {problem.n_params})"
        reason = (f"would take about {format_duration(seconds)}, more than the --max-time of {format_duration(budget)}"
                  if too_slow else
                  f"would write out a tree of {paths:.3g} input-to-output paths (at most {MAX_EXPLICIT_PATHS})")
        raise BudgetError(f"{what} {reason}; derive on a smaller network with the same layers"
                          + ("" if not explicit else ", or leave out --explicit"))


DEFAULT_MAX_SECONDS = 600.0
"""Default of ``--max-time``: estimated work past it is refused before it starts."""

def estimate_seconds(problem: Problem, names: Iterable[str]) -> float:
    """Estimated seconds of computing ``names`` on ``problem``, from each component's declared cost."""
    return sum(_cost(name).seconds_for(problem) for name in names)


def check_seconds(problems: Iterable[tuple[Problem, list[str]]], max_seconds: float | None) -> float:
    """Refuse work estimated past ``max_seconds`` (default :data:`DEFAULT_MAX_SECONDS`); return the estimate."""
    budget = DEFAULT_MAX_SECONDS if max_seconds is None else max_seconds
    total = 0.0
    worst: tuple[float, Problem | None] = (0.0, None)
    for problem, names in problems:
        seconds = estimate_seconds(problem, names)
        total += seconds
        worst = max(worst, (seconds, problem), key=lambda x: x[0])
    if budget > 0 and total > budget:
        p = worst[1]
        where = f"; the largest share is {p.id} (W = {p.n_params}, N = {p.n_patterns})" if p is not None else ""
        raise BudgetError(f"the work asked for would take about {format_duration(total)}, more than the --max-time of "
                          f"{format_duration(budget)}{where}; use fewer methods or patterns, or raise --max-time")
    return total


def format_duration(seconds: float) -> str:
    """Seconds for people: ``42 s``, ``17 min``, ``3 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def check_memory(problem: Problem, names: Iterable[str], *, kept: int | None = None) -> None:
    """:func:`require` the :func:`estimate` of ``names`` on ``problem``, before anything is allocated.

    The symbolic reference is also held to its time budget (:func:`check_time`).
    """
    names = list(names)
    check_time(problem, names)
    require(estimate(problem, names, kept=kept),
            f"{problem.id} (W = {problem.n_params}, N = {problem.n_patterns}) with {', '.join(names)}")
