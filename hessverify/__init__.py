"""hessverify: verification of second-order backpropagation.

The public API:

* :func:`load_case` reads a case file into a :class:`Problem`;
* :func:`hessian` computes a Hessian by any registered method;
* :func:`verify_problem` compares every method with every reference within
  derived bounds;
* :data:`METHODS` is the registry of methods and references;
* :func:`hvp` is the exact Hessian-vector product (Pearlmutter's R-operator);
* :func:`hessian_entry` is one exact entry by a second-order backward pass;
* :func:`check` and :func:`assert_hessian_close` hold your own Hessian code
  to the references (random problems: :mod:`hessverify.strategies`); a
  function that itself fails raises :class:`FunctionUnderTestError`;
* :func:`error` and :func:`gradient` are ``E`` and its gradient at any point;
  :mod:`hessverify.lab` runs optimisers with them and finds stationary points;
* :func:`ensure_well_posed` raises unless the Hessian exists at a problem's point;
* :class:`Precision` (:data:`FLOAT64`, :data:`FLOAT32`, :data:`FLOAT16`,
  :data:`BFLOAT16`, :func:`get_precision`) is the format the rounding bounds
  judge (:func:`hessverify.bounds.rounding_bound`);
* :class:`FullHessian`, :class:`DiagonalHessian`, :class:`BlockDiagonalHessian`
  and :class:`HessianVectorProduct` are the forms of a result (:mod:`hessverify.forms`).

``import hessverify`` loads neither SymPy, autograd nor matplotlib: the
registry imports a method or reference on its first call.
"""

from __future__ import annotations

from hessverify.cases import load_case, parse_case
from hessverify.check import CheckResult, assert_hessian_close, check
from hessverify.compare import Comparison
from hessverify.errors import (
    BudgetError,
    CaseError,
    FunctionUnderTestError,
    HessverifyError,
    NotDifferentiableError,
    OverflowReport,
    UsageError,
)
from hessverify.forms import BlockDiagonalHessian, DiagonalHessian, FullHessian, HessianForm, HessianVectorProduct
from hessverify.methods.pairwise import hessian_entry
from hessverify.methods.rop import hvp
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.model.well_posed import ensure_well_posed
from hessverify.objective import error, gradient
from hessverify.precision import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, Precision, get_precision
from hessverify.registry import METHODS, Method
from hessverify.verify import hessian, verify_problem

__all__ = [
    "BFLOAT16",
    "FLOAT16",
    "FLOAT32",
    "FLOAT64",
    "METHODS",
    "Architecture",
    "BlockDiagonalHessian",
    "BudgetError",
    "CaseError",
    "CheckResult",
    "Comparison",
    "DiagonalHessian",
    "FullHessian",
    "FunctionUnderTestError",
    "HessianForm",
    "HessianVectorProduct",
    "HessverifyError",
    "Layer",
    "Method",
    "NotDifferentiableError",
    "OverflowReport",
    "Precision",
    "Problem",
    "UsageError",
    "assert_hessian_close",
    "check",
    "ensure_well_posed",
    "error",
    "get_precision",
    "gradient",
    "hessian",
    "hessian_entry",
    "hvp",
    "load_case",
    "parse_case",
    "verify_problem",
]

__version__ = "0.1.0"
