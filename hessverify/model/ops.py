r"""The primitives every layer kind is made of, each with its first- and second-order rules.

A network of any layer kind (:mod:`hessverify.model.layers`) is expanded into a
graph of a few primitives: contractions (:class:`Einsum`: dense and convolution
maps, attention's products), elementwise functions (:class:`Unary`: the
activations, a square, a reciprocal square root), sums and products with
broadcasting (:class:`Add`, :class:`Mul`), fixed linear index maps
(:class:`Gather`: reshapes, transposes, the patches of a convolution, padding,
concatenation, an embedding's rows), reductions (:class:`Sum`), a softmax
(:class:`Softmax`) and the loss (:class:`Loss`).  Each primitive says, for
``y = f(x_1, ..., x_k)``:

* :meth:`Op.forward`: ``y``;
* :meth:`Op.jvp`: ``dy = sum_i J_i dx_i`` for a stack of ``P`` directions (forward mode);
* :meth:`Op.vjp`: ``g_i = J_i^T g_y`` for a stack of ``P`` cotangents (reverse mode);
* :meth:`Op.second`: the derivative of :meth:`vjp` along ``dx`` with ``g_y`` held,
  :math:`h_i = \sum_j (\sum_r g_{y,r} \partial^2 y_r / \partial x_i \partial x_j)\, dx_j`,
  what the reverse pass of Pearlmutter's R-operator adds at each step
  (Pearlmutter 1994, eq. 4.3);
* :meth:`Op.second_forward`: the second directional derivative
  :math:`\sum_{ij} \partial^2 y / \partial x_i \partial x_j\, a_i b_j` (forward over
  forward, hyper-dual numbers);
* :meth:`Op.diag_back`: the Becker-LeCun step, the diagonal of the curvature
  carried back with the off-diagonal terms dropped (Becker and LeCun 1988).

Arrays.  A node is *batched* (a leading pattern axis ``N``: data and
everything computed from it) or not (a parameter tensor, a batch statistic).
Directions and cotangents carry one more leading axis ``P``.  ``None`` stands
for a zero tangent.  A rule returns ``None`` for an input it does not reach
(a token id, a constant).

Complex values.  Every rule uses only arithmetic and analytic functions, so a
complex step through the forward pass and the gradient is exact to rounding
(:mod:`hessverify.references.complex_step`); the softmax shifts by the real
part's maximum.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray

__all__ = ["Add", "Einsum", "Gather", "Loss", "Mul", "Op", "Scale", "Softmax", "Sum", "Unary", "lift", "reduce_to"]

Arr = Any  # a NumPy array (float64, complex128 or object)
Tangent = Arr | None


def lift(t: Arr, batched: bool, out_batched: bool, out_ndim: int | None = None) -> Arr:
    """A ``(P, ...)`` tangent of an unbatched input aligned with a batched result ``(P, N, ...)`` of ``out_ndim``
    per-node axes: ``(P, 1, 1, ..., *shape)`` (NumPy broadcasting after the direction axis)."""
    if batched:
        return t
    missing = 0 if out_ndim is None else out_ndim - (t.ndim - 1)
    lead = (1,) * ((1 if out_batched else 0) + missing)
    return t.reshape(t.shape[:1] + lead + t.shape[1:]) if lead else t


def reduce_to(g: Arr, shape: tuple[int, ...], batched: bool, out_batched: bool) -> Arr:
    """Sum a ``(P, ...)`` cotangent of a broadcast result back to an input of per-node ``shape``.

    ``shape`` excludes the pattern axis; an unbatched input of a batched
    result also sums over the patterns.
    """
    if out_batched and not batched:
        g = g.sum(axis=1)
    lead = 2 if batched and out_batched else 1  # P (and N) stay
    body = g.shape[lead:]
    extra = len(body) - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(lead, lead + extra)))
        body = g.shape[lead:]
    axes = tuple(lead + i for i, (have, want) in enumerate(zip(body, shape)) if want == 1 and have != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


@dataclass(frozen=True)
class Op:
    """A primitive ``y = f(x_1, ..., x_k)`` (module text).  ``batched[i]``: whether input ``i`` has the pattern axis."""

    batched: tuple[bool, ...] = ()

    @property
    def out_batched(self) -> bool:
        return any(self.batched)

    def forward(self, *xs: Arr) -> Arr:
        raise NotImplementedError

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Tangent]) -> Tangent:
        raise NotImplementedError

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Tangent]:
        raise NotImplementedError

    def second(self, xs: Sequence[Arr], y: Arr, gy: Arr, dxs: Sequence[Tangent]) -> list[Tangent]:
        """Zero for a map that is linear in all its inputs jointly."""
        return [None] * len(xs)

    def vjp_wanted(self, xs: Sequence[Arr], y: Arr, gy: Arr, wanted: Sequence[bool]) -> list[Tangent]:
        """:meth:`vjp` for the inputs ``wanted`` only (``None`` for the others): a reverse pass that stops
        early needs no cotangent of an input below it.  A primitive whose inputs cost apart says so here."""
        return [g if w else None for g, w in zip(self.vjp(xs, y, gy), wanted)]

    def second_wanted(self, xs: Sequence[Arr], y: Arr, gy: Arr, dxs: Sequence[Tangent],
                      wanted: Sequence[bool]) -> list[Tangent]:
        """:meth:`second` for the inputs ``wanted`` only, as :meth:`vjp_wanted`."""
        return [s if w else None for s, w in zip(self.second(xs, y, gy, dxs), wanted)]

    def second_forward(self, xs: Sequence[Arr], y: Arr, a: Sequence[Tangent], b: Sequence[Tangent]) -> Tangent:
        return None

    def diag_back(self, xs: Sequence[Arr], y: Arr, dy: Arr, gy: Arr) -> list[Arr | None]:
        """``D_x = sum_r D_{y,r} (dy_r/dx)^2 + diag(sum_r g_r d^2 y_r / dx^2)`` per input (one cotangent, no ``P``)."""
        raise NotImplementedError

    linear: bool = field(default=False, init=False)
    """Whether the map is linear in its inputs jointly (its second derivative is zero)."""


def _add_tangents(*parts: Tangent) -> Tangent:
    out = None
    for p in parts:
        if p is not None:
            out = p if out is None else out + p
    return out


# -- contractions ------------------------------------------------------------------------------------


def contract(spec: str, a: Arr, b: Arr) -> Arr:
    """``einsum(spec, a, b)`` as one matrix product (BLAS), whatever the batch of directions.

    Indices of one operand alone that the result drops are summed first; indices of
    both that the result keeps (the patterns of two batched operands, attention's
    heads) are a batch of products (``matmul``); the rest is one ``tensordot``.
    NumPy's own ``einsum`` would take a stack of small products for a leading
    direction axis, several times slower.
    """
    ins, out = spec.split("->")
    sa, sb = ins.split(",")
    for letters, name in ((sa, "a"), (sb, "b")):
        alone = [c for c in letters if c not in out and c not in (sb if name == "a" else sa)]
        if alone:
            axes = tuple(letters.index(c) for c in alone)
            if name == "a":
                a, sa = a.sum(axis=axes), "".join(c for c in sa if c not in alone)
            else:
                b, sb = b.sum(axis=axes), "".join(c for c in sb if c not in alone)
    shared = [c for c in sa if c in sb]
    batch = [c for c in shared if c in out]
    summed = [c for c in shared if c not in out]
    free_a = [c for c in sa if c not in sb]
    free_b = [c for c in sb if c not in sa]
    size = dict(zip(sa, a.shape)) | dict(zip(sb, b.shape))
    if not batch:
        r = np.tensordot(a, b, axes=([sa.index(c) for c in summed], [sb.index(c) for c in summed]))
        letters = free_a + free_b
    else:
        A = np.transpose(a, [sa.index(c) for c in batch + free_a + summed])
        B = np.transpose(b, [sb.index(c) for c in batch + summed + free_b])
        nb = [size[c] for c in batch]
        fa = int(np.prod([size[c] for c in free_a], dtype=np.int64))
        fb = int(np.prod([size[c] for c in free_b], dtype=np.int64))
        s = int(np.prod([size[c] for c in summed], dtype=np.int64))
        r = np.matmul(A.reshape(nb + [fa, s]), B.reshape(nb + [s, fb]))
        r = r.reshape(nb + [size[c] for c in free_a] + [size[c] for c in free_b])
        letters = batch + free_a + free_b
    return np.transpose(r, [letters.index(c) for c in out])



@dataclass(frozen=True)
class Einsum(Op):
    """``y = einsum(spec, x_1, x_2)``: bilinear in its two inputs (a dense map, a convolution, attention's products).

    ``spec`` is written per pattern with ``n`` for the pattern axis on the
    batched operands (``"ni,oi->no"``: a dense map of a batched input by an
    unbatched weight).  Every index of an operand appears in the result or the
    other operand, so each vector-Jacobian product is one contraction.
    """

    spec: str = ""

    def _parts(self) -> tuple[str, str, str]:
        ins, out = self.spec.split("->")
        a, b = ins.split(",")
        return a, b, out

    def forward(self, x1: Arr, x2: Arr) -> Arr:
        return contract(self.spec, x1, x2)

    def _P(self, spec: str, tangent_operands: tuple[int, ...]) -> str:
        """The spec with a direction axis on the operands given (0, 1: inputs; 2: the result) and the result."""
        a, b, out = spec.split("->")[0].split(",") + [spec.split("->")[1]]
        ops = [a, b, out]
        for i in tangent_operands:
            ops[i] = "P" + ops[i]
        return f"{ops[0]},{ops[1]}->P{out}"

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Tangent]) -> Tangent:
        x1, x2 = xs
        d1, d2 = dxs
        parts = []
        if d1 is not None:
            parts.append(contract(self._P(self.spec, (0,)), d1, x2))
        if d2 is not None:
            parts.append(contract(self._P(self.spec, (1,)), x1, d2))
        return _add_tangents(*parts)

    def _back(self, which: int, gy: Arr, other: Arr, other_is_tangent: bool) -> Arr:
        a, b, out = self._parts()
        target = a if which == 0 else b
        other_spec = b if which == 0 else a
        spec = f"P{out},{'P' if other_is_tangent else ''}{other_spec}->P{target}"
        return contract(spec, gy, other)

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Tangent]:
        return self.vjp_wanted(xs, y, gy, (True, True))

    def vjp_wanted(self, xs: Sequence[Arr], y: Arr, gy: Arr, wanted: Sequence[bool]) -> list[Tangent]:
        x1, x2 = xs
        return [self._back(0, gy, x2, False) if wanted[0] else None,
                self._back(1, gy, x1, False) if wanted[1] else None]

    def second(self, xs: Sequence[Arr], y: Arr, gy: Arr, dxs: Sequence[Tangent]) -> list[Tangent]:
        return self.second_wanted(xs, y, gy, dxs, (True, True))

    def second_wanted(self, xs: Sequence[Arr], y: Arr, gy: Arr, dxs: Sequence[Tangent],
                      wanted: Sequence[bool]) -> list[Tangent]:
        d1, d2 = dxs
        return [None if d2 is None or not wanted[0] else self._back(0, gy, d2, True),
                None if d1 is None or not wanted[1] else self._back(1, gy, d1, True)]

    def second_forward(self, xs: Sequence[Arr], y: Arr, a: Sequence[Tangent], b: Sequence[Tangent]) -> Tangent:
        spec = self._P(self.spec, (0, 1))
        parts = []
        if a[0] is not None and b[1] is not None:
            parts.append(contract(spec, a[0], b[1]))
        if b[0] is not None and a[1] is not None:
            parts.append(contract(spec, b[0], a[1]))
        return _add_tangents(*parts)

    def diag_back(self, xs: Sequence[Arr], y: Arr, dy: Arr, gy: Arr) -> list[Arr | None]:
        # y_r = sum x1 x2: (dy_r / dx1_j)^2 = x2^2 along the contraction; no diagonal second derivative
        x1, x2 = xs
        a, b, out = self._parts()
        return [contract(f"{out},{b}->{a}", dy, x2 * x2), contract(f"{out},{a}->{b}", dy, x1 * x1)]


# -- elementwise ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unary(Op):
    """``y = f(x)`` elementwise, with ``f'``, ``f''`` (an activation of the table, a square, ``(v + eps)^(-1/2)``).

    ``f``, ``df``, ``d2f`` are the table's columns (:mod:`hessverify.model.activations`)
    or written with the primitive (:func:`square`, :func:`rsqrt`).
    """

    name: str = ""
    f: Callable[[Arr], Arr] = field(default=None, repr=False)  # type: ignore[assignment]
    df: Callable[[Arr], Arr] = field(default=None, repr=False)  # type: ignore[assignment]
    d2f: Callable[[Arr], Arr] = field(default=None, repr=False)  # type: ignore[assignment]
    # for the rounding model: f''', the magnitudes of the terms f, f', f'' add (the table's `terms`), and a
    # bound on the derivatives (the Taylor remainder of an input error; None: 2 |f'''| at the point)
    d3f: Callable[[Arr], Arr] | None = field(default=None, repr=False)
    terms: Callable[[Arr], tuple[Arr, Arr, Arr]] | None = field(default=None, repr=False)
    deriv_max: float | None = None

    def forward(self, x: Arr) -> Arr:
        return self.f(x)

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Tangent]) -> Tangent:
        return None if dxs[0] is None else self.df(xs[0]) * dxs[0]

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Tangent]:
        return [self.df(xs[0]) * gy]

    def second(self, xs: Sequence[Arr], y: Arr, gy: Arr, dxs: Sequence[Tangent]) -> list[Tangent]:
        return [None if dxs[0] is None else gy * self.d2f(xs[0]) * dxs[0]]

    def second_forward(self, xs: Sequence[Arr], y: Arr, a: Sequence[Tangent], b: Sequence[Tangent]) -> Tangent:
        if a[0] is None or b[0] is None:
            return None
        return self.d2f(xs[0]) * a[0] * b[0]

    def diag_back(self, xs: Sequence[Arr], y: Arr, dy: Arr, gy: Arr) -> list[Arr | None]:
        d1 = self.df(xs[0])
        return [dy * d1 * d1 + gy * self.d2f(xs[0])]


def square(batched: bool = True) -> Unary:
    """``x^2`` (its terms: one product; ``f' = 2x`` and ``f'' = 2`` exact)."""
    return Unary((batched,), "square", lambda x: x * x, lambda x: 2.0 * x, lambda x: 2.0 + 0.0 * x,
                 d3f=lambda x: 0.0 * x, terms=lambda x: (np.abs(x * x), 0.0 * np.abs(x), 0.0 * np.abs(x)),
                 deriv_max=2.0)


def rsqrt(eps: float, batched: bool = True) -> Unary:
    """``(v + eps)^(-1/2)``, the normalisation of LayerNorm and BatchNorm (``v`` a variance, ``v >= 0``)."""
    return Unary((batched,), f"rsqrt(+{eps:g})", lambda v: (v + eps) ** -0.5, lambda v: -0.5 * (v + eps) ** -1.5,
                 lambda v: 0.75 * (v + eps) ** -2.5, d3f=lambda v: -1.875 * (v + eps) ** -3.5,
                 terms=lambda v: (np.abs((v + eps) ** -0.5), np.abs(0.5 * (v + eps) ** -1.5),
                                  np.abs(0.75 * (v + eps) ** -2.5)))


@dataclass(frozen=True)
class Scale(Op):
    """``y = c x`` for a constant ``c``."""

    c: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "linear", True)

    def forward(self, x: Arr) -> Arr:
        return self.c * x

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Tangent]) -> Tangent:
        return None if dxs[0] is None else self.c * dxs[0]

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Tangent]:
        return [self.c * gy]

    def diag_back(self, xs: Sequence[Arr], y: Arr, dy: Arr, gy: Arr) -> list[Arr | None]:
        return [self.c * self.c * dy]


