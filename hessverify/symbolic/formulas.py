r"""The general formulas of second-order backpropagation, per kind of weight pair.

For one pattern with error :math:`e`, a weight :math:`W^{(m)}_{kj}` of layer
:math:`m` (from input :math:`z^{(m-1)}_j` to unit :math:`k`) and a weight
:math:`W^{(m')}_{k'j'}` with :math:`m \le m'`, the chain rule through the net
inputs gives (Bishop 1992, eq. 22; Bishop, *Pattern Recognition and Machine
Learning*, sec. 5.4.5):

.. math::

   \frac{\partial^2 e}{\partial W^{(m)}_{kj}\,\partial W^{(m')}_{k'j'}}
   = z^{(m-1)}_j z^{(m'-1)}_{j'} \sum_i B^{(m',m)}_{ik} Q^{(m')}_{ik'}
   + [m < m']\; \delta^{(m')}_{k'}\, f_{m'-1}'(a^{(m'-1)}_{j'})\, B^{(m'-1,m)}_{j'k}\, z^{(m-1)}_j

with :math:`B^{(l,m)} = \partial a^{(l)}/\partial a^{(m)}` (identity for
:math:`l = m`, and :math:`W^{(l)} \mathrm{diag}(f'_{l-1}) B^{(l-1,m)}` above),
in a chain.  In a feed-forward graph (skip connections, ``from``) the input of a layer
is its sources' outputs side by side, :math:`K^{(m,m')} = \partial^2 e/\partial a^{(m)}
\partial a^{(m')T}` exists for every :math:`m < m'`, and the bilinear term is there
when the input :math:`j'` of :math:`W^{(m')}` is a unit of :math:`m` or of a layer
above it (:func:`hessverify.symbolic.expressions.definitions`).
:math:`\delta^{(l)} = \partial e/\partial a^{(l)}` and
:math:`Q^{(l)} = \partial^2 e/\partial a^{(l)} \partial a^{(l)T}`
(the recursions in :func:`hessverify.symbolic.expressions.definitions`).
The kinds of pair, :data:`KINDS`, are the cases of this one formula:

* both weights in the output layer :math:`L`: :math:`Q^{(L)}` is the loss's
  curvature seen through :math:`f_L'`, plus :math:`g_k f_L''` on the diagonal;
* both in one hidden layer: :math:`Q^{(m)}` propagated down from the output;
* in two different layers: the main term through :math:`B^{(m',m)}` plus
  the bilinear term, because :math:`W^{(m')}` multiplies
  :math:`z^{(m'-1)}`, which itself depends on :math:`W^{(m)}`;
* a bias is a weight whose input is the constant 1 (:math:`z_j = 1`,
  :math:`f'_{j'} = 0`).

:func:`entry` instantiates the formula for two named parameters;
:func:`check` holds it against direct differentiation (``sympy.diff`` of the
explicitly written error) at a random point, for any architecture.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

import mpmath
import sympy

from hessverify.model.network import Architecture, parse_param_name
from hessverify.symbolic.expressions import (
    Expression,
    NetworkSymbols,
    definitions,
    explicit_error,
    lambdify_program,
)

__all__ = ["KINDS", "check", "entry", "expand", "general_formula", "gradient_entry", "kind", "named_atoms"]

KINDS = {
    "output": "both weights in the output layer",
    "hidden": "both weights in one hidden layer",
    "layers": "the weights in two different layers",
}
"""The kinds of weight pair; :func:`kind` adds ``"+bias"`` when a bias is involved."""


def _split(arch: Architecture, name: str) -> tuple[int, int, int | None]:
    """``W2[0,1]`` -> ``(2, 0, 1)``; ``b2[0]`` -> ``(2, 0, None)`` (after checking it exists)."""
    arch.param_index(name)
    layer, kind_, unit, inp = parse_param_name(name)
    return layer, unit, (inp if kind_ == "W" else None)


def kind(arch: Architecture, p: str, q: str) -> str:
    """The kind of the pair ``(p, q)``: one of :data:`KINDS`, with ``"+bias"`` if one is a bias.

    Examples
    --------
    >>> from hessverify.model.network import Architecture, Layer
    >>> arch = Architecture(2, (Layer(2, "sigmoid"), Layer(1, "sigmoid")))
    >>> kind(arch, "W1[0,1]", "W2[0,0]"), kind(arch, "W2[0,1]", "b2[0]"), kind(arch, "W1[0,0]", "b1[1]")
    ('layers', 'output+bias', 'hidden+bias')
    """
    (m, _, j), (mp, _, jp) = _split(arch, p), _split(arch, q)
    base = "layers" if m != mp else ("output" if m == arch.output_layer else "hidden")
    return base + ("+bias" if j is None or jp is None else "")


def _indexed(plain: str, tex: str, names: dict[sympy.Symbol, str]) -> sympy.IndexedBase:
    base = sympy.IndexedBase(plain)
    names[base.label] = tex
    return base


def general_formula(kind_: str, *, bias: str = "") -> Expression:
    r"""The general formula for a kind of pair, with generic layers and indices, for display.

    ``kind_`` is one of :data:`KINDS`; ``bias`` is ``""``, ``"first"``,
    ``"second"`` or ``"both"`` (which weight is a bias: its input is 1, and
    a bias in the upper layer has no bilinear term).  The hidden-layer and
    output-layer cases write :math:`Q` out one level (its recursion); all are
    the one formula of the module text, which :func:`check` holds against
    direct differentiation entry by entry.

    Examples
    --------
    >>> print(general_formula("layers", bias="second"))
    d2e/dW(m)[k,j]db(m')[k'] = z(m-1)[j]*Sum(B(m',m)[i, k]*Q(m')[i, k'], (i, 0, u_(m') - 1))
    >>> print(general_formula("output").latex())  # doctest: +ELLIPSIS
    \frac{\partial^2 e}{\partial W^{(L)}_{kj}\,\partial W^{(L)}_{k'j'}} = \left(\delta_{k k'} ...
    """
    if kind_ not in KINDS:
        raise KeyError(f"unknown kind {kind_!r}; choose one of {', '.join(KINDS)}")
    names: dict[sympy.Symbol, str] = {}
    i, ip, k, kp, j, jp = sympy.symbols("i i' k k' j j'", integer=True)
    lo, hi = {"output": ("L", "L"), "hidden": ("m", "m"), "layers": ("m", "m'")}[kind_]
    z = _indexed(f"z({lo}-1)", f"z^{{({lo}-1)}}", names)
    zp = _indexed(f"z({hi}-1)", f"z^{{({hi}-1)}}", names)
    first = sympy.S.One if bias in ("first", "both") else z[j]
    second = sympy.S.One if bias in ("second", "both") else zp[jp]
    if kind_ == "output":
        fp, fpp = _indexed("fp(L)", "f_L'", names), _indexed("fpp(L)", "f_L''", names)
        g, h = _indexed("g", "g", names), _indexed("h", "h", names)
        expr = first * second * (fp[k] * h[k, kp] * fp[kp] + sympy.KroneckerDelta(k, kp) * g[k] * fpp[k])
    elif kind_ == "hidden":
        fp, fpp = _indexed("fp(m)", "f_m'", names), _indexed("fpp(m)", "f_m''", names)
        W = _indexed("W(m+1)", "W^{(m+1)}", names)
        Q = _indexed("Q(m+1)", "Q^{(m+1)}", names)
        delta = _indexed("delta(m+1)", "\\delta^{(m+1)}", names)
        u = sympy.Symbol("u_(m+1)")
        names[u] = "u_{m+1}"
        inner = sympy.Sum(W[i, k] * W[ip, kp] * Q[i, ip], (i, 0, u - 1), (ip, 0, u - 1))
        back = sympy.Sum(W[i, k] * delta[i], (i, 0, u - 1))
        expr = first * second * (fp[k] * fp[kp] * inner + sympy.KroneckerDelta(k, kp) * fpp[k] * back)
    else:
        B = _indexed("B(m',m)", "B^{(m',m)}", names)
        B1 = _indexed("B(m'-1,m)", "B^{(m'-1,m)}", names)
        Q = _indexed("Q(m')", "Q^{(m')}", names)
        delta = _indexed("delta(m')", "\\delta^{(m')}", names)
        fp = _indexed("fp(m'-1)", "f_{m'-1}'", names)
        u = sympy.Symbol("u_(m')")
        names[u] = "u_{m'}"
        expr = first * second * sympy.Sum(B[i, k] * Q[i, kp], (i, 0, u - 1))
        if bias not in ("second", "both"):
            expr = expr + delta[kp] * fp[jp] * B1[jp, k] * first
    p_plain = f"b({lo})[k]" if bias in ("first", "both") else f"W({lo})[k,j]"
    q_plain = f"b({hi})[k']" if bias in ("second", "both") else f"W({hi})[k',j']"
    p_tex = f"b^{{({lo})}}_{{k}}" if bias in ("first", "both") else f"W^{{({lo})}}_{{kj}}"
    q_tex = f"b^{{({hi})}}_{{k'}}" if bias in ("second", "both") else f"W^{{({hi})}}_{{k'j'}}"
    return Expression(expr, f"d2e/d{p_plain}d{q_plain}",
                      f"\\frac{{\\partial^2 e}}{{\\partial {p_tex}\\,\\partial {q_tex}}}", names)


def entry(s: NetworkSymbols, p: str, q: str) -> sympy.Expr:
    """:math:`\\partial^2 e/\\partial p\\,\\partial q` for one pattern, by the general formula, in named symbols.

    The result uses ``z``, ``fp`` (:math:`f'`), ``delta``, ``Q``, ``K``
    (:math:`K^{(m,m')} = B^{(m',m)T} Q^{(m')}`) and ``B``; :func:`expand`
    rewrites it in fewer names.

    Examples
    --------
    >>> from hessverify.model.network import Architecture, Layer
    >>> s = NetworkSymbols(Architecture(2, (Layer(2, "sigmoid"), Layer(1, "sigmoid"))))
    >>> entry(s, "W1[0,1]", "W2[0,0]")
    K1,2[0,0]*x[1]*z1[0] + delta2[0]*fp1[0]*x[1]
    """
    arch = s.arch
    (m, k, j), (mp, kp, jp) = _split(arch, p), _split(arch, q)
    if (m, k) > (mp, kp):
        (m, k, j), (mp, kp, jp) = (mp, kp, jp), (m, k, j)
    zin = sympy.S.One if j is None else s.inputs(m)[j]
    zin_p = sympy.S.One if jp is None else s.inputs(mp)[jp]
    um, ump = arch.layer(m).units, arch.layer(mp).units
    if m == mp:
        return zin * zin_p * s.matrix(f"Q{m}", um, um)[k][kp]
    main = zin * zin_p * s.matrix(f"K{m},{mp}", um, ump)[k][kp]
    if jp is None:  # the bias's input is constant: no bilinear term
        return main
    p, i = s.input_source(mp, jp)  # W_m' multiplies z_p[i], which depends on W_m through B_{p,m}
    if p == m:
        b = sympy.S.One if i == k else sympy.S.Zero
    elif p in arch.above(m):
        b = s.matrix(f"B{p},{m}", arch.layer(p).units, um)[i][k]
    else:  # z_p does not depend on W_m (an earlier layer, or a branch beside m)
        return main
    return main + s.delta[mp][kp] * s.fp[p][i] * b * zin


def gradient_entry(s: NetworkSymbols, p: str) -> sympy.Expr:
    """:math:`\\partial e/\\partial p = \\delta^{(m)}_k z^{(m-1)}_j` (the input is 1 for a bias)."""
    m, k, j = _split(s.arch, p)
    return s.delta[m][k] * (sympy.S.One if j is None else s.inputs(m)[j])


def named_atoms(s: NetworkSymbols) -> set[sympy.Symbol]:
    """The names of the lecture's backprop notation: weights, data, a, z, f', f'', delta, g and h."""
    out = set(s.params) | set(s.x) | set(s.t)
    for group in (s.a, s.z, s.fp, s.fpp, s.delta):
        for layer in group[1:]:
            out |= set(layer)
    K = s.arch.outputs
    out |= {sympy.Symbol(f"g[{k}]", real=True) for k in range(K)}
    out |= {sympy.Symbol(f"h[{k},{kp}]", real=True) for k in range(K) for kp in range(K)}
    return out


def expand(expr: sympy.Expr, defs: Mapping[sympy.Symbol, sympy.Expr], keep: Iterable[sympy.Symbol] = ()) -> sympy.Expr:
    """Substitute the definitions of every named symbol not in ``keep``, until none is left.

    With ``keep = named_atoms(s)`` an entry is written in the backprop
    notation (a, z, f', f'', delta, g, h and the weights); with ``keep = ()``
    it becomes the explicit closed form in the weights and the pattern.
    """
    keep = set(keep)
    rules = {k: v for k, v in defs.items() if k not in keep}
    for _ in range(len(rules) + 1):  # each pass removes at least one level of names
        if not (expr.free_symbols & rules.keys()):
            return expr
        expr = expr.xreplace(rules)
    raise RuntimeError("the definitions are circular")  # pragma: no cover - definitions() is ordered


def _random_point(s: NetworkSymbols, rng: random.Random) -> dict[sympy.Symbol, mpmath.mpf]:
    """Weights and a pattern drawn uniformly from [-1, 1], as exact 30-bit binary fractions."""
    syms = list(s.params) + list(s.x) + list(s.t)
    return {v: mpmath.mpf(rng.randint(-2**30, 2**30)) / 2**30 for v in syms}


def _evaluate(s: NetworkSymbols, loss: str, point: dict[sympy.Symbol, mpmath.mpf]
              ) -> dict[sympy.Symbol, mpmath.mpf]:
    """Every named quantity of the straight-line program at ``point``, in mpmath."""
    defs = definitions(s, loss)
    args = list(s.params) + list(s.x) + list(s.t)
    fn = lambdify_program(args, defs, list(defs), "mpmath")
    values = dict(point)
    values.update(zip(defs, fn(*[point[a] for a in args]), strict=True))
    return values


def _at(expr: sympy.Expr, values: Mapping[sympy.Symbol, mpmath.mpf]) -> mpmath.mpf:
    syms = sorted(expr.free_symbols, key=str)
    return mpmath.mpf(sympy.lambdify(syms, expr, modules="mpmath")(*[values[v] for v in syms]))


def check(arch: Architecture, loss: str, *, pairs: Iterable[tuple[str, str]] | None = None, seed: int = 0,
          digits: int = 30) -> list[tuple[str, str, str, float]]:
    """Hold the general formula against direct differentiation for ``pairs`` (default: every pair).

    Returns ``(p, q, kind, relative difference)`` per pair, the difference
    relative to ``max(1, |direct|)``.  In exact arithmetic it is zero; at
    ``digits`` digits each side carries a few hundred roundings of relative
    size ``10^(1-digits)`` on terms of order one (weights and data in
    [-1, 1]), so anything above ``10^(5-digits)`` is a wrong formula.

    Examples
    --------
    >>> from hessverify.model.network import Architecture, Layer
    >>> arch = Architecture(1, (Layer(2, "tanh"), Layer(1, "sigmoid")))
    >>> worst = max(r[3] for r in check(arch, "sse"))
    >>> worst < 1e-25
    True
    """
    s = NetworkSymbols(arch)
    names = arch.param_names
    todo = list(pairs) if pairs is not None else [(p, q) for i, p in enumerate(names) for q in names[i:]]
    e = explicit_error(s, loss)
    out = []
    with mpmath.workdps(digits):
        point = _random_point(s, random.Random(seed))
        values = _evaluate(s, loss, point)
        for p, q in todo:
            by_formula = _at(entry(s, p, q), values)
            direct = _at(sympy.diff(e, s.param(p), s.param(q)), point)
            rel = abs(by_formula - direct) / max(mpmath.mpf(1), abs(direct))
            out.append((p, q, kind(arch, p, q), float(rel)))
    return out
