"""What a layer kind declares: its options, shapes and parameter tensors, its maths twice, and its PyTorch twin.

A kind is one module of :mod:`hessverify.model.layers` declaring ``KIND`` (or
``KINDS``), an instance of a :class:`LayerKind` subclass.  It says:

* :attr:`LayerKind.options`: the keys a case file may give it, each with its
  type, default and check (:class:`Option`);
* :meth:`LayerKind.out_shape` and :meth:`LayerKind.tensors`: one pattern's
  output shape, and its parameter tensors in the order and shape of the
  PyTorch module's ``.parameters()``;
* :meth:`LayerKind.build`: its maths as primitives (:class:`hessverify.model.graph.Builder`),
  which every method differentiates through the primitives' rules;
* :meth:`LayerKind.xp`: the same maths written again, independently, with
  array functions only (``xp`` is ``autograd.numpy``, ``jax.numpy`` or the
  symbolic reference's SymPy arrays), for the references;
* :attr:`LayerKind.torch`: the PyTorch module it is exactly (documentation and
  the adapters' table).

Arrays in :meth:`build` and :meth:`xp` are batched: one pattern per row of the
leading axis.  Shapes exclude it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["REQUIRED", "LayerKind", "Option", "Shape", "int_pair", "positive", "non_negative"]

Shape = tuple[int, ...]
REQUIRED: Any = object()
"""The default of an option a case must give."""


def positive(v: Any) -> str | None:
    return None if all(x >= 1 for x in (v if isinstance(v, tuple) else (v,))) else "must be at least 1"


def non_negative(v: Any) -> str | None:
    return None if all(x >= 0 for x in (v if isinstance(v, tuple) else (v,))) else "must be 0 or more"


def int_pair(dims: int) -> Callable[[Any], Any]:
    """A converter: an int, or a list of ``dims`` ints, to a tuple of ``dims`` ints (a kernel, a stride)."""

    def convert(v: Any) -> tuple[int, ...]:
        if isinstance(v, bool):
            raise ValueError(f"must be a whole number or a list of {dims}, got {v!r}")
        if isinstance(v, int):
            return (v,) * dims
        if isinstance(v, (list, tuple)) and len(v) == dims and all(isinstance(x, int) and not isinstance(x, bool)
                                                                   for x in v):
            return tuple(v)
        raise ValueError(f"must be a whole number or a list of {dims} whole numbers, got {v!r}")

    return convert


@dataclass(frozen=True)
class Option:
    """One key a kind takes in a case file: its type (a converter that raises ``ValueError``), default and check."""

    name: str
    convert: Callable[[Any], Any]
    default: Any = REQUIRED
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


def _integer(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"must be a whole number, got {v!r}")
    return v


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"must be a number, got {v!r}")
    return float(v)


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {v!r}")
    return v


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a string, got {v!r}")
    return v


def _numbers(v: Any) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v):
        raise ValueError(f"must be a list of numbers, got {v!r}")
    return tuple(float(x) for x in v)


INTEGER, NUMBER, BOOLEAN, TEXT, NUMBERS = _integer, _number, _boolean, _text, _numbers


class LayerKind:
    """A kind of layer (module text).  Subclasses set the class attributes and the four methods."""

    name: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    sources: ClassVar[str] = "one"  # "one": a single input; "concat": side by side (dense); "two": two of one shape
    activation: ClassVar[bool] = True  # whether an activation may follow it
    first_only: ClassVar[bool] = False  # an embedding reads the token ids: the first layer only
    reads_ids: ClassVar[bool] = False  # its input is integer token ids
    torch: ClassVar[str] = ""  # the PyTorch module it is exactly
    summary: ClassVar[str] = ""

    def out_shape(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> Shape:
        raise NotImplementedError

    def tensors(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> list[tuple[str, Shape]]:
        """The parameter tensors, ``(short name, shape)``, in the PyTorch module's ``.parameters()`` order."""
        return []

    def build(self, b: Any, o: dict[str, Any], xs: Sequence[int], ps: Sequence[int], in_shapes: Sequence[Shape],
              ids: Any = None) -> int:
        """The layer as primitives: ``b`` a :class:`~hessverify.model.graph.Builder`, ``xs`` the input nodes,
        ``ps`` the parameter nodes; returns the output node (before any activation).  ``ids``: the token ids,
        for a kind that reads them."""
        raise NotImplementedError

    def xp(self, xp: Any, o: dict[str, Any], xs: Sequence[Any], ps: Sequence[Any]) -> Any:
        """The layer written again with array functions (module text), batched."""
        raise NotImplementedError

    def couples_patterns(self, o: dict[str, Any]) -> bool:
        """Whether one pattern's output depends on the others (BatchNorm with batch statistics)."""
        return False

    def describe(self, o: dict[str, Any]) -> str:
        """Short text for :meth:`hessverify.model.network.Architecture.describe`."""
        return ",".join(f"{k}={_short(v)}" for k, v in o.items())

    def validate(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The options with defaults filled in; ``ValueError`` ``"key: what is wrong"`` for a bad or unknown one."""
        known = {opt.name: opt for opt in self.options}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"{unknown[0]}: not an option of {self.name}; it takes "
                             f"{', '.join(known) if known else 'no options'}")
        out: dict[str, Any] = {}
        for opt in self.options:
            if opt.name not in raw:
                if opt.default is REQUIRED:
                    raise ValueError(f"{opt.name}: {self.name} needs it ({opt.doc})")
                out[opt.name] = opt.default
                continue
            try:
                value = opt.convert(raw[opt.name])
            except ValueError as exc:
                raise ValueError(f"{opt.name}: {exc}") from None
            if opt.check is not None:
                why = opt.check(value)
                if why:
                    raise ValueError(f"{opt.name}: {why}, got {raw[opt.name]!r}")
            out[opt.name] = value
        return out


def _short(v: Any) -> str:
    if isinstance(v, tuple):
        return "x".join(str(x) for x in v)
    return str(v)
