"""Floating-point formats, as the rounding model sees them.

A :class:`Precision` holds what the error bounds of :mod:`hessverify.engine.bounds`
need of a format: its unit roundoff ``u`` (round to nearest), the floor below
which the relative model ``|error| <= u |x|`` no longer holds (underflow), and a
name.  ``float64`` is the default everywhere; the others let the same bounds
judge a Hessian computed in a narrower format.

Adding a format is adding one constant here and one line to :data:`PRECISIONS`.

Examples
--------
>>> from hessverify.base.precision import FLOAT32, get_precision
>>> get_precision("float32") is FLOAT32
True
>>> FLOAT32.unit_roundoff == 2.0**-24
True
>>> FLOAT32.gamma(2) == 2 * 2.0**-24 / (1 - 2 * 2.0**-24)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hessverify.errors import UsageError

__all__ = ["BFLOAT16", "FLOAT16", "FLOAT32", "FLOAT64", "PRECISIONS", "Precision", "get_precision"]


@dataclass(frozen=True)
class Precision:
    """A floating-point format with round to nearest.

    Attributes
    ----------
    name:
        ``"float64"``, ``"float32"``, ...
    unit_roundoff:
        ``u = 2^-p`` for ``p`` significand bits (Higham 2002, sec. 2.1).
    underflow_floor:
        An absolute allowance for underflow: entries that differ by less are
        treated as equal.  Below the smallest normal number the relative model
        fails (a product of two tiny numbers flushes to 0 or a subnormal, with
        an error up to the smallest normal), and later products can scale that
        error by the network's larger quantities, for which ``2^40`` is allowed.
    """

    name: str
    unit_roundoff: float
    underflow_floor: float

    def gamma(self, k: int) -> float:
        """Higham's ``gamma_k = k u / (1 - k u)`` (Higham 2002, lemma 3.1).

        The lemma needs ``k u < 1``; past it no bound holds, and that is said
        (a :class:`~hessverify.errors.UsageError`, one line: deep networks and
        many patterns make long chains, and a narrow format reaches the limit
        first: 2047 roundings in float16, 255 in bfloat16, 9e15 in float64).
        """
        ku = k * self.unit_roundoff
        if ku >= 1:
            raise UsageError(f"a chain of {k} roundings is too long for {self.name} error bounds: gamma_k needs "
                             f"k u < 1, at most {math.ceil(1 / self.unit_roundoff) - 1} roundings; use fewer layers "
                             "or patterns, or a wider precision")
        return ku / (1.0 - ku)

    def __str__(self) -> str:
        return self.name


_GROWTH = 2.0**40
"""How much later products may scale an underflow error (see :attr:`Precision.underflow_floor`)."""

FLOAT64 = Precision("float64", 2.0**-53, 2.0**-1022 * _GROWTH)
"""IEEE binary64: 53 significand bits, smallest normal ``2^-1022``."""

FLOAT32 = Precision("float32", 2.0**-24, 2.0**-126 * _GROWTH)
"""IEEE binary32: 24 significand bits, smallest normal ``2^-126``."""

BFLOAT16 = Precision("bfloat16", 2.0**-8, 2.0**-126 * _GROWTH)
"""bfloat16: 8 significand bits, the exponent range of float32."""

FLOAT16 = Precision("float16", 2.0**-11, 2.0**-24 * 2.0**16)
"""IEEE binary16: 11 significand bits.  Its range is too narrow for the ``2^40``
allowance (the largest number is about ``2^16``), so the floor is the smallest
subnormal, ``2^-24``, scaled by that largest number."""

PRECISIONS: dict[str, Precision] = {p.name: p for p in (FLOAT64, FLOAT32, FLOAT16, BFLOAT16)}
"""Every known format, by name."""


def get_precision(spec: Precision | str | Any = "float64") -> Precision:
    """A :class:`Precision` from itself, a name (``"float32"``) or a NumPy dtype (``np.float32``).

    Raises ``ValueError`` naming the choices for anything else.

    Examples
    --------
    >>> import numpy as np
    >>> get_precision(np.float16).name, get_precision(np.dtype("float64")).name
    ('float16', 'float64')
    """
    if isinstance(spec, Precision):
        return spec
    name = spec if isinstance(spec, str) else getattr(spec, "name", None) or getattr(spec, "__name__", None)
    if name is None:
        try:
            import numpy as np

            name = np.dtype(spec).name
        except TypeError:
            name = repr(spec)
    try:
        return PRECISIONS[str(name)]
    except KeyError:
        raise ValueError(f"unknown precision {spec!r}; choose one of {', '.join(PRECISIONS)}") from None
