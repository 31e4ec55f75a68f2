"""Closed-form second derivatives with SymPy: the gold reference and the lecture helpers.

* :mod:`~hessverify.symbolic.expressions` builds the network, its error and
  the named per-layer quantities of backpropagation in SymPy, from the SymPy
  columns of the activation and loss tables;
* :mod:`~hessverify.symbolic.formulas` gives the closed form of any Hessian
  entry by the general second-order backpropagation formula for its kind of
  weight pair, and checks it against direct differentiation;
* :mod:`~hessverify.symbolic.reference` evaluates the closed-form Hessian of a
  case in float64, at 50 digits (:mod:`decimal`), exactly (rationals) or in
  ball arithmetic (python-flint's ``arb``, for the ``certified`` reference):
  the ``symbolic`` reference of ``hessverify verify``;
* :mod:`~hessverify.symbolic.assembly` sums products over patterns exactly on
  float64 BLAS, and :mod:`~hessverify.symbolic.numbers` gives each number
  system the functions the program calls;
* :mod:`~hessverify.symbolic.lecture` wraps all this for a lecture or a
  notebook: expressions with ``.latex()`` and ``_repr_latex_``.

It imports the engine, the model and below; the references above it
(:mod:`hessverify.references.certified`) evaluate its program.
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
