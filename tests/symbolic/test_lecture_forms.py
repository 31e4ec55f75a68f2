"""Textbook forms of the derivatives, the Rojas notation and the aligned block of hessverify.symbolic.lecture."""

from __future__ import annotations

import mpmath
import pytest
import sympy

import hessverify
from hessverify.cli import main
from hessverify.model.activations import get_activation
from hessverify.symbolic.lecture import FORMS, TEXTBOOK, LectureNetwork, aligned

from ..conftest import CASES_DIR

A = sympy.Symbol("a", real=True)
Z = sympy.Symbol("z", real=True)


@pytest.mark.parametrize("name", sorted(TEXTBOOK))
def test_textbook_form_is_the_derivative(name: str) -> None:
    """f'(a) and f''(a) by sympy.diff of the activation table equal the textbook forms at z = f(a)."""
    f = get_activation(name).expr(A)
    d1, d2 = TEXTBOOK[name]
    assert sympy.simplify(sympy.diff(f, A) - d1.subs(Z, f)) == 0
    assert sympy.simplify(sympy.diff(f, A, 2) - d2.subs(Z, f)) == 0


@pytest.mark.parametrize("form", FORMS)
def test_every_form_gives_the_same_value(form: str) -> None:
    case = hessverify.load_case(CASES_DIR / "xor-2-2-1-sigmoid.toml")
    net = LectureNetwork.from_case(case, form)
    h = net.backprop_hessian("W1[0,1]", "W2[0,0]")
    H = hessverify.hessian(case, "autograd")
    i, j = case.architecture.param_index("W1[0,1]"), case.architecture.param_index("W2[0,0]")
    assert float(net.value(h, case, 30)) == pytest.approx(H[i, j], rel=1e-12)


def test_rojas_names_outputs_o() -> None:
    net = LectureNetwork.from_sizes([2, 2, 1], "sigmoid", form="rojas")
    defs = {d.label: str(d) for d in net.definitions()}
    assert defs["fp1[0]"] == "fp1[0] = o1[0]*(1 - o1[0])"
    assert "o2[0] = " in defs["o2[0]"]
    h = net.backprop_hessian("W1[0,0]", "W2[0,1]")
    assert "z" not in str(h).replace("fpp", "").split("=")[1] and "o^{(2)}_{0}" in h.latex()


def test_z_form_keeps_net_input_form_without_a_textbook_entry() -> None:
    net = LectureNetwork.from_sizes([1, 1], "gelu", form="z")
    fp = next(d for d in net.definitions() if d.label == "fp1[0]")
    assert "a1[0]" in str(fp)


def test_bad_form() -> None:
    with pytest.raises(ValueError, match="form 'o'"):
        LectureNetwork.from_sizes([1, 1], form="o")


def test_aligned_block() -> None:
    net = LectureNetwork.from_sizes([1, 1], "sigmoid", form="z")
    g = net.backprop_gradient("b1[0]")
    text = aligned([g] + net.definitions(g))
    lines = text.splitlines()
    assert lines[0] == r"\begin{aligned}" and lines[-1] == r"\end{aligned}"
    assert all(" &= " in x for x in lines[1:-1]) and all(x.endswith(r" \\") for x in lines[1:-2])
    assert r"z^{(1)}_{0} \left(1 - z^{(1)}_{0}\right)" in text


def test_derive_form_option(capsys: pytest.CaptureFixture[str]) -> None:
    xor = str(CASES_DIR / "xor-2-2-1-sigmoid.toml")
    assert main(["derive", xor, "--entry", "W2[0,0]", "--form", "rojas", "--digits", "20"]) == 0
    out = capsys.readouterr().out
    assert "fp2[0] = o2[0]*(1 - o2[0])" in out
    value = mpmath.mpf(out.strip().splitlines()[-1])
    g = hessverify.gradient(hessverify.load_case(xor))
    assert float(value) == pytest.approx(g[hessverify.load_case(xor).architecture.param_index("W2[0,0]")], rel=1e-12)
