"""The NumPy columns of the loss table against sympy.diff of the SymPy column."""

from __future__ import annotations

import numpy as np
import pytest
import sympy

from hessverify.model.losses import LOSSES, get_loss

K = 3


def _symbolic(name: str, y: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    ys = sympy.symbols(f"y0:{K}")
    e = LOSSES[name].expr(ys, [sympy.Float(v, 30) for v in t])
    point = {s: sympy.Float(v, 30) for s, v in zip(ys, y)}
    val = float(e.evalf(30, subs=point))
    grad = np.array([float(sympy.diff(e, s).evalf(30, subs=point)) for s in ys])
    hess = np.array([[float(sympy.diff(e, a, b).evalf(30, subs=point)) for b in ys] for a in ys])
    return val, grad, hess


@pytest.mark.parametrize("name", list(LOSSES))
def test_numpy_columns_match_sympy(name: str) -> None:
    rng = np.random.default_rng(0)
    y = 2.0 * rng.standard_normal((4, K))
    t = rng.random((4, K))
    val, grad, hess = LOSSES[name].value(y, t), LOSSES[name].grad(y, t), LOSSES[name].hess(y, t)
    for n in range(4):
        v_ref, g_ref, h_ref = _symbolic(name, y[n], t[n])
        assert val[n] == pytest.approx(v_ref, rel=1e-14, abs=1e-15)
        np.testing.assert_allclose(grad[n], g_ref, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(hess[n], h_ref, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", list(LOSSES))
def test_magnitudes_dominate_values(name: str) -> None:
    """grad_mag and hess_mag sum |terms|, so they are at least |grad| and |hess|."""
    rng = np.random.default_rng(1)
    y, t = 3.0 * rng.standard_normal((6, K)), rng.random((6, K))
    loss = LOSSES[name]
    assert np.all(loss.grad_mag(y, t) >= np.abs(loss.grad(y, t)))
    assert np.all(loss.hess_mag(y, t) >= np.abs(loss.hess(y, t)) * (1 - 1e-15))


def test_cross_entropy_is_stable_for_large_logits() -> None:
    y = np.array([[1000.0, 0.0, -1000.0]])
    t = np.array([[0.0, 1.0, 0.0]])
    loss = LOSSES["cross_entropy"]
    assert loss.value(y, t)[0] == pytest.approx(1000.0)
    assert np.all(np.isfinite(loss.hess(y, t)))


def test_binary_cross_entropy_is_stable_for_large_logits() -> None:
    loss = LOSSES["binary_cross_entropy"]
    y = np.array([[800.0, -800.0]])
    t = np.array([[0.0, 1.0]])
    assert np.allclose(loss.value(y, t), [1600.0])


def test_unknown_loss_names_the_choices() -> None:
    with pytest.raises(KeyError, match="unknown loss 'l1'.*sse"):
        get_loss("l1")


def test_huber_has_its_kink_and_mse_no_half() -> None:
    y, t = np.array([[2.0, 0.5]]), np.array([[0.0, 0.0]])
    row = get_loss("huber")
    assert row.value(y, t)[0] == 1.0 * (2.0 - 0.5) + 0.5 * 0.25  # linear piece, quadratic piece
    np.testing.assert_array_equal(row.kinks(y, t), [[1.0, -0.5]])
    assert get_loss("huber", delta=3.0).value(y, t)[0] == 0.5 * 4.0 + 0.5 * 0.25
    assert get_loss("mse").value(y, t)[0] == 4.25
    with pytest.raises(ValueError, match="delta must be a positive number"):
        get_loss("huber", delta=-1.0)
