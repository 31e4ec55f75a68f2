"""Case files: the declarative, validated description of a problem.

The schema is documented in ``docs/cases.md``.  Every fault is reported as a
:class:`~hessverify.errors.CaseError` naming the file, the key and what is
wrong; unknown keys are rejected so that a typo never passes silently.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

from hessverify.engine.budget import require
from hessverify.errors import BudgetError, CaseError
from hessverify.io.files import MAX_CASE_BYTES, read_case_text
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.layers import KINDS
from hessverify.model.losses import LOSS_OPTIONS, LOSSES, REDUCTIONS, get_loss
from hessverify.model.network import Architecture, Layer, check_sources
from hessverify.model.problem import Problem

__all__ = ["MAX_NESTING", "MAX_PARAMS", "MAX_PATTERNS", "SHIPPED_CASES", "find_cases", "load_case", "parse_case",
           "seeded_data", "seeded_params", "shipped_cases"]

ID_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_PARAMS = 20_000
"""Largest parameter count a case may have (a dense Hessian of 3.2 GB)."""
MAX_PATTERNS = 100_000
"""Largest number of patterns a case may have."""
MAX_INPUTS = 1_000_000
"""Most input values one pattern may have."""
MAX_NESTING = 32
"""Deepest nesting of arrays and inline tables a case file may use (a case needs 3)."""
_FLOAT_MAX = 1.7976931348623157e308

_TOP = {"id", "description", "network", "data", "params"}
_NETWORK = {"inputs", "input_shape", "layers", "loss", "reduction"}
_LAYER = {"kind", "units", "activation", "bias", "from"}
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
    if not isinstance(path, (str, os.PathLike)):
        raise CaseError("", "", f"load_case takes the path of a case file (str or Path), got {type(path).__name__}")
    src = os.fspath(path)
    if not isinstance(src, str) or not src:
        raise CaseError("", "", f"load_case takes the path of a case file, got {path!r}")
    text = read_case_text(src)  # a regular file or -, size-limited before reading
    return parse_case(text, source="<stdin>" if src == "-" else src)


def parse_case(text: str, source: str = "<string>") -> Problem:
    """Validate the text of a case file and build its :class:`Problem`.

    Arrays and inline tables nested deeper than :data:`MAX_NESTING` are
    refused before parsing; every number must be within float64's range.
    """
    if isinstance(text, (bytes, bytearray)):
        raise CaseError(source, "", "parse_case takes the text of a case file (str), got bytes; decode it with "
                                    ".decode('utf-8') first, or give the path to load_case")
    if not isinstance(text, str):
        raise CaseError(source, "", f"parse_case takes the text of a case file (str), got {type(text).__name__}")
    if text.startswith("\ufeff"):
        raise CaseError(source, "", "starts with a byte-order mark (BOM), which TOML does not allow; "
                                    "save the file as UTF-8 without BOM")
    if len(text) > MAX_CASE_BYTES:
        raise CaseError(source, "", f"is longer than {MAX_CASE_BYTES // 2**20} MiB, more than a case file may be")
    _check_nesting(text, source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CaseError(source, "", f"invalid TOML: {exc}") from None
    except RecursionError:  # defence in depth: _check_nesting should have caught it
        raise CaseError(source, "", f"nested too deeply (at most {MAX_NESTING} levels)") from None
    v = _Validator(source)
    v.keys(doc, "", _TOP, required={"network", "data", "params"})
    case_id = v.string(doc, "id") if "id" in doc else _id_from_source(source)
    if not ID_PATTERN.match(case_id):
        raise CaseError(source, "id",
                        f"{case_id!r} is not a valid id: use lowercase letters, digits and single hyphens")
    description = v.string(doc, "description") if "description" in doc else ""
    arch, loss, reduction, settings = _network(v, v.table(doc, "network"))
    inputs, targets = _data(v, v.table(doc, "data"), arch, loss)
    params = _params(v, v.table(doc, "params"), arch)
    return Problem(arch, loss, params, inputs, targets, reduction, case_id, description, source,
                   loss_options=tuple(sorted((k, float(x)) for k, x in settings.items())))


def _id_from_source(source: str) -> str:
    """The id of a case file that gives none: its file name without ``.toml``, made a valid id.

    ``cases/My_Case.toml`` becomes ``my-case``; text with no file behind it is ``case``.
    """
    stem = Path(source).stem if source and not source.startswith("<") else ""
    words = re.findall(r"[a-z0-9]+", stem.lower())
    return "-".join(words) or "case"


def _network(v: _Validator, net: dict[str, Any]) -> tuple[Architecture, str, str, dict[str, Any]]:
    v.keys(net, "network", _NETWORK, required={"layers", "loss"})
    if ("inputs" in net) == ("input_shape" in net):
        raise CaseError(v.source, "network.inputs", "give inputs = n (a flat input) or input_shape = [...], one of them")
    if "inputs" in net:
        n_in, shape = v.integer(net, "inputs", "network", minimum=1), None
    else:
        raw_shape = net["input_shape"]
        if not isinstance(raw_shape, list) or not raw_shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                                                                  for s in raw_shape):
            raise CaseError(v.source, "network.input_shape",
                            f"must be a list of positive sizes such as [3, 8] (one pattern's shape), got {raw_shape!r}")
        shape = tuple(raw_shape)
        n_in = int(np.prod(shape))
        if n_in > MAX_INPUTS:
            raise CaseError(v.source, "network.input_shape", f"{n_in} input values per pattern is more than {MAX_INPUTS}")
    layers_raw = net["layers"]
    if not isinstance(layers_raw, list) or not layers_raw:
        raise CaseError(v.source, "network.layers",
                        'must be a non-empty array of tables like { units = 2, activation = "tanh" }')
    layers = []
    sizes = [n_in]  # the output size of the inputs (0) and of each layer so far, for the parameter count
    count: int | None = 0
    for i, raw in enumerate(layers_raw):
        where = f"network.layers[{i}]"
        if not isinstance(raw, dict):
            raise CaseError(v.source, where, "must be a table like { units = 2, activation = \"tanh\" }")
        kind = raw.get("kind", "dense")
        if not isinstance(kind, str) or kind not in KINDS:
            raise CaseError(v.source, f"{where}.kind", f"unknown layer kind {kind!r}; choose one of {', '.join(KINDS)}")
        if kind == "dense":
            v.keys(raw, where, _LAYER | {"gain"}, required={"units"})
            units = v.integer(raw, "units", where, minimum=1)
        else:
            units = None
        act = v.string(raw, "activation", where) if "activation" in raw else "identity"
        if act not in ACTIVATIONS:
            raise CaseError(v.source, f"{where}.activation",
                            f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
        bias = raw.get("bias", True)
        if not isinstance(bias, bool):
            raise CaseError(v.source, f"{where}.bias", f"must be true or false, got {bias!r}")
        sources = None
        if "from" in raw:
            sources = raw["from"]
            if not isinstance(sources, list) or any(isinstance(j, bool) or not isinstance(j, int) for j in sources):
                raise CaseError(v.source, f"{where}.from",
                                f"must be a list of earlier layers like [0, 2] (0 = the inputs), got {sources!r}")
            try:
                check_sources(i + 1, sources)
            except ValueError as exc:
                raise CaseError(v.source, f"{where}.from", str(exc)) from None
            sources = tuple(sources)
        if count is not None and kind == "dense":  # dense sizes are known here: count before building anything
            fan_in = sizes[-1] if sources is None else sum(sizes[j] for j in sources)
            count += units * fan_in + (units if bias else 0)
            sizes.append(units)
        else:  # another kind's size follows from the shapes: Architecture counts it below
            count = None
        options = {k: val for k, val in raw.items() if k not in _LAYER}
        try:
            layers.append(Layer(units, act, bias, sources, kind, tuple(sorted(options.items()))))
        except ValueError as exc:
            key, sep, what = str(exc).partition(": ")
            path = f"{where}.{key}" if sep and " " not in key else where
            raise CaseError(v.source, path, f"{kind}: {what if sep and ' ' not in key else exc}") from None
    # counted in one pass over the layers, before anything is built from them
    if count is not None and count > MAX_PARAMS:
        raise CaseError(v.source, "network", f"{count} parameters is more than the {MAX_PARAMS} a case may have")
    raw_loss = net["loss"]
    settings: dict[str, Any] = {}
    if isinstance(raw_loss, dict):  # loss = { name = "huber", delta = 0.5 }
        v.keys(raw_loss, "network.loss", {"name"} | {"delta"}, required={"name"})
        loss = v.string(raw_loss, "name", "network.loss")
        settings = {k: val for k, val in raw_loss.items() if k != "name"}
    else:
        loss = v.string(net, "loss", "network")
    if loss not in LOSSES:
        raise CaseError(v.source, "network.loss", f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if settings:
        if loss not in LOSS_OPTIONS:
            raise CaseError(v.source, "network.loss", f"{loss} takes no settings; write loss = \"{loss}\"")
        try:
            get_loss(loss, **settings)
        except (ValueError, TypeError) as exc:
            raise CaseError(v.source, "network.loss", f"{loss}: {exc}") from None
    reduction = v.string(net, "reduction", "network") if "reduction" in net else "sum"
    if reduction not in REDUCTIONS:
        raise CaseError(v.source, "network.reduction", f"unknown reduction {reduction!r}; choose sum or mean")
    try:
        arch = Architecture(n_in, tuple(layers), shape)
    except ValueError as exc:  # a shape that does not fit, an add of two shapes, a misplaced embedding: one line
        raise CaseError(v.source, "network.layers", str(exc)) from None
    if arch.n_params > MAX_PARAMS:
        raise CaseError(v.source, "network", f"{arch.n_params} parameters is more than the {MAX_PARAMS} a case may have")
    return arch, loss, reduction, settings


def seeded_data(arch: Architecture, loss: str, seed: int, patterns: int,
                input_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The documented seeded draw of a data set (``docs/cases.md``).

    ``rng = numpy.random.default_rng(seed)``; inputs are
    ``input_scale * rng.standard_normal((patterns, inputs))``; then targets,
    from the same generator, by loss: ``sse`` standard normal;
    ``cross_entropy`` the softmax of standard normals (probabilities);
    ``binary_cross_entropy`` uniform on [0, 1); ``output`` zeros.  An embedding
    network's inputs are token ids instead, ``rng.integers(0, vocab, (patterns, T))``.
    """
    rng = np.random.default_rng(seed)
    first = arch.layers[0]
    if first.kind_def.reads_ids:
        x = rng.integers(0, first.opts["vocab"], (patterns, arch.inputs)).astype(np.float64)
    else:
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
        need = 8.0 * patterns * (arch.inputs + arch.outputs) * 2  # inputs and targets, and the draw's temporary
        try:
            require(need, f"the seeded data ({patterns} patterns x {arch.inputs} inputs)")
        except BudgetError as exc:
            raise CaseError(v.source, "data.patterns", str(exc)) from None
        return seeded_data(arch, loss, seed, patterns, scale)
    v.keys(data, "data", _DATA_EXPLICIT, required=_DATA_EXPLICIT,
           hint="give inputs and targets, or seed and patterns")
    x = _inputs(v, data, arch)
    t = v.matrix(data, "targets", "data", cols=arch.outputs, what="the last layer's units")
    if x.shape[0] != t.shape[0]:
        raise CaseError(v.source, "data.targets",
                        f"has {t.shape[0]} rows but data.inputs has {x.shape[0]}: one target row per pattern")
    if x.shape[0] > MAX_PATTERNS:
        raise CaseError(v.source, "data.inputs", f"{x.shape[0]} patterns is more than the {MAX_PATTERNS} a case may have")
    return x, t


