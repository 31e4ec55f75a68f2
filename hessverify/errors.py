"""Errors meant for people, each with the exit status the command line uses.

| status | meaning |
| --- | --- |
| 0 | every comparison agrees within its bound |
| 1 | a discrepancy: some method disagrees with some reference |
| 2 | invalid input or usage (case file, option, name) |
| 3 | the Hessian does not exist at this point (a relu pre-activation exactly at its kink) |
| 4 | numeric overflow: the network's values are not finite at this point |
"""

from __future__ import annotations

__all__ = [
    "EXIT_DISCREPANCY",
    "EXIT_INVALID",
    "EXIT_NOT_DIFFERENTIABLE",
    "EXIT_OK",
    "EXIT_OVERFLOW",
    "CaseError",
    "HessverifyError",
    "NotDifferentiableError",
    "OverflowReport",
    "UsageError",
]

EXIT_OK = 0
EXIT_DISCREPANCY = 1
EXIT_INVALID = 2
EXIT_NOT_DIFFERENTIABLE = 3
EXIT_OVERFLOW = 4


class HessverifyError(Exception):
    """Base class: a message for a person and the exit status to leave with."""

    exit_code = EXIT_INVALID


class UsageError(HessverifyError, ValueError):
    """Bad arguments: an unknown method, a malformed parameter name, ..."""


class CaseError(HessverifyError, ValueError):
    """A case file that cannot be used: names the file, the key and the fault."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.message = source, key, message
        where = f"{source}: " if source else ""
        keypart = f"[{key}] " if key else ""
        super().__init__(f"{where}{keypart}{message}")


class NotDifferentiableError(HessverifyError, ArithmeticError):
    """The error function is not twice differentiable at this point."""

    exit_code = EXIT_NOT_DIFFERENTIABLE


class OverflowReport(HessverifyError, ArithmeticError):
    """Some intermediate value overflowed to inf or became NaN."""

    exit_code = EXIT_OVERFLOW
