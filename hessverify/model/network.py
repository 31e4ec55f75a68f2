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
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.model.activations import get_activation
from hessverify.model.layers import LayerKind, get_kind

__all__ = ["Architecture", "Layer", "ParamBlock", "Tensor", "check_sources", "layer_input", "parse_param_name",
           "parse_tensor_name"]


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
    for j in sources:
        if isinstance(j, bool) or not isinstance(j, (int, np.integer)):
            raise ValueError(f"layer {layer}: from lists {j!r}, not a layer number")
        if not 0 <= j < layer:
            raise ValueError(f"layer {layer} reads from {j}, which is not an earlier layer; "
                             f"a layer reads from 0 (the inputs) .. {layer - 1}")
    repeated = sorted({int(j) for j in sources if list(sources).count(j) > 1})
    if repeated:
        raise ValueError(f"layer {layer} reads from {repeated[0]} more than once; list each source once")


@dataclass(frozen=True)
class Layer:
    """One layer: a kind (``dense`` by default: ``a = W x + b``), then its activation ``z = f(a)``.

    ``x`` is the output of ``sources`` (``0``: the network input; ``None``, the
    default: the previous layer); a ``dense`` layer reads several side by side,
    an ``add`` layer two.  ``options`` holds the kind's other keys
    (:mod:`hessverify.model.layers`: ``channels``, ``kernel``, ...) as sorted
    pairs; a dense layer's ``units`` and ``bias`` are fields of their own.
    """

    units: int | None = None
    activation: str = "identity"
    bias: bool = True
    sources: tuple[int, ...] | None = None
    kind: str = "dense"
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        get_activation(self.activation)  # raises KeyError naming the choices
        if self.sources is not None:
            object.__setattr__(self, "sources", tuple(self.sources))
        options = dict(self.options)
        kind = get_kind(self.kind)  # raises KeyError naming the choices
        if self.kind in _BIASED and "bias" in options:  # the bias option is the field
            bias = options.pop("bias")
            if not isinstance(bias, bool):
                raise ValueError(f"bias: must be true or false, got {bias!r}")
            object.__setattr__(self, "bias", bias)
        elif not self.bias and self.kind not in _BIASED and self.kind != "dense":
            raise ValueError(f"bias: not an option of {self.kind}")
        frozen = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        object.__setattr__(self, "options", tuple(sorted(frozen.items())))
        if self.kind == "dense":
            if self.units is None or self.units < 1:
                raise ValueError(f"a layer needs at least one unit, got units = {self.units}")
        elif self.units is not None:
            raise ValueError(f"units: not an option of {self.kind}")
        if not kind.activation and self.activation != "identity":
            raise ValueError(f"activation: {self.kind} takes none (it only moves values)")
        kind.validate(self.raw_options)  # ValueError "key: what is wrong"

    @property
    def raw_options(self) -> dict[str, Any]:
        """The options as given (a dense layer's ``units`` and ``bias`` among them)."""
        out = dict(self.options)
        if self.kind == "dense":
            out.update(units=self.units, bias=self.bias)
        elif self.kind in _BIASED:
            out["bias"] = self.bias
        return out

    @cached_property
    def opts(self) -> dict[str, Any]:
        """The kind's options with defaults filled in."""
        return get_kind(self.kind).validate(self.raw_options)

    @property
    def kind_def(self) -> LayerKind:
        return get_kind(self.kind)

    @property
    def is_dense(self) -> bool:
        return self.kind == "dense"


_BIASED = ("conv1d", "conv2d", "attention")
"""Kinds whose ``bias`` option is also the layer's ``bias`` field (``bias = false`` in a case file)."""


@dataclass(frozen=True)
class ParamBlock:
    """Where one layer's ``W`` and ``b`` sit in the flat vector."""

    layer: int  # 1-based
    units: int
    fan_in: int
    bias: bool
    offset: int  # index of W_l[0,0]
    total: int | None = None  # a layer of another kind: its parameter count (units, fan_in, bias unused)

    @property
    def w_size(self) -> int:
        return self.units * self.fan_in

    @property
    def size(self) -> int:
        if self.total is not None:
            return self.total
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
class Tensor:
    """One parameter tensor: its layer, short name (``W``, ``b``, ``Win``, ...), shape and place in the flat vector."""

    layer: int
    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.size)

    @property
    def label(self) -> str:
        """``W2``, ``bin3``: the name and the layer, as parameter names begin."""
        return f"{self.name}{self.layer}"


