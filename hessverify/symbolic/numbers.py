"""Number systems the closed-form program is evaluated in: the functions each one needs, by the printed names.

The program of :mod:`hessverify.symbolic.reference` is printed once for
every number type that offers the same few names (``lambdify_program``'s
``"numbers"`` dialect): ``mpf`` (the constructor, for rationals printed
``mpf(1)/mpf(2)``), ``exp``, ``log``, ``sqrt``, ``tanh``, ``erf``, ``sin``,
``cos`` and ``pi()``.  Here are those names for

* :func:`decimal_namespace`: Python's :mod:`decimal` at the context's
  precision: correctly rounded ``+ - * /``, ``exp``, ``log`` and ``sqrt``
  (the General Decimal Arithmetic specification), in C and several times
  faster than mpmath; ``tanh``, ``erf``, ``sin`` and ``cos``, which
  :mod:`decimal` lacks, are evaluated by mpmath a few digits wider and
  rounded back (an error of about one unit in the last place each, like a
  libm's);
* :func:`arb_namespace`: python-flint's ``arb`` balls (Johansson, "Arb: efficient arbitrary-precision
  midpoint-radius interval arithmetic", IEEE Trans. Comput. 66, 2017), whose
  every operation returns a ball that contains the exact result.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any

import mpmath

__all__ = ["arb_namespace", "decimal_context", "decimal_namespace"]


def decimal_context(digits: int) -> decimal.Context:
    """A :mod:`decimal` context of ``digits`` significant digits that raises on overflow and invalid operations."""
    return decimal.Context(prec=digits, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                           traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow])


def _cached(compute: Callable[[decimal.Decimal, int], decimal.Decimal]) -> Callable[[Any], decimal.Decimal]:
    """``compute(x, digits)`` at the context's precision, remembered: the program applies one function to one
    value many times (``tanh(a)`` in ``f``, ``f'`` and ``f''``; ``exp(y_k)`` in every entry of a softmax's Hessian)."""
    at = lru_cache(maxsize=8192)(compute)

    def f(x: Any) -> decimal.Decimal:
        ctx = decimal.getcontext()
        return ctx.plus(at(decimal.Decimal(x), ctx.prec))

    return f


def _via_mpmath(name: str) -> Callable[[Any], decimal.Decimal]:
    """``name`` of mpmath applied to a ``Decimal`` at the context's precision plus 10 digits, then rounded."""
    fn = getattr(mpmath, name)

    def compute(x: decimal.Decimal, digits: int) -> decimal.Decimal:
        with mpmath.workdps(digits + 10):
            v = fn(mpmath.mpf(str(x)))
            text = mpmath.libmp.to_str(v._mpf_, digits + 5)
        return decimal.Decimal(text)

    return _cached(compute)


def _native(name: str) -> Callable[[Any], decimal.Decimal]:
    """A method of ``Decimal`` (correctly rounded) at the context's precision."""
    def compute(x: decimal.Decimal, digits: int) -> decimal.Decimal:
        return getattr(x, name)(decimal_context(digits))

    return _cached(compute)


def _pi() -> decimal.Decimal:
    return decimal.getcontext().plus(_pi_digits(decimal.getcontext().prec))


@cache
def _pi_digits(digits: int) -> decimal.Decimal:
    with mpmath.workdps(digits + 10):
        return decimal.Decimal(mpmath.libmp.to_str(mpmath.pi._mpf_, digits + 5))


@cache
def decimal_namespace() -> dict[str, Any]:
    """The program's names for :class:`decimal.Decimal` (see the module text)."""
    D = decimal.Decimal
    return {
        "mpf": D,
        "exp": _native("exp"),
        "log": _native("ln"),
        "sqrt": _native("sqrt"),
        "tanh": _via_mpmath("tanh"),
        "erf": _via_mpmath("erf"),
        "sin": _via_mpmath("sin"),
        "cos": _via_mpmath("cos"),
        "pi": _pi,
    }


def arb_namespace() -> dict[str, Any]:
    """The program's names for python-flint's ``arb`` (``ImportError`` without python-flint)."""
    from flint import arb

    return {
        "mpf": arb,
        "exp": lambda x: arb(x).exp(),
        "log": lambda x: arb(x).log(),
        "sqrt": lambda x: arb(x).sqrt(),
        "tanh": lambda x: arb(x).tanh(),
        "erf": lambda x: arb(x).erf(),
        "sin": lambda x: arb(x).sin(),
        "cos": lambda x: arb(x).cos(),
        "pi": arb.pi,
    }
