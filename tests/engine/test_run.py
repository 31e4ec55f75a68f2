"""The run object: one problem's results computed once, and read by the CLI and the reports."""

from __future__ import annotations

import contextlib
import cProfile
import io
import json
import pstats
from pathlib import Path

import numpy as np
import pytest

import hessverify
from hessverify.engine.compare import BOUND_KEY
from hessverify.engine.registry import METHODS
from hessverify.engine.run import Run, SkipReason, run_cases, run_problem
from hessverify.errors import NotDifferentiableError

ROOT = Path(__file__).resolve().parents[2]
XOR = ROOT / "cases" / "xor-2-2-1-sigmoid.toml"


def _at_a_kink() -> hessverify.Problem:
    """One relu unit whose net input is exactly 0: no Hessian exists there."""
    from hessverify.model.network import Architecture, Layer

    arch = Architecture(1, (Layer(1, "relu", False), Layer(1, "identity", False)))
    return hessverify.Problem(arch, "sse", np.array([0.0, 1.0]), np.array([[1.0]]), np.array([[0.3]]), "sum",
                              id="relu-at-kink")


def _calls(argv: list[str]) -> dict[str, int]:
    """Calls per function name (hessverify's and numpy.linalg's) during one in-process ``hessverify`` command.

    Counted by profile, so calls through names imported elsewhere count too.
    """
    from hessverify.cli import main

    profile = cProfile.Profile()
    with contextlib.redirect_stdout(io.StringIO()):
        profile.enable()
        try:
            status = main(argv)
        finally:
            profile.disable()
    assert status == 0
    out: dict[str, int] = {}
    for (path, _line, name), (_cc, ncalls, *_rest) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        where = path.replace("\\", "/")
        if "hessverify/" in where or "numpy/linalg/" in where:
            key = f"{where.rsplit('/', 1)[-1]}:{name}"
            out[key] = out.get(key, 0) + ncalls
    return out


def _function(fn):
    """The function itself behind a registry entry (the registry names some by module and attribute: Lazy)."""
    import importlib

    if hasattr(fn, "module") and hasattr(fn, "attr"):
        return getattr(importlib.import_module(fn.module), fn.attr)
    return fn


def test_one_verify_with_a_report_computes_the_point_and_the_spectrum_once(tmp_path: Path) -> None:
    calls = _calls(["verify", str(XOR), "--report", str(tmp_path)])
    # the point: one well-posedness check and one magnitude Hessian for every method and reference
    assert calls["well_posed.py:ensure_well_posed"] == 1
    assert calls["bounds.py:magnitude_hessian"] == 1
    approximations = [m for m in METHODS.values() if m.role == "approximation"]
    # one eigendecomposition of the exact Hessian, one per approximation summarised (their own matrices)
    assert calls["_linalg.py:eigvalsh"] == 1 + len(approximations)
    doc = json.loads((tmp_path / "results.json").read_text())
    summarised = [a for case in doc["cases"] for a in case["approximations"] if a.get("inertia")]
    assert len(summarised) == len(approximations)
    # each approximation computed once: by the run, then read by the report
    for m in approximations:
        fn = _function(m.fn)
        key = f"{fn.__code__.co_filename.rsplit('/', 1)[-1]}:{fn.__name__}"
        assert calls[key] == 1, key


def test_the_run_holds_every_result_bound_and_record() -> None:
    case = hessverify.load_case(XOR)
    run = run_problem(case, methods=["backprop", "diagonal", "fd"], references=["autograd", "fd"])
    assert run.skip is None and run.forward is not None and run.rounding is not None
    assert run.plan.methods == ("backprop", "diagonal", "fd") and run.plan.references == ("autograd", "fd")
    assert set(run.values) >= {"backprop", "diagonal", "fd", "autograd"}
    assert "fd" in run.errors  # the reference's own error estimate
    assert set(run.bounds) == {(c.method, c.reference) for c in run.comparisons}
    for c in run.comparisons:  # the bound at the worst entry is the deciding bound's entry there
        i, j = case.param_names.index(c.worst_entry.row), case.param_names.index(c.worst_entry.col)
        assert run.bounds[(c.method, c.reference)][i, j] == c.worst_entry.bound
    # verify_problem is the run's records, and its matrices= the run's results under the documented keys
    kept: dict = {}
    again = hessverify.verify_problem(case, ["backprop", "diagonal", "fd"], ["autograd", "fd"], matrices=kept)
    assert [(c.method, c.reference, c.passed) for c in again] == [(c.method, c.reference, c.passed)
                                                                    for c in run.records]
    np.testing.assert_array_equal(kept[BOUND_KEY.format(method="backprop", reference="fd")],
                                  run.bounds[("backprop", "fd")])
    np.testing.assert_array_equal(kept["fd.error"], run.errors["fd"])


def test_a_point_without_a_hessian_is_a_typed_skip_and_verify_problem_still_raises() -> None:
    relu = _at_a_kink()
    run = run_problem(relu)
    assert run.skip is not None and run.skip.reason is SkipReason.NOT_DIFFERENTIABLE
    assert run.skipped() == [{"case": relu.id, "reason": "not_differentiable", "message": run.skip.message}]
    assert not run.records and not run.values
    with pytest.raises(NotDifferentiableError, match="not twice differentiable"):
        hessverify.verify_problem(relu)


def test_default_references_left_out_are_planned_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from hessverify.symbolic import reference

    monkeypatch.setattr(reference, "MAX_COST", 10)  # every case is then too costly for symbolic by default
    big = hessverify.load_case(XOR)
    run = run_problem(big, methods=["backprop"])
    assert "symbolic" not in run.plan.references
    assert any(line.startswith("symbolic: skipped, estimated cost") for line in run.plan.left_out)
    assert run_problem(big, methods=["backprop"], references=["autograd"]).plan.left_out == ()


def test_reports_read_runs_and_analyse_each_once(tmp_path: Path) -> None:
    from hessverify.reports import write_report

    runs = list(run_cases([hessverify.load_case(XOR), _at_a_kink()], ["backprop"], ["autograd"]))
    write_report(tmp_path, runs, html=False, show_progress=False)
    first = runs[0].analysis
    assert first is not None and first.spectrum is not None
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["not_compared"] == runs[1].skipped()
    assert len(doc["results"]) == len(runs[0].records)
    write_report(tmp_path, runs, html=False, show_progress=False)
    assert runs[0].analysis is first  # a second report of the same runs computes nothing again


def test_reports_import_neither_verify_nor_the_registry() -> None:
    import ast

    for path in (ROOT / "hessverify" / "reports").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & {"hessverify.engine.verify", "hessverify.engine.registry"}, path.name


def test_a_run_rebuilt_from_kept_matrices_is_what_the_run_kept() -> None:
    case = hessverify.load_case(XOR)
    run = run_problem(case, methods=["backprop"], references=["autograd", "fd"])
    rebuilt = Run.from_matrices(case, run.records, run.matrices())
    assert set(rebuilt.bounds) == set(run.bounds)
    for key in run.bounds:
        np.testing.assert_array_equal(rebuilt.bounds[key], run.bounds[key])
    assert rebuilt.drawn == run.drawn
