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
  to the references (random problems: :mod:`hessverify.checking.strategies`); a
  function that itself fails raises :class:`FunctionUnderTestError`;
* :func:`error` and :func:`gradient` are ``E`` and its gradient at any point;
  :mod:`hessverify.apps.lab` runs optimisers with them and finds stationary points;
* :func:`ensure_well_posed` raises unless the Hessian exists at a problem's point;
* :class:`Precision` (:data:`FLOAT64`, :data:`FLOAT32`, :data:`FLOAT16`,
  :data:`BFLOAT16`, :func:`get_precision`) is the format the rounding bounds
  judge (:func:`hessverify.engine.bounds.rounding_bound`);
* :class:`FullHessian`, :class:`DiagonalHessian`, :class:`BlockDiagonalHessian`
  and :class:`HessianVectorProduct` are the forms of a result (:mod:`hessverify.engine.forms`).

``import hessverify`` loads neither SymPy, autograd nor matplotlib: the
registry imports a method or reference on its first call;
:mod:`hessverify.adapters.torch` and :mod:`hessverify.adapters.jax` (extras ``torch`` and
``jax``, loaded on first access) give a problem as PyTorch or JAX objects
and check curvature code written in those frameworks.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

from hessverify.base.precision import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, Precision, get_precision
from hessverify.base.version import VERSION
from hessverify.checking.check import CheckResult, assert_hessian_close, check
from hessverify.engine.compare import Comparison
from hessverify.engine.forms import BlockDiagonalHessian, DiagonalHessian, FullHessian, HessianForm, HessianVectorProduct
from hessverify.engine.objective import error, gradient
from hessverify.engine.registry import METHODS, Method
from hessverify.engine.verify import hessian, hessian_entry, hvp, verify_problem
from hessverify.errors import (
    BudgetError,
    CaseError,
    FunctionUnderTestError,
    HessverifyError,
    NotDifferentiableError,
    OverflowReport,
    UnsupportedModel,
    UsageError,
)
from hessverify.io.cases import load_case, parse_case
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.model.well_posed import ensure_well_posed

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
    "UnsupportedModel",
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

__version__ = VERSION  # from the package metadata

# -- stable public module names --------------------------------------------------------------------
# The package is grouped by layer (docs/architecture.md); the module names people import stay as
# they were: ``import hessverify.torch`` is ``hessverify.adapters.torch``, the same module object.
_MOVED = {
    "torch": "adapters.torch", "jax": "adapters.jax", "tensorflow": "adapters.tensorflow",
    "conformance": "adapters.conformance",
    "strategies": "checking.strategies", "sweep": "checking.sweep",
    "sandbox": "checking.sandbox", "lab": "apps.lab", "trust": "apps.trust", "campaign": "apps.campaign",
    "bounds": "engine.bounds", "budget": "engine.budget", "compare": "engine.compare", "forms": "engine.forms",
    "registry": "engine.registry", "run": "engine.run", "verify": "engine.verify", "objective": "engine.objective",
    "cases": "io.cases", "precision": "base.precision", "_typing": "base.typing",
}
"""Former (and public) module names below ``hessverify`` -> where the module lives now.  (``hessverify.check`` is
the function :func:`check`; its module is :mod:`hessverify.checking.check`.)"""


def _moved_target(fullname: str) -> str | None:
    """``hessverify.trust.detection`` -> ``hessverify.apps.trust.detection``; ``None`` for a name that did not move."""
    parts = fullname.split(".")
    if len(parts) < 2 or parts[0] != "hessverify" or parts[1] not in _MOVED:
        return None
    return ".".join(["hessverify", _MOVED[parts[1]], *parts[2:]])


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import a moved module under its public name as the very same module object."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if _moved_target(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        target = _moved_target(spec.name)
        assert target is not None
        return importlib.import_module(target)

    def exec_module(self, module: types.ModuleType) -> None:
        """The module ran when it was imported under its own name."""


if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Alias())


def __getattr__(name: str) -> object:
    """``hessverify.torch``, ``hessverify.jax``, ``hessverify.lab``, ... load on first use (so ``import hessverify``
    imports no framework)."""
    if name in _MOVED:
        return importlib.import_module(f"hessverify.{name}")
    raise AttributeError(f"module 'hessverify' has no attribute {name!r}")
