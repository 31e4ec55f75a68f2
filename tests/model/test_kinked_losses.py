"""``huber`` and ``mse``: PyTorch's nn.HuberLoss and nn.MSELoss conventions, and the Huber kink (exit 3)."""

from __future__ import annotations

import numpy as np
import pytest

import hessverify
from hessverify.cli import main
from hessverify.errors import NotDifferentiableError

CASE = """[network]
inputs = 2
layers = [{{ units = 3, activation = "tanh" }}, {{ units = 2 }}]
loss = {loss}
reduction = "{reduction}"
[data]
seed = 3
patterns = 4
[params]
seed = 4
scale = 0.8
"""


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize(("loss", "module", "kwargs"), [('"mse"', "MSELoss", {}), ('"huber"', "HuberLoss", {}),
                                                         ('{ name = "huber", delta = 0.3 }', "HuberLoss", {"delta": 0.3})])
def test_the_hessian_equals_pytorchs_loss_module(loss: str, module: str, kwargs: dict, reduction: str) -> None:
    torch = pytest.importorskip("torch")
    problem = hessverify.parse_case(CASE.format(loss=loss, reduction=reduction))
    criterion = getattr(torch.nn, module)(reduction=reduction, **kwargs)
    x, t = torch.tensor(problem.inputs), torch.tensor(problem.targets)

    def E(theta: torch.Tensor) -> torch.Tensor:
        W1, b1, W2, b2 = theta[:6].reshape(3, 2), theta[6:9], theta[9:15].reshape(2, 3), theta[15:17]
        return criterion(torch.tanh(x @ W1.T + b1) @ W2.T + b2, t)

    theta = torch.tensor(problem.params)
    assert hessverify.error(problem) == pytest.approx(float(E(theta)), rel=1e-14)
    H = torch.autograd.functional.hessian(E, theta).numpy()
    for method in ("backprop", "rop", "pairwise"):
        np.testing.assert_allclose(hessverify.hessian(problem, method), H, rtol=0, atol=1e-13 * np.abs(H).max())
    assert all(c.passed for c in hessverify.verify_problem(problem, references=["autograd", "fd", "complex_step"]))


KINK = """[network]
inputs = 1
layers = [{ units = 1, activation = "identity" }]
loss = "huber"
[data]
inputs = [[1.0], [2.0]]
targets = [[0.0], [0.5]]
[params]
values = [0.5, 0.5]
"""


def test_a_residual_at_the_huber_kink_is_not_differentiable_exit_3(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "kink.toml"
    path.write_text(KINK)
    assert main(["verify", str(path)]) == 3
    assert "the huber loss (delta = 1) has its kink at output 0 of pattern 0" in capsys.readouterr().out
    with pytest.raises(NotDifferentiableError):
        hessverify.hessian(hessverify.load_case(path))
    # one ulp away it is differentiable again, but within rounding: still refused, never compared
    near = KINK.replace("[[0.0], [0.5]]", f"[[{float(np.nextafter(0.0, 1.0))!r}], [0.5]]")
    with pytest.raises(NotDifferentiableError, match="as far as float64 can tell|has its kink"):
        hessverify.hessian(hessverify.parse_case(near))
