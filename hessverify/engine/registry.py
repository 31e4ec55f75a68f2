"""The registry: every method and reference, found where it is declared.

A method or reference is one module under :mod:`hessverify.methods` or
:mod:`hessverify.references` that declares ``COMPONENT`` (or a tuple
``COMPONENTS``), a :class:`~hessverify.engine.components.Component`.  The
first time the registry is asked anything it imports those modules and
collects their components, in the order of their ``rank``; adding a method
is adding a module, and no line anywhere else.

A component module keeps its top level light (NumPy and hessverify): a heavy
library (SymPy, autograd, a framework) is imported where it is used, so that
reading the registry loads none of them, and ``import hessverify`` does not
even read the registry (``tests/test_layers.py`` holds both).

The engine never imports a method by name: the modules are found here at run
time, so methods and references sit above the engine in the layering.
:data:`METHODS` is a mutable mapping: a sweep registers its function under
test for the length of a run.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from hessverify.engine.components import (
    EXACT,
    BoundKind,
    Component,
    Cost,
    Lazy,
    Method,
    Role,
    Tolerance,
)
from hessverify.errors import UsageError

__all__ = ["METHODS", "PACKAGES", "BoundKind", "Component", "Cost", "Lazy", "Method", "Registry", "Role", "Tolerance",
           "get_method", "methods_with_role", "tolerance_of"]

PACKAGES = ("hessverify.methods", "hessverify.references")
"""Where components are declared."""


def discover(packages: tuple[str, ...] = PACKAGES) -> list[Component]:
    """Every component declared in the modules of ``packages`` (not their private ``_`` modules), by rank."""
    found: list[Component] = []
    for name in packages:
        package = importlib.import_module(name)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_") or not _declares(Path(package.__path__[0]) / f"{info.name}.py"):
                continue
            module = importlib.import_module(f"{name}.{info.name}")
            declared = getattr(module, "COMPONENTS", None) or ((module.COMPONENT,) if hasattr(module, "COMPONENT") else ())
            for component in declared:
                if not isinstance(component, Component):
                    raise TypeError(f"{module.__name__}: COMPONENT(S) must be Component, got {type(component).__name__}")
                found.append(component)
    names = [c.name for c in found]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TypeError(f"components declared twice: {', '.join(repeated)}")
    return sorted(found, key=lambda c: c.rank)


_DECLARATION = re.compile(r"^COMPONENTS?\s*[:=]", re.M)


def _declares(path: Path) -> bool:
    """Whether a module's source declares a component at its top level: only those are imported (a module
    that declares none, such as an independent PyTorch reference, may import what it likes)."""
    try:
        return bool(_DECLARATION.search(path.read_text(encoding="utf-8")))
    except OSError:  # a compiled or zipped module: import it and see
        return True


class Registry(MutableMapping[str, Component]):
    """Components by name, discovered on first use (module text)."""

    def __init__(self) -> None:
        self._items: dict[str, Component] | None = None

    @property
    def _loaded(self) -> dict[str, Component]:
        if self._items is None:
            self._items = {c.name: c for c in discover()}
        return self._items

    def __getitem__(self, name: str) -> Component:
        return self._loaded[name]

    def __setitem__(self, name: str, component: Component) -> None:
        self._loaded[name] = component

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded)

    def __len__(self) -> int:
        return len(self._loaded)

    def __repr__(self) -> str:
        return f"Registry({', '.join(self._loaded)})"


METHODS: Registry = Registry()
"""Every method and reference, keyed by name (discovered on first use)."""


def get_method(name: str) -> Component:
    """The component called ``name``; a :class:`~hessverify.errors.UsageError` naming the choices otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise UsageError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def methods_with_role(role: Role | str) -> list[Component]:
    return [m for m in METHODS.values() if m.role == role]


def tolerance_of(name: str) -> Tolerance:
    """The tolerance ``name`` brings to a comparison: its component's, or an exact method's for any other name."""
    component = METHODS.get(name)
    return component.tolerance if component is not None else EXACT

