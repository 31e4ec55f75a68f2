"""The activation table: value, first and second derivative, in NumPy beside SymPy.

Every activation is one row of :data:`ACTIVATIONS`.  The three NumPy columns
(``f``, ``df``, ``d2f``) are what the numeric methods use; the SymPy column
(``expr``, a function of one symbol) is what the symbolic reference and the
lecture helpers use.  ``tests/model/test_activations.py`` holds each NumPy
derivative against ``sympy.diff`` of the SymPy expression at many points, so
the two columns cannot drift apart.

Notation follows the lecture: a unit's net input is ``a``, its output is
``z = f(a)``, and backpropagation needs ``f'(a)`` and, for second order,
``f''(a)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import ndtr

from hessverify.base.typing import FloatArray
from hessverify.model._special import expit, positive, softplus

if TYPE_CHECKING:  # SymPy is imported by the functions of the SymPy column, when called: not on import
    import sympy

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


@dataclass(frozen=True)
class Activation:
    """One row of the activation table.

    Attributes
    ----------
    name:
        The name used in case files (``activation = "tanh"``).
    f, df, d2f:
        :math:`f(a)`, :math:`f'(a)` and :math:`f''(a)`, elementwise on arrays.
    expr:
        The same function as a SymPy expression of one symbol.
    kinks:
        Points where ``f`` is not twice differentiable (``relu``: 0).  A
        pre-activation exactly at a kink makes the Hessian undefined.
    d3f:
        :math:`f'''(a)`, used only by the rounding model of
        :mod:`hessverify.engine.bounds` to carry an error in the net input ``a``
        through to ``f''(a)``.
    terms:
        ``terms(a)`` gives the magnitudes of the terms that textbook formulas
        for ``f``, ``f'`` and ``f''`` add up, for the rounding model.
    deriv_max:
        An upper bound of ``|f^(k)|`` for k = 1..4 over the real line (away
        from kinks): the rounding model's remainder term.
    """

    name: str
    f: Callable[[FloatArray], FloatArray]
    df: Callable[[FloatArray], FloatArray]
    d2f: Callable[[FloatArray], FloatArray]
    d3f: Callable[[FloatArray], FloatArray]
    expr: Callable[[sympy.Symbol], sympy.Expr]
    terms: Callable[[FloatArray], tuple[FloatArray, FloatArray, FloatArray]]
    kinks: tuple[float, ...] = ()
    deriv_max: float = 1.0


def _sigmoid(a: FloatArray) -> FloatArray:
    return expit(a)


# The derivatives are written in forms without cancellation, so that they keep
# their relative accuracy when a unit saturates: sigma' = sigma(a) sigma(-a)
# rather than s (1 - s), whose 1 - s loses every digit for large a.

def _sigmoid_d1(a: FloatArray) -> FloatArray:
    return expit(a) * expit(-a)


def _sigmoid_d2(a: FloatArray) -> FloatArray:
    # sigma'' = sigma' (1 - 2 sigma), and 1 - 2 sigma(a) = -tanh(a / 2)
    return -expit(a) * expit(-a) * np.tanh(0.5 * a)


def _sigmoid_d3(a: FloatArray) -> FloatArray:
    # sigma''' = sigma' (1 - 6 sigma(a) sigma(-a))
    p = expit(a) * expit(-a)
    return p * (1.0 - 6.0 * p)


def _sech2(a: FloatArray) -> FloatArray:
    with np.errstate(over="ignore"):  # cosh overflows to inf; 1 / inf**2 = 0 is right
        return 1.0 / np.cosh(a) ** 2


def _tanh_d1(a: FloatArray) -> FloatArray:
    return _sech2(a)


def _tanh_d2(a: FloatArray) -> FloatArray:
    return -2.0 * np.tanh(a) * _sech2(a)


def _tanh_d3(a: FloatArray) -> FloatArray:
    t, s2 = np.tanh(a), _sech2(a)
    return 2.0 * s2 * (2.0 * t * t - s2)


def _softplus(a: FloatArray) -> FloatArray:
    return softplus(a)


def _phi(a: FloatArray) -> FloatArray:
    """Standard normal density."""
    return _INV_SQRT_2PI * np.exp(-0.5 * a * a)


def _Phi(a: FloatArray) -> FloatArray:
    """Standard normal distribution function, accurate in the lower tail."""
    return ndtr(a)


def _gelu(a: FloatArray) -> FloatArray:
    return a * _Phi(a)


def _gelu_d1(a: FloatArray) -> FloatArray:
    return _Phi(a) + a * _phi(a)


def _gelu_d2(a: FloatArray) -> FloatArray:
    # d/da [Phi + a phi] = phi + phi + a phi' = phi (2 - a^2), as phi' = -a phi
    return _phi(a) * (2.0 - a * a)


def _gelu_d3(a: FloatArray) -> FloatArray:
    # d/da [phi (2 - a^2)] = -a phi (2 - a^2) - 2 a phi = a phi (a^2 - 4)
    return a * _phi(a) * (a * a - 4.0)


def _silu(a: FloatArray) -> FloatArray:
    return a * expit(a)


def _silu_d1(a: FloatArray) -> FloatArray:
    # sigma + a sigma' = sigma(a) (1 + a sigma(-a))
    return expit(a) * (1.0 + a * expit(-a))


def _silu_d2(a: FloatArray) -> FloatArray:
    # 2 sigma' + a sigma'' = sigma' (2 - a tanh(a / 2))
    return expit(a) * expit(-a) * (2.0 - a * np.tanh(0.5 * a))


def _silu_d3(a: FloatArray) -> FloatArray:
    # (a sigma)''' = 3 sigma'' + a sigma'''
    return 3.0 * _sigmoid_d2(a) + a * _sigmoid_d3(a)


def _relu(a: FloatArray) -> FloatArray:
    return a * positive(a)


def _relu_d1(a: FloatArray) -> FloatArray:
    return positive(a)


def _zeros(a: FloatArray) -> FloatArray:
    return np.zeros_like(a)


def _ones(a: FloatArray) -> FloatArray:
    return np.ones_like(a)


def _identity(a: FloatArray) -> FloatArray:
    return np.asarray(a)


def _neg_sin(a: FloatArray) -> FloatArray:
    return -np.sin(a)


def _neg_cos(a: FloatArray) -> FloatArray:
    return -np.cos(a)


def _sym_identity(x: sympy.Symbol) -> sympy.Expr:
    return x


def _sym_sigmoid(x: sympy.Symbol) -> sympy.Expr:
    import sympy

    return 1 / (1 + sympy.exp(-x))


def _sym_softplus(x: sympy.Symbol) -> sympy.Expr:
    import sympy

    return sympy.log(1 + sympy.exp(x))


def _sym_gelu(x: sympy.Symbol) -> sympy.Expr:
    import sympy

    return x * (1 + sympy.erf(x / sympy.sqrt(2))) / 2


def _sym_silu(x: sympy.Symbol) -> sympy.Expr:

    return x * _sym_sigmoid(x)


def _sym_tanh(x: sympy.Symbol) -> sympy.Expr:
    import sympy

    return sympy.tanh(x)


def _sym_sin(x: sympy.Symbol) -> sympy.Expr:
    import sympy

    return sympy.sin(x)


def _sym_relu(x: sympy.Symbol) -> sympy.Expr:
    import sympy

    return sympy.Piecewise((x, x > 0), (0, True))


# -- magnitudes of the terms, for the rounding model -----------------------------
# A correct implementation may evaluate f, f' and f'' by any textbook formula:
# sigma(a) as 1 / (1 + e^-a) or as (1 + tanh(a/2)) / 2, sigma' as s (1 - s),
# tanh' as 1 - t^2.  Those formulas are accurate to a few ulps of the *terms*
# they add, not of the result (1 - t^2 loses every digit when t -> 1), so the
# bound on two correct implementations must be scaled by the terms.  Each
# function below returns (|terms of f|, |terms of f'|, |terms of f''|).

Terms = tuple[FloatArray, FloatArray, FloatArray]


def _identity_terms(a: FloatArray) -> Terms:
    return np.abs(a), np.ones_like(a), np.zeros_like(a)


def _sigmoid_terms(a: FloatArray) -> Terms:
    # s = (1 + tanh(a/2)) / 2 is accurate to an ulp of 1, not of s; s (1 - s)
    # and s (1 - s)(1 - 2 s) inherit that: terms (1 + s) and (1 + s)(1 + 2 s)
    s = expit(a)
    return np.ones_like(a), 1.0 + s, (1.0 + s) * (1.0 + 2.0 * s)


def _tanh_terms(a: FloatArray) -> Terms:
    t = np.abs(np.tanh(a))
    return t, 1.0 + t * t, 2.0 * t * (1.0 + t * t)


def _softplus_terms(a: FloatArray) -> Terms:
    s_terms = _sigmoid_terms(a)
    return np.abs(_softplus(a)) + 1.0, s_terms[0], s_terms[1]  # log(1 + e^a) rounds 1 + e^a


def _sin_terms(a: FloatArray) -> Terms:
    return np.abs(np.sin(a)), np.abs(np.cos(a)), np.abs(np.sin(a))


def _gelu_terms(a: FloatArray) -> Terms:
    # a (1 + erf(a/sqrt2)) / 2,  Phi + a phi,  phi (2 - a^2)
    p = _phi(a)
    return np.abs(a), 1.0 + np.abs(a) * p, p * (2.0 + a * a)


def _silu_terms(a: FloatArray) -> Terms:
    # a sigma,  sigma + a sigma (1 - sigma),  2 sigma' + a sigma''
    s0, s1, s2 = _sigmoid_terms(a)
    return np.abs(a) * s0, s0 + np.abs(a) * s1, 2.0 * s1 + np.abs(a) * s2


def _relu_terms(a: FloatArray) -> Terms:
    return np.abs(_relu(a)), np.ones_like(a), np.zeros_like(a)


_A = Activation
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        #  name      f          f'           f''          f'''          SymPy  |terms|  kinks  sup|f^(1..4)|
        _A("identity", _identity, _ones, _zeros, _zeros, _sym_identity, _identity_terms, (), 1.0),
        _A("sigmoid", _sigmoid, _sigmoid_d1, _sigmoid_d2, _sigmoid_d3, _sym_sigmoid, _sigmoid_terms, (), 0.25),
        _A("tanh", np.tanh, _tanh_d1, _tanh_d2, _tanh_d3, _sym_tanh, _tanh_terms, (), 4.1),
        _A("softplus", _softplus, _sigmoid, _sigmoid_d1, _sigmoid_d2, _sym_softplus, _softplus_terms, (), 1.0),
        _A("sin", np.sin, np.cos, _neg_sin, _neg_cos, _sym_sin, _sin_terms, (), 1.0),
        _A("gelu", _gelu, _gelu_d1, _gelu_d2, _gelu_d3, _sym_gelu, _gelu_terms, (), 1.6),
        _A("silu", _silu, _silu_d1, _silu_d2, _silu_d3, _sym_silu, _silu_terms, (), 1.1),
        _A("relu", _relu, _relu_d1, _zeros, _zeros, _sym_relu, _relu_terms, (0.0,), 1.0),
    )
}
"""Every activation a case may name, keyed by that name."""


def get_activation(name: str) -> Activation:
    """Return the table row for ``name``; raise ``KeyError`` naming the choices."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise KeyError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None
