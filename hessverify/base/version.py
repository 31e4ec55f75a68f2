"""The installed version of hessverify, read from the package metadata (``pyproject.toml``'s ``version``)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]

try:
    VERSION: str = version("hessverify")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    VERSION = "0+unknown"
