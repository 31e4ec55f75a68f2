r"""Lecture helpers: a small network with symbolic weights and one symbolic pattern.

Everything returned is an :class:`Expression`: a SymPy expression with a
name, printed as plain text, with ``.latex()`` for slides and
``_repr_latex_`` for notebooks.  Two notations:

* explicit: the network function, the error and any first or second
  derivative written out in the weights :math:`W^{(l)}_{ij}, b^{(l)}_i`, the
  inputs :math:`x_j` and the targets :math:`t_k` (direct differentiation with
  ``sympy.diff``);
* backpropagation: the same derivatives in the names of the lecture, net
  input :math:`a`, output :math:`z = f(a)`, :math:`f'(a)`, :math:`f''(a)` and
  :math:`\delta`, by the general formula of
  :mod:`hessverify.symbolic.formulas`, with :meth:`LectureNetwork.definitions`
  saying what each name stands for.

Examples
--------
One tanh unit with sse, :math:`e = \tfrac12 (\tanh(w x + b) - t)^2`:

>>> net = LectureNetwork.from_sizes([1, 1], activation="tanh")
>>> net.output()
y[0] = tanh(W1[0,0]*x[0] + b1[0])
>>> net.gradient("b1[0]")
de/db1[0] = (1 - tanh(W1[0,0]*x[0] + b1[0])**2)*(-t[0] + tanh(W1[0,0]*x[0] + b1[0]))
>>> net.backprop_gradient("W1[0,0]")
de/dW1[0,0] = delta1[0]*x[0]
>>> net.backprop_hessian("W1[0,0]", "b1[0]")
d2e/dW1[0,0]db1[0] = x[0]*(fp1[0]**2 + fpp1[0]*(-t[0] + z1[0]))
>>> print(net.backprop_gradient("W1[0,0]").latex())
\frac{\partial e}{\partial W^{(1)}_{00}} = \delta^{(1)}_{0} x_{0}
>>> for d in net.definitions():  # what the names stand for
...     print(d)
a1[0] = W1[0,0]*x[0] + b1[0]
z1[0] = tanh(a1[0])
fp1[0] = 1 - tanh(a1[0])**2
fpp1[0] = -(2 - 2*tanh(a1[0])**2)*tanh(a1[0])
delta1[0] = fp1[0]*(-t[0] + z1[0])

Its value at a case: the per-pattern closed form summed over the patterns.

>>> import hessverify
>>> case = hessverify.load_case("cases/single-neuron-tanh.toml")
>>> net = LectureNetwork.from_case(case)
>>> mpmath.nstr(net.value(net.backprop_hessian("W1[0,0]", "b1[0]"), case), 20)
'0.37012747365511303975'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import mpmath
import sympy

from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.symbolic import formulas
from hessverify.symbolic.expressions import (
    Expression,
    NetworkSymbols,
    definitions,
    explicit_error,
    explicit_output,
    lambdify_program,
    latex_names,
)

__all__ = ["FORMS", "MAX_DIGITS", "TEXTBOOK", "Expression", "LectureNetwork", "aligned", "check_digits", "derive"]

MAX_DIGITS = 1000
"""Most significant digits ``derive`` evaluates to (mpmath's cost grows faster than linearly in them)."""

_Z = sympy.Symbol("z", real=True)

TEXTBOOK: dict[str, tuple[sympy.Expr, sympy.Expr]] = {
    # activation: (f'(a), f''(a)) written in the unit's output z = f(a), as textbooks do.
    # Presentation only: the references use sympy.diff of the activation table's expr, and
    # tests/symbolic/test_lecture_forms.py holds each row against it.
    "identity": (sympy.Integer(1), sympy.Integer(0)),
    "sigmoid": (_Z * (1 - _Z), _Z * (1 - _Z) * (1 - 2 * _Z)),  # Rojas 1996, eq. 7.4: s' = s(1 - s)
    "tanh": (1 - _Z**2, -2 * _Z * (1 - _Z**2)),
    "softplus": (1 - sympy.exp(-_Z), sympy.exp(-_Z) * (1 - sympy.exp(-_Z))),  # sigma(a) = 1 - e^{-z}
}
"""Textbook forms of the derivatives, in ``z``: :math:`\\sigma' = z(1 - z)`, :math:`\\tanh' = 1 - z^2`."""

FORMS = ("a", "z", "rojas")
"""How :class:`LectureNetwork` writes ``f'`` and ``f''``: in the net input ``a`` (default, as the
activation table has them); in the output ``z`` where :data:`TEXTBOOK` has a form (``"z"``); or the
same with Rojas's name ``o`` for a unit's output, :math:`o(1 - o)` (``"rojas"``, Rojas 1996, ch. 7)."""


def _tex(name: str) -> str:
    sym = sympy.Symbol(name)
    return latex_names([sym]).get(sym, name)


@dataclass
class LectureNetwork:
    """A fully connected network with symbolic weights and one symbolic pattern ``(x, t)``.

    Parameters
    ----------
    arch:
        The architecture (sizes, activations, biases).
    loss:
        A name from the loss table (``"sse"``, ``"cross_entropy"``, ...).
    form:
        How :meth:`definitions` writes ``f'`` and ``f''`` (:data:`FORMS`): ``"a"``, in
        the net input; ``"z"``, the textbook forms in the output (:data:`TEXTBOOK`);
        ``"rojas"``, the same with outputs named ``o``.

    Examples
    --------
    >>> net = LectureNetwork.from_sizes([1, 1], activation="sigmoid", form="rojas")
    >>> [str(d) for d in net.definitions()][1:4]
    ['o1[0] = 1/(1 + exp(-a1[0]))', 'fp1[0] = o1[0]*(1 - o1[0])', 'fpp1[0] = o1[0]*(1 - 2*o1[0])*(1 - o1[0])']
    """

    arch: Architecture
    loss: str = "sse"
    form: str = "a"
    symbols: NetworkSymbols = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"form {self.form!r}: choose one of {', '.join(FORMS)}")
        self.symbols = NetworkSymbols(self.arch)

    @classmethod
    def from_sizes(cls, sizes: Sequence[int], activation: str = "sigmoid", output_activation: str | None = None,
                   loss: str = "sse", bias: bool = True, form: str = "a",
                   sources: Mapping[int, Sequence[int]] | None = None) -> LectureNetwork:
        """``from_sizes([2, 2, 1], "sigmoid")``: the XOR network; ``output_activation`` defaults to ``activation``.

        ``sources`` gives layers that read other places than the previous layer
        (``{2: [1, 0]}``: layer 2 reads ``z1`` and the inputs ``x``, as ``from`` in a case),
        and the skip terms appear in the closed forms:

        >>> net = LectureNetwork.from_sizes([1, 1, 1], "tanh", "identity", sources={2: [1, 0]})
        >>> net.backprop_hessian("W1[0,0]", "W2[0,1]")
        d2e/dW1[0,0]dW2[0,1] = W2[0,0]*fp1[0]*x[0]**2*(fp2[0]**2 + fpp2[0]*(-t[0] + z2[0]))
        """
        if len(sizes) < 2:
            raise ValueError(f"sizes {list(sizes)}: give the input size and at least one layer")
        acts = [activation] * (len(sizes) - 2) + [output_activation or activation]
        reads = dict(sources or {})
        return cls(Architecture(sizes[0], tuple(Layer(u, a, bias, None if l not in reads else tuple(reads[l]))
                                                for l, (u, a) in enumerate(zip(sizes[1:], acts, strict=True),
                                                                             start=1))),
                   loss, form)

    @classmethod
    def from_case(cls, problem: Problem, form: str = "a") -> LectureNetwork:
        """The network and loss of a case (the data and weights stay with the case, for :meth:`value`)."""
        return cls(problem.architecture, problem.loss, form)

    # -- explicit closed forms ---------------------------------------------------------------------------

    @cached_property
    def _error(self) -> sympy.Expr:
        return explicit_error(self.symbols, self.loss)

    def output(self, k: int = 0) -> Expression:
        """The network function :math:`y_k(w, x)` written out."""
        return Expression(explicit_output(self.symbols)[k], f"y[{k}]", f"y_{{{k}}}")

    def error(self) -> Expression:
        """The error of the pattern, :math:`e(w; x, t)`, written out."""
        return Expression(self._error, "e", "e")

    def gradient(self, p: str) -> Expression:
        """:math:`\\partial e/\\partial p` by direct differentiation."""
        return Expression(sympy.factor_terms(sympy.diff(self._error, self._param(p))), f"de/d{p}",
                          f"\\frac{{\\partial e}}{{\\partial {_tex(p)}}}")

    def hessian(self, p: str, q: str) -> Expression:
        """:math:`\\partial^2 e/\\partial p\\,\\partial q` by direct differentiation."""
        expr = sympy.diff(self._error, self._param(p), self._param(q))
        return Expression(sympy.factor_terms(expr), *self._labels(p, q))

    # -- backpropagation notation -----------------------------------------------------------------------

    @cached_property
    def _definitions(self) -> dict[sympy.Symbol, sympy.Expr]:
        return definitions(self.symbols, self.loss)

    @cached_property
    def _keep(self) -> set[sympy.Symbol]:
        # g = de/dy and h = d2e/dy2 are written out in y and t: for sse they are y - t and 1
        return formulas.named_atoms(self.symbols) - {
            s for s in self._definitions if s.name.startswith(("g[", "h["))}

    def backprop_gradient(self, p: str) -> Expression:
        """:math:`\\partial e/\\partial p = \\delta_k z_j` in backprop notation."""
        self._param(p)
        return self._present(Expression(formulas.gradient_entry(self.symbols, p), f"de/d{p}",
                                        f"\\frac{{\\partial e}}{{\\partial {_tex(p)}}}"))

    def backprop_hessian(self, p: str, q: str) -> Expression:
        """:math:`\\partial^2 e/\\partial p\\,\\partial q` by the general formula, in a, z, f', f'' and delta."""
        self._param(p), self._param(q)
        expr = formulas.expand(formulas.entry(self.symbols, p, q), self._definitions, self._keep)
        return self._present(Expression(sympy.factor_terms(expr), *self._labels(p, q)))

    def definitions(self, expression: Expression | None = None) -> list[Expression]:
        """What the names stand for: ``a = W z + b``, ``z = f(a)``, ``f'``, ``f''``, ``delta``.

        With ``expression``, only the names it uses and the names those use,
        in evaluation order.
        """
        keep = self._keep
        wanted = None
        if expression is not None:
            wanted, stack = set(), list(expression.expr.free_symbols)
            while stack:
                sym = stack.pop()
                if sym in wanted or sym not in self._definitions:
                    continue
                wanted.add(sym)
                stack.extend(formulas.expand(self._definitions[sym], self._definitions, keep).free_symbols)
        out = []
        textbook = self._textbook
        for sym, rhs in self._definitions.items():
            if sym in keep and sym not in set(self.symbols.params) and (wanted is None or sym in wanted):
                rhs = textbook[sym] if sym in textbook else formulas.expand(rhs, self._definitions, keep)
                out.append(self._present(Expression(rhs, sym.name, latex_names([sym]).get(sym, sympy.latex(sym)))))
        return out

    @cached_property
    def _textbook(self) -> dict[sympy.Symbol, sympy.Expr]:
        """``fp`` and ``fpp`` symbols written in their unit's output, for the forms ``z`` and ``rojas``."""
        if self.form == "a":
            return {}
        s, out = self.symbols, {}
        for l, layer in enumerate(self.arch.layers, start=1):
            if layer.activation not in TEXTBOOK:
                continue  # no textbook form: keep the net-input form of the table
            d1, d2 = TEXTBOOK[layer.activation]
            for i in range(layer.units):
                out[s.fp[l][i]] = d1.subs(_Z, s.z[l][i])
                out[s.fpp[l][i]] = d2.subs(_Z, s.z[l][i])
        return out

    @cached_property
    def _rojas(self) -> dict[sympy.Symbol, sympy.Symbol]:
        """``z1[0] -> o1[0]``: Rojas's name for a unit's output (form ``rojas``)."""
        if self.form != "rojas":
            return {}
        return {z: sympy.Symbol("o" + z.name[1:], real=True) for layer in self.symbols.z[1:] for z in layer}

    def _present(self, e: Expression) -> Expression:
        if not self._rojas:
            return e
        label = e.label
        if label.startswith("z") and sympy.Symbol(label, real=True) in self._rojas:
            label = "o" + label[1:]
        names = {o: latex_names([z])[z].replace("z", "o", 1) for z, o in self._rojas.items()}
        return Expression(e.expr.xreplace(self._rojas), label, e.label_latex.replace("z^", "o^"), names)

    # -- values at a case ---------------------------------------------------------------------------------

    def value(self, expression: Expression, problem: Problem, digits: int = 50) -> mpmath.mpf:
        """The expression summed over the case's patterns (times ``1/N`` for ``mean``), at ``digits`` digits.

        A per-pattern derivative summed this way is the entry of the case's
        gradient or Hessian.
        """
        s = self.symbols
        args = list(s.params) + list(s.x) + list(s.t)
        defs = self._definitions
        fn = self._mpmath_program
        expr = expression.expr.xreplace({o: z for z, o in self._rojas.items()})  # Rojas's o is z
        syms = sorted(expr.free_symbols, key=str)
        f = sympy.lambdify(syms, expr, modules="mpmath")
        with mpmath.workdps(digits):
            weights = [mpmath.mpf(float(w)) for w in problem.params]
            total = mpmath.mpf(0)
            for x, t in zip(problem.inputs, problem.targets, strict=True):
                point = weights + [mpmath.mpf(float(v)) for v in x] + [mpmath.mpf(float(v)) for v in t]
                values = dict(zip(args, point, strict=True))
                values.update(zip(defs, fn(*point), strict=True))
                total += f(*[values[v] for v in syms])
            return total / problem.n_patterns if problem.reduction == "mean" else total

    @cached_property
    def _mpmath_program(self):  # type: ignore[no-untyped-def]
        s = self.symbols
        return lambdify_program(list(s.params) + list(s.x) + list(s.t), self._definitions, list(self._definitions),
                                "mpmath")

    # -- helpers ------------------------------------------------------------------------------------------

    def _param(self, name: str) -> sympy.Symbol:
        try:
            return self.symbols.param(name)
        except (KeyError, IndexError) as exc:
            raise KeyError(exc.args[0] if exc.args else name) from None

    def _labels(self, p: str, q: str) -> tuple[str, str]:
        if p == q:
            return f"d2e/d{p}2", f"\\frac{{\\partial^{{2}} e}}{{\\partial {{{_tex(p)}}}^{{2}}}}"
        return f"d2e/d{p}d{q}", f"\\frac{{\\partial^{{2}} e}}{{\\partial {_tex(p)}\\,\\partial {_tex(q)}}}"


