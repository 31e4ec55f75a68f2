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

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

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

__all__ = ["Expression", "LectureNetwork", "derive"]


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
    """

    arch: Architecture
    loss: str = "sse"
    symbols: NetworkSymbols = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.symbols = NetworkSymbols(self.arch)

    @classmethod
    def from_sizes(cls, sizes: Sequence[int], activation: str = "sigmoid", output_activation: str | None = None,
                   loss: str = "sse", bias: bool = True) -> LectureNetwork:
        """``from_sizes([2, 2, 1], "sigmoid")``: the XOR network; ``output_activation`` defaults to ``activation``."""
        if len(sizes) < 2:
            raise ValueError(f"sizes {list(sizes)}: give the input size and at least one layer")
        acts = [activation] * (len(sizes) - 2) + [output_activation or activation]
        return cls(Architecture(sizes[0], tuple(Layer(u, a, bias) for u, a in zip(sizes[1:], acts, strict=True))),
                   loss)

    @classmethod
    def from_case(cls, problem: Problem) -> LectureNetwork:
        """The network and loss of a case (the data and weights stay with the case, for :meth:`value`)."""
        return cls(problem.architecture, problem.loss)

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
        return Expression(formulas.gradient_entry(self.symbols, p), f"de/d{p}",
                          f"\\frac{{\\partial e}}{{\\partial {_tex(p)}}}")

    def backprop_hessian(self, p: str, q: str) -> Expression:
        """:math:`\\partial^2 e/\\partial p\\,\\partial q` by the general formula, in a, z, f', f'' and delta."""
        self._param(p), self._param(q)
        expr = formulas.expand(formulas.entry(self.symbols, p, q), self._definitions, self._keep)
        return Expression(sympy.factor_terms(expr), *self._labels(p, q))

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
        for sym, rhs in self._definitions.items():
            if sym in keep and sym not in set(self.symbols.params) and (wanted is None or sym in wanted):
                out.append(Expression(formulas.expand(rhs, self._definitions, keep), sym.name,
                                      latex_names([sym]).get(sym, sympy.latex(sym))))
        return out

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
        syms = sorted(expression.expr.free_symbols, key=str)
        f = sympy.lambdify(syms, expression.expr, modules="mpmath")
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


def derive(problem: Problem, names: Sequence[str], *, latex: bool = False, explicit: bool = False,
           digits: int = 50) -> str:
    """The text of ``hessverify derive``: the closed form of one entry and its value at the case's point.

    One name gives a gradient entry, two names a Hessian entry.  Raises
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
    if digits < 16:
        raise UsageError(f"--digits {digits}: use at least 16 (float64 has about 16)")
    arch = problem.architecture
    for name in names:
        try:
            arch.param_index(name)
        except (KeyError, IndexError) as exc:
            raise UsageError(f"{exc.args[0]} (run 'hessverify params {problem.source or problem.id}' "
                             "to list the names)") from None
    net = LectureNetwork.from_case(problem)
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
