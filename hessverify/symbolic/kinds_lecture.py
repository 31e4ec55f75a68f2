r"""``derive`` for networks of other layer kinds: one entry's closed form in the notation of its layer.

A parameter ``p`` of layer ``l`` (a convolution's kernel entry
:math:`W^{(l)}_{o,c,j}`, a LayerNorm gain :math:`W^{(l)}_k`, ...) reaches the
error only through the layer's output :math:`a^{(l)}` (before its
activation).  With :math:`\delta^{(l)}_i = \partial e/\partial a^{(l)}_i` and
:math:`Q^{(l)}_{ij} = \partial^2 e/\partial a^{(l)}_i \partial a^{(l)}_j`
(what the layers above it make of the output), the chain rule gives, for two
parameters of one layer (Bishop 1992, eq. 22, for any layer whose output is
a function of its input and its parameters):

.. math::

   \frac{\partial e}{\partial p} = \sum_i \delta^{(l)}_i \frac{\partial a^{(l)}_i}{\partial p},\qquad
   \frac{\partial^2 e}{\partial p\, \partial q}
     = \sum_{i,j} \frac{\partial a^{(l)}_i}{\partial p} \frac{\partial a^{(l)}_j}{\partial q}\, Q^{(l)}_{ij}
     + \sum_i \delta^{(l)}_i \frac{\partial^2 a^{(l)}_i}{\partial p\, \partial q}

with :math:`\partial a^{(l)}_i/\partial p` the ``sympy.diff`` of the layer's
own array form (its program lines, :mod:`hessverify.symbolic.kinds`) written
out in the layer's input (``x`` or ``z^{(l-1)}``) and the named quantities
of the layer that do not depend on ``p`` or ``q`` (a LayerNorm's normalised
input :math:`\hat x`, its mean and variance: lines ``h``).  For a
convolution :math:`\partial a_{o,l}/\partial W_{o,c,j} = x_{c,\, s l + j - p}`,
and the entry is a sum over pairs of output positions; for a LayerNorm gain
:math:`\partial a_{t,k}/\partial w_k = \hat x_{t,k}`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

import mpmath
import sympy

from hessverify.errors import UsageError
from hessverify.model.problem import Problem
from hessverify.symbolic.expressions import Expression
from hessverify.symbolic.kinds import (
    KindProgram,
    exact_allowed,
    gradient,
    hessian_exact,
    hessian_high_precision,
    program,
)

__all__ = ["LayerEntry", "derive_kinds", "latex_name", "layer_entry"]


def _names(prog: KindProgram) -> dict[str, sympy.Symbol]:
    return {str(p): p for p in prog.params}


class LayerEntry:
    """The closed form of one gradient or Hessian entry within one layer (module text).

    ``formula`` is the entry per pattern in ``delta``/``Q`` of the layer's
    output and the derivatives of the layer's own lines; ``definitions``
    what the names in it stand for; ``explicit`` (on demand) the
    ``sympy.diff`` of the whole error written out.
    """

    def __init__(self, prog: KindProgram, names: Sequence[str]) -> None:
        self.prog = prog
        by_name = _names(prog)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise KeyError(missing[0])
        self.params = [by_name[n] for n in names]
        arch = prog.arch
        layers = {int(arch.layer_of_param[arch.param_index(n)]) for n in names}
        if len(layers) != 1:
            raise UsageError(f"derive writes entries within one layer for networks of {arch.layers[0].kind} and other "
                             f"kinds; {' and '.join(names)} are in layers {', '.join(map(str, sorted(layers)))}")
        self.layer = layers.pop()
        self.outputs = list(prog.layers[self.layer - 1][0].ravel())
        self._defs = {n.symbol: n for n in prog.tape.nodes}
        self._depends = self._lines_depending_on(self.params)

    def _lines_depending_on(self, params: Sequence[sympy.Symbol]) -> set[sympy.Symbol]:
        out = set(params)
        for node in self.prog.tape.nodes:
            if any(a in out for a in node.args):
                out.add(node.symbol)
        return out

    def _expand(self, sym: sympy.Expr) -> sympy.Expr:
        """``sym`` written out through the lines that depend on the entry's parameters; the others stay names."""
        memo: dict[sympy.Symbol, sympy.Expr] = {}

        def walk(s: sympy.Symbol) -> sympy.Expr:
            if s not in self._depends or s not in self._defs:
                return s
            if s not in memo:
                node = self._defs[s]
                memo[s] = node.template.at([walk(a) for a in node.args])
            return memo[s]

        return sympy.sympify(sym).xreplace({s: walk(s) for s in sympy.sympify(sym).free_symbols}) \
            if not isinstance(sym, sympy.Symbol) else walk(sym)

    def _output_symbol(self, base: str, index: int, other: int | None = None) -> sympy.Symbol:
        label = self.prog.tape.labels.get(self.outputs[index], str(self.outputs[index]))
        idx = label[label.index("["):] if "[" in label else f"[{index}]"
        if other is None:
            return sympy.Symbol(f"{base}{self.layer}{idx}", real=True)
        lab2 = self.prog.tape.labels.get(self.outputs[other], str(self.outputs[other]))
        idx2 = lab2[lab2.index("["):] if "[" in lab2 else f"[{other}]"
        return sympy.Symbol(f"{base}{self.layer}[({idx[1:-1]}),({idx2[1:-1]})]", real=True)

    @property
    def formula(self) -> sympy.Expr:
        a = [self._expand(o) for o in self.outputs]
        p = self.params[0]
        dp = [sympy.diff(ai, p) for ai in a]
        if len(self.params) == 1:
            return sympy.Add(*[d * self._output_symbol("delta", i) for i, d in enumerate(dp) if d != 0])
        q = self.params[1]
        dq = [sympy.diff(ai, q) for ai in a]
        terms = []
        for i, di in enumerate(dp):
            if di == 0:
                continue
            for j, dj in enumerate(dq):
                if dj != 0:
                    lo, hi = min(i, j), max(i, j)  # Q is symmetric: one name per pair
                    terms.append(di * dj * self._output_symbol("Q", lo, hi))
        for i, di in enumerate(dp):
            if di != 0:
                d2 = sympy.diff(di, q)
                if d2 != 0:
                    terms.append(d2 * self._output_symbol("delta", i))
        return sympy.Add(*terms)

    def definitions(self, expr: sympy.Expr) -> list[Expression]:
        """The layer's named lines the formula reads, down to the layer's input, in evaluation order."""
        wanted: set[sympy.Symbol] = set()
        stack = [s for s in expr.free_symbols if s in self._defs]
        while stack:
            s = stack.pop()
            if s in wanted:
                continue
            wanted.add(s)
            stack += [a for a in self._defs[s].args if a in self._defs]
        out = []
        for node in self.prog.tape.nodes:
            if node.symbol in wanted:
                out.append(Expression(_shown(node.definition), str(node.symbol), latex_name(str(node.symbol)),
                                      _latex_names(node.definition.free_symbols | {node.symbol})))
        return out

    def explicit(self) -> sympy.Expr:
        """``sympy.diff`` of the per-pattern error written out in full (every line substituted)."""
        memo: dict[sympy.Symbol, sympy.Expr] = {}

        def walk(s: sympy.Symbol) -> sympy.Expr:
            if s not in self._defs:
                return s
            if s not in memo:
                node = self._defs[s]
                memo[s] = node.template.at([walk(a) for a in node.args])
            return memo[s]

        return sympy.diff(walk(self.prog.error), *self.params)