@dataclass(frozen=True)
class Add(Op):
    """``y = x_1 + x_2`` with NumPy broadcasting (a bias, a residual connection, a centring)."""

    shapes: tuple[tuple[int, ...], ...] = ()  # per-node shapes of the inputs (no pattern axis)

    def __post_init__(self) -> None:
        object.__setattr__(self, "linear", True)

    def _align(self, x: Arr, i: int) -> Arr:
        return x[None] if self.out_batched and not self.batched[i] else x

    def forward(self, x1: Arr, x2: Arr) -> Arr:
        return self._align(x1, 0) + self._align(x2, 1)

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Tangent]) -> Tangent:
        ndim = max(len(s) for s in self.shapes)
        return _add_tangents(*(None if d is None else lift(d, self.batched[i], self.out_batched, ndim)
                               for i, d in enumerate(dxs)))

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Tangent]:
        return [reduce_to(gy, self.shapes[i], self.batched[i], self.out_batched) for i in range(2)]

    def diag_back(self, xs: Sequence[Arr], y: Arr, dy: Arr, gy: Arr) -> list[Arr | None]:
        return [reduce_to(dy[None], self.shapes[i], self.batched[i], self.out_batched)[0] for i in range(2)]


@dataclass(frozen=True)
class Mul(Op):
    """``y = x_1 x_2`` elementwise with NumPy broadcasting (a gain, LayerNorm's affine weight, a normalisation)."""

    shapes: tuple[tuple[int, ...], ...] = ()

    def _align(self, x: Arr, i: int) -> Arr:
        return x[None] if self.out_batched and not self.batched[i] else x

    def _lift(self, d: Arr, i: int) -> Arr:
        return lift(d, self.batched[i], self.out_batched, max(len(s) for s in self.shapes))

    def forward(self, x1: Arr, x2: Arr) -> Arr:
        return self._align(x1, 0) * self._align(x2, 1)

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Tangent]) -> Tangent:
        x1, x2 = self._align(xs[0], 0), self._align(xs[1], 1)
        d1, d2 = dxs
        return _add_tangents(None if d1 is None else self._lift(d1, 0) * x2,
                             None if d2 is None else x1 * self._lift(d2, 1))

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Tangent]:
        x1, x2 = self._align(xs[0], 0), self._align(xs[1], 1)
        return [reduce_to(gy * x2, self.shapes[0], self.batched[0], self.out_batched),
                reduce_to(gy * x1, self.shapes[1], self.batched[1], self.out_batched)]

    def second(self, xs: Sequence[Arr], y: Arr, gy: Arr, dxs: Sequence[Tangent]) -> list[Tangent]:
        d1, d2 = dxs
        return [None if d2 is None else reduce_to(gy * self._lift(d2, 1), self.shapes[0], self.batched[0],
                                                  self.out_batched),
                None if d1 is None else reduce_to(gy * self._lift(d1, 0), self.shapes[1], self.batched[1],
                                                  self.out_batched)]

    def second_forward(self, xs: Sequence[Arr], y: Arr, a: Sequence[Tangent], b: Sequence[Tangent]) -> Tangent:
        return _add_tangents(None if a[0] is None or b[1] is None else self._lift(a[0], 0) * self._lift(b[1], 1),
                             None if b[0] is None or a[1] is None else self._lift(b[0], 0) * self._lift(a[1], 1))

    def diag_back(self, xs: Sequence[Arr], y: Arr, dy: Arr, gy: Arr) -> list[Arr | None]:
        x1, x2 = self._align(xs[0], 0), self._align(xs[1], 1)
        return [reduce_to((dy * x2 * x2)[None], self.shapes[0], self.batched[0], self.out_batched)[0],
                reduce_to((dy * x1 * x1)[None], self.shapes[1], self.batched[1], self.out_batched)[0]]


