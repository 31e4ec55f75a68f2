"""The ``slow`` marker: skipped unless asked for (``-m slow`` or ``HESSVERIFY_SLOW=1``)."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: longer than a few seconds; run with -m slow or HESSVERIFY_SLOW=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("HESSVERIFY_SLOW") == "1" or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or HESSVERIFY_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
