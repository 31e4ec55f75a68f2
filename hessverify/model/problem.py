"""The problem object: a network, its parameters and its data.

Every method and every reference takes a :class:`Problem` and nothing else,
so user code under test (``hessverify.checking.check``) sees the same object the
built-in methods see.  A case file loads into a ``Problem``
(:func:`hessverify.load_case`) and a ``Problem`` writes back to a complete
case file (:meth:`Problem.to_toml`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.model.losses import get_loss
from hessverify.model.network import Architecture

__all__ = ["Problem"]


@dataclass(frozen=True, eq=False)
class Problem:
    """A network, a point in parameter space and a data set.

    Attributes
    ----------
    architecture:
        Input size and layers (units, activation, bias).
    loss, reduction:
        Names from :data:`hessverify.model.losses.LOSSES` and ``"sum"`` or
        ``"mean"``.
    params:
        The flat float64 parameter vector in the public order
        (:attr:`param_names`).
    inputs, targets:
        ``(N, inputs)`` and ``(N, outputs)`` arrays, one row a pattern.
    id, description:
        The case's stable id (``[a-z0-9-]+``) and a line of text.
    source:
        The file the problem was read from, if any.
    """

    architecture: Architecture
    loss: str
    params: FloatArray
    inputs: FloatArray
    targets: FloatArray
    reduction: str = "sum"
    id: str = "problem"
    description: str = ""
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    loss_options: tuple[tuple[str, float], ...] = ()  # the loss's settings: Huber's delta

    # -- views -----------------------------------------------------------------

    @property
    def n_params(self) -> int:
        return self.architecture.n_params

    @property
    def n_patterns(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.architecture.param_names

    @property
    def weights(self) -> list[FloatArray]:
        """``[W_1, W_2, ...]``, each ``(units, fan_in)``."""
        return [w for w, _ in self.architecture.unpack(self.params)]

    @property
    def biases(self) -> list[FloatArray | None]:
        """``[b_1, b_2, ...]``; ``None`` for a layer without bias."""
        return [
            b if layer.bias else None
            for (_, b), layer in zip(self.architecture.unpack(self.params), self.architecture.layers)
        ]

    @property
    def activations(self) -> list[str]:
        return [layer.activation for layer in self.architecture.layers]

    @property
    def scale(self) -> float:
        """The factor the reduction puts in front of the sum over patterns: ``1 / N`` for the mean, ``1 / (N K)``
        for a loss whose mean is over every output (``mse``, ``huber``: PyTorch's element-wise means)."""
        if self.reduction != "mean":
            return 1.0
        per_output = get_loss(self.loss).mean_over_outputs
        return 1.0 / (self.n_patterns * (self.targets.shape[1] if per_output else 1))

    def with_params(self, params: FloatArray) -> Problem:
        """The same problem at another point."""
        return replace(self, params=np.asarray(params, dtype=np.float64))

    def subset(self, patterns: slice | list[int] | np.ndarray) -> Problem:
        """The same problem on some of its patterns (the reduction is kept)."""
        return replace(self, inputs=self.inputs[patterns], targets=self.targets[patterns])

    # -- case file ---------------------------------------------------------------

    def to_toml(self) -> str:
        """This problem as a complete case file with explicit values.

        Every float is written with ``repr``, which round-trips exactly, so
        loading the text gives back the same problem bit for bit.
        """
        lines = [f"id = {_toml_str(self.id)}"]
        if self.description:
            lines.append(f"description = {_toml_str(self.description)}")
        arch = self.architecture
        shape = f"inputs = {arch.inputs}" if arch.input_shape is None else \
            f"input_shape = [{', '.join(map(str, arch.input_shape))}]"
        lines += ["", "[network]", shape, "layers = ["]
        for layer in arch.layers:
            bias = "" if layer.bias else ", bias = false"
            sources = "" if layer.sources is None else f", from = [{', '.join(map(str, layer.sources))}]"
            if layer.is_dense:
                gain = ", gain = true" if layer.opts["gain"] else ""
                lines.append(f'  {{ units = {layer.units}, activation = "{layer.activation}"{bias}{gain}{sources} }},')
                continue
            act = "" if layer.activation == "identity" else f', activation = "{layer.activation}"'
            options = "".join(f", {k} = {_toml_value(v)}" for k, v in layer.options)
            lines.append(f'  {{ kind = "{layer.kind}"{options}{act}{bias}{sources} }},')
        if self.loss_options:
            settings = ", ".join(f"{k} = {_toml_value(v)}" for k, v in self.loss_options)
            lines += ["]", f'loss = {{ name = "{self.loss}", {settings} }}']
        else:
            lines += ["]", f'loss = "{self.loss}"']
        lines += [f'reduction = "{self.reduction}"', "", "[data]"]
        lines.append("inputs = " + _toml_matrix(self.inputs))
        lines.append("targets = " + _toml_matrix(self.targets))
        lines += ["", "[params]"]
        lines.append("values = [" + ", ".join(_toml_float(v) for v in self.params) + "]")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return (
            f"Problem(id={self.id!r}, {self.architecture.describe()}, loss={self.loss!r}, "
            f"reduction={self.reduction!r}, W={self.n_params}, N={self.n_patterns})"
        )


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}


def _toml_str(s: str) -> str:
    """A TOML basic string: every control character escaped, so the text loads back unchanged."""
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:  # a lone surrogate is no character TOML can hold
            out.append("\\uFFFD")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v: Any) -> str:
    """A layer option as TOML: a number, a boolean, a string or a list of them."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        return _toml_float(v)
    return str(v)


def _toml_float(v: float) -> str:
    v = float(v)
    if math.isnan(v) or math.isinf(v):  # not valid in a case, but keep the text honest
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return repr(v)


def _toml_matrix(m: FloatArray) -> str:
    rows = ["[" + ", ".join(_toml_float(v) for v in row) + "]" for row in np.asarray(m)]
    return "[" + ", ".join(rows) + "]"
