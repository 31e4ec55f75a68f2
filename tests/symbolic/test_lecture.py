"""Lecture helpers: closed forms agree with each other and with the reference; LaTeX is well formed."""

from __future__ import annotations

import io
import re
import warnings

import mpmath
import pytest
from matplotlib import mathtext

import hessverify
from hessverify.cli import main
from hessverify.symbolic import reference
from hessverify.symbolic.lecture import Expression, LectureNetwork

XOR = "cases/xor-2-2-1-sigmoid.toml"


@pytest.fixture(scope="module")
def xor() -> tuple[hessverify.Problem, LectureNetwork]:
    case = hessverify.load_case(XOR)
    return case, LectureNetwork.from_case(case)


def balanced(tex: str) -> bool:
    depth = 0
    for ch in tex.replace(r"\{", "").replace(r"\}", ""):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0 and tex.count(r"\left") == tex.count(r"\right")


def assert_renders(tex: str) -> None:
    """Well formed: balanced, rendered by matplotlib's mathtext, and parsed back by SymPy where it can."""
    assert balanced(tex), tex
    assert tex.count(r"\begin{") == tex.count(r"\end{"), tex
    # mathtext has no environments or \substack; MathJax and LaTeX render relu's cases and double sums
    if r"\begin{cases}" not in tex and r"\substack" not in tex:
        mathtext.math_to_image(f"${tex}$", io.BytesIO(), format="png")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SymPy warns on import when antlr4 is missing
            from sympy.parsing.latex import parse_latex

            parse_latex(tex.split(" = ", 1)[-1])
    except ImportError:  # the parser needs antlr4, which hessverify does not depend on
        pass


@pytest.mark.parametrize("pair", [("W1[0,1]", "W2[0,0]"), ("W1[0,0]", "W1[1,1]"), ("W2[0,1]", "b2[0]"),
                                  ("b1[0]", "b1[0]")])
def test_backprop_notation_equals_direct_differentiation_and_the_reference(xor, pair) -> None:  # type: ignore[no-untyped-def]
    case, net = xor
    by_formula = net.value(net.backprop_hessian(*pair), case)
    direct = net.value(net.hessian(*pair), case)
    gold = reference.hessian_mpmath(case)
    i, j = (case.architecture.param_index(p) for p in pair)
    # three evaluations of one number at 50 digits: a few hundred roundings of 1e-49 on terms of order one
    assert abs(by_formula - direct) < 1e-45
    assert abs(by_formula - gold[i, j]) < 1e-45


def test_gradient_in_both_notations(xor) -> None:  # type: ignore[no-untyped-def]
    case, net = xor
    from hessverify.model.forward import gradient

    g = gradient(case)[case.architecture.param_index("W1[1,0]")]
    a = net.value(net.backprop_gradient("W1[1,0]"), case)
    b = net.value(net.gradient("W1[1,0]"), case)
    assert abs(a - b) < 1e-45
    assert abs(float(a) - g) <= 1e-15  # float64 gradient of terms of order one, a handful of roundings


def test_latex_is_well_formed(xor) -> None:  # type: ignore[no-untyped-def]
    _, net = xor
    exprs: list[Expression] = [net.output(), net.error(), net.gradient("b2[0]"), net.backprop_gradient("W1[0,1]"),
                               net.backprop_hessian("W1[0,1]", "W2[0,0]"), net.hessian("W1[0,1]", "b2[0]"),
                               net.backprop_hessian("b1[1]", "b1[1]")]
    exprs += net.definitions()
    for e in exprs:
        assert_renders(e.latex())
        assert e._repr_latex_().startswith("$\\displaystyle ") and e._repr_latex_().endswith("$")


