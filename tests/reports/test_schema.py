"""results.json against its published schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from hessverify.reports.localise import SHAPES
from hessverify.reports.schema import RESULTS_SCHEMA, SCHEMA_VERSION


@pytest.fixture(scope="module")
def doc(report_dir: Path) -> dict:
    return json.loads((report_dir / "results.json").read_text())


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(RESULTS_SCHEMA)


def test_results_validate(doc: dict) -> None:
    jsonschema.validate(doc, RESULTS_SCHEMA)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["environment"]["float"] == "float64"


def test_one_record_per_case_method_reference(doc: dict) -> None:
    keys = [(r["case"], r["method"], r["reference"]) for r in doc["results"]]
    assert len(keys) == len(set(keys)) == 3 * 2 * 2  # 3 cases, 2 methods, 2 references (conftest.REFERENCES)
    for r in doc["results"]:
        for field in ("passed", "max_abs_error", "max_rel_error", "bound", "symmetry_error"):
            assert field in r
        assert {"row", "col", "value", "reference_value"} <= set(r["worst_entry"])


def test_failing_records_carry_their_localisation(doc: dict) -> None:
    failing = [r for r in doc["results"] if not r["passed"]]
    assert failing and all(r["method"] == "buggy-backprop" for r in failing)
    for r in failing:
        assert r["localisation"]["shape"] in SHAPES
        assert r["localisation"]["words"]
    assert all("localisation" not in r for r in doc["results"] if r["passed"])


def test_cases_carry_inertia_and_approximations(doc: dict) -> None:
    saddle = next(c for c in doc["cases"] if c["case"] == "saddle-2-3-1-tanh-zero")
    assert saddle["inertia"]["negative"] > 0 and saddle["inertia"]["positive"] > 0
    assert {"test-diagonal", "test-blocks"} <= {a["name"] for a in saddle["approximations"]}


@pytest.mark.parametrize("breakage", ["drop worst_entry", "bad parameter name", "unknown shape", "bad version"])
def test_schema_rejects_broken_documents(doc: dict, breakage: str) -> None:
    bad = copy.deepcopy(doc)
    failing = next(r for r in bad["results"] if not r["passed"])
    if breakage == "drop worst_entry":
        del bad["results"][0]["worst_entry"]
    elif breakage == "bad parameter name":
        bad["results"][0]["worst_entry"]["row"] = "weights of layer one"
    elif breakage == "unknown shape":
        failing["localisation"]["shape"] = "somewhere"
    else:
        bad["schema_version"] = "0.0"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, RESULTS_SCHEMA)


def test_a_reference_that_cannot_serve_is_a_valid_record(tmp_path: Path) -> None:
    """complex_step is NaN at net inputs near 700: a not-applicable record, counted apart, schema-valid."""
    import numpy as np

    import hessverify
    from hessverify.model.network import Architecture, Layer
    from hessverify.reports import write_report

    arch = Architecture(1, (Layer(1, "tanh", False), Layer(1, "identity", False)))
    case = hessverify.Problem(arch, "sse", np.array([1.0, 0.5]), np.array([[700.0]]), np.array([[0.3]]), "sum",
                              id="tanh-at-700")
    from hessverify.engine.run import run_problem

    write_report(tmp_path, [run_problem(case, references=["autograd", "complex_step"])])
    written = json.loads((tmp_path / "results.json").read_text())
    jsonschema.validate(written, RESULTS_SCHEMA)
    assert written["summary"]["not_applicable"] == 1 and written["summary"]["failed"] == 0
    record = next(r for r in written["results"] if r["bound_kind"] == "not_applicable")
    assert record["reference"] == "complex_step" and record["worst_entry"]["row"] == "W1[0,0]"
    assert "complex_step: not applicable" in (tmp_path / "report.md").read_text()
