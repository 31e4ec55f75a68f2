"""The PyTorch adapter: its loss gives backprop's Hessian to rounding, its module, check_model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import hessverify  # noqa: E402
import hessverify.adapters.torch as hvt  # noqa: E402
from hessverify.checking.strategies import problems  # noqa: E402
from hessverify.engine.bounds import rounding_bound  # noqa: E402
from hessverify.errors import FunctionUnderTestError, UsageError  # noqa: E402
from tests.conftest import CASE_PATHS  # noqa: E402

XOR = hessverify.load_case(CASE_PATHS[[p.stem for p in CASE_PATHS].index("xor-2-2-1-sigmoid")])


def _bound(problem: hessverify.Problem, B: np.ndarray) -> np.ndarray | float:
    """The float64 rounding bound of two methods on a dense network; on other kinds (whose rounding model is the
    graph's, not this function's) 1e-12 of the largest entry, as the kinds' tests hold PyTorch's double backward."""
    return rounding_bound(problem, methods=2) if problem.architecture.is_dense else 1e-12 * np.max(np.abs(B))


def test_the_name_is_the_adapter_and_torch_is_the_package() -> None:
    # hessverify/adapters/torch.py imports the real PyTorch (absolute import), not itself
    assert hvt._torch is torch and hvt.__name__ == "hessverify.adapters.torch"
    assert hessverify.torch is hvt  # reachable as an attribute once hessverify is imported


def test_import_hessverify_imports_no_framework() -> None:
    code = "import sys, hessverify; print('torch' in sys.modules, 'jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("path", CASE_PATHS, ids=[p.stem for p in CASE_PATHS])
def test_torch_func_hessian_of_loss_matches_backprop_to_rounding(path) -> None:
    problem = hessverify.load_case(path)
    H = torch.func.hessian(hvt.loss(problem))(torch.tensor(problem.params)).numpy()
    B = hessverify.hessian(problem, "backprop")
    bound = _bound(problem, B)
    finite = np.isfinite(H)  # a NaN from the framework is a reference that cannot serve, not a match
    assert finite.all(), f"torch returned NaN/inf at {np.argwhere(~finite)[:3]}"
    assert np.all(np.abs(H - B) <= bound), np.max(np.abs(H - B) / bound)


@pytest.mark.parametrize("path", CASE_PATHS, ids=[p.stem for p in CASE_PATHS])
def test_module_and_loss_fn_give_the_error_and_the_flat_order(path) -> None:
    problem = hessverify.load_case(path)
    case = hvt.to_case(problem)
    flat = torch.cat([p.reshape(-1) for p in case.module.parameters()]).detach().numpy()
    np.testing.assert_array_equal(flat, problem.params)  # module.parameters() comes in the public order
    E = case.E().item()
    assert E == pytest.approx(hessverify.error(problem), rel=1e-12, abs=1e-300)
    assert float(case.loss(case.params)) == pytest.approx(E, rel=1e-13, abs=1e-300)
    names = dict(case.module.named_parameters())
    for tensor in problem.architecture.tensors:  # W1, b1, Win2, ...: each tensor's slice of the flat vector
        module_name = case.param_map[tensor.label]
        np.testing.assert_array_equal(names[module_name].detach().numpy().reshape(-1), problem.params[tensor.slice])
    assert set(case.param_map.values()) == set(names)


def test_softplus_and_gelu_are_sound_in_both_tails() -> None:
    a = torch.tensor([-800.0, -40.0, 0.0, 40.0, 800.0], dtype=torch.float64, requires_grad=True)
    for f in (hvt.ACTIVATIONS["softplus"], hvt.ACTIVATIONS["gelu"], hvt.ACTIVATIONS["silu"], hvt.ACTIVATIONS["sigmoid"]):
        y = f(a)
        (g,) = torch.autograd.grad(y.sum(), a, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), a)
        assert torch.isfinite(y).all() and torch.isfinite(g).all() and torch.isfinite(h).all()
    sp = hvt.ACTIVATIONS["softplus"](torch.tensor([30.0, -30.0], dtype=torch.float64))
    assert sp[0].item() == 30.0 + np.log1p(np.exp(-30.0))  # F.softplus returns 30 here
    gelu = hvt.ACTIVATIONS["gelu"](torch.tensor([-10.0], dtype=torch.float64)).item()
    assert gelu == pytest.approx(-10.0 * 7.619853024160527e-24, rel=1e-12)  # -10 Phi(-10); 1 + erf gives 0


def test_check_model_passes_correct_hessian_hvp_diagonal_blocks_and_ggn() -> None:
    def hessian(c):
        return torch.func.hessian(c.loss)(c.params)

    def hvp(c, v):
        return torch.func.jvp(torch.func.grad(c.loss), (c.params,), (v,))[1]

    def blocks(c):
        H = hessian(c)
        return [H[b.slice, b.slice] for b in c.problem.architecture.blocks]

    def ggn(c):  # J^T H_loss J with the module's outputs
        names = [n for n, _ in c.module.named_parameters()]
        shapes = [p.shape for p in c.module.parameters()]

        def y_of(th):  # the module at the flat parameters th (public order = parameters() order)
            parts = torch.split(th, [int(np.prod(s)) for s in shapes])
            params = {n: p.reshape(s) for n, p, s in zip(names, parts, shapes)}
            return torch.func.functional_call(c.module, params, (c.inputs,))

        J = torch.func.jacrev(lambda th: y_of(th).reshape(-1))(c.params)
        y = y_of(c.params).detach()
        Hy = torch.func.hessian(lambda yf: c.loss_fn(yf.reshape(y.shape), c.targets))(y.reshape(-1))
        return J.T @ Hy @ J

    assert hvt.check_model(hessian, XOR)
    assert hvt.check_model(hvp, XOR, returns="hvp", against=("backprop",))
    assert hvt.check_model(lambda c: torch.diagonal(hessian(c)), XOR, returns="diagonal", against=("autograd",))
    assert hvt.check_model(blocks, XOR, returns="blocks", against=("backprop",))
    result = hvt.check_model(ggn, XOR, returns="ggn")
    assert result and result.against == ("gauss_newton", "autograd")


def test_check_model_catches_a_wrong_block_and_names_it() -> None:
    def off(c):
        H = torch.func.hessian(c.loss)(c.params).clone()
        b = c.problem.architecture.blocks[1].slice
        H[b, b] *= 1.001  # the output layer's block 0.1 % off
        return H

    result = hvt.check_model(off, XOR, against=("backprop",))
    assert not result.passed
    w = result.failures[0].worst_entry
    assert w.row.startswith(("W2", "b2")) and w.col.startswith(("W2", "b2"))


def test_check_model_on_a_strategy_shrinks_a_failure() -> None:
    def mse_without_half(c):  # nn.MSELoss(reduction="sum") has no 1/2: twice the sse Hessian
        return 2 * torch.func.hessian(c.loss)(c.params)

    strategy = problems(max_layers=2, max_units=2, max_inputs=2, max_patterns=2, losses=("sse",), kinds=False,
                        activations=("tanh",))
    result = hvt.check_model(mse_without_half, strategy, against=("backprop",), max_examples=10, seed=1)
    assert not result.passed and result.problem.n_params <= 3


def test_check_model_faults_and_bad_arguments() -> None:
    with pytest.raises(FunctionUnderTestError, match="expected a torch.Tensor|float"):
        hvt.check_model(lambda c: 1.5, XOR, against=("backprop",))
    with pytest.raises(FunctionUnderTestError, match="shape"):
        hvt.check_model(lambda c: c.params, XOR, against=("backprop",))
    with pytest.raises(UsageError, match="returns="):
        hvt.check_model(lambda c: c.params, XOR, returns="jacobian")
    with pytest.raises(UsageError, match="dtype="):
        hvt.to_case(XOR, dtype=torch.int64)
    with pytest.raises(UsageError, match="Gauss-Newton reference"):
        hvt.check_model(lambda c: c.params, XOR, returns="ggn", against=("fd",))


def test_cases_strategy_yields_torch_cases() -> None:
    from hypothesis import given, settings

    @settings(max_examples=5, deadline=None, database=None)
    @given(hvt.cases(max_layers=2, max_units=2))
    def run(case):
        assert isinstance(case, hvt.TorchCase) and case.params.dtype == torch.float64
        assert float(case.E().detach()) == pytest.approx(hessverify.error(case.problem), rel=1e-10, abs=1e-12)

    run()


def test_an_unknown_attribute_of_hessverify_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'theano'"):
        hessverify.theano  # noqa: B018
    from hessverify.checking.check import RETURNS

    assert hvt.RETURNS is RETURNS  # one vocabulary of result forms


def test_float32_torch_hessian_passes_and_a_block_off_is_caught() -> None:
    def hessian(c):
        return torch.func.hessian(c.loss)(c.params)

    def off(c):
        H = hessian(c).clone()
        b = c.problem.architecture.blocks[-1].slice
        H[b, b] *= 1.001
        return H

    strategy = problems(max_layers=2, max_units=3, kinds=False)
    good = hvt.check_model(hessian, strategy, dtype=torch.float32, against=("backprop",), max_examples=15, seed=2)
    assert good, good.summary()
    assert not hvt.check_model(off, strategy, dtype=torch.float32, against=("backprop",), max_examples=15, seed=2)
    result = hvt.check_model(hessian, XOR, dtype=torch.float32, against=("backprop",))
    assert result and "judged in float32" in result.summary()


def test_a_graph_case_as_a_module_and_under_check_model() -> None:
    """Skip connections: the module reads each layer's sources in the listed order; its Hessian is backprop's."""
    case = hessverify.load_case(CASE_PATHS[[p.stem for p in CASE_PATHS].index("graph-out-of-order-2-3-2-2-bce")])
    module = hvt.to_module(case)
    assert module.param_map["W3"] == "layers.2.weight" and module.layers[2].weight.shape == (2, 2 + 2 + 3)
    y = module(torch.tensor(case.inputs)).detach().numpy()
    from hessverify.model.forward import forward
    assert np.array_equal(y, forward(case).y)  # the same products in the same order
    assert hvt.check_model(lambda c: torch.func.hessian(c.loss)(c.params), case)

