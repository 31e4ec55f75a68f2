"""The autograd reference: independent of the model code, and right where a hand result exists."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

import hessverify
from hessverify.model.network import Architecture, Layer
from hessverify.references import autograd_ref


def test_reference_imports_nothing_from_the_model_code() -> None:
    """One bug must not cancel itself: the reference does not call the backprop forward pass."""
    tree = ast.parse(Path(autograd_ref.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    # the problem is the data both read (it moved into hessverify.model with the rest of the model);
    # nothing that computes anything from it may be imported
    imported.discard("hessverify.model.problem")
    assert not any(m and m.startswith(("hessverify.model", "hessverify.methods")) for m in imported), imported


def test_linear_network_hessian_by_hand() -> None:
    """A single linear layer with sse: H over W is sum_n I kron (x_n x_n^T) (row-major W)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3))
    case = hessverify.Problem(Architecture(3, (Layer(2, "identity", bias=False),)), "sse",
                              rng.standard_normal(6), x, rng.standard_normal((5, 2)))
    expected = np.kron(np.eye(2), x.T @ x)
    np.testing.assert_allclose(autograd_ref.hessian(case), expected, rtol=1e-14, atol=1e-14)


def test_mean_reduction_divides_by_n(shipped_case: hessverify.Problem) -> None:
    """The mean is over patterns, or over every element for PyTorch's element-wise means (mse, huber: N K)."""
    from dataclasses import replace

    other = "mean" if shipped_case.reduction == "sum" else "sum"
    flipped = replace(shipped_case, reduction=other)
    n = shipped_case.n_patterns * (shipped_case.targets.shape[1] if shipped_case.loss in ("mse", "huber") else 1)
    ratio = n if other == "sum" else 1 / n
    E = autograd_ref.error_function
    np.testing.assert_allclose(E(flipped)(flipped.params), ratio * E(shipped_case)(shipped_case.params), rtol=1e-14)
