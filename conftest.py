"""Root conftest: the framework adapters' doctests need their framework; without it they are not collected."""

from __future__ import annotations

import importlib.util

collect_ignore = [f"hessverify/{name}.py" for name in ("torch", "jax") if importlib.util.find_spec(name) is None]
if importlib.util.find_spec("tensorflow") is None:  # the TensorFlow adapter and its table import it
    collect_ignore += ["hessverify/adapters/tensorflow.py", "hessverify/adapters/tensorflow_table.py"]