def test_latex_for_every_activation() -> None:
    # erf (gelu), log and exp (softplus, cross-entropy), Piecewise (relu) all reach mathtext intact.
    for act, loss in [("gelu", "binary_cross_entropy"), ("softplus", "cross_entropy"), ("silu", "sse"),
                      ("sin", "output"), ("relu", "sse")]:
        net = LectureNetwork.from_sizes([1, 2, 2], activation=act, output_activation="identity", loss=loss)
        for e in [net.backprop_hessian("W1[0,0]", "W1[1,0]"), *net.definitions()]:
            assert_renders(e.latex())


def test_unknown_parameter_names() -> None:
    net = LectureNetwork.from_sizes([2, 2, 1])
    with pytest.raises(KeyError, match="W3"):
        net.hessian("W3[0,0]", "b1[0]")
    with pytest.raises(KeyError, match="not a parameter name"):
        net.backprop_gradient("w1")


def test_derive_prints_the_closed_form_and_its_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["derive", XOR, "--entry", "W1[0,1]", "b2[0]"]) == 0
    out = capsys.readouterr().out
    assert "d2e/dW1[0,1]db2[0] = " in out and "the weights in two different layers" in out
    value = float(out.strip().splitlines()[-1])
    case = hessverify.load_case(XOR)
    H = hessverify.hessian(case)
    assert value == pytest.approx(H[case.architecture.param_index("W1[0,1]"), case.architecture.param_index("b2[0]")],
                                  rel=1e-14, abs=1e-16)


@pytest.mark.parametrize("argv", [["--entry", "W1[0,1]", "b2[0]", XOR], ["--entry", "W1[0,1]", XOR]])
def test_derive_takes_the_case_after_the_entry(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """``--entry A B CASE`` reads as ``CASE --entry A B``: the last word is the case, not a third name."""
    assert main(["derive", XOR, *argv[:-1]]) == 0
    expected = capsys.readouterr().out
    assert main(["derive", *argv]) == 0
    assert capsys.readouterr().out == expected


def test_derive_latex(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["derive", XOR, "--entry", "W2[0,1]", "--latex"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].strip().startswith(r"\frac{\partial e}{\partial W^{(2)}_{01}}")
    for line in lines[2:-2]:
        if line.startswith("  "):
            assert_renders(line.strip())


@pytest.mark.parametrize("args,message", [
    (["--entry", "W9[0,0]"], "no parameter 'W9[0,0]'"),
    (["--entry", "nonsense"], "is not a parameter name"),
    (["--entry", "W1[0,0]", "W1[0,1]", "b1[0]"], "one parameter name"),
    (["--entry", "W1[0,0]", "--digits", "5"], "at least 16"),
])
def test_derive_bad_input_is_one_line_and_status_2(args: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["derive", XOR, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_value_is_high_precision(xor) -> None:  # type: ignore[no-untyped-def]
    case, net = xor
    v = net.value(net.backprop_hessian("W1[0,1]", "W2[0,0]"), case, digits=40)
    with mpmath.workdps(40):
        assert re.fullmatch(r"-?0\.\d{35,}", mpmath.nstr(v, 40))


def test_derive_on_a_graph_case_writes_the_skip_terms_and_matches_backprop() -> None:
    """An entry between the first layer and a weight on the skip link: the value derive prints is backprop's."""
    import numpy as np

    import hessverify
    from hessverify.symbolic.lecture import derive

    case = hessverify.load_case("cases/graph-input-to-output-3-4-2-sigmoid-ce.toml")
    text = derive(case, ["W1[0,0]", "W2[0,1]"], digits=30)
    assert "W2[0,4]*x[0]" in text  # the input-to-output link in a2's definition
    value = float(text.splitlines()[-1])
    H = hessverify.hessian(case)
    i, j = case.architecture.param_index("W1[0,0]"), case.architecture.param_index("W2[0,1]")
    from hessverify.engine.bounds import rounding_bound

    assert abs(value - H[i, j]) <= rounding_bound(case, methods=1)[i, j]  # derive prints 30 correct digits
    assert not np.isclose(value, 0.0)
