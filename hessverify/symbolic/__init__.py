"""Closed-form second derivatives with SymPy: the gold reference and the lecture helpers.

* :mod:`~hessverify.symbolic.expressions` builds the network, its error and
  the named per-layer quantities of backpropagation in SymPy, from the SymPy
  columns of the activation and loss tables;
* :mod:`~hessverify.symbolic.formulas` gives the closed form of any Hessian
  entry by the general second-order backpropagation formula for its kind of
  weight pair, and checks it against direct differentiation;
* :mod:`~hessverify.symbolic.reference` evaluates the closed-form Hessian of a
  case in float64, in high precision (mpmath) or exactly (rationals): the
  ``symbolic`` reference of ``hessverify verify``;
* :mod:`~hessverify.symbolic.lecture` wraps all this for a lecture or a
  notebook: expressions with ``.latex()`` and ``_repr_latex_``.
"""

from __future__ import annotations

from hessverify.symbolic.expressions import Expression, NetworkSymbols
from hessverify.symbolic.formulas import KINDS, general_formula
from hessverify.symbolic.lecture import LectureNetwork, derive
from hessverify.symbolic.reference import hessian_exact, hessian_float64, hessian_mpmath, small_enough

__all__ = [
    "KINDS",
    "Expression",
    "LectureNetwork",
    "NetworkSymbols",
    "derive",
    "general_formula",
    "hessian_exact",
    "hessian_float64",
    "hessian_mpmath",
    "small_enough",
]
