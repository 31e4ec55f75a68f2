"""The JSON schema of ``results.json`` (JSON Schema draft 2020-12).

Bump :data:`SCHEMA_VERSION` on any change that removes or renames a field;
adding an optional field keeps the version.  Optional: ``localisation`` in a
failing result (:mod:`hessverify.reports.localise`), ``cases`` (spectrum,
inertia and approximations per case, :mod:`hessverify.reports.analysis`) and
``leading`` (the minimal failing problems a sweep puts first).  Documented in
``docs/reports.md``.
"""

from __future__ import annotations

from typing import Any

from hessverify.reports.localise import SHAPES

__all__ = ["RESULTS_SCHEMA", "SCHEMA_VERSION"]

SCHEMA_VERSION = "1.0"

_NUMBER = {"type": ["number", "null"]}  # null: NaN or infinite (strict JSON has neither)

_WORST = {
    "type": "object",
    "required": ["row", "col", "value", "reference_value", "abs_error", "bound"],
    "properties": {
        "row": {"type": "string", "pattern": r"^[A-Za-z]+\d+\[\d+(,\d+)*\]$"},
        "col": {"type": "string", "pattern": r"^[A-Za-z]+\d+\[\d+(,\d+)*\]$"},
        "value": _NUMBER,
        "reference_value": _NUMBER,
        "abs_error": _NUMBER,
        "bound": _NUMBER,
    },
}

_NAME = {"type": "string", "pattern": r"^[A-Za-z]+\d+\[\d+(,\d+)*\]$"}

_BLOCK = {
    "type": "object",
    "required": ["rows", "cols", "name", "share", "over", "size"],
    "properties": {"rows": {"type": "string"}, "cols": {"type": "string"}, "name": {"type": "string"},
                   "share": {"type": "number", "minimum": 0, "maximum": 1},
                   "over": {"type": "integer", "minimum": 0}, "size": {"type": "integer", "minimum": 1}},
}

_LOCALISATION = {
    "type": "object",
    "required": ["shape", "words", "over", "blocks", "layer_blocks", "top"],
    "properties": {
        "shape": {"enum": list(SHAPES)},
        "words": {"type": "string", "minLength": 1},
        "over": {"type": "integer", "minimum": 0},
        "blocks": {"type": "array", "items": _BLOCK},
        "layer_blocks": {"type": "array", "items": _BLOCK},
        "top": {"type": "array", "items": {
            "type": "object", "required": ["row", "col", "value", "reference_value", "abs_error"],
            "properties": {"row": _NAME, "col": _NAME, "value": _NUMBER, "reference_value": _NUMBER,
                           "abs_error": _NUMBER}}},
        "factor": {"type": ["number", "null"]},
        "params": {"type": "array", "items": _NAME},
    },
}

_INERTIA = {
    "type": "object",
    "required": ["positive", "negative", "zero", "zero_threshold", "kind", "min", "max"],
    "properties": {
        "positive": {"type": "integer", "minimum": 0},
        "negative": {"type": "integer", "minimum": 0},
        "zero": {"type": "integer", "minimum": 0},
        "zero_threshold": {"type": "number", "minimum": 0},
        "kind": {"type": "string"},
        "min": _NUMBER,
        "max": _NUMBER,
    },
}

_CASE = {
    "type": "object",
    "required": ["case", "network", "loss", "reduction", "n_params", "n_patterns", "spectrum_of", "inertia",
                 "approximations"],
    "properties": {
        "case": {"type": "string"},
        "n_params": {"type": "integer", "minimum": 1},
        "n_patterns": {"type": "integer", "minimum": 1},
        "spectrum_of": {"type": ["string", "null"]},
        "inertia": {"oneOf": [{"type": "null"}, _INERTIA]},
        "grad_norm": {"type": ["number", "null"]},
        "point": {"type": ["string", "null"]},
        "approximations": {"type": "array", "items": {
            "type": "object", "required": ["name", "kind", "summary"],
            "properties": {"name": {"type": "string"}, "kind": {"enum": ["matrix", "vector", "blocks"]},
                           "rel_frobenius_error": _NUMBER, "rel_diagonal_error": _NUMBER, "cosine": _NUMBER,
                           "inertia": {"oneOf": [{"type": "null"}, _INERTIA]}, "error": {"type": "string"}}}},
    },
}

_RESULT = {
    "type": "object",
    "required": [
        "case", "method", "reference", "passed", "max_abs_error", "max_rel_error", "frobenius_rel_error",
        "bound", "bound_kind", "margin", "symmetry_error", "worst_entry", "failing_entries",
    ],
    "properties": {
        "case": {"type": "string", "pattern": r"^[a-z0-9]+(-[a-z0-9]+)*$"},
        "method": {"type": "string"},
        "reference": {"type": "string"},
        "passed": {"type": "boolean"},
        "max_abs_error": _NUMBER,
        "max_rel_error": _NUMBER,
        "frobenius_rel_error": _NUMBER,
        "bound": _NUMBER,
        "bound_kind": {"type": "string"},
        "margin": _NUMBER,
        "symmetry_error": _NUMBER,
        "worst_entry": _WORST,
        "failing_entries": {"type": "integer", "minimum": 0},
        "unchecked_entries": {"type": "integer", "minimum": 0},
        "note": {"type": "string"},
        "extra": {"type": "object"},
        "localisation": _LOCALISATION,
    },
}

RESULTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "hessverify results",
    "type": "object",
    "required": ["schema_version", "created", "environment", "summary", "results", "not_compared"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "created": {"type": "string"},
        "environment": {
            "type": "object",
            "required": ["hessverify", "python", "numpy", "float"],
            "properties": {"float": {"const": "float64"}},
        },
        "summary": {
            "type": "object",
            "required": ["comparisons", "passed", "failed", "not_compared"],
            "properties": {k: {"type": "integer", "minimum": 0}
                           for k in ("comparisons", "passed", "failed", "not_compared")},
        },
        "results": {"type": "array", "items": _RESULT},
        "not_compared": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["case", "reason", "message"],
                "properties": {"reason": {"enum": ["not_differentiable", "overflow", "function_failed"]}},
            },
        },
        "cases": {"type": "array", "items": _CASE},
        "leading": {"type": "array", "items": {"type": "string"}},
    },
}