def _derive_kinds(problem: Problem, names: Sequence[str], **options: Any) -> str:
    """``derive`` of a network of other layer kinds (:mod:`hessverify.symbolic.kinds_lecture`)."""
    from hessverify.engine.budget import format_duration
    from hessverify.errors import BudgetError, UsageError
    from hessverify.symbolic import kinds, kinds_lecture

    arch = problem.architecture
    for name in names:
        try:
            arch.param_index(name)
        except (KeyError, IndexError) as exc:
            raise UsageError(f"{exc.args[0]} (run 'hessverify params {problem.source or problem.id}' "
                             "to list the names)") from None
    if kinds.lines_bound(problem) > kinds.MAX_LINES or kinds.estimated_seconds(problem) > 60:
        raise BudgetError(f"derive on {problem.id} (W = {problem.n_params}) would take about "
                          f"{format_duration(kinds.estimated_seconds(problem))}; derive on a smaller network with "
                          "the same layers")
    return kinds_lecture.derive_kinds(problem, names, **options)


def check_digits(digits: int) -> None:
    """A one-line :class:`~hessverify.errors.UsageError` unless ``16 <= digits <=`` :data:`MAX_DIGITS`."""
    from hessverify.errors import UsageError

    if digits < 16:
        raise UsageError(f"--digits {digits}: use at least 16 (float64 has about 16)")
    if digits > MAX_DIGITS:
        raise UsageError(f"--digits {digits}: use at most {MAX_DIGITS} (the cost grows faster than the digits)")


