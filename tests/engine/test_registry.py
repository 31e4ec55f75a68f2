"""The registry: one call shape, and the public hessian() entry point."""

from __future__ import annotations

import numpy as np
import pytest

import hessverify
from hessverify.engine.registry import METHODS, get_method, methods_with_role
from hessverify.errors import UsageError


def test_every_entry_has_the_same_call_shape() -> None:
    from hessverify.references import certified

    case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    for method in METHODS.values():
        if method.name == "certified" and not certified.available():  # an optional extra (python-flint)
            continue
        out = method.fn(case)
        if method.kind == "matrix":
            assert np.asarray(out).shape == (case.n_params, case.n_params), method.name
        elif method.kind == "vector":
            assert np.asarray(out).shape == (case.n_params,), method.name
        assert method.summary


def test_roles() -> None:
    assert "backprop" in {m.name for m in methods_with_role("method")}
    assert {"autograd", "fd"} <= {m.name for m in methods_with_role("reference")}


def test_unknown_method_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown method 'nope'; choose one of backprop"):
        get_method("nope")
    with pytest.raises(UsageError):
        hessverify.hessian(hessverify.load_case("cases/xor-2-2-1-sigmoid.toml"), method="nope")
