"""A module imported on its first use: ``anp = lazy("autograd.numpy")``, then ``anp.tanh(x)``.

A component module (:mod:`hessverify.engine.registry`) keeps its top level light,
so that reading the registry imports no heavy library: autograd with its SciPy
parts takes seconds to import.  Its functions name the library through a lazy
module and pay for the import on the first call.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["LazyModule", "lazy"]


class LazyModule:
    """Stands for the module ``name``; the first attribute read imports it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (loaded)' if self._module is not None else ''}>"


def lazy(name: str) -> Any:
    """A :class:`LazyModule` for ``name`` (typed ``Any``, so it reads as the module it stands for)."""
    return LazyModule(name)
