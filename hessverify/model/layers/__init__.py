"""Layer kinds: each one module that declares its maths (:mod:`.base` says what a kind declares).

:data:`KINDS` maps a kind's name (a case file's ``kind``) to it; the modules of
this package that declare ``KIND`` or ``KINDS`` are read when it is first asked
for, so adding a kind is adding a module.  Every method, reference and bound
works through what a kind declares, never by its name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping

from hessverify.model.layers.base import LayerKind

__all__ = ["KINDS", "LayerKind", "get_kind"]


class _Kinds(Mapping[str, LayerKind]):
    def __init__(self) -> None:
        self._items: dict[str, LayerKind] | None = None

    def _load(self) -> dict[str, LayerKind]:
        if self._items is None:
            found: dict[str, LayerKind] = {}
            for info in pkgutil.iter_modules(__path__):
                if info.name == "base" or info.name.startswith("_"):
                    continue
                module = importlib.import_module(f"{__name__}.{info.name}")
                for kind in getattr(module, "KINDS", None) or ((module.KIND,) if hasattr(module, "KIND") else ()):
                    found[kind.name] = kind
            order = ["dense", "conv1d", "conv2d", "avg_pool1d", "avg_pool2d", "flatten", "layer_norm", "batch_norm",
                     "add", "attention", "embedding"]
            self._items = {name: found[name] for name in sorted(found, key=lambda n: (n not in order,
                                                                                     order.index(n) if n in order else 0, n))}
        return self._items

    def __getitem__(self, name: str) -> LayerKind:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


KINDS: Mapping[str, LayerKind] = _Kinds()
"""Every layer kind by name."""


def get_kind(name: str) -> LayerKind:
    """The kind called ``name``; ``KeyError`` naming the choices."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown layer kind {name!r}; choose one of {', '.join(KINDS)}") from None