def layer_entry(problem: Problem, names: Sequence[str]) -> LayerEntry:
    """The :class:`LayerEntry` of ``names`` (one or two parameter names of one layer) in ``problem``'s network."""
    arch = problem.architecture
    if any(layer.kind_def.couples_patterns(layer.opts) or layer.kind_def.reads_ids for layer in arch.layers):
        raise UsageError("derive writes one pattern's closed form; this network's patterns meet (batch statistics) "
                         "or it reads token ids: use verify --reference symbolic for its values")
    return LayerEntry(program(arch, str(problem.loss), loss_options=tuple(problem.loss_options)), names)


_LATEX = re.compile(r"^([A-Za-z]+)(\d+(?:\.\d+)?)?(?:\[(.*)\])?$")
_GREEK = {"delta": r"\delta"}


def latex_name(name: str) -> str:
    r"""LaTeX for a program name: ``W1[0,1,2]`` gives :math:`W^{(1)}_{0,1,2}`, ``h1.7[0,2]`` :math:`h^{(1.7)}_{0,2}`.

    Examples
    --------
    >>> latex_name("W1[0,1,2]"), latex_name("Q2[(0,1),(0,3)]"), latex_name("x[1,4]")
    ('W^{(1)}_{0,1,2}', 'Q^{(2)}_{(0,1),(0,3)}', 'x_{1,4}')
    """
    m = _LATEX.match(name)
    if not m:
        return name
    base, layer, idx = m.groups()
    sup = f"^{{({layer})}}" if layer else ""
    sub = f"_{{{idx}}}" if idx else ""
    return f"{_GREEK.get(base, base)}{sup}{sub}"


