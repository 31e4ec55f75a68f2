"""Shared fixtures: the shipped cases."""

from __future__ import annotations

from pathlib import Path

import pytest

import hessverify

ROOT = Path(__file__).resolve().parent.parent
CASES_DIR = ROOT / "cases"
CASE_PATHS = sorted(CASES_DIR.glob("*.toml"))
ADAPTER_LOSSES = ("sse", "cross_entropy", "binary_cross_entropy", "output")
COVERED_CASE_PATHS = [p for p in CASE_PATHS if (lambda c: c.architecture.is_dense and str(c.loss) in ADAPTER_LOSSES
                                                and not c.loss_options)(hessverify.load_case(p))]
"""The shipped cases the framework adapters write themselves (dense layers, the classic losses)."""


@pytest.fixture(params=CASE_PATHS, ids=[p.stem for p in CASE_PATHS])
def shipped_case(request: pytest.FixtureRequest) -> hessverify.Problem:
    """Each shipped case, loaded (test id: the case id)."""
    return hessverify.load_case(request.param)
