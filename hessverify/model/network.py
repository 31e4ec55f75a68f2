"""Architecture of a fully connected network and the public parameter layout.

The layout is a public contract, the same in every output of hessverify:

* parameters form one flat float64 vector, layer by layer (layers count
  from 1);
* within layer ``l`` first the weight matrix ``W_l`` of shape
  ``(units, fan_in)``, row-major, so ``W_l[i, j]`` connects input ``j`` to
  unit ``i``; then the bias ``b_l`` (if the layer has one);
* names are ``W1[0,1]`` and ``b1[0]``.

Topology.  The network is any feed-forward graph (Bishop 1992's general
topology): layer ``l`` reads the outputs of the layers ``Layer.sources``
(``0`` is the network input, ``j >= 1`` the output ``z_j`` of layer ``j``,
every ``j < l``; default ``(l - 1,)``, a chain), side by side in the listed
order, so ``W_l`` has ``fan_in = sum of the sources' sizes`` columns and the
columns of source ``j`` are :meth:`Architecture.source_slice`.  The network's
output is the last layer's.  That is written here and nowhere else: every pass
of the package asks the architecture (:meth:`Architecture.parents`,
:meth:`Architecture.children`, :attr:`Architecture.bottom_up`,
:attr:`Architecture.top_down`, :meth:`Architecture.above`) and builds a
layer's input with :func:`layer_input`.  :meth:`Architecture.parent` and
:meth:`Architecture.child` remain for code that only handles chains: they
raise for a layer with several.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.model.activations import get_activation

__all__ = ["Architecture", "Layer", "ParamBlock", "check_sources", "layer_input", "parse_param_name"]


def check_sources(layer: int, sources: object) -> None:
    """Raise ``ValueError`` (one line, naming the fault) unless ``sources`` is a valid ``from`` list of ``layer``.

    Valid: a non-empty list of distinct whole numbers, each earlier than the
    layer (``0``, the input, up to ``layer - 1``).

    Examples
    --------
    >>> check_sources(3, (1, 2))
    >>> check_sources(2, (2,))
    Traceback (most recent call last):
    ...
    ValueError: layer 2 reads from 2, which is not an earlier layer; a layer reads from 0 (the inputs) .. 1
    """
    if not isinstance(sources, (tuple, list)):
        raise ValueError(f"layer {layer}: from must be a list of earlier layers, got {sources!r}")
    if not sources:
        raise ValueError(f"layer {layer} reads from an empty list; give at least one source (0 = the inputs)")
    seen: set[int] = set()
    repeated: set[int] = set()
    for j in sources:  # one pass: a from list of 10^5 layers is checked in linear time
        if isinstance(j, bool) or not isinstance(j, (int, np.integer)):
            raise ValueError(f"layer {layer}: from lists {j!r}, not a layer number")
        if not 0 <= j < layer:
            raise ValueError(f"layer {layer} reads from {j}, which is not an earlier layer; "
                             f"a layer reads from 0 (the inputs) .. {layer - 1}")
        (repeated if int(j) in seen else seen).add(int(j))
    if repeated:
        raise ValueError(f"layer {layer} reads from {min(repeated)} more than once; list each source once")


@dataclass(frozen=True)
class Layer:
    """One fully connected layer: ``a = W x + b``, ``z = f(a)``.

    ``x`` is the concatenation of the outputs of ``sources`` in that order
    (``0``: the network input; ``None``, the default: the previous layer).
    """

    units: int
    activation: str
    bias: bool = True
    sources: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.units < 1:
            raise ValueError(f"a layer needs at least one unit, got units = {self.units}")
        get_activation(self.activation)  # raises KeyError naming the choices
        if self.sources is not None:
            object.__setattr__(self, "sources", tuple(self.sources))


@dataclass(frozen=True)
class ParamBlock:
    """Where one layer's ``W`` and ``b`` sit in the flat vector."""

    layer: int  # 1-based
    units: int
    fan_in: int
    bias: bool
    offset: int  # index of W_l[0,0]

    @property
    def w_size(self) -> int:
        return self.units * self.fan_in

    @property
    def size(self) -> int:
        return self.w_size + (self.units if self.bias else 0)

    @property
    def w_slice(self) -> slice:
        return slice(self.offset, self.offset + self.w_size)

    @property
    def b_slice(self) -> slice:
        start = self.offset + self.w_size
        return slice(start, start + (self.units if self.bias else 0))

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.size)


