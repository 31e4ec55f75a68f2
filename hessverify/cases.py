"""Case files: the declarative, validated description of a problem.

The schema is documented in ``docs/cases.md``.  Every fault is reported as a
:class:`~hessverify.errors.CaseError` naming the file, the key and what is
wrong; unknown keys are rejected so that a typo never passes silently.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

from hessverify.errors import CaseError
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.losses import LOSSES, REDUCTIONS
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem

__all__ = ["MAX_PARAMS", "MAX_PATTERNS", "find_cases", "load_case", "parse_case", "seeded_data", "seeded_params"]

ID_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_PARAMS = 20_000
"""Largest parameter count a case may have (a dense Hessian of 3.2 GB)."""
MAX_PATTERNS = 100_000
"""Largest number of patterns a case may have."""

_TOP = {"id", "description", "network", "data", "params"}
_NETWORK = {"inputs", "layers", "loss", "reduction"}
_LAYER = {"units", "activation", "bias"}
_DATA_EXPLICIT = {"inputs", "targets"}
_DATA_SEEDED = {"seed", "patterns", "input_scale"}
_PARAMS_EXPLICIT = {"values"}
_PARAMS_SEEDED = {"seed", "scale"}


def load_case(path: str | Path) -> Problem:
    """Read and validate a case file.

    Raises
    ------
    CaseError
        One line naming the file, the key and the fault.

    Examples
    --------
    >>> case = load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> case.id, case.n_params, case.n_patterns
    ('xor-2-2-1-sigmoid', 9, 4)
    """
    path = Path(path)
    src = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CaseError(src, "", "no such file") from None
    except IsADirectoryError:
        raise CaseError(src, "", "is a directory, not a case file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseError(src, "", f"cannot be read: {exc}") from None
    return parse_case(text, source=src)


def parse_case(text: str, source: str = "<string>") -> Problem:
    """Validate the text of a case file and build its :class:`Problem`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CaseError(source, "", f"invalid TOML: {exc}") from None
    v = _Validator(source)
    v.keys(doc, "", _TOP, required={"id", "network", "data", "params"})
    case_id = v.string(doc, "id")
    if not ID_PATTERN.match(case_id):
        raise CaseError(source, "id",
                        f"{case_id!r} is not a valid id: use lowercase letters, digits and single hyphens")
    description = v.string(doc, "description") if "description" in doc else ""
    arch, loss, reduction = _network(v, v.table(doc, "network"))
    inputs, targets = _data(v, v.table(doc, "data"), arch, loss)
    params = _params(v, v.table(doc, "params"), arch)
    return Problem(arch, loss, params, inputs, targets, reduction, case_id, description, source)


