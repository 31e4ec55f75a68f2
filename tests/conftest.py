"""Shared fixtures (the shipped cases) and the ``slow`` marker.

A test marked ``slow`` takes longer than CI should wait; it is skipped unless
asked for: ``-m slow``, ``HESSVERIFY_SLOW=1``, or the ``thorough`` profile
(``--hessverify-profile thorough`` / ``--hypothesis-profile thorough``).
"""

from __future__ import annotations

import os
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: longer than CI should wait; run with -m slow, HESSVERIFY_SLOW=1 or "
                                       "the thorough profile")


def _slow_asked_for(config: pytest.Config) -> bool:
    profiles = {config.getoption("hessverify_profile", None), config.getoption("hypothesis_profile", None)}
    return (os.environ.get("HESSVERIFY_SLOW") == "1" or "slow" in (config.getoption("markexpr") or "")
            or "thorough" in profiles)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _slow_asked_for(config):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow, HESSVERIFY_SLOW=1 or the thorough profile")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