@dataclass(frozen=True)
class Architecture:
    """An input size and a sequence of layers."""

    inputs: int
    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        if self.inputs < 1:
            raise ValueError(f"a network needs at least one input, got inputs = {self.inputs}")
        if not self.layers:
            raise ValueError("a network needs at least one layer")
        layers = []
        for index, layer in enumerate(self.layers, start=1):
            sources = layer.sources
            if sources is not None:
                check_sources(index, sources)
                if sources == (index - 1,):  # the default, written out: one spelling per graph
                    layer = replace(layer, sources=None)
            layers.append(layer)
        object.__setattr__(self, "layers", tuple(layers))

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def outputs(self) -> int:
        return self.layers[-1].units

    def fan_in(self, layer: int) -> int:
        """Width of the input of ``layer`` (1-based)."""
        return sum(self.inputs if p == 0 else self.layers[p - 1].units for p in self.parents(layer))

    # -- topology: the only place that knows how the layers are connected ------------

    def layer(self, index: int) -> Layer:
        """Layer ``index`` (1-based, as in ``W1``)."""
        if not 1 <= index <= self.depth:
            raise IndexError(f"no layer {index}: the network has layers 1..{self.depth}")
        return self.layers[index - 1]

    def block(self, index: int) -> ParamBlock:
        """Where layer ``index`` (1-based) sits in the flat parameter vector."""
        self.layer(index)
        return self.blocks[index - 1]

    @property
    def output_layer(self) -> int:
        """The index of the layer whose output is the network's output."""
        return self.depth

    @cached_property
    def bottom_up(self) -> tuple[int, ...]:
        """Layer indices in an order where every layer comes after the layers feeding it."""
        return tuple(range(1, self.depth + 1))

    @cached_property
    def top_down(self) -> tuple[int, ...]:
        """Layer indices in an order where every layer comes after the layers it feeds."""
        return tuple(reversed(self.bottom_up))

    def parents(self, layer: int) -> tuple[int, ...]:
        """The layers whose outputs form the input of ``layer``, in that order (0: the network input).

        Examples
        --------
        >>> arch = Architecture(3, (Layer(4, "tanh"), Layer(2, "identity")))
        >>> arch.parents(1), arch.parents(2), arch.children(1), arch.children(2)
        ((0,), (1,), (2,), ())
        """
        sources = self.layer(layer).sources
        return (layer - 1,) if sources is None else sources

    def children(self, layer: int) -> tuple[int, ...]:
        """The layers that take the output of ``layer`` (0: the network input) as input, bottom up.

        Examples
        --------
        >>> arch = Architecture(2, (Layer(3, "tanh"), Layer(3, "tanh"), Layer(1, "identity", sources=(2, 1))))
        >>> arch.children(0), arch.children(1), arch.children(2), arch.parents(3)
        ((1,), (2, 3), (3,), (2, 1))
        """
        if layer != 0:
            self.layer(layer)
        return self._children[layer]

    @cached_property
    def _children(self) -> tuple[tuple[int, ...], ...]:
        kids: list[list[int]] = [[] for _ in range(self.depth + 1)]
        for l in self.bottom_up:
            for p in self.parents(l):
                kids[p].append(l)
        return tuple(tuple(k) for k in kids)

    @cached_property
    def is_chain(self) -> bool:
        """Whether every layer reads the previous one only (no skip connections)."""
        return all(layer.sources is None for layer in self.layers)

    def source_slice(self, layer: int, source: int) -> slice:
        """The columns of ``W_layer`` (and of its input) that read the output of ``source``."""
        start = 0
        for p in self.parents(layer):
            size = self.inputs if p == 0 else self.layers[p - 1].units
            if p == source:
                return slice(start, start + size)
            start += size
        raise ValueError(f"layer {layer} does not read from {source}; it reads from {self.parents(layer)}")

    def parent(self, layer: int) -> int:
        """The one layer feeding ``layer`` (0: the input), for passes written for a chain.

        Raises ``ValueError`` for a layer with several parents: a pass that
        calls this must then sum over :meth:`parents`.
        """
        (only, *more) = self.parents(layer)
        if more:
            raise ValueError(f"layer {layer} has several parents {self.parents(layer)}; sum over parents()")
        return only

    def child(self, layer: int) -> int:
        """The one layer that ``layer`` feeds, for passes written for a chain (``ValueError`` for the output layer
        or a layer with several children)."""
        kids = self.children(layer)
        if len(kids) != 1:
            raise ValueError(f"layer {layer} feeds {len(kids)} layers {kids}; sum over children()")
        return kids[0]

    def above(self, layer: int) -> tuple[int, ...]:
        """Every layer that depends on ``layer`` (its children, their children, ...), bottom up."""
        if self.is_chain:  # everything after it
            return self.bottom_up[self.bottom_up.index(layer) + 1:] if layer else self.bottom_up
        seen: set[int] = set()
        frontier = list(self.children(layer))
        while frontier:
            child = frontier.pop()
            if child not in seen:
                seen.add(child)
                frontier += self.children(child)
        return tuple(l for l in self.bottom_up if l in seen)

    @cached_property
    def blocks(self) -> tuple[ParamBlock, ...]:
        out = []
        offset = 0
        for index, layer in enumerate(self.layers, start=1):
            block = ParamBlock(index, layer.units, self.fan_in(index), layer.bias, offset)
            out.append(block)
            offset += block.size
        return tuple(out)

    @property
    def n_params(self) -> int:
        last = self.blocks[-1]
        return last.offset + last.size

    @cached_property
    def param_names(self) -> tuple[str, ...]:
        """The public names, in the public order: ``W1[0,0]``, ..., ``b1[0]``, ..."""
        names: list[str] = []
        for blk in self.blocks:
            names += [f"W{blk.layer}[{i},{j}]" for i in range(blk.units) for j in range(blk.fan_in)]
            if blk.bias:
                names += [f"b{blk.layer}[{i}]" for i in range(blk.units)]
        return tuple(names)

    @cached_property
    def layer_of_param(self) -> np.ndarray:
        """For each flat index, the 1-based layer it belongs to."""
        out = np.empty(self.n_params, dtype=np.int64)
        for blk in self.blocks:
            out[blk.slice] = blk.layer
        return out

    def unpack(self, theta: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
        """Split the flat vector into ``[(W_1, b_1), ...]``.

        A layer without bias gets a zero bias of the right shape (and the
        right dtype, so complex parameters stay complex).
        """
        theta = np.asarray(theta)
        if theta.shape != (self.n_params,):
            raise ValueError(f"expected {self.n_params} parameters, got shape {theta.shape}")
        out = []
        for blk in self.blocks:
            w = theta[blk.w_slice].reshape(blk.units, blk.fan_in)
            b = theta[blk.b_slice] if blk.bias else np.zeros(blk.units, dtype=theta.dtype)
            out.append((w, b))
        return out

    def pack(self, params: list[tuple[FloatArray, FloatArray]]) -> FloatArray:
        """Inverse of :meth:`unpack` (biases of bias-free layers are dropped)."""
        parts = []
        for blk, (w, b) in zip(self.blocks, params):
            parts.append(np.asarray(w).reshape(-1))
            if blk.bias:
                parts.append(np.asarray(b).reshape(-1))
        return np.concatenate(parts)

    def param_index(self, name_or_index: str | int) -> int:
        """Flat index of a parameter given by its public name or its index."""
        if isinstance(name_or_index, (int, np.integer)):
            i = int(name_or_index)
            if not 0 <= i < self.n_params:
                raise IndexError(f"parameter index {i} out of range 0..{self.n_params - 1}")
            return i
        layer, kind, i, j = parse_param_name(name_or_index)
        if not 1 <= layer <= self.depth:
            raise KeyError(f"no parameter {name_or_index!r}: the network has {self.depth} layers")
        blk = self.block(layer)
        if kind == "W":
            if not (0 <= i < blk.units and j is not None and 0 <= j < blk.fan_in):
                raise KeyError(
                    f"no parameter {name_or_index!r}: W{layer} has shape ({blk.units}, {blk.fan_in})"
                )
            return blk.offset + i * blk.fan_in + j
        if not blk.bias:
            raise KeyError(f"no parameter {name_or_index!r}: layer {layer} has no bias")
        if not 0 <= i < blk.units:
            raise KeyError(f"no parameter {name_or_index!r}: b{layer} has {blk.units} entries")
        return blk.offset + blk.w_size + i

    def describe(self) -> str:
        """Short text such as ``2-2(sigmoid)-1(sigmoid)``."""
        parts = [str(self.inputs)]
        for layer in self.layers:
            sources = "" if layer.sources is None else ",from=" + "+".join(map(str, layer.sources))
            parts.append(f"{layer.units}({layer.activation}{'' if layer.bias else ',nobias'}{sources})")
        return "-".join(parts)


# no leading zeros: "W01[0,0]" would name W1[0,0] under a name param_names never lists
_NAME = re.compile(r"^\s*([Wb])([1-9]\d*)\[(0|[1-9]\d*)(?:,\s*(0|[1-9]\d*))?\]\s*$")


def parse_param_name(name: str) -> tuple[int, str, int, int | None]:
    """``"W2[0,1]"`` -> ``(2, "W", 0, 1)``; ``"b1[3]"`` -> ``(1, "b", 3, None)``."""
    m = _NAME.match(name)
    if not m or (m.group(1) == "W") != (m.group(4) is not None):
        raise KeyError(f"{name!r} is not a parameter name; write W<layer>[<unit>,<input>] or b<layer>[<unit>]")
    return int(m.group(2)), m.group(1), int(m.group(3)), (None if m.group(4) is None else int(m.group(4)))


def layer_input(zs: list[FloatArray], layer: int, arch: Architecture) -> FloatArray:
    """Input of ``layer`` (1-based) given ``zs = [x, z_1, z_2, ...]``: the outputs of its parents, side by side."""
    parents = arch.parents(layer)
    if len(parents) == 1:
        return zs[parents[0]]
    return np.concatenate([zs[p] for p in parents], axis=-1)
