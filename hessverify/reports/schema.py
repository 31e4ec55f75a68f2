"""The JSON schema of ``results.json`` (JSON Schema draft 2020-12).

Bump :data:`SCHEMA_VERSION` on any change that removes or renames a field;
adding an optional field keeps the version.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RESULTS_SCHEMA", "SCHEMA_VERSION"]

SCHEMA_VERSION = "1.0"

_NUMBER = {"type": "number"}

_WORST = {
    "type": "object",
    "required": ["row", "col", "value", "reference_value", "abs_error", "bound"],
    "properties": {
        "row": {"type": "string", "pattern": r"^[Wb]\d+\[\d+(,\d+)?\]$"},
        "col": {"type": "string", "pattern": r"^[Wb]\d+\[\d+(,\d+)?\]$"},
        "value": _NUMBER,
        "reference_value": _NUMBER,
        "abs_error": _NUMBER,
        "bound": _NUMBER,
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
                "properties": {"reason": {"enum": ["not_differentiable", "overflow"]}},
            },
        },
    },
}
