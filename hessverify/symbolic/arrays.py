r"""SymPy arrays that record a straight-line program: the ``xp`` the layer kinds' array forms run on.

Every layer kind writes its maths a second time as array code
(:meth:`hessverify.model.layers.base.LayerKind.xp`), apart from the
primitives the methods differentiate.  :class:`SymbolicNumpy` is an ``xp``
for that code whose arrays (:class:`SymArray`) are NumPy object arrays of
SymPy atoms: a named symbol (a parameter, an input, a target, or an earlier
result) or a constant.  Every array function that computes (arithmetic,
``matmul``, ``einsum``, ``sum``, ``mean``, ``exp``, ``sqrt``) gives each
entry of its result a new name on the :class:`Tape` with a small definition
in the entries it reads, so the network becomes a *straight-line program*
(Griewank and Walther, *Evaluating Derivatives*, 2nd ed. 2008, sec. 2.2):

.. math:: v_i = \varphi_i(v_{j} : j \in \mathrm{args}(i)),\qquad i = 1, 2, \dots

the same form :func:`hessverify.symbolic.expressions.definitions` writes for
dense networks.  Functions that only move entries (``reshape``,
``transpose``, ``concatenate``, slicing and integer indexing, ``zeros``) name
nothing.  A result that is a constant (``0 * w``, the zeros of a padding)
or one of its arguments (``x + 0``) is not named either.

A definition is stored as a :class:`Template`, an expression in positional
slots ``_0, _1, ...``, with the arguments that fill them: the thousands of
entries of one convolution share a handful of templates, so each template is
differentiated (``sympy.diff``) and compiled once.

``max`` is only used for the shift of a softmax, ``exp(s - max s)``, which
does not change its value (:math:`\mathrm{softmax}(s - c) = \mathrm{softmax}(s)`
for any constant ``c``): here it is the constant 0, the shift is left out,
and in 50-digit or exact arithmetic ``exp(s)`` cannot overflow.

Examples
--------
>>> import sympy
>>> tape = Tape()
>>> xp = SymbolicNumpy(tape)
>>> w = xp.symbols("w", (2,))
>>> x = xp.symbols("x", (2,))
>>> y = xp.exp(xp.sum(w * x) / 2)
>>> [f"{n.symbol} = {n.definition}" for n in tape.nodes]
['v1[0] = w[0]*x[0]', 'v1[1] = w[1]*x[1]', 'v2 = v1[0] + v1[1]', 'v3 = v2/2', 'v4 = exp(v3)']
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import sympy

__all__ = ["Node", "SymArray", "SymbolicNumpy", "Tape", "Template", "constant", "slot"]

_SLOTS: list[sympy.Symbol] = []


def slot(i: int) -> sympy.Symbol:
    """The ``i``-th positional slot ``_i`` of a template."""
    while len(_SLOTS) <= i:
        _SLOTS.append(sympy.Symbol(f"_{len(_SLOTS)}", real=True))
    return _SLOTS[i]


def constant(v: Any) -> sympy.Expr:
    """A number as an exact SymPy constant: a float64 is the dyadic rational it is (``Rational(0.1)`` is exact)."""
    if isinstance(v, sympy.Basic):
        return v  # type: ignore[return-value]
    if isinstance(v, (bool, np.bool_)):
        return sympy.Integer(int(v))
    if isinstance(v, (int, np.integer)):
        return sympy.Integer(int(v))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            raise ValueError(f"the symbolic program takes finite numbers, got {v!r}")
        return sympy.Rational(float(v))
    raise TypeError(f"the symbolic program takes numbers, got {type(v).__name__}")


@dataclass(frozen=True, eq=False)
class Template:
    """A small definition in positional slots: ``expr`` in ``_0 .. _{arity-1}``.

    Its first and second derivatives are ``sympy.diff`` of ``expr``,
    computed on first use; ``kinks`` are points of slot 0 where it is not
    twice differentiable (an activation's, from the activation table).
    """

    expr: sympy.Expr
    arity: int
    kinks: tuple[float, ...] = ()

    @cached_property
    def slots(self) -> tuple[sympy.Symbol, ...]:
        return tuple(slot(i) for i in range(self.arity))

    @cached_property
    def grad(self) -> tuple[sympy.Expr, ...]:
        """:math:`\\partial\\varphi/\\partial u_s` for every slot ``s``."""
        return tuple(sympy.diff(self.expr, s) for s in self.slots)

    @cached_property
    def hess(self) -> tuple[tuple[int, int, sympy.Expr], ...]:
        """The nonzero :math:`\\partial^2\\varphi/\\partial u_s \\partial u_t`, ``s <= t``."""
        out = []
        for s, gs in enumerate(self.grad):
            if gs.is_number:
                continue
            present = gs.free_symbols
            for t in range(s, self.arity):
                if self.slots[t] not in present:
                    continue
                h = sympy.diff(gs, self.slots[t])
                if h != 0:
                    out.append((s, t, h))
        return tuple(out)

    @cached_property
    def ops(self) -> int:
        """Roundings one evaluation of the definition or of a derivative may take (for the error bound)."""
        exprs = [self.expr, *self.grad, *(h for _, _, h in self.hess)]
        return 1 + max(int(sympy.count_ops(e)) for e in exprs)

    def at(self, args: Sequence[sympy.Expr]) -> sympy.Expr:
        """The definition with its arguments in the slots."""
        return self.expr.xreplace(dict(zip(self.slots, args, strict=True)))


@dataclass(frozen=True, eq=False)
class Node:
    """One line of the program: ``symbol = template(args)``."""

    symbol: sympy.Symbol
    template: Template
    args: tuple[sympy.Symbol, ...]

    @property
    def definition(self) -> sympy.Expr:
        return self.template.at(self.args)


@dataclass
class Tape:
    """The program recorded so far: its nodes in evaluation order and the templates they share.

    ``prefix`` names the results of the next array function (``v`` and a
    counter by default); :meth:`label` gives an array's entries a name for
    people (``a1[2,3]``: layer 1's output before its activation).
    ``drop_axis`` leaves the leading (pattern) axis out of the names.
    """

    nodes: list[Node] = field(default_factory=list)
    prefix: str = "v"
    drop_axis: bool = False
    labels: dict[sympy.Symbol, str] = field(default_factory=dict)
    _templates: dict[Any, Template] = field(default_factory=dict)
    _count: int = 0

    def template(self, key: Any, build: Callable[..., sympy.Expr], entries: Sequence[sympy.Expr],
                 kinks: tuple[float, ...] = ()) -> Template | sympy.Expr | int:
        """The template of ``build`` on ``entries`` (symbols go to slots, constants stay), cached by its shape.

        Returns a :class:`Template`, a constant (no slot is used), or the
        index of the one argument the result equals.
        """
        consts = tuple(None if isinstance(e, sympy.Symbol) else e for e in entries)
        tkey = (key, consts)
        found = self._templates.get(tkey)
        if found is None:
            fill, n = [], 0
            for c in consts:
                if c is None:
                    fill.append(slot(n))
                    n += 1
                else:
                    fill.append(c)
            expr = sympy.sympify(build(*fill))
            if not expr.free_symbols:
                found = expr
            elif isinstance(expr, sympy.Symbol):
                found = int(expr.name[1:])
            else:
                found = Template(expr, n, kinks)
            self._templates[tkey] = found
        return found

    def begin(self) -> str:
        """A fresh name for the results of one array function."""
        self._count += 1
        return f"{self.prefix}{self._count}"

    def apply(self, name: str, key: Any, build: Callable[..., sympy.Expr], entries: Sequence[sympy.Expr],
              index: tuple[int, ...], kinks: tuple[float, ...] = ()) -> sympy.Expr:
        """One entry of a result: a new named node, a constant, or an argument passed through."""
        t = self.template(key, build, entries, kinks)
        args = [e for e in entries if isinstance(e, sympy.Symbol)]
        if isinstance(t, int):
            return args[t]
        if not isinstance(t, Template):
            return t
        shown = index[1:] if self.drop_axis else index
        sym = sympy.Symbol(f"{name}[{','.join(map(str, shown))}]" if shown else name, real=True)
        self.nodes.append(Node(sym, t, tuple(args)))
        return sym

    def label(self, array: SymArray, name: str) -> None:
        """Name the named entries of ``array`` ``name[i,j]`` for people (the program keeps its own names)."""
        for index in np.ndindex(*array.shape):
            e = array.entries[index]
            if isinstance(e, sympy.Symbol) and e not in self.labels:
                shown = index[1:] if self.drop_axis else index
                self.labels[e] = f"{name}[{','.join(map(str, shown))}]" if shown else name

    @property
    def definitions(self) -> dict[sympy.Symbol, sympy.Expr]:
        """``symbol -> definition`` in evaluation order (as :func:`~hessverify.symbolic.expressions.definitions`)."""
        return {n.symbol: n.definition for n in self.nodes}


def _objects(shape: tuple[int, ...], items: Iterable[Any]) -> np.ndarray:
    out = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=object)
    for i, v in zip(range(out.size), items):
        out[i] = v
    return out.reshape(shape)


class SymArray:
    """An array of SymPy atoms on a tape (module text): NumPy's indexing, shapes and arithmetic operators."""

    __array_ufunc__ = None  # numpy defers to our reflected operators: ndarray - SymArray is ours
    __array_priority__ = 1000

    def __init__(self, tape: Tape, entries: np.ndarray) -> None:
        self.tape = tape
        self.entries = entries

    @property
    def shape(self) -> tuple[int, ...]:
        return self.entries.shape  # type: ignore[no-any-return]

    @property
    def ndim(self) -> int:
        return self.entries.ndim  # type: ignore[no-any-return]

    @property
    def size(self) -> int:
        return self.entries.size  # type: ignore[no-any-return]

    @property
    def T(self) -> SymArray:  # noqa: N802 - NumPy's name
        return SymArray(self.tape, self.entries.T)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: Any) -> SymArray:
        picked = self.entries[index]
        if not isinstance(picked, np.ndarray):
            picked = _objects((), [picked])
        return SymArray(self.tape, picked)

    def reshape(self, *shape: Any) -> SymArray:
        return SymArray(self.tape, self.entries.reshape(*shape))

    def __repr__(self) -> str:
        return f"SymArray({self.entries!r})"

    # arithmetic: one template per operator and pattern of constants
    def _binary(self, key: str, build: Callable[[Any, Any], Any], other: Any, reflected: bool = False) -> SymArray:
        xp = SymbolicNumpy(self.tape)
        a, b = (xp.asarray(other), self) if reflected else (self, xp.asarray(other))
        return xp.map(key, build, a, b)

    def __add__(self, o: Any) -> SymArray:
        return self._binary("add", lambda a, b: a + b, o)

    def __radd__(self, o: Any) -> SymArray:
        return self._binary("add", lambda a, b: a + b, o, True)

    def __sub__(self, o: Any) -> SymArray:
        return self._binary("sub", lambda a, b: a - b, o)

    def __rsub__(self, o: Any) -> SymArray:
        return self._binary("sub", lambda a, b: a - b, o, True)

    def __mul__(self, o: Any) -> SymArray:
        return self._binary("mul", lambda a, b: a * b, o)

    def __rmul__(self, o: Any) -> SymArray:
        return self._binary("mul", lambda a, b: a * b, o, True)

    def __truediv__(self, o: Any) -> SymArray:
        return self._binary("div", lambda a, b: a / b, o)

    def __rtruediv__(self, o: Any) -> SymArray:
        return self._binary("div", lambda a, b: a / b, o, True)

    def __pow__(self, o: Any) -> SymArray:
        return self._binary("pow", lambda a, b: a**b, o)

    def __neg__(self) -> SymArray:
        return SymbolicNumpy(self.tape).map("neg", lambda a: -a, self)

    def __pos__(self) -> SymArray:
        return self


class SymbolicNumpy:
    """The ``xp`` namespace over :class:`SymArray`: exactly what the layer kinds' array forms use (module text)."""

    def __init__(self, tape: Tape) -> None:
        self.tape = tape

    # -- making arrays ---------------------------------------------------------------------------

    def symbols(self, name: str, shape: tuple[int, ...], names: Sequence[str] | None = None) -> SymArray:
        """An array of fresh symbols ``name[i,j]`` (or the given ``names``, row-major)."""
        if names is None:
            names = [f"{name}[{','.join(map(str, i))}]" if i else name for i in np.ndindex(*shape)]
        return SymArray(self.tape, _objects(shape, (sympy.Symbol(n, real=True) for n in names)))

    def asarray(self, a: Any) -> SymArray:
        """``a`` as a :class:`SymArray`: numbers become exact constants."""
        if isinstance(a, SymArray):
            return a
        arr = np.asarray(a) if not isinstance(a, sympy.Basic) else _objects((), [a])
        flat = [constant(v) for v in arr.ravel().tolist()] if arr.dtype != object else \
            [constant(v) for v in arr.ravel()]
        return SymArray(self.tape, _objects(arr.shape, flat))

    def zeros(self, shape: tuple[int, ...] | int) -> SymArray:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return SymArray(self.tape, _objects(shape, itertools.repeat(sympy.S.Zero)))

    # -- moving entries: nothing is named ----------------------------------------------------------

    def reshape(self, a: Any, shape: tuple[int, ...] | int) -> SymArray:
        return SymArray(self.tape, self.asarray(a).entries.reshape(shape))

    def transpose(self, a: Any, axes: Sequence[int] | None = None) -> SymArray:
        return SymArray(self.tape, np.transpose(self.asarray(a).entries, axes))

    def concatenate(self, arrays: Sequence[Any], axis: int = 0) -> SymArray:
        return SymArray(self.tape, np.concatenate([self.asarray(a).entries for a in arrays], axis=axis))

    # -- computing: every entry of the result is named --------------------------------------------

    def map(self, key: str, build: Callable[..., Any], *arrays: SymArray, kinks: tuple[float, ...] = ()) -> SymArray:
        """``build`` entry by entry over the broadcast ``arrays``: one node per entry of the result."""
        parts = np.broadcast_arrays(*[a.entries for a in arrays])
        shape = parts[0].shape
        name = self.tape.begin()
        rows = zip(*[p.ravel().tolist() for p in parts], strict=True) if parts[0].size else iter(())
        out = (self.tape.apply(name, key, build, entries, index, kinks)
               for entries, index in zip(rows, np.ndindex(*shape), strict=False))
        return SymArray(self.tape, _objects(shape, out))

    def exp(self, a: Any) -> SymArray:
        return self.map("exp", sympy.exp, self.asarray(a))

    def sqrt(self, a: Any) -> SymArray:
        return self.map("sqrt", sympy.sqrt, self.asarray(a))

    def apply(self, key: str, f: Callable[[Any], Any], a: Any, kinks: tuple[float, ...] = ()) -> SymArray:
        """A function of one variable entry by entry (an activation from the table's SymPy column)."""
        return self.map(key, f, self.asarray(a), kinks=kinks)

    def _reduce(self, key: str, build: Callable[..., Any], a: SymArray, axis: Any, keepdims: bool) -> SymArray:
        entries = a.entries
        axes = tuple(range(entries.ndim)) if axis is None else \
            tuple(sorted(ax % entries.ndim for ax in ((axis,) if isinstance(axis, int) else axis)))
        kept = [ax for ax in range(entries.ndim) if ax not in axes]
        moved = np.transpose(entries, kept + list(axes))
        out_shape = tuple(entries.shape[ax] for ax in kept)
        rows = moved.reshape(out_shape + (-1,)).reshape(-1, moved.size // max(1, int(np.prod(out_shape))))
        name = self.tape.begin()
        out = [self.tape.apply(name, key, build, row, index) for row, index in
               zip(rows.tolist(), np.ndindex(*out_shape), strict=True)]
        result = _objects(out_shape, out)
        if keepdims:
            result = result.reshape(tuple(1 if ax in axes else n for ax, n in enumerate(entries.shape)))
        return SymArray(self.tape, result)

    def sum(self, a: Any, axis: Any = None, keepdims: bool = False) -> SymArray:
        return self._reduce("sum", lambda *e: sympy.Add(*e), self.asarray(a), axis, keepdims)

    def mean(self, a: Any, axis: Any = None, keepdims: bool = False) -> SymArray:
        a = self.asarray(a)
        axes = range(a.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
        count = int(np.prod([a.shape[ax] for ax in axes]))
        return self._reduce(f"mean{count}", lambda *e: sympy.Add(*e) / count, a, axis, keepdims)

    def max(self, a: Any, axis: Any = None, keepdims: bool = False) -> SymArray:
        """The constant 0 of the reduced shape: only a softmax's shift uses it (module text)."""
        a = self.asarray(a)
        axes = tuple(range(a.ndim)) if axis is None else \
            tuple(ax % a.ndim for ax in ((axis,) if isinstance(axis, int) else axis))
        shape = tuple(1 if ax in axes else n for ax, n in enumerate(a.shape)) if keepdims else \
            tuple(n for ax, n in enumerate(a.shape) if ax not in axes)
        return self.zeros(shape)

    def _dots(self, left: np.ndarray, right: np.ndarray, out_shape: tuple[int, ...]) -> SymArray:
        """``sum_k left[r, k] right[r, k]`` for every row ``r``; products with a zero constant left out."""
        name = self.tape.begin()
        out = []
        zero = sympy.S.Zero
        for lrow, rrow, index in zip(left.tolist(), right.tolist(), np.ndindex(*out_shape), strict=True):
            entries = []
            for u, w in zip(lrow, rrow, strict=True):
                if u is not zero and w is not zero:
                    entries += (u, w)
            out.append(self.tape.apply(name, "dot", _dot, entries, index))
        return SymArray(self.tape, _objects(out_shape, out))

    def matmul(self, a: Any, b: Any) -> SymArray:
        """``a @ b`` over the last two axes, the leading ones broadcast (NumPy's ``matmul`` for ``ndim >= 2``)."""
        A, B = self.asarray(a).entries, self.asarray(b).entries
        if A.ndim < 2 or B.ndim < 2:
            raise ValueError("matmul here takes arrays of two or more axes")
        i, j, k = A.shape[-2], A.shape[-1], B.shape[-1]
        if B.shape[-2] != j:
            raise ValueError(f"matmul: shapes {A.shape} and {B.shape} do not fit")
        batch = np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        left = np.broadcast_to(A[..., :, None, :], batch + (i, k, j))
        right = np.broadcast_to(np.swapaxes(B, -1, -2)[..., None, :, :], batch + (i, k, j))
        return self._dots(left.reshape(-1, j), right.reshape(-1, j), batch + (i, k))

    def einsum(self, spec: str, a: Any, b: Any) -> SymArray:
        """Two-operand ``einsum`` (an ellipsis allowed), every letter of the output once, the others summed."""
        A, B = self.asarray(a).entries, self.asarray(b).entries
        inputs, _, output = spec.replace(" ", "").partition("->")
        left, right = inputs.split(",")
        free = iter(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in spec)
        ell: list[str] = []

        def expand(letters: str, ndim: int) -> str:
            if "..." not in letters:
                return letters
            n = ndim - (len(letters) - 3)
            while len(ell) < n:
                ell.append(next(free))
            return letters.replace("...", "".join(ell[len(ell) - n:]))

        left, right = expand(left, A.ndim), expand(right, B.ndim)
        output = output.replace("...", "".join(ell))
        sizes: dict[str, int] = {}
        for letters, arr in ((left, A), (right, B)):
            for c, n in zip(letters, arr.shape, strict=True):
                if sizes.setdefault(c, n) != n and n != 1 and sizes[c] != 1:
                    raise ValueError(f"einsum {spec}: {c} has sizes {sizes[c]} and {n}")
                sizes[c] = max(sizes[c], n)
        summed = sorted(set(left + right) - set(output), key=(left + right).index)
        order = list(output) + summed

        def view(letters: str, arr: np.ndarray) -> np.ndarray:
            present = [c for c in order if c in letters]
            moved = np.transpose(arr, [letters.index(c) for c in present])
            shaped = np.reshape(moved, [moved.shape[present.index(c)] if c in letters else 1 for c in order])
            return np.broadcast_to(shaped, [sizes[c] for c in order])

        out_shape = tuple(sizes[c] for c in output)
        width = int(np.prod([sizes[c] for c in summed], dtype=np.int64))
        return self._dots(view(left, A).reshape(-1, width), view(right, B).reshape(-1, width), out_shape)


def _dot(*e: Any) -> sympy.Expr:
    return sympy.Add(*[e[i] * e[i + 1] for i in range(0, len(e), 2)])
