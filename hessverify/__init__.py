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
  to the references (random problems: :mod:`hessverify.strategies`).
"""

from __future__ import annotations

from hessverify.cases import load_case, parse_case
from hessverify.check import CheckResult, assert_hessian_close, check
from hessverify.compare import Comparison
from hessverify.errors import CaseError, HessverifyError, NotDifferentiableError, OverflowReport, UsageError
from hessverify.methods.pairwise import hessian_entry
from hessverify.methods.rop import hvp
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.registry import METHODS, Method
from hessverify.verify import hessian, verify_problem

__all__ = [
    "METHODS",
    "Architecture",
    "CaseError",
    "CheckResult",
    "Comparison",
    "HessverifyError",
    "Layer",
    "Method",
    "NotDifferentiableError",
    "OverflowReport",
    "Problem",
    "UsageError",
    "assert_hessian_close",
    "check",
    "hessian",
    "hessian_entry",
    "hvp",
    "load_case",
    "parse_case",
    "verify_problem",
]

__version__ = "0.1.0"