# -- linear maps that only move entries --------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Gather(Op):
    """``y = x[index]`` per pattern, ``-1`` giving 0: reshapes, transposes, a convolution's patches, padding,
    concatenation (of several inputs, flattened side by side), pooling windows.

    ``index`` has the result's per-node shape and indexes the inputs' entries
    flattened per pattern and concatenated.  With ``rows``, the input is an
    unbatched table and ``rows[n]`` (per pattern, the result's shape) picks its
    entries (an embedding).
    """

    sizes: tuple[int, ...] = ()  # flattened per-node size of each input
    index: FloatArray = field(default=None, repr=False)  # type: ignore[assignment]
    rows: FloatArray | None = field(default=None, repr=False)  # per-pattern indices into an unbatched input

    @property
    def out_batched(self) -> bool:
        return any(self.batched) or self.rows is not None

    def _flat(self, xs: Sequence[Arr], lead: int) -> Arr:
        """The inputs flattened per pattern (and direction) and side by side (one input: a view, no copy)."""
        parts = [x.reshape(x.shape[:lead] + (-1,)) for x in xs]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "linear", True)
        if self.rows is None and len(set(self.batched)) > 1:
            raise ValueError("a gather takes inputs that are all batched or all not")
        if self.rows is None:
            total = sum(self.sizes)
            idx = np.asarray(self.index).reshape(-1)
            padded = bool(np.any(idx >= total))  # an entry of padding: 0
            # the index with padding pointing anywhere, and the mask that zeroes it
            object.__setattr__(self, "_take", np.where(idx >= total, 0, idx).reshape(np.shape(self.index)))
            object.__setattr__(self, "_mask", (idx < total).reshape(np.shape(self.index)) if padded else None)
            object.__setattr__(self, "_permutation", (not padded) and np.unique(idx).size == idx.size)
            object.__setattr__(self, "_transpose", None)
        # a reshape (a flatten, a conv's output and kernel regrouped): every entry in place, so every rule is a
        # reshape too, with no copy of a contiguous array
        identity = (self.rows is None and len(self.sizes) == 1 and np.size(self.index) == self.sizes[0]
                    and bool(np.array_equal(np.asarray(self.index).reshape(-1), np.arange(self.sizes[0]))))
        object.__setattr__(self, "_identity", identity)

    def _reshaped(self, x: Arr, lead: int) -> Arr:
        """An input of the identity index as the result: ``lead`` leading axes kept, the rest reshaped."""
        return x.reshape(x.shape[:lead] + np.shape(self.index))

    def _gather(self, flat: Arr, lead: int) -> Arr:
        out = np.take(flat, self._take, axis=lead)
        return out * self._mask if self._mask is not None else out

    def _scatter_matrix(self) -> Any:
        """``S^T`` as a sparse matrix, ``(inputs, outputs)``: a cotangent of the inputs is ``S^T`` times the outputs'."""
        if self._transpose is None:  # type: ignore[has-type]
            from scipy.sparse import csr_matrix

            idx = np.asarray(self.index).reshape(-1)
            keep = idx < sum(self.sizes)
            rows, cols = idx[keep], np.flatnonzero(keep)
            matrix = csr_matrix((np.ones(rows.size), (rows, cols)), shape=(sum(self.sizes), idx.size))
            object.__setattr__(self, "_transpose", matrix)
        return self._transpose  # type: ignore[has-type]

    def forward(self, *xs: Arr) -> Arr:
        if self.rows is not None:
            flat = np.append(xs[0].reshape(-1), 0.0)
            return flat[self.rows]
        lead = 1 if self.out_batched else 0
        if self._identity:
            return self._reshaped(xs[0], lead)
        return self._gather(self._flat(xs, lead), lead)

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Tangent]) -> Tangent:
        if all(d is None for d in dxs):
            return None
        first = next(d for d in dxs if d is not None)
        P = first.shape[0]
        if self._identity:
            return self._reshaped(first, 2 if self.out_batched else 1)
        full = [np.zeros((P,) + np.shape(x), dtype=np.result_type(x, first)) if d is None else d
                for x, d in zip(xs, dxs)]
        if self.rows is not None:
            flat = np.concatenate([full[0].reshape(P, -1), np.zeros((P, 1), dtype=full[0].dtype)], axis=1)
            return flat[:, self.rows]
        lead = 2 if self.out_batched else 1
        return self._gather(self._flat(full, lead), lead)

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Tangent]:
        P = gy.shape[0]
        total = sum(self.sizes)
        if self.rows is not None:
            out = np.zeros((P, total + 1), dtype=gy.dtype)
            idx = np.broadcast_to(self.rows, gy.shape[1:]).reshape(-1)
            np.add.at(out, (slice(None), idx), gy.reshape(P, -1))
            return [out[:, :total].reshape((P,) + np.shape(xs[0]))]
        lead = (P, gy.shape[1]) if self.out_batched else (P,)
        if self._identity:
            return [gy.reshape((P,) + np.shape(xs[0]))]
        g = gy.reshape((-1, int(np.size(self.index))))
        if self._permutation:  # a reshape, a transpose: every input read once
            idx = self.index.reshape(-1)
            out = (np.empty if idx.size == total else np.zeros)((g.shape[0], total), dtype=gy.dtype)
            out[:, idx] = g  # inputs no output reads (a slice, a stride) keep 0
        else:  # repeats (a convolution's overlapping patches) add up: one sparse product
            out = np.asarray((self._scatter_matrix() @ g.T).T)
        out = out.reshape(lead + (total,))
        parts, start = [], 0
        for x, size in zip(xs, self.sizes):
            parts.append(out[..., start:start + size].reshape((P,) + np.shape(x)))
            start += size
        return parts

    def diag_back(self, xs: Sequence[Arr], y: Arr, dy: Arr, gy: Arr) -> list[Arr | None]:
        return [g[0] for g in self.vjp(xs, y, dy[None])]


