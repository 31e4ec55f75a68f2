"""Root conftest: the framework adapters' doctests need their framework; without it they are not collected."""

from __future__ import annotations

import importlib.util

collect_ignore = [f"hessverify/{name}.py" for name in ("torch", "jax") if importlib.util.find_spec(name) is None]