def _inputs(v: _Validator, data: dict[str, Any], arch: Architecture) -> np.ndarray:
    """``data.inputs`` as ``(N, inputs)``: each row one pattern, flat or nested to ``input_shape`` (row-major)."""
    raw = data["inputs"]
    if arch.input_shape is not None and isinstance(raw, list) and raw and all(isinstance(r, list) for r in raw) \
            and any(isinstance(e, list) for r in raw for e in r):
        try:
            nested = np.array(raw, dtype=np.float64)
        except (ValueError, TypeError):
            raise CaseError(v.source, "data.inputs", f"each pattern must be a nested list of shape "
                                                     f"{list(arch.input_shape)} or a flat row of {arch.inputs}") from None
        if nested.shape[1:] != arch.input_shape:
            raise CaseError(v.source, "data.inputs", f"patterns of shape {list(nested.shape[1:])}; the network's "
                                                     f"input_shape is {list(arch.input_shape)}")
        x = nested.reshape(nested.shape[0], -1)
        if not np.all(np.isfinite(x)):
            raise CaseError(v.source, "data.inputs", "every input must be a finite number")
    else:
        x = v.matrix(data, "inputs", "data", cols=arch.inputs, what="network.inputs (or input_shape's size)")
    first = arch.layers[0]
    if first.kind_def.reads_ids:
        try:
            first.kind_def.check_ids(first.opts, x)  # type: ignore[attr-defined]
        except ValueError as exc:
            raise CaseError(v.source, "data.inputs", f"layer 1 ({first.kind}): {exc}") from None
    return x


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