@dataclass(frozen=True)
class Sum(Op):
    """``y = sum of x over axes`` (per-node axes; ``over_patterns`` also sums the pattern axis), kept as size-1 axes."""

    axes: tuple[int, ...] = ()
    over_patterns: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "linear", True)

    @property
    def out_batched(self) -> bool:
        return self.batched[0] and not self.over_patterns

    def _axes(self, lead: int) -> tuple[int, ...]:
        axes = tuple(lead + a for a in self.axes)
        return ((lead - 1,) if self.over_patterns else ()) + axes

    def forward(self, x: Arr) -> Arr:
        out = x.sum(axis=self._axes(1), keepdims=True)
        return out[0] if self.over_patterns else out

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Tangent]) -> Tangent:
        if dxs[0] is None:
            return None
        out = dxs[0].sum(axis=self._axes(2), keepdims=True)
        return out[:, 0] if self.over_patterns else out

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Tangent]:
        g = gy[:, None] if self.over_patterns else gy
        return [np.broadcast_to(g, (gy.shape[0],) + np.shape(xs[0])).copy()]

    def diag_back(self, xs: Sequence[Arr], y: Arr, dy: Arr, gy: Arr) -> list[Arr | None]:
        return [self.vjp(xs, y, dy[None])[0][0]]


