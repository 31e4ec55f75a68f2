"""Arguments of the public API, checked where they enter: a wrong type or value is a one-line
:class:`~hessverify.errors.UsageError` that names the argument, never a ``TypeError`` from deep inside.

>>> whole_number("max_iter", 3)
3
>>> whole_number("max_iter", True)
Traceback (most recent call last):
...
hessverify.errors.UsageError: max_iter must be a whole number >= 0, got True
>>> positive_number("tol", float("inf"))
Traceback (most recent call last):
...
hessverify.errors.UsageError: tol must be a finite number > 0, got inf
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from hessverify.errors import UsageError

__all__ = ["positive_number", "whole_number"]


def whole_number(name: str, value: Any, *, minimum: int = 0) -> int:
    """``value`` as an ``int`` if it is a whole number (not a bool) at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UsageError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def positive_number(name: str, value: Any, *, zero: bool = False) -> float:
    """``value`` as a ``float`` if it is a finite real number (not a bool) above 0 (or at least 0 with ``zero``)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) and (
        value >= 0 if zero else value > 0)
    if not ok:
        raise UsageError(f"{name} must be a finite number {'>= 0' if zero else '> 0'}, got {value!r}")
    return float(value)
