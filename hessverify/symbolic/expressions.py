"""The network in SymPy: symbols, the explicit error, and its straight-line closed form.

Everything here is built from the SymPy columns of the activation and loss
tables (``Activation.expr``, ``Loss.expr``); nothing calls the NumPy forward
pass, so the symbolic reference stays independent of the code it checks.

Two forms of the same function of the weights are built for one generic
pattern ``(x, t)`` with symbolic weights:

* :func:`explicit_error` writes ``e(w; x, t)`` out in full, one nested
  expression: what a lecture writes on the board for a tiny network, and what
  "direct differentiation" (``sympy.diff``) differentiates.
* :func:`definitions` writes the same function and its first and second
  derivatives as a *straight-line program*: an ordered list of named
  intermediate symbols, each defined by a short expression of earlier ones.
  The names are those of backpropagation (Bishop 1992; Bishop, *Pattern
  Recognition and Machine Learning*, sec. 5.4.5):

  ============  ==================================================================
  ``a_l``       net input, :math:`a^{(l)}_i = \\sum_j W^{(l)}_{ij} z^{(l-1)}_j + b^{(l)}_i`
  ``z_l``       output, :math:`z^{(l)}_i = f_l(a^{(l)}_i)`, with :math:`z^{(0)} = x`
  ``fp, fpp``   :math:`f_l'(a^{(l)}_i)` and :math:`f_l''(a^{(l)}_i)` (``sympy.diff`` of ``expr``)
  ``g, h``      :math:`\\partial e/\\partial y_k` and :math:`\\partial^2 e/\\partial y_k \\partial y_{k'}`
  ``delta``     :math:`\\delta^{(l)}_i = \\partial e/\\partial a^{(l)}_i`
  ``Q``         :math:`Q^{(l)}_{ii'} = \\partial^2 e/\\partial a^{(l)}_i \\partial a^{(l)}_{i'}`
  ``B``         :math:`B^{(l,m)}_{ik} = \\partial a^{(l)}_i/\\partial a^{(m)}_k` for :math:`l > m`
  ``K``         :math:`K^{(m,m')} = (B^{(m',m)})^T Q^{(m')}`, the main term of a block
  ============  ==================================================================

  Each definition is a sum of at most ``max(units)`` products, so the whole
  program has :math:`O(\\sum_l u_l^3)` operations however many weights there
  are; the Hessian's :math:`W^2` entries are then products of two or three of
  these names (:mod:`hessverify.symbolic.formulas`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import sympy

from hessverify.model.activations import get_activation
from hessverify.model.losses import get_loss
from hessverify.model.network import Architecture

__all__ = [
    "Expression",
    "NetworkSymbols",
    "activation_derivatives",
    "definitions",
    "explicit_error",
    "explicit_output",
    "latex_names",
    "lambdify_program",
    "loss_derivatives",
]

_S = sympy.Symbol("s", real=True)


@cache
def activation_derivatives(name: str) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    """``(f, f', f'')`` of an activation as expressions of the symbol ``s``.

    The derivatives are ``sympy.diff`` of the table's ``expr`` column, not the
    NumPy columns: the reference must not share the code it checks.
    """
    f = get_activation(name).expr(_S)
    d1 = sympy.diff(f, _S)
    return f, d1, sympy.diff(d1, _S)


def _apply(expr: sympy.Expr, value: sympy.Expr) -> sympy.Expr:
    return expr.subs(_S, value)


@cache
def loss_derivatives(name: str, outputs: int) -> tuple[tuple[sympy.Symbol, ...], tuple[sympy.Symbol, ...],
                                                       sympy.Expr, tuple[sympy.Expr, ...],
                                                       tuple[tuple[sympy.Expr, ...], ...]]:
    """``(y, t, e, grad, hess)`` of a loss in symbols ``y[k]`` and ``t[k]`` (``sympy.diff``)."""
    y = tuple(sympy.Symbol(f"y[{k}]", real=True) for k in range(outputs))
    t = tuple(sympy.Symbol(f"t[{k}]", real=True) for k in range(outputs))
    e = get_loss(name).expr(y, t)
    grad = tuple(sympy.diff(e, yk) for yk in y)
    hess = tuple(tuple(sympy.diff(gk, yl) for yl in y) for gk in grad)
    return y, t, e, grad, hess


@dataclass
class NetworkSymbols:
    """The symbols of one network and one generic pattern.

    Names are the public parameter names (``W1[0,1]``, ``b2[0]``) and, for the
    intermediate quantities, ``a1[0]``, ``z1[0]``, ``fp1[0]`` (:math:`f'`),
    ``fpp1[0]`` (:math:`f''`), ``delta1[0]``, ``g[0]``, ``h[0,1]``,
    ``Q1[0,1]``, ``B2,1[0,1]``, ``K1,2[0,1]``.  Lists of layers are indexed
    from 1 (index 0 is the input), as in the lecture.

    Examples
    --------
    >>> from hessverify.model.network import Architecture, Layer
    >>> s = NetworkSymbols(Architecture(2, (Layer(2, "tanh"), Layer(1, "identity"))))
    >>> s.params[:3], s.a[1][0], s.delta[2][0]
    ((W1[0,0], W1[0,1], W1[1,0]), a1[0], delta2[0])
    """

    arch: Architecture
    params: tuple[sympy.Symbol, ...] = field(init=False)
    x: tuple[sympy.Symbol, ...] = field(init=False)
    t: tuple[sympy.Symbol, ...] = field(init=False)
    W: list[list[list[sympy.Symbol]]] = field(init=False)
    b: list[list[sympy.Expr]] = field(init=False)
    a: list[list[sympy.Symbol]] = field(init=False)
    z: list[list[sympy.Symbol]] = field(init=False)
    fp: list[list[sympy.Symbol]] = field(init=False)
    fpp: list[list[sympy.Symbol]] = field(init=False)
    delta: list[list[sympy.Symbol]] = field(init=False)

    def __post_init__(self) -> None:
        arch = self.arch
        self.params = tuple(sympy.Symbol(n, real=True) for n in arch.param_names)
        by_name = {str(p): p for p in self.params}
        self.x = tuple(sympy.Symbol(f"x[{j}]", real=True) for j in range(arch.inputs))
        self.t = tuple(sympy.Symbol(f"t[{k}]", real=True) for k in range(arch.outputs))
        self.W, self.b = [[]], [[]]
        for blk in arch.blocks:
            l = blk.layer
            self.W.append([[by_name[f"W{l}[{i},{j}]"] for j in range(blk.fan_in)] for i in range(blk.units)])
            self.b.append([by_name[f"b{l}[{i}]"] if blk.bias else sympy.S.Zero for i in range(blk.units)])

        def unit_symbols(prefix: str) -> list[list[sympy.Symbol]]:
            return [[]] + [[sympy.Symbol(f"{prefix}{l}[{i}]", real=True) for i in range(layer.units)]
                           for l, layer in enumerate(arch.layers, start=1)]

        self.a, self.fp, self.fpp, self.delta = (unit_symbols(p) for p in ("a", "fp", "fpp", "delta"))
        self.z = unit_symbols("z")
        self.z[0] = list(self.x)

    @property
    def y(self) -> list[sympy.Symbol]:
        return self.z[self.arch.output_layer]

    def inputs(self, l: int) -> list[sympy.Symbol]:
        """The input of layer ``l``: the outputs of its sources side by side (``x`` for source 0)."""
        return [zj for p in self.arch.parents(l) for zj in self.z[p]]

    def input_source(self, l: int, j: int) -> tuple[int, int]:
        """``(source layer, unit)`` that column ``j`` of ``W_l`` reads."""
        for p in self.arch.parents(l):
            cols = self.arch.source_slice(l, p)
            if cols.start <= j < cols.stop:
                return p, j - cols.start
        raise IndexError(f"W{l} has {self.arch.fan_in(l)} columns, not {j + 1}")

    def param(self, name: str) -> sympy.Symbol:
        """The symbol of a parameter given by its public name."""
        return self.params[self.arch.param_index(name)]

    def matrix(self, prefix: str, rows: int, cols: int) -> list[list[sympy.Symbol]]:
        """A named matrix of symbols such as ``Q2[i,j]`` or ``B3,1[i,j]``."""
        return [[sympy.Symbol(f"{prefix}[{i},{j}]", real=True) for j in range(cols)] for i in range(rows)]


def explicit_output(s: NetworkSymbols) -> list[sympy.Expr]:
    """The network function ``y(w, x)`` written out in full (no intermediate names)."""
    zs: list[list[sympy.Expr]] = [list(s.x)]
    for l, layer in enumerate(s.arch.layers, start=1):
        f = activation_derivatives(layer.activation)[0]
        z = [zj for p in s.arch.parents(l) for zj in zs[p]]  # the sources side by side
        a = [sum((wij * zj for wij, zj in zip(s.W[l][i], z, strict=True)), s.b[l][i]) for i in range(layer.units)]
        zs.append([_apply(f, ai) for ai in a])
    return zs[s.arch.output_layer]


def explicit_error(s: NetworkSymbols, loss: str) -> sympy.Expr:
    """The per-pattern error ``e(w; x, t)`` written out in full."""
    return get_loss(loss).expr(explicit_output(s), list(s.t))


def _Add(*terms: sympy.Expr) -> sympy.Expr:
    """``t1 + t2 + ...`` as it stands: no flattening, no canonical order, zeros dropped (``definitions(fast=True)``).

    ``Add._from_args`` builds the node without SymPy's evaluation, which
    sorts and collects terms: that is most of the cost of building a large
    program, and a sum of distinct products of names has nothing to collect.
    """
    kept = tuple(t for t in terms if t is not sympy.S.Zero)
    if not kept:
        return sympy.S.Zero
    return kept[0] if len(kept) == 1 else sympy.Add._from_args(kept, True)  # names of reals commute


def _Mul(*factors: sympy.Expr) -> sympy.Expr:
    """``f1 * f2 * ...`` as it stands (:func:`_Add`); the factors here are names or unevaluated sums."""
    return factors[0] if len(factors) == 1 else sympy.Mul._from_args(factors, True)


def definitions(s: NetworkSymbols, loss: str, *, fast: bool = False) -> dict[sympy.Symbol, sympy.Expr]:
    """The straight-line program of one pattern: named quantities in evaluation order.

    Returns an insertion-ordered mapping ``symbol -> definition`` in which
    each definition uses only the weights, the pattern ``(x, t)`` and names
    defined before it.  See the module text for the names.  The recursions
    are those of second-order backpropagation (Bishop 1992, eq. 13 and
    16-18); :mod:`hessverify.symbolic.formulas` checks what they give against
    direct differentiation of :func:`explicit_error`.

    With ``fast`` the sums of products (net inputs, delta, Q, R, B, K: all
    but the function values) are built as they stand, without SymPy's
    canonical ordering and flattening (:func:`_sum`): the same function, for
    the evaluated reference, built some thirty times faster.  Without it they
    read as SymPy prints them, for a lecture.
    """
    Add, Mul = (_Add, _Mul) if fast else (sympy.Add, sympy.Mul)
    arch = s.arch
    out = arch.output_layer
    defs: dict[sympy.Symbol, sympy.Expr] = {}
    # forward: a = W z + b, z = f(a), and f', f'' at a (from the SymPy column)
    for l, layer in enumerate(arch.layers, start=1):
        f, d1, d2 = activation_derivatives(layer.activation)
        for i in range(layer.units):
            defs[s.a[l][i]] = Add(*[Mul(w, zj) for w, zj in zip(s.W[l][i], s.inputs(l), strict=True)], s.b[l][i])
        for i in range(layer.units):
            defs[s.z[l][i]] = _apply(f, s.a[l][i])
            defs[s.fp[l][i]] = _apply(d1, s.a[l][i])
            defs[s.fpp[l][i]] = _apply(d2, s.a[l][i])
    # the loss at the output y = z_L: g = de/dy, h = d2e/dy dy^T
    ysym, tsym, _, grad, hess = loss_derivatives(loss, arch.outputs)
    at_output = dict(zip(ysym + tsym, list(s.y) + list(s.t), strict=True))
    K = arch.outputs
    g = [sympy.Symbol(f"g[{k}]", real=True) for k in range(K)]
    h = s.matrix("h", K, K)
    for k in range(K):
        defs[g[k]] = grad[k].xreplace(at_output)
    for k in range(K):
        for kp in range(K):
            defs[h[k][kp]] = hess[k][kp].xreplace(at_output)
    if not arch.is_chain:
        _graph_backward(s, defs, g, h, Add, Mul)
        return defs
    # backward, first order: delta_L = g * f'_L;  delta_l = f'_l * (W_c^T delta_c), c the layer l feeds
    hidden = [l for l in arch.top_down if l != out]
    for k in range(K):
        defs[s.delta[out][k]] = Mul(g[k], s.fp[out][k])
    for l in hidden:
        c = arch.child(l)
        for i in range(arch.layer(l).units):
            back = Add(*[Mul(s.W[c][k][i], s.delta[c][k]) for k in range(arch.layer(c).units)])
            defs[s.delta[l][i]] = Mul(s.fp[l][i], back)
    # backward, second order: Q_L = diag(f') h diag(f') + diag(g f'');
    # Q_l = diag(f'_l) W^T Q_c W diag(f'_l) + diag(f''_l (W^T delta_c)), through R = W^T Q_c
    Q: dict[int, list[list[sympy.Symbol]]] = {out: s.matrix(f"Q{out}", K, K)}
    for k in range(K):
        for kp in range(K):
            term = Mul(s.fp[out][k], h[k][kp], s.fp[out][kp])
            defs[Q[out][k][kp]] = Add(term, Mul(g[k], s.fpp[out][k])) if k == kp else term
    for l in hidden:
        c = arch.child(l)
        u, up = arch.layer(l).units, arch.layer(c).units
        R = s.matrix(f"R{l}", u, up)
        for i in range(u):
            for k in range(up):
                defs[R[i][k]] = Add(*[Mul(s.W[c][j][i], Q[c][j][k]) for j in range(up)])
        Q[l] = s.matrix(f"Q{l}", u, u)
        for i in range(u):
            for ip in range(u):
                inner = Add(*[Mul(R[i][k], s.W[c][k][ip]) for k in range(up)])
                term = Mul(s.fp[l][i], inner, s.fp[l][ip])
                if i == ip:
                    back = Add(*[Mul(s.W[c][k][i], s.delta[c][k]) for k in range(up)])
                    term = Add(term, Mul(s.fpp[l][i], back))
                defs[Q[l][i][ip]] = term
    # forward Jacobians B_{l,m} = da_l/da_m = W_l diag(f'_p) B_{p,m}, p the layer feeding l, B_{m,m} = I
    for m in arch.bottom_up:
        B: dict[int, list[list[sympy.Symbol]] | None] = {m: None}  # None stands for the identity B_{m,m}
        for l in arch.above(m):
            p = arch.parent(l)
            prev = B[p]
            u, um = arch.layer(l).units, arch.layer(m).units
            Bl = s.matrix(f"B{l},{m}", u, um)
            fan = arch.fan_in(l)
            for i in range(u):
                for k in range(um):
                    if prev is None:
                        value = Mul(s.W[l][i][k], s.fp[p][k])
                    else:
                        value = Add(*[Mul(s.W[l][i][j], s.fp[p][j], prev[j][k]) for j in range(fan)])
                    defs[Bl[i][k]] = value
            B[l] = Bl
    # main term of each block: K_{m,m'} = B_{m',m}^T Q_{m'} (K_{m,m} = Q_m); for the layer m feeds,
    # B_{m',m} = W_{m'} diag(f'_m), so K_{m,m'} = diag(f'_m) W_{m'}^T Q_{m'} = diag(f'_m) R_m, already summed
    for m in arch.bottom_up:
        for mp in arch.above(m):
            um, ump = arch.layer(m).units, arch.layer(mp).units
            Bs = s.matrix(f"B{mp},{m}", ump, um)
            Km = s.matrix(f"K{m},{mp}", um, ump)
            Rm = s.matrix(f"R{m}", um, ump) if mp == arch.child(m) else None
            for k in range(um):
                for kp in range(ump):
                    defs[Km[k][kp]] = (Mul(s.fp[m][k], Rm[k][kp]) if Rm is not None else
                                       Add(*[Mul(Bs[i][k], Q[mp][i][kp]) for i in range(ump)]))
    return defs


def _graph_backward(s: NetworkSymbols, defs: dict[sympy.Symbol, sympy.Expr], g: list[sympy.Symbol],
                    h: list[list[sympy.Symbol]], Add: Callable[..., sympy.Expr] = sympy.Add,
                    Mul: Callable[..., sympy.Expr] = sympy.Mul) -> None:
    """The backward half of :func:`definitions` for a feed-forward graph (skip connections).

    Every sum over "the layer ``l`` feeds" becomes a sum over the layers ``c``
    that read ``z_l``, through the columns ``W_{c,l}`` of ``W_c`` that do
    (Bishop 1992, sec. 3, general topology):

    * ``delta_l = f'_l * sum_c W_{c,l}^T delta_c``;
    * ``K_{m,m'} = d2e/da_m da_m'^T`` for every ``m < m'`` (not only ``m'``
      above ``m``: two layers meet where a later one reads both),
      ``K_{m,m'} = diag(f'_m) sum_c W_{c,m}^T K_{c,m'}`` with ``K_{m',m'} = Q_{m'}``
      and ``K_{c,m'} = K_{m',c}^T`` for ``c`` above ``m'``;
    * ``Q_m = sum_c K_{m,c} W_{c,m} diag(f'_m) + diag(f''_m (sum_c W_{c,m}^T delta_c))``,
      plus ``diag(f'_L) h diag(f'_L)`` at the output;
    * ``B_{l,m} = sum_p W_{l,p} diag(f'_p) B_{p,m}`` over the sources ``p`` of
      ``l`` that are ``m`` or depend on it.
    """
    arch = s.arch
    out = arch.output_layer
    units = {l: arch.layer(l).units for l in arch.bottom_up}

    def w_col(c: int, l: int, r: int, i: int) -> sympy.Symbol:
        """``W_c[r, column of z_l[i]]``."""
        return s.W[c][r][arch.source_slice(c, l).start + i]

    back: dict[int, list[sympy.Expr]] = {}
    for l in arch.top_down:
        if l == out:
            back[l] = list(g)
        else:  # dE/dz_l: 0 for a layer that feeds nothing
            back[l] = [Add(*[Mul(w_col(c, l, r, i), s.delta[c][r]) for c in arch.children(l) for r in range(units[c])])
                       for i in range(units[l])]
        for i in range(units[l]):
            defs[s.delta[l][i]] = Mul(s.fp[l][i], back[l][i])

    @cache
    def M(i: int, j: int) -> list[list[sympy.Symbol]]:
        """The matrix of names ``d2e/da_i da_j^T`` (``Q_i``, ``K_{i,j}`` or the transpose of ``K_{j,i}``)."""
        if i == j:
            return s.matrix(f"Q{i}", units[i], units[i])
        if i < j:
            return s.matrix(f"K{i},{j}", units[i], units[j])
        return [list(row) for row in zip(*s.matrix(f"K{j},{i}", units[j], units[i]), strict=True)]

    @cache
    def B(l: int, m: int) -> list[list[sympy.Symbol]]:
        """The matrix of names ``B_{l,m}``, built once (a graph reads it inside every entry's sum)."""
        return s.matrix(f"B{l},{m}", units[l], units[m])

    for m in arch.top_down:
        later = [mp for mp in arch.top_down if mp > m]
        for mp in later:
            K = M(m, mp)
            for k in range(units[m]):
                for kp in range(units[mp]):
                    defs[K[k][kp]] = Mul(s.fp[m][k], Add(
                        *[Mul(w_col(c, m, r, k), M(c, mp)[r][kp]) for c in arch.children(m) for r in range(units[c])]))
        Q = M(m, m)
        for k in range(units[m]):
            for kp in range(units[m]):
                if m == out:
                    term = Mul(s.fp[m][k], h[k][kp], s.fp[m][kp])
                else:
                    term = Mul(Add(*[Mul(M(m, c)[k][r], w_col(c, m, r, kp)) for c in arch.children(m)
                                     for r in range(units[c])]), s.fp[m][kp])
                if k == kp:
                    term = Add(term, Mul(s.fpp[m][k], back[m][k]))
                defs[Q[k][kp]] = term
    for m in arch.bottom_up:
        for l in arch.above(m):
            Bl = B(l, m)
            for i in range(units[l]):
                for k in range(units[m]):
                    terms = []
                    for p in arch.parents(l):
                        if p == m:
                            terms.append(Mul(w_col(l, p, i, k), s.fp[p][k]))
                        elif p in arch.above(m):
                            Bp = B(p, m)
                            terms += [Mul(w_col(l, p, i, j), s.fp[p][j], Bp[j][k]) for j in range(units[p])]
                    defs[Bl[i][k]] = Add(*terms)


@dataclass(frozen=True)
class Expression:
    """A named closed form: ``label = expr``.

    Attributes
    ----------
    expr:
        The SymPy expression (the right-hand side).
    label, label_latex:
        The left-hand side, in plain text and in LaTeX.
    names:
        LaTeX for symbols whose names :func:`latex_names` does not know.
    """

    expr: sympy.Expr
    label: str = ""
    label_latex: str = ""
    names: Mapping[sympy.Symbol, str] | None = None  # LaTeX for symbols outside latex_names' pattern

    def latex(self) -> str:
        """LaTeX in the lecture's notation (:math:`W^{(1)}_{01}`, :math:`\\delta^{(2)}_{0}`, ...)."""
        body = self.rhs_latex()
        return f"{self.label_latex} = {body}" if self.label_latex else body

    def rhs_latex(self) -> str:
        """The right-hand side alone in LaTeX (for an ``aligned`` block: ``lhs &= rhs``)."""
        names = latex_names(self.expr.free_symbols)
        names.update(self.names or {})  # given names win: the Rojas notation renames z to o
        return sympy.latex(self.expr, symbol_names=names)

    def _repr_latex_(self) -> str:
        return f"$\\displaystyle {self.latex()}$"

    def __str__(self) -> str:
        body = sympy.sstr(self.expr)
        return f"{self.label} = {body}" if self.label else body

    __repr__ = __str__


def lambdify_program(args: Sequence[sympy.Symbol], defs: Mapping[sympy.Symbol, sympy.Expr],
                     outputs: Sequence[sympy.Symbol], modules: str | list[Any],
                     cse: Callable[[list[tuple[sympy.Symbol, sympy.Expr]]], list[tuple[sympy.Symbol, sympy.Expr]]]
                     | None = None, dialect: str | None = None) -> Callable[..., list[Any]]:
    """Compile a straight-line program into one function ``f(*args) -> [value of each output]``.

    The named definitions become the assignments of the generated code
    (through ``lambdify``'s ``cse`` hook), in order; ``cse`` may rewrite that
    list first (common-subexpression elimination).  The names are not Python
    identifiers (``W1[0,1]``): the printer gives the generated code safe
    ones, so the (large) program is never rewritten symbol by symbol.

    ``dialect`` names the printer when ``modules`` is a namespace rather than
    a module name: ``"numbers"`` prints for any number type whose namespace
    gives ``mpf`` (its constructor), ``exp``, ``log``, ``sqrt``, ``tanh``,
    ``erf``, ``sin``, ``cos`` and ``pi()`` (Python's ``decimal``,
    python-flint's ``arb``); ``"fractions"`` prints rationals as
    ``Rational(p, q)`` for exact arithmetic.
    """
    safe_args = [sympy.Symbol(f"_arg{n}") for n in range(len(args))]
    pairs = list(zip(args, safe_args, strict=True)) + list(defs.items())
    if cse is not None:
        pairs = cse(pairs)

    def hook(exprs: list[sympy.Expr]) -> tuple[list[tuple[sympy.Symbol, sympy.Expr]], list[sympy.Expr]]:
        return pairs, exprs

    if dialect is None:
        dialect = modules if isinstance(modules, str) else modules[0]
    return sympy.lambdify(safe_args, list(outputs), modules=modules, cse=hook, printer=_printer(str(dialect)))


def _printer(dialect: str) -> Any:
    """lambdify's own printer for ``dialect``, with safe names and sums printed in stored order.

    Sorting the terms of every sum into canonical order is most of the cost of
    printing a large program, and the order does not matter to the value
    beyond rounding, which the float64 bounds already allow for.  Sums of
    products of names, nearly all of a large program, are printed directly
    (:meth:`SafeNames._names`), without the printer's dispatch per node.
    """
    import keyword

    from sympy.printing.numpy import SciPyPrinter
    from sympy.printing.pycode import MpmathPrinter, SymPyPrinter

    base = {"scipy": SciPyPrinter, "numpy": SciPyPrinter, "mpmath": MpmathPrinter, "numbers": MpmathPrinter,
            "sympy": SymPyPrinter, "fractions": SymPyPrinter}[dialect]

    class SafeNames(base):  # type: ignore[valid-type, misc]
        def __init__(self, settings: dict[str, Any]) -> None:
            super().__init__(settings)
            self._safe: dict[str, str] = {}

        def _print_Symbol(self, expr: sympy.Symbol) -> str:
            name = expr.name
            if name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_s"):
                return name
            return self._safe.setdefault(name, f"_s{len(self._safe)}")

        def _names(self, expr: sympy.Expr, inner: bool) -> str | None:
            """A sum of products of names (or of such sums) as text, or ``None`` for anything else."""
            if isinstance(expr, sympy.Symbol):
                return self._print_Symbol(expr)
            if not isinstance(expr, sympy.Add | sympy.Mul):
                return None
            parts = [self._names(a, isinstance(expr, sympy.Mul)) for a in expr.args]
            if None in parts:
                return None
            if isinstance(expr, sympy.Mul):
                return "*".join(parts)  # type: ignore[arg-type]
            text = " + ".join(parts)  # type: ignore[arg-type]
            return f"({text})" if inner else text

        def doprint(self, expr: Any, assign_to: Any = None) -> Any:
            # a sum of products of names needs none of the code printer's preparation (sympify, a walk for
            # UnevaluatedExpr), which costs more than the printing itself
            text = self._names(expr, False) if assign_to is None and isinstance(expr, sympy.Basic) else None
            return text if text is not None else super().doprint(expr, assign_to)

        def _print_Add(self, expr: sympy.Add, order: str | None = None) -> str:
            return self._names(expr, False) or str(super()._print_Add(expr, order))

        def _print_Mul(self, expr: sympy.Mul) -> str:
            return self._names(expr, False) or str(super()._print_Mul(expr))

        def _print_Rational(self, expr: sympy.Rational) -> str:
            if dialect in ("sympy", "fractions"):  # exact arithmetic: 1/2 in Python would be a float
                return f"Rational({expr.p}, {expr.q})"
            return str(super()._print_Rational(expr))

        def _print_Pi(self, expr: sympy.Expr) -> str:
            return "pi()" if dialect == "numbers" else str(super()._print_Pi(expr))

    return SafeNames({"fully_qualified_modules": False, "inline": True, "allow_unknown_functions": True,
                      "user_functions": {}, "order": "none"})


def latex_names(symbols: Iterable[sympy.Symbol]) -> dict[sympy.Symbol, str]:
    r"""LaTeX for named symbols: :math:`W^{(2)}_{01}`, :math:`f_1'(a^{(1)}_{0})`, :math:`\delta^{(2)}_{0}`.

    Passed to ``sympy.latex(..., symbol_names=...)`` so that output reads like
    the lecture's notation (``B3,1[0,1]`` gives :math:`B^{(3,1)}_{01}`).
    Symbols whose names do not follow the pattern keep SymPy's own LaTeX.

    Examples
    --------
    >>> latex_names([sympy.Symbol("W2[0,1]"), sympy.Symbol("fp1[0]"), sympy.Symbol("delta2[0]")])
    {W2[0,1]: 'W^{(2)}_{01}', fp1[0]: "f_{1}'(a^{(1)}_{0})", delta2[0]: '\\delta^{(2)}_{0}'}
    """
    out: dict[sympy.Symbol, str] = {}
    for sym in symbols:
        m = _NAME.match(sym.name)
        if not m:
            continue
        base, layer, i, j = m.groups()
        idx = i if j is None else f"{i}{j}" if max(len(i), len(j)) == 1 else f"{i},{j}"
        sup = f"^{{({layer})}}" if layer else ""
        if base in ("fp", "fpp"):
            prime = "'" if base == "fp" else "''"
            out[sym] = f"f_{{{layer}}}{prime}(a^{{({layer})}}_{{{idx}}})"
        else:
            out[sym] = f"{_LATEX_BASE.get(base, base)}{sup}_{{{idx}}}"
    return out


_NAME = re.compile(r"^([A-Za-z]+)(\d+(?:,\d+)?)?\[(\d+)(?:,(\d+))?\]$")
_LATEX_BASE = {"delta": r"\delta"}