def aligned(expressions: Sequence[Expression]) -> str:
    r"""The expressions as one LaTeX ``aligned`` block for a slide: ``lhs &= rhs`` a line.

    Examples
    --------
    >>> net = LectureNetwork.from_sizes([1, 1], activation="tanh", form="z")
    >>> g = net.backprop_gradient("b1[0]")
    >>> print(aligned([g] + net.definitions(g)))
    \begin{aligned}
    \frac{\partial e}{\partial b^{(1)}_{0}} &= \delta^{(1)}_{0} \\
    a^{(1)}_{0} &= W^{(1)}_{00} x_{0} + b^{(1)}_{0} \\
    z^{(1)}_{0} &= \tanh{\left(a^{(1)}_{0} \right)} \\
    f_{1}'(a^{(1)}_{0}) &= 1 - \left(z^{(1)}_{0}\right)^{2} \\
    \delta^{(1)}_{0} &= f_{1}'(a^{(1)}_{0}) \left(- t_{0} + z^{(1)}_{0}\right)
    \end{aligned}
    """
    lines = [f"{e.label_latex or ''} &= {e.rhs_latex()}" for e in expressions]
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"


def derive(problem: Problem, names: Sequence[str], *, latex: bool = False, explicit: bool = False,
           digits: int = 50, form: str = "a") -> str:
    """The text of ``hessverify derive``: the closed form of one entry and its value at the case's point.

    One name gives a gradient entry, two names a Hessian entry; ``form`` writes
    ``f'`` and ``f''`` in ``a``, ``z`` or Rojas's ``o`` (:data:`FORMS`).  Raises
    :class:`~hessverify.errors.UsageError` naming a bad parameter name.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/single-neuron-tanh.toml")
    >>> print(derive(case, ["W1[0,0]"], digits=20))  # doctest: +ELLIPSIS
    single-neuron-tanh: dE/dW1[0,0]
    per pattern, by backpropagation:
      de/dW1[0,0] = delta1[0]*x[0]
    where
      a1[0] = W1[0,0]*x[0] + b1[0]
      z1[0] = tanh(a1[0])
      fp1[0] = 1 - tanh(a1[0])**2
      delta1[0] = fp1[0]*(-t[0] + z1[0])
    value at the case's point, summed over 3 patterns (20 digits):
      ...
    """
    from hessverify.errors import UsageError

    if len(names) not in (1, 2):
        raise UsageError(f"--entry takes one parameter name (a gradient entry) or two (a Hessian entry), "
                         f"got {len(names)}")
    check_digits(digits)
    arch = problem.architecture
    if not arch.is_dense:
        return _derive_kinds(problem, names, latex=latex, explicit=explicit, digits=digits)
    from hessverify.engine.budget import check_derive

    check_derive(problem, explicit=explicit)
    for name in names:
        try:
            arch.param_index(name)
        except (KeyError, IndexError) as exc:
            raise UsageError(f"{exc.args[0]} (run 'hessverify params {problem.source or problem.id}' "
                             "to list the names)") from None
    if form not in FORMS:
        raise UsageError(f"--form {form!r}: choose one of {', '.join(FORMS)}")
    net = LectureNetwork.from_case(problem, form)
    if len(names) == 1:
        title = f"dE/d{names[0]}"
        formula, direct = net.backprop_gradient(names[0]), (net.gradient(names[0]) if explicit else None)
        how = "backpropagation"
    else:
        p, q = names
        title = f"d2E/d{p} d{q} ({formulas.KINDS[formulas.kind(arch, p, q).split('+')[0]]}"
        title += ", with a bias)" if "+bias" in formulas.kind(arch, p, q) else ")"
        formula, direct = net.backprop_hessian(p, q), (net.hessian(p, q) if explicit else None)
        how = "second-order backpropagation"

    def show(e: Expression) -> str:
        return e.latex() if latex else str(e)

    lines = [f"{problem.id}: {title}", f"per pattern, by {how}:", "  " + show(formula), "where"]
    lines += ["  " + show(d) for d in net.definitions(formula)]
    if direct is not None:
        lines += ["explicitly, by direct differentiation:", "  " + show(direct)]
    value = net.value(formula, problem, digits)
    scale = " times 1/N" if problem.reduction == "mean" else ""
    lines += [f"value at the case's point, summed over {problem.n_patterns} patterns{scale} ({digits} digits):",
              "  " + mpmath.nstr(value, digits)]
    return "\n".join(lines)
