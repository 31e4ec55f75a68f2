"""Helpers shared by the property tests: failure notes and per-property assertions.

Every property asserts through :func:`assert_property`, so a failure names the
property, notes (``hypothesis.note``) the problem's architecture and the worst
entry by parameter names, and prints the shrunk problem as a case file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import note

from hessverify import METHODS, Comparison, Problem
from hessverify.checking.check import describe


def note_problem(problem: Problem) -> None:
    """Note the architecture (and the case file) of a drawn problem, shown only on failure."""
    note(f"architecture {problem.architecture.describe()}, loss {problem.loss}, reduction {problem.reduction}, "
         f"{problem.n_patterns} pattern(s), W = {problem.n_params}")
    note("as a case file:\n" + problem.to_toml())


def assert_property(name: str, problem: Problem, comparison: Comparison) -> None:
    """Assert one comparison of a property, noting its worst entry by parameter names."""
    note(f"property {name!r}: {describe(comparison)}")
    assert comparison.passed, (
        f"property {name!r} failed on {problem.architecture.describe()}: {describe(comparison)}"
    )


def exact_matrix_methods() -> list[str]:
    """Exact methods that return the full Hessian: the ones properties hold to identities."""
    return [m.name for m in METHODS.values() if m.role == "method" and m.kind == "matrix"]


def matrix_methods() -> list[str]:
    """Exact methods and references that return the full Hessian."""
    return [m.name for m in METHODS.values() if m.role in ("method", "reference") and m.kind == "matrix"]


@contextmanager
def quiet_autograd() -> Iterator[None]:
    # autograd warns when E is linear in some parameters (a constant Hessian), which
    # identity networks with sse often are; the Hessian it returns is still right
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Output seems independent of input")
        yield