@dataclass(frozen=True)
class Architecture:
    """An input shape and a sequence of layers (module text).

    ``inputs`` is one pattern's number of input values; ``input_shape`` its
    shape when it is not flat (``[C, L]`` for a conv1d network, ``[T, d]`` for
    attention, ``[T]`` token ids for an embedding network).
    """

    inputs: int
    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.input_shape is not None:
            shape = tuple(int(s) for s in self.input_shape)
            if not shape or min(shape) < 1:
                raise ValueError(f"input_shape must be a list of positive sizes, got {list(self.input_shape)}")
            object.__setattr__(self, "input_shape", None if len(shape) == 1 else shape)
            object.__setattr__(self, "inputs", int(np.prod(shape)))
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
            kind = layer.kind_def
            count = len(layer.sources) if layer.sources is not None else 1
            if kind.sources == "one" and count != 1:
                raise ValueError(f"layer {index} ({layer.kind}) reads one source, got from = {list(layer.sources or ())}")
            if kind.sources == "two" and count != 2:
                raise ValueError(f"layer {index} ({layer.kind}) adds two outputs: give from = [i, j]")
            if kind.first_only and (index != 1 or (layer.sources or (0,)) != (0,)):
                raise ValueError(f"layer {index} ({layer.kind}) must be the first layer: it reads the token ids")
            layers.append(layer)
        object.__setattr__(self, "layers", tuple(layers))
        if not self.is_dense:
            self.shapes  # validates every layer's shapes now, naming the layer  # noqa: B018

    @property
    def shape(self) -> tuple[int, ...]:
        """One pattern's input shape."""
        return (self.inputs,) if self.input_shape is None else self.input_shape

    @cached_property
    def is_dense(self) -> bool:
        """Whether every layer is dense on a flat input: the classic network, second-order backpropagation's
        own fast path (:mod:`hessverify.model.kernel`)."""
        return self.input_shape is None and all(layer.is_dense and not layer.opts["gain"] for layer in self.layers)

    @cached_property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """One pattern's shape of every layer's output (index 0: the input)."""
        out: list[tuple[int, ...]] = [self.shape]
        for index, layer in enumerate(self.layers, start=1):
            srcs = (index - 1,) if layer.sources is None else layer.sources
            try:
                out.append(tuple(layer.kind_def.out_shape(layer.opts, [out[s] for s in srcs])))
            except ValueError as exc:
                raise ValueError(f"layer {index} ({layer.kind}): {exc}") from None
        return tuple(out)

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def outputs(self) -> int:
        if self.is_dense:
            return int(self.layers[-1].units)  # type: ignore[arg-type]
        return int(np.prod(self.shapes[-1]))

    def fan_in(self, layer: int) -> int:
        """Width of the input of a dense ``layer`` (1-based): the last axes of its sources side by side."""
        if self.is_dense:
            return sum(self.inputs if p == 0 else int(self.layers[p - 1].units)  # type: ignore[arg-type]
                       for p in self.parents(layer))
        return sum(self.shapes[p][-1] for p in self.parents(layer))

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

    @property
    def bottom_up(self) -> tuple[int, ...]:
        """Layer indices in an order where every layer comes after the layers feeding it."""
        return tuple(range(1, self.depth + 1))

    @property
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

    @property
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
        seen: set[int] = set()
        frontier = list(self.children(layer))
        while frontier:
            child = frontier.pop()
            if child not in seen:
                seen.add(child)
                frontier += self.children(child)
        return tuple(l for l in self.bottom_up if l in seen)

    @cached_property
    def tensors(self) -> tuple[Tensor, ...]:
        """Every parameter tensor in the public order: layer by layer, each layer's in its PyTorch module's
        ``.parameters()`` order, each flattened row-major."""
        out: list[Tensor] = []
        offset = 0
        for index, layer in enumerate(self.layers, start=1):
            srcs = (index - 1,) if layer.sources is None else layer.sources
            if layer.is_dense and self.is_dense:
                fan = self.fan_in(index)
                specs = [("W", (int(layer.units), fan))] + ([("b", (int(layer.units),))] if layer.bias else [])  # type: ignore[arg-type]
            else:
                specs = layer.kind_def.tensors(layer.opts, [self.shapes[s] for s in srcs])
            for name, shape in specs:
                tensor = Tensor(index, name, tuple(int(s) for s in shape), offset)
                out.append(tensor)
                offset += tensor.size
        return tuple(out)

    def layer_tensors(self, layer: int) -> tuple[Tensor, ...]:
        """The parameter tensors of ``layer`` (1-based), in order."""
        return tuple(t for t in self.tensors if t.layer == layer)

    @cached_property
    def blocks(self) -> tuple[ParamBlock, ...]:
        out = []
        offset = 0
        for index, layer in enumerate(self.layers, start=1):
            if self.is_dense:
                block = ParamBlock(index, int(layer.units), self.fan_in(index), layer.bias, offset)  # type: ignore[arg-type]
            else:
                block = ParamBlock(index, 0, 0, False, offset, sum(t.size for t in self.layer_tensors(index)))
            out.append(block)
            offset += block.size
        return tuple(out)

    @property
    def n_params(self) -> int:
        last = self.blocks[-1]
        return last.offset + last.size

    @cached_property
    def param_names(self) -> tuple[str, ...]:
        """The public names, in the public order: ``W1[0,0]``, ..., ``b1[0]``, ... (``conv``: ``W2[o,c,k]``)."""
        names: list[str] = []
        for t in self.tensors:
            names += [f"{t.label}[{','.join(map(str, idx))}]" for idx in np.ndindex(*t.shape)]
        return tuple(names)

    @cached_property
    def layer_of_param(self) -> np.ndarray:
        """For each flat index, the 1-based layer it belongs to."""
        out = np.empty(self.n_params, dtype=np.int64)
        for blk in self.blocks:
            out[blk.slice] = blk.layer
        return out

    def unpack_tensors(self, theta: FloatArray) -> list[FloatArray]:
        """The flat vector as its parameter tensors (:attr:`tensors`), in order."""
        theta = np.asarray(theta)
        if theta.shape != (self.n_params,):
            raise ValueError(f"expected {self.n_params} parameters, got shape {theta.shape}")
        return [theta[t.slice].reshape(t.shape) for t in self.tensors]

    def unpack(self, theta: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
        """Split the flat vector into ``[(W_1, b_1), ...]`` (dense networks; others: :meth:`unpack_tensors`).

        A layer without bias gets a zero bias of the right shape (and the
        right dtype, so complex parameters stay complex).
        """
        if not self.is_dense:
            raise ValueError("unpack gives (W, b) per dense layer; this network has layers of other kinds: "
                             "use unpack_tensors")
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
        if not self.is_dense:
            return self._tensor_index(name_or_index)
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

    def _tensor_index(self, name: str) -> int:
        label, index = parse_tensor_name(name)
        tensor = next((t for t in self.tensors if t.label == label), None)
        if tensor is None:
            raise KeyError(f"no parameter {name!r}: the tensors are {', '.join(t.label for t in self.tensors)}")
        if len(index) != len(tensor.shape) or any(not 0 <= i < s for i, s in zip(index, tensor.shape)):
            raise KeyError(f"no parameter {name!r}: {tensor.label} has shape {tensor.shape}")
        return tensor.offset + int(np.ravel_multi_index(index, tensor.shape))

    def describe(self) -> str:
        """Short text such as ``2-2(sigmoid)-1(sigmoid)``; other kinds by name (``conv1d(4,k3,tanh)``)."""
        parts = [str(self.inputs) if self.input_shape is None else "x".join(map(str, self.input_shape))]
        for layer in self.layers:
            sources = "" if layer.sources is None else ",from=" + "+".join(map(str, layer.sources))
            if layer.is_dense:
                gain = ",gain" if layer.opts["gain"] else ""
                parts.append(f"{layer.units}({layer.activation}{'' if layer.bias else ',nobias'}{gain}{sources})")
                continue
            inner = [x for x in (layer.kind_def.describe(layer.opts), "" if layer.activation == "identity"
                                 else layer.activation) if x]
            parts.append(f"{layer.kind}({','.join(inner)}{sources})")
        return "-".join(parts)


# no leading zeros: "W01[0,0]" would name W1[0,0] under a name param_names never lists
_NAME = re.compile(r"^\s*([Wb])([1-9]\d*)\[(0|[1-9]\d*)(?:,\s*(0|[1-9]\d*))?\]\s*$")


def parse_param_name(name: str) -> tuple[int, str, int, int | None]:
    """``"W2[0,1]"`` -> ``(2, "W", 0, 1)``; ``"b1[3]"`` -> ``(1, "b", 3, None)``."""
    m = _NAME.match(name)
    if not m or (m.group(1) == "W") != (m.group(4) is not None):
        raise KeyError(f"{name!r} is not a parameter name; write W<layer>[<unit>,<input>] or b<layer>[<unit>]")
    return int(m.group(2)), m.group(1), int(m.group(3)), (None if m.group(4) is None else int(m.group(4)))


_TENSOR_NAME = re.compile(r"^\s*([A-Za-z]+?)([1-9]\d*)\[\s*((?:0|[1-9]\d*)(?:\s*,\s*(?:0|[1-9]\d*))*)\s*\]\s*$")


def parse_tensor_name(name: str) -> tuple[str, tuple[int, ...]]:
    """``"Win3[4,1]"`` -> ``("Win3", (4, 1))``: a tensor's label and an index into it."""
    m = _TENSOR_NAME.match(name) if isinstance(name, str) else None
    if not m:
        raise KeyError(f"{name!r} is not a parameter name; write <tensor><layer>[<index>,...], e.g. W2[0,1] or b1[0]")
    return m.group(1) + m.group(2), tuple(int(i) for i in m.group(3).split(","))


def layer_input(zs: list[FloatArray], layer: int, arch: Architecture) -> FloatArray:
    """Input of ``layer`` (1-based) given ``zs = [x, z_1, z_2, ...]``: the outputs of its parents, side by side."""
    parents = arch.parents(layer)
    if len(parents) == 1:
        return zs[parents[0]]
    return np.concatenate([zs[p] for p in parents], axis=-1)
