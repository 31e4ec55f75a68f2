"""The frameworks' tables are optional for a new activation or loss: refused in one line, never drawn.

A new activation is added here as a maintainer would (its row in the model's table and the same function in the
independent autograd reference, nothing in any framework's table); the core verifies it, and each framework
refuses it by name and leaves it out of what it draws.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hessverify
from hessverify.adapters import rows
from hessverify.errors import UnsupportedModel
from hessverify.model import activations as model_activations
from hessverify.model.activations import Activation
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.references import autograd_ref

NEW = "cosine-probe"


def _terms(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.abs(np.cos(a)), np.abs(np.sin(a)), np.abs(np.cos(a))


@pytest.fixture
def new_activation(monkeypatch: pytest.MonkeyPatch) -> str:
    """``cos``, added to the model's table and to autograd's: the two files an activation needs."""
    import autograd.numpy as anp

    row = Activation(NEW, np.cos, lambda a: -np.sin(a), lambda a: -np.cos(a), np.sin, sympy.cos, _terms, (), 1.0)
    monkeypatch.setitem(model_activations.ACTIVATIONS, NEW, row)
    monkeypatch.setitem(autograd_ref._ACT, NEW, anp.cos)
    return NEW


def _problem(activation: str) -> Problem:
    rng = np.random.default_rng(3)
    arch = Architecture(2, (Layer(3, activation), Layer(1, "identity")))
    return Problem(arch, "sse", rng.normal(size=arch.n_params), rng.normal(size=(4, 2)), rng.normal(size=(4, 1)),
                   "sum", "probe", "a network with an activation no framework table has")


def test_the_core_verifies_a_new_activation_without_any_framework_row(new_activation: str) -> None:
    p = _problem(new_activation)
    H = hessverify.hessian(p, "backprop")
    R = hessverify.hessian(p, "autograd")
    assert np.allclose(H, R, rtol=1e-12, atol=1e-14)
    assert not np.allclose(H, hessverify.hessian(_problem("sin"), "backprop"))  # the row is really cos


def test_the_missing_row_is_named_in_one_sentence(new_activation: str) -> None:
    why = rows.missing(_problem(new_activation), "PyTorch", "torch_table.py", activations={"identity", "tanh"},
                       losses={"sse"})
    assert why is not None and repr(new_activation) in why and "torch_table.py" in why and "\n" not in why
    assert rows.missing(_problem("tanh"), "PyTorch", "torch_table.py", activations={"identity", "tanh"},
                        losses={"sse"}) is None
    lacking_loss = rows.missing(_problem("tanh"), "X", "x.py", activations={"identity", "tanh"}, losses={"mse"})
    assert lacking_loss is not None and "'sse'" in lacking_loss


def test_asking_to_draw_a_missing_row_is_refused(new_activation: str) -> None:
    with pytest.raises(UnsupportedModel, match=new_activation):
        rows.within({"activations": ["tanh", new_activation]}, "X", "x.py", activations={"tanh"}, losses={"sse"})
    drawn = rows.within({}, "X", "x.py", activations={"tanh", "sin"}, losses={"sse"})
    assert drawn["activations"] == drawn["output_activations"] == ("tanh", "sin")  # the schema's order
    assert drawn["losses"] == ("sse",)


FRAMEWORKS = ["torch", "jax", "tensorflow"]


def _adapter(name: str):  # noqa: ANN202 - a module
    pytest.importorskip({"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}[name])
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    return getattr(hessverify, name)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_framework_refuses_it_in_one_line(framework: str, new_activation: str) -> None:
    adapter = _adapter(framework)
    with pytest.raises(UnsupportedModel, match=f"'{new_activation}' has no row in") as info:
        adapter.loss(_problem(new_activation))
    assert "\n" not in str(info.value)
    adapter.loss(_problem("tanh"))  # the rows it has still work


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_frameworks_draws_leave_it_out(framework: str, new_activation: str) -> None:
    adapter = _adapter(framework)
    seen: set[str] = set()

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def draw(data: st.DataObject) -> None:
        case = data.draw(adapter.cases(max_layers=2, max_units=2, max_patterns=2))
        seen.update(layer.activation for layer in case.problem.architecture.layers)

    draw()
    assert new_activation not in seen and len(seen) > 1


def test_the_conformance_rows_leave_it_out(new_activation: str) -> None:
    pytest.importorskip("torch")
    from hessverify.adapters import conformance

    q = next(q for q in conformance.QUANTITIES["torch.func"] if not q.families)
    seen: set[str] = set()

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def draw(data: st.DataObject) -> None:
        seen.update(layer.activation for layer in data.draw(conformance._strategy(q)).architecture.layers)

    draw()
    assert new_activation not in seen and len(seen) > 1