def _shown(expr: sympy.Expr) -> sympy.Expr:
    """For people: a float64 constant (``eps = 1e-5`` is a dyadic rational with a 21-digit denominator) as the
    float it is; the computation keeps it exact."""
    big = {r: sympy.Float(repr(float(r))) for r in expr.atoms(sympy.Rational) if r.q > 10**6}  # shortest repr
    return expr.xreplace(big) if big else expr


def _latex_names(symbols: set[sympy.Symbol]) -> dict[sympy.Symbol, str]:
    return {s: latex_name(s.name) for s in symbols}


def derive_kinds(problem: Problem, names: Sequence[str], *, latex: bool = False, explicit: bool = False,
                 digits: int = 50) -> str:
    """The text of ``hessverify derive`` for a network of other layer kinds (module text)."""
    entry = layer_entry(problem, names)
    arch = problem.architecture
    layer = arch.layer(entry.layer)
    what = f"{layer.kind}({layer.kind_def.describe(layer.opts)})"
    formula = entry.formula
    if len(names) == 1:
        title = f"dE/d{names[0]}"
        label, tex = f"de/d{names[0]}", f"\\frac{{\\partial e}}{{\\partial {latex_name(names[0])}}}"
    else:
        p, q = names
        title = f"d2E/d{p} d{q} (two parameters of layer {entry.layer}, {what})"
        label = f"d2e/d{p}d{q}"
        tex = f"\\frac{{\\partial^{{2}} e}}{{\\partial {latex_name(p)}\\,\\partial {latex_name(q)}}}"
    main = Expression(formula, label, tex, _latex_names(formula.free_symbols))

    def show(e: Expression) -> str:
        return e.latex() if latex else str(e)

    a = f"a{entry.layer}"
    lines = [f"{problem.id}: {title}",
             f"layer {entry.layer}: {layer.kind}, {layer.kind_def.summary} ({layer.kind_def.torch})",
             f"per pattern, by the chain rule through the layer's output {a} (before its activation):",
             "  " + show(main), "where"]
    if latex:
        lines.append(f"  \\delta^{{({entry.layer})}}_{{i}} = \\frac{{\\partial e}}{{\\partial a^{{({entry.layer})}}_{{i}}}},"
                     f"\\quad Q^{{({entry.layer})}}_{{ij}} = \\frac{{\\partial^{{2}} e}}{{\\partial a^{{({entry.layer})}}_{{i}}"
                     f"\\,\\partial a^{{({entry.layer})}}_{{j}}}}")
    else:
        lines.append(f"  delta{entry.layer}[i] = de/d{a}[i], Q{entry.layer}[(i),(j)] = d2e/d{a}[i]d{a}[j]: "
                     "what the layers above make of the output")
    lines += ["  " + show(d) for d in entry.definitions(formula)]
    if explicit:
        direct = entry.explicit()
        lines += ["explicitly, by direct differentiation:", "  " + show(Expression(direct, label, tex,
                                                                                     _latex_names(direct.free_symbols)))]
    value = _value(problem, names, digits)
    scale = " times 1/N" if problem.reduction == "mean" else ""
    lines += [f"value at the case's point, summed over {problem.n_patterns} patterns{scale} ({digits} digits, the "
              "symbolic reference):", "  " + value]
    return "\n".join(lines)


def _value(problem: Problem, names: Sequence[str], digits: int) -> str:
    arch = problem.architecture
    idx = [arch.param_index(n) for n in names]
    if len(idx) == 1:
        v = Fraction(gradient(problem, digits)[idx[0]])  # the adjoints of the parameters: exact from decimal
        with mpmath.workdps(digits):
            return mpmath.nstr(mpmath.mpf(v.numerator) / v.denominator, digits)
    if exact_allowed(problem):
        h = hessian_exact(problem)[idx[0], idx[1]]
        with mpmath.workdps(digits):
            return mpmath.nstr(mpmath.mpf(h.numerator) / h.denominator, digits)
    num, den, _ = hessian_high_precision(problem, digits)
    with mpmath.workdps(digits):
        return mpmath.nstr(mpmath.mpf(num[idx[0], idx[1]]) / den, digits)