def _network(v: _Validator, net: dict[str, Any]) -> tuple[Architecture, str, str]:
    v.keys(net, "network", _NETWORK, required={"inputs", "layers", "loss"})
    n_in = v.integer(net, "inputs", "network", minimum=1)
    layers_raw = net["layers"]
    if not isinstance(layers_raw, list) or not layers_raw:
        raise CaseError(v.source, "network.layers",
                        'must be a non-empty array of tables like { units = 2, activation = "tanh" }')
    layers = []
    for i, raw in enumerate(layers_raw):
        where = f"network.layers[{i}]"
        if not isinstance(raw, dict):
            raise CaseError(v.source, where, "must be a table like { units = 2, activation = \"tanh\" }")
        v.keys(raw, where, _LAYER, required={"units", "activation"})
        units = v.integer(raw, "units", where, minimum=1)
        act = v.string(raw, "activation", where)
        if act not in ACTIVATIONS:
            raise CaseError(v.source, f"{where}.activation",
                            f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
        bias = raw.get("bias", True)
        if not isinstance(bias, bool):
            raise CaseError(v.source, f"{where}.bias", f"must be true or false, got {bias!r}")
        layers.append(Layer(units, act, bias))
    loss = v.string(net, "loss", "network")
    if loss not in LOSSES:
        raise CaseError(v.source, "network.loss", f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    reduction = v.string(net, "reduction", "network") if "reduction" in net else "sum"
    if reduction not in REDUCTIONS:
        raise CaseError(v.source, "network.reduction", f"unknown reduction {reduction!r}; choose sum or mean")
    arch = Architecture(n_in, tuple(layers))
    if arch.n_params > MAX_PARAMS:
        raise CaseError(v.source, "network", f"{arch.n_params} parameters is more than the {MAX_PARAMS} a case may have")
    return arch, loss, reduction


def seeded_data(arch: Architecture, loss: str, seed: int, patterns: int,
                input_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The documented seeded draw of a data set (``docs/cases.md``).

    ``rng = numpy.random.default_rng(seed)``; inputs are
    ``input_scale * rng.standard_normal((patterns, inputs))``; then targets,
    from the same generator, by loss: ``sse`` standard normal;
    ``cross_entropy`` the softmax of standard normals (probabilities);
    ``binary_cross_entropy`` uniform on [0, 1); ``output`` zeros.
    """
    rng = np.random.default_rng(seed)
    x = input_scale * rng.standard_normal((patterns, arch.inputs))
    k = arch.outputs
    kind = LOSSES[loss].targets  # what a valid target is: the loss table's column
    if kind == "distribution":
        t = softmax(rng.standard_normal((patterns, k)), axis=1)
    elif kind == "unit":
        t = rng.random((patterns, k))
    elif kind == "ignored":
        t = np.zeros((patterns, k))
    else:
        t = rng.standard_normal((patterns, k))
    return x, t


def seeded_params(arch: Architecture, seed: int, scale: float) -> np.ndarray:
    """The documented seeded draw of parameters: ``scale * default_rng(seed).standard_normal(W)``."""
    return scale * np.random.default_rng(seed).standard_normal(arch.n_params)


def _data(v: _Validator, data: dict[str, Any], arch: Architecture, loss: str) -> tuple[np.ndarray, np.ndarray]:
    if "seed" in data or "patterns" in data:
        v.keys(data, "data", _DATA_SEEDED, required={"seed", "patterns"})
        seed = v.integer(data, "seed", "data", minimum=0)
        patterns = v.integer(data, "patterns", "data", minimum=1, maximum=MAX_PATTERNS)
        scale = v.number(data, "input_scale", "data") if "input_scale" in data else 1.0
        return seeded_data(arch, loss, seed, patterns, scale)
    v.keys(data, "data", _DATA_EXPLICIT, required=_DATA_EXPLICIT,
           hint="give inputs and targets, or seed and patterns")
    x = v.matrix(data, "inputs", "data", cols=arch.inputs, what="network.inputs")
    t = v.matrix(data, "targets", "data", cols=arch.outputs, what="the last layer's units")
    if x.shape[0] != t.shape[0]:
        raise CaseError(v.source, "data.targets",
                        f"has {t.shape[0]} rows but data.inputs has {x.shape[0]}: one target row per pattern")
    if x.shape[0] > MAX_PATTERNS:
        raise CaseError(v.source, "data.inputs", f"{x.shape[0]} patterns is more than the {MAX_PATTERNS} a case may have")
    return x, t


def _params(v: _Validator, params: dict[str, Any], arch: Architecture) -> np.ndarray:
    if "values" in params:
        v.keys(params, "params", _PARAMS_EXPLICIT, required=_PARAMS_EXPLICIT,
               hint="give values, or seed and scale")
        values = v.vector(params, "values", "params")
        if values.size != arch.n_params:
            raise CaseError(v.source, "params.values",
                            f"has {values.size} numbers but the network has {arch.n_params} parameters "
                            f"(run 'hessverify params' on the case to list them)")
        return values
    v.keys(params, "params", _PARAMS_SEEDED, required=_PARAMS_SEEDED, hint="give values, or seed and scale")
    seed = v.integer(params, "seed", "params", minimum=0)
    scale = v.number(params, "scale", "params")
    return seeded_params(arch, seed, scale)


class _Validator:
    """Small typed accessors that raise :class:`CaseError` with the key's path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def keys(self, table: dict[str, Any], where: str, allowed: set[str], *, required: set[str], hint: str = "") -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            key = f"{where}.{unknown[0]}" if where else unknown[0]
            extra = f"; {hint}" if hint else ""
            raise CaseError(self.source, key, f"unknown key; allowed here: {', '.join(sorted(allowed))}{extra}")
        missing = sorted(required - set(table))
        if missing:
            key = f"{where}.{missing[0]}" if where else missing[0]
            extra = f" ({hint})" if hint else ""
            raise CaseError(self.source, key, f"missing{extra}")

    def _path(self, where: str, key: str) -> str:
        return f"{where}.{key}" if where else key

    def table(self, doc: dict[str, Any], key: str) -> dict[str, Any]:
        value = doc[key]
        if not isinstance(value, dict):
            raise CaseError(self.source, key, f"must be a table ([{key}]), got {type(value).__name__}")
        return value

    def string(self, table: dict[str, Any], key: str, where: str = "") -> str:
        value = table[key]
        if not isinstance(value, str):
            raise CaseError(self.source, self._path(where, key), f"must be a string, got {value!r}")
        return value

    def integer(self, table: dict[str, Any], key: str, where: str, *, minimum: int | None = None,
                maximum: int | None = None) -> int:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise CaseError(self.source, self._path(where, key), f"must be a whole number, got {value!r}")
        if minimum is not None and value < minimum:
            raise CaseError(self.source, self._path(where, key), f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise CaseError(self.source, self._path(where, key), f"must be at most {maximum}, got {value}")
        return value

    def number(self, table: dict[str, Any], key: str, where: str) -> float:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CaseError(self.source, self._path(where, key), f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise CaseError(self.source, self._path(where, key), f"must be finite, got {value}")
        return float(value)

    def _check_numbers(self, flat: list[Any], path: str) -> np.ndarray:
        for i, x in enumerate(flat):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise CaseError(self.source, path, f"entry {i} must be a number, got {x!r}")
            if not math.isfinite(x):
                raise CaseError(self.source, path, f"entry {i} is {x}: every number must be finite")
        return np.array(flat, dtype=np.float64)

    def vector(self, table: dict[str, Any], key: str, where: str) -> np.ndarray:
        value = table[key]
        path = self._path(where, key)
        if not isinstance(value, list):
            raise CaseError(self.source, path, f"must be an array of numbers, got {type(value).__name__}")
        if len(value) > MAX_PARAMS:
            raise CaseError(self.source, path, f"has {len(value)} entries, more than the {MAX_PARAMS} allowed")
        return self._check_numbers(value, path)

    def matrix(self, table: dict[str, Any], key: str, where: str, *, cols: int, what: str) -> np.ndarray:
        value = table[key]
        path = self._path(where, key)
        if not isinstance(value, list) or not value:
            raise CaseError(self.source, path,
                            "must be a non-empty array of rows, one row a pattern, e.g. [[0, 1], [1, 0]]")
        if len(value) > MAX_PATTERNS:
            raise CaseError(self.source, path, f"has {len(value)} rows, more than the {MAX_PATTERNS} allowed")
        flat: list[Any] = []
        for r, row in enumerate(value):
            if not isinstance(row, list):
                raise CaseError(self.source, path, f"row {r} must be an array of numbers, got {row!r}")
            if len(row) != cols:
                raise CaseError(self.source, path, f"row {r} has {len(row)} entries but {what} is {cols}")
            flat.extend(row)
        return self._check_numbers(flat, path).reshape(len(value), cols)


def find_cases(paths: list[str] | list[Path]) -> list[Path]:
    """Expand files and directories (``*.toml`` inside, sorted) into case paths."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
            if not found:
                raise CaseError(str(p), "", "directory holds no *.toml case files")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise CaseError(str(p), "", "no such file or directory")
    return out