_TOKEN = re.compile(r"""\"\"\"|'''|["'#\n\[\]{}]|[^\s"'#\[\]{}]+""")
"""What the nesting check looks at: quotes, comments, line ends, brackets, and runs of anything else at once."""

_STRING_END = {'"': re.compile(r'["\\\n]'), "'": re.compile(r"['\n]"), '"""': re.compile(r'"""|\\'),
               "'''": re.compile(r"'''")}
"""What ends a string (or escapes the next character) after each kind of opening quote."""


def _string_end(text: str, i: int, quote: str) -> int:
    """Where the string opened by ``quote`` just before ``i`` ends: past its closing quote (or its line, unclosed)."""
    end = _STRING_END[quote]
    while True:
        m = end.search(text, i)
        if m is None:
            return len(text)
        if m.group() == "\\":
            i = m.end() + 1  # an escaped character, a quote included
            continue
        return m.end()  # the closing quote, or the end of the line of an unterminated one (tomllib says so)


def _check_nesting(text: str, source: str) -> None:
    """Refuse arrays and inline tables nested past :data:`MAX_NESTING`, without parsing (tomllib recurses).

    One pass over the text, token by token (:data:`_TOKEN`): linear in its length.
    """
    depth = 0
    i = 0
    line_start = True
    while True:
        m = _TOKEN.search(text, i)
        if m is None:
            return
        token, i = m.group(), m.end()
        if token in ('"', "'", '"""', "'''"):
            i = _string_end(text, i, token)
            line_start = False
        elif token == "#":
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
        elif token == "\n":
            line_start = True
        elif token in ("[", "{"):
            if line_start and token == "[" and depth == 0:  # [table] and [[array of tables]] headers
                j = text.find("\n", i)
                i = len(text) if j < 0 else j
                continue
            depth += 1
            if depth > MAX_NESTING:
                line = text.count("\n", 0, m.start()) + 1
                raise CaseError(source, "", f"arrays or inline tables nested more than {MAX_NESTING} deep "
                                            f"(line {line}); a case needs at most 3")
        elif token in ("]", "}"):
            depth = max(depth - 1, 0)
        else:
            line_start = False


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
            raise CaseError(self.source, self._path(where, key), f"must be a whole number, got {_short(value)}")
        if minimum is not None and value < minimum:
            raise CaseError(self.source, self._path(where, key), f"must be at least {minimum}, got {_short(value)}")
        if maximum is not None and value > maximum:
            raise CaseError(self.source, self._path(where, key), f"must be at most {maximum}, got {_short(value)}")
        if abs(value) > 2**63 - 1:
            raise CaseError(self.source, self._path(where, key), f"{_short(value)} is too large a whole number")
        return value

    def number(self, table: dict[str, Any], key: str, where: str) -> float:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CaseError(self.source, self._path(where, key), f"must be a number, got {_short(value)}")
        if isinstance(value, int) and abs(value) > _FLOAT_MAX:
            raise CaseError(self.source, self._path(where, key), f"{_short(value)} is outside the range of float64")
        if not math.isfinite(value):
            raise CaseError(self.source, self._path(where, key), f"must be finite, got {value}")
        return float(value)

    def _check_numbers(self, flat: list[Any], path: str) -> np.ndarray:
        for i, x in enumerate(flat):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise CaseError(self.source, path, f"entry {i} must be a number, got {_short(x)}")
            if isinstance(x, int) and abs(x) > _FLOAT_MAX:
                raise CaseError(self.source, path, f"entry {i} ({_short(x)}) is outside the range of float64")
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


