"""Shared fixtures: the shipped cases."""

from __future__ import annotations

from pathlib import Path

import pytest

import hessverify

ROOT = Path(__file__).resolve().parent.parent
CASES_DIR = ROOT / "cases"
CASE_PATHS = sorted(CASES_DIR.glob("*.toml"))


@pytest.fixture(params=CASE_PATHS, ids=[p.stem for p in CASE_PATHS])
def shipped_case(request: pytest.FixtureRequest) -> hessverify.Problem:
    """Each shipped case, loaded (test id: the case id)."""
    return hessverify.load_case(request.param)