# -- vector-valued nonlinearities ---------------------------------------------------------------------


@dataclass(frozen=True)
class Softmax(Op):
    """``y = softmax(x)`` along the last axis (attention's weights)."""

    def forward(self, x: Arr) -> Arr:
        shift = np.max(np.real(x), axis=-1, keepdims=True)  # real part: the complex step must stay analytic
        e = np.exp(x - shift)
        return e / e.sum(axis=-1, keepdims=True)

    @staticmethod
    def _dot(a: Arr, b: Arr) -> Arr:
        return (a * b).sum(axis=-1, keepdims=True)

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Tangent]) -> Tangent:
        d = dxs[0]
        return None if d is None else y * (d - self._dot(y, d))

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Tangent]:
        return [y * (gy - self._dot(y, gy))]

    def second(self, xs: Sequence[Arr], y: Arr, gy: Arr, dxs: Sequence[Tangent]) -> list[Tangent]:
        # vjp = y g - y (y.g); along dx: ydot g - ydot (y.g) - y (ydot.g), ydot = y (dx - y.dx)
        d = dxs[0]
        if d is None:
            return [None]
        ydot = y * (d - self._dot(y, d))
        return [ydot * gy - ydot * self._dot(y, gy) - y * self._dot(ydot, gy)]

    def second_forward(self, xs: Sequence[Arr], y: Arr, a: Sequence[Tangent], b: Sequence[Tangent]) -> Tangent:
        # D[y (a - y.a)][b] = yb (a - y.a) - y (yb.a), yb = y (b - y.b)
        if a[0] is None or b[0] is None:
            return None
        yb = y * (b[0] - self._dot(y, b[0]))
        return yb * (a[0] - self._dot(y, a[0])) - y * self._dot(yb, a[0])

    def diag_back(self, xs: Sequence[Arr], y: Arr, dy: Arr, gy: Arr) -> list[Arr | None]:
        # J_rj = y_r (delta_rj - y_j); d2 y_r / dx_j^2 = y_r (delta_rj - y_j)(1 - 2 y_j) - ... (with the j = r terms)
        K = y.shape[-1]
        eye = np.eye(K)
        J = y[..., :, None] * (eye - y[..., None, :])  # [..., r, j]
        first = np.einsum("...r,...rj->...j", dy, J * J)
        # d2 y_r / dx_j^2 = J_rj (delta_rj - y_j) - y_r J_jj
        Jjj = np.einsum("...jj->...j", J)
        second = np.einsum("...r,...rj->...j", gy, J * (eye - y[..., None, :])) - self._dot(gy, y) * Jjj
        return [first + second]