def _short(value: object, width: int = 40) -> str:
    """``repr`` cut to ``width`` characters: a 400-digit number or a long string stays one readable line."""
    text = repr(value)
    return text if len(text) <= width else f"{text[:width - 13]}... ({len(text)} chars)"


def find_cases(paths: list[str] | list[Path]) -> list[Path]:
    """Expand files and directories (``*.toml`` inside, sorted) into case paths; ``-`` is standard input."""
    out: list[Path] = []
    for p in map(Path, paths):
        if str(p) == "-":
            out.append(p)
            continue
        try:
            st = os.stat(p)
        except OSError as exc:
            reason = ("a loop of symbolic links" if exc.errno == errno.ELOOP
                      else "no such file or directory" if exc.errno == errno.ENOENT else exc.strerror or str(exc))
            raise CaseError(str(p), "", reason) from None
        if stat.S_ISDIR(st.st_mode):
            try:
                found = sorted(q for q in p.glob("*.toml"))
            except OSError as exc:
                raise CaseError(str(p), "", f"cannot be listed: {exc.strerror or exc}") from None
            if not found:
                raise CaseError(str(p), "", "directory holds no *.toml case files")
            out += found
        else:
            out.append(p)  # load_case says what is wrong with anything that is not a regular file
    return out


SHIPPED_CASES = Path(__file__).resolve().parent.parent / "cases_data"
"""The shipped cases inside the installed package (``hessverify/cases_data``, a link to the
repository's ``cases/``, copied into the wheel as package data)."""


def shipped_cases() -> list[Path]:
    """The shipped case files (``cases/*.toml``), sorted; they travel with ``pip install hessverify``.

    Examples
    --------
    >>> [p.stem for p in shipped_cases()][:2]
    ['attention-3x4-2heads', 'batchnorm-eval-2x3-1']
    """
    return sorted(SHIPPED_CASES.glob("*.toml"))