# -- the loss -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loss(Op):
    """``e_n = loss(y_n, t_n)`` per pattern from the loss table (:mod:`hessverify.model.losses`), ``(N, K) -> (N,)``.

    Its derivatives in ``y`` are the table's ``grad`` and ``hess`` columns.
    """

    name: str = ""
    targets: FloatArray = field(default=None, repr=False)  # type: ignore[assignment]
    options: tuple[tuple[str, float], ...] = ()  # the loss's settings (Huber's delta)

    def _row(self) -> Any:
        from hessverify.model.losses import get_loss

        return get_loss(self.name, **dict(self.options))

    def forward(self, y: Arr) -> Arr:
        return self._row().value(y, self.targets)

    def jvp(self, xs: Sequence[Arr], y: Arr, dxs: Sequence[Tangent]) -> Tangent:
        d = dxs[0]
        return None if d is None else np.einsum("nk,pnk->pn", self._row().grad(xs[0], self.targets), d)

    def vjp(self, xs: Sequence[Arr], y: Arr, gy: Arr) -> list[Tangent]:
        return [gy[:, :, None] * self._row().grad(xs[0], self.targets)[None]]

    def second(self, xs: Sequence[Arr], y: Arr, gy: Arr, dxs: Sequence[Tangent]) -> list[Tangent]:
        d = dxs[0]
        if d is None:
            return [None]
        H = self._row().hess(xs[0], self.targets)
        return [gy[:, :, None] * np.einsum("nkj,pnj->pnk", H, d)]

    def second_forward(self, xs: Sequence[Arr], y: Arr, a: Sequence[Tangent], b: Sequence[Tangent]) -> Tangent:
        if a[0] is None or b[0] is None:
            return None
        H = self._row().hess(xs[0], self.targets)
        return np.einsum("pnk,nkj,pnj->pn", a[0], H, b[0])

    def diag_back(self, xs: Sequence[Arr], y: Arr, dy: Arr, gy: Arr) -> list[Arr | None]:
        # the Gauss-Newton part has no square of a Jacobian here: d e / d y_k is the row itself
        g = self._row().grad(xs[0], self.targets)
        H = self._row().hess(xs[0], self.targets)
        return [dy[:, None] * g * g + gy[:, None] * np.einsum("nkk->nk", H)]
