"""Where an error lives: the difference of two Hessians described in words.

Someone debugging their backprop first needs to know *where* it is wrong, not
only *how much*.  :func:`localise` takes any pair of ``(W, W)`` matrices (the
method's ``A`` and the reference's ``R``) and the :class:`~hessverify.Problem`
that names their rows, and says

* which blocks hold the error: tensor pairs such as ``W2 x W1`` (one layer's
  weights against another's) inside layer pairs, with each block's share of
  the squared error ``sum (A - R)^2``;
* the largest entries, by parameter name, with both values;
* its *shape*, one of :data:`SHAPES`, tried in this order:

  ``nonfinite``
      the method returned NaN or inf somewhere;
  ``none``
      no entry differs by more than the threshold;
  ``scaled``
      everything scaled by a constant factor: ``A = c R`` with ``c != 1``
      (the fit is least squares, ``c = <A, R> / <R, R>``), with a hint when
      ``c`` is ``N``, ``1/N``, ``2``, ``1/2`` or ``-1``;
  ``asymmetry``
      the antisymmetric part ``(E - E^T) / 2`` of ``E = A - R`` carries at
      least :data:`ASYMMETRY_SHARE` of ``||E||_F``: one triangle is wrong, its
      mirror right;
  ``diagonal``
      only diagonal entries are over the threshold;
  ``block``
      every entry over the threshold lies in one tensor pair (or, failing
      that, one layer pair) and its mirror, and fills at least
      :data:`BLOCK_FILL` of its live (not exactly zero) entries;
  ``row_column``
      every entry over the threshold lies in the rows and columns of a few
      parameters (a parameter whose every second derivative is wrong);
  ``cross_layer``
      every entry over the threshold lies in layer pairs of two different
      layers, where the second-order backprop has its extra term (a later
      weight times an earlier layer's output: Bishop 1992, eq. 16); the
      within-layer blocks agree;
  ``within_layer``
      every entry over the threshold lies in the diagonal layer blocks, of
      more than one layer;
  ``scattered``
      none of the above; the words still name the layer pairs that hold the
      error and those that agree.

An entry is *over the threshold* when ``|A_ij - R_ij| > bound_ij``; pass the
comparison's entrywise bound (:func:`hessverify.engine.compare.bound_for`), or let
the threshold default to ``rtol * max|R|``.  Entries the reference cannot
vouch for (``R`` not finite, or an infinite bound) are left out, as
:func:`hessverify.engine.compare.compare` leaves them unchecked.

Examples
--------
>>> import numpy as np, hessverify
>>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
>>> H = hessverify.hessian(case)
>>> A = H.copy(); A[6:, :6] *= 1.5; A[:6, 6:] *= 1.5    # layer 2 x layer 1 wrong
>>> loc = localise(case, A, H)
>>> loc.shape
'block'
>>> "W2 x W1" in loc.words
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.model.problem import Problem

__all__ = ["ASYMMETRY_SHARE", "BLOCK_FILL", "SHAPES", "SHAPE_PHRASES", "BlockShare", "Layout", "Localisation", "TopEntry",
           "localise"]

SHAPES = ("nonfinite", "none", "scaled", "asymmetry", "diagonal", "block", "row_column", "cross_layer", "within_layer",
          "scattered")
"""The shapes :func:`localise` can name, in the order they are tried."""

SHAPE_PHRASES: dict[str, str] = {
    "nonfinite": "non-finite entries",
    "none": "no entry over the threshold",
    "scaled": "everything scaled by a constant factor",
    "asymmetry": "an asymmetry",
    "diagonal": "only the diagonal",
    "block": "one whole block",
    "row_column": "a row and column",
    "cross_layer": "only the cross-layer blocks",
    "within_layer": "only the within-layer blocks",
    "scattered": "scattered entries",
}
"""The words that open a description, one per shape (tests look for them)."""

ASYMMETRY_SHARE = 0.25
"""Antisymmetric share of ``||A - R||_F`` from which the error is called an asymmetry.

A symmetric error has share 0; one wrong triangle (``E_ij != 0``, ``E_ji = 0``)
has share ``1/sqrt(2) ~ 0.71``; a quarter sits safely between."""

BLOCK_FILL = 0.5
"""Fraction of a block's live entries that must be over the threshold for ``block``.

Live: over the threshold, or above it in ``|A|`` or ``|R|``; an exact zero
that both sides agree on cannot show a bug, so it does not count."""

SCALE_RESIDUAL = 1e-3
"""``A - c R`` must be this small against ``A - R`` (Frobenius) for ``scaled``."""

DEFAULT_RTOL = 1e-8
"""Threshold ``rtol * max|R|`` when no entrywise bound is given."""


@dataclass(frozen=True)
class BlockShare:
    """A block pair (with its mirror) and its share of the squared error."""

    rows: str  # a tensor such as "W2", or "layer 2"
    cols: str
    share: float  # of sum (A - R)^2, in [0, 1]
    over: int  # entries over the threshold in the block and its mirror
    size: int  # entries in the block and its mirror

    @property
    def name(self) -> str:
        return f"{self.rows} x {self.cols}"


@dataclass(frozen=True)
class TopEntry:
    row: str
    col: str
    value: float
    reference_value: float
    abs_error: float


@dataclass(frozen=True)
class Localisation:
    """Where ``A - R`` lives: its shape, blocks, largest entries, and the words."""

    shape: str
    words: str
    over: int  # entries over the threshold
    blocks: tuple[BlockShare, ...] = ()  # tensor pairs, largest share first
    layer_blocks: tuple[BlockShare, ...] = ()  # layer pairs, largest share first
    top: tuple[TopEntry, ...] = ()
    factor: float | None = None  # for "scaled" (and a block scaled by a constant)
    params: tuple[str, ...] = field(default=())  # for "row_column": whose rows and columns
    head: str = ""  # the shape and what it says, without the counts, blocks and entries that follow in words

    def by_block(self, limit: int = 4) -> str:
        """The tensor blocks that hold the error with their shares, largest first: ``"W2 x b1 (100%)"``."""
        return _describe_blocks(list(self.blocks), limit)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = [asdict(b) | {"name": b.name} for b in self.blocks]
        d["layer_blocks"] = [asdict(b) | {"name": b.name} for b in self.layer_blocks]
        return d


# -- groups of parameters ----------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """What :func:`localise` reads of a problem: its parameters' names, their tensors and layers as contiguous
    ``(name, slice)`` groups, and the pattern count (for the hint at a factor ``N``; None where unknown).

    :meth:`of` reads it off a :class:`Problem`; a model that is not one (an ``nn.Module`` judged by module
    references) gives its own (:meth:`of_names`).
    """

    id: str
    param_names: tuple[str, ...]
    tensors: tuple[tuple[str, slice], ...]
    layers: tuple[tuple[str, slice], ...]
    n_patterns: int | None = None

    @classmethod
    def of(cls, problem: Problem) -> Layout:
        return cls(problem.id, tuple(problem.param_names), tuple(_groups(problem, "tensor")),
                   tuple(_groups(problem, "layer")), problem.n_patterns)

    @classmethod
    def of_names(cls, model: str, param_names: Sequence[str], groups: Sequence[int]) -> Layout:
        """Entries named ``tensor[i,j]``, tensors read off the names; ``groups[p]``: the module (the layer) of
        entry ``p``, contiguous, named by its tensors' common prefix (``0.weight`` and ``0.bias``: module ``0``)."""
        names = tuple(param_names)
        tensor_of = [_tensor_name(n) for n in names]
        return cls(model, names, tuple(_runs(tensor_of)),
                   tuple((_module_name(tensor_of[sl]), sl) for _, sl in _runs(list(groups))))

    @property
    def n_params(self) -> int:
        return len(self.param_names)


def _runs(keys: Sequence[Any]) -> list[tuple[Any, slice]]:
    """Maximal runs of equal consecutive keys, as ``(key, slice)``."""
    out: list[tuple[Any, slice]] = []
    for p, key in enumerate(keys):
        if out and out[-1][0] == key:
            out[-1] = (key, slice(out[-1][1].start, p + 1))
        else:
            out.append((key, slice(p, p + 1)))
    return out


def _module_name(tensors: Sequence[str]) -> str:
    """The module that owns these tensors: their common prefix up to a dot (``0`` of ``0.weight``, ``0.bias``)."""
    prefix = tensors[0].rsplit(".", 1)[0] if "." in tensors[0] else tensors[0]
    return prefix if all(t == prefix or t.startswith(prefix + ".") for t in tensors) else tensors[0]


def _tensor_name(entry: str) -> str:
    """``c.weight`` of ``c.weight[1,2]``; a name with no index is its own tensor."""
    return entry[:entry.rindex("[")] if entry.endswith("]") and "[" in entry else entry


def _groups(problem: Problem, level: str) -> list[tuple[str, slice]]:
    """Contiguous parameter groups: tensors (``W1``, ``b1``, ...) or layers."""
    if level == "layer":
        return [(f"layer {blk.layer}", blk.slice) for blk in problem.architecture.blocks]
    # every parameter tensor, a layer kind's (``gamma2``, ``Win3``, ...) as a dense layer's ``W``/``b``
    return [(t.label, t.slice) for t in problem.architecture.tensors]


LISTED_PAIRS = 4096
"""Most block pairs with no entry over the threshold that :func:`_shares` lists (the largest shares); every
pair with one is listed.  A network of up to 90 tensors has fewer pairs, so its list is complete."""

NAMED = 24
"""Most layer pairs one sentence names; the rest are counted (a deep network has millions of pairs)."""

_CHUNK_FLOATS = 2**22


def _shares(E2: FloatArray, over: np.ndarray, groups: list[tuple[str, slice]]) -> list[BlockShare]:
    """Each unordered group pair's share of ``sum E^2``, largest first (see :data:`LISTED_PAIRS`).

    The sums over all group pairs are taken a few groups of rows at a time
    (``E^2`` plus its mirror, times the sparse 0/1 matrix of group
    membership on both sides), so a deep network's ``G^2`` pairs cost
    ``O(W^2)`` array work and no Python loop over pairs.
    """
    from scipy.sparse import csr_matrix

    total = float(E2.sum())
    W = E2.shape[0]
    starts = np.array([s.start for _, s in groups])
    sizes = np.array([s.stop - s.start for _, s in groups])
    # which group each parameter is in, as a 0/1 matrix: sums over groups are products with it
    # (a group is a slice of the flat vector; a parameter in no group, as a kind's tensor the groups do not name,
    # belongs to none)
    rows = np.concatenate([np.arange(s.start, s.stop) for _, s in groups]) if groups else np.empty(0, dtype=np.intp)
    member = csr_matrix((np.ones(rows.size), (rows, np.repeat(np.arange(len(groups)), sizes))), shape=(W, len(groups)))
    found: list[tuple[np.ndarray, ...]] = []
    quiet: tuple[np.ndarray, ...] = (np.empty(0, dtype=np.intp),) * 2 + (np.empty(0),)
    ga = 0
    while ga < len(groups):
        gb = ga + 1  # at least one group of rows; more while the chunk stays small
        while gb < len(groups) and (groups[gb][1].stop - starts[ga]) * W <= _CHUNK_FLOATS:
            gb += 1
        r0, r1 = starts[ga], groups[gb - 1][1].stop
        rows_in = member[r0:r1, ga:gb].T
        mass = np.asarray(rows_in @ ((E2[r0:r1] + E2[:, r0:r1].T) @ member))
        n_over = np.rint(rows_in @ ((over[r0:r1].astype(np.float64) + over[:, r0:r1].T) @ member)).astype(np.int64)
        rows = np.arange(ga, gb)
        mass[rows - ga, rows] /= 2  # a diagonal block is its own mirror: counted twice above
        n_over[rows - ga, rows] //= 2
        a, b = np.nonzero(np.arange(len(groups))[None, :] <= rows[:, None])  # b <= a
        a, m, o = a + ga, mass[a, b], n_over[a, b]
        hot = o > 0
        found.append((a[hot], b[hot], m[hot], o[hot]))
        cold = ~hot & (m > 0)
        qa, qb, qm = (np.concatenate([quiet[0], a[cold]]), np.concatenate([quiet[1], b[cold]]),
                      np.concatenate([quiet[2], m[cold]]))
        if qm.size > LISTED_PAIRS:  # keep the largest
            top = np.argpartition(-qm, LISTED_PAIRS)[:LISTED_PAIRS]
            top.sort()
            qa, qb, qm = qa[top], qb[top], qm[top]
        quiet = (qa, qb, qm)
        ga = gb
    found.append((quiet[0], quiet[1], quiet[2], np.zeros(quiet[0].size, dtype=np.int64)))
    a, b, m, o = (np.concatenate(parts) for parts in zip(*found, strict=True))
    # summed block by block, the shares can overshoot 1 by a rounding
    share = np.minimum(1.0, m / total) if total > 0 else np.zeros_like(m)
    order = np.lexsort((b, a, -o, -share))  # largest share, then most entries over, then the order of the groups
    size = sizes[a] * sizes[b] * np.where(a == b, 1, 2)
    return [BlockShare(groups[a[k]][0], groups[b[k]][0], float(share[k]), int(o[k]), int(size[k])) for k in order]


def _named(names: list[str], count: int | None = None) -> str:
    """``a, b, c`` with at most :data:`NAMED` of ``count`` names (default: all of ``names``); the rest counted."""
    count = len(names) if count is None else count
    return ", ".join(names[:NAMED]) + (f" and {count - NAMED} more" if count > NAMED else "")


def _group_index(n: int, groups: list[tuple[str, slice]]) -> np.ndarray:
    out = np.full(n, -1, dtype=np.int64)  # groups cover every parameter (see _groups); -1 would say one is left out
    for k, (_, s) in enumerate(groups):
        out[s] = k
    return out


# -- words ----------------------------------------------------------------------------


def _g(x: float) -> str:
    return f"{x:.6g}"


def _factor_hint(c: float, n_patterns: int | None) -> str:
    """Name a suspicious factor: the usual slips that scale a whole Hessian."""
    candidates = [(-1.0, "a sign error?"), (2.0, "a missing factor 1/2, the one of the sum-of-squares loss?"),
                  (0.5, "an extra factor 1/2, the one of the sum-of-squares loss?")]
    if n_patterns is not None and n_patterns > 1:
        candidates += [(float(n_patterns), f"N = {n_patterns} patterns: a sum where the loss takes the mean?"),
                       (1.0 / n_patterns, f"1/N with N = {n_patterns} patterns: a mean where the loss takes the sum?")]
    for value, hint in candidates:
        if abs(c - value) <= 1e-6 * abs(value):
            return f" ({hint})"
    return ""


def _top_entries(A: FloatArray, R: FloatArray, absE: FloatArray, names: tuple[str, ...], k: int,
                 symmetric: bool) -> tuple[TopEntry, ...]:
    order = np.argsort(-absE, axis=None, kind="stable")
    out: list[TopEntry] = []
    seen: set[tuple[int, int]] = set()
    for flat in order:
        i, j = (int(x) for x in np.unravel_index(int(flat), absE.shape))
        if absE[i, j] == 0 or len(out) >= k:
            break
        if symmetric and (j, i) in seen:  # the mirror says nothing new
            continue
        seen.add((i, j))
        out.append(TopEntry(names[i], names[j], float(A[i, j]), float(R[i, j]), float(absE[i, j])))
    return tuple(out)


def _describe_top(top: tuple[TopEntry, ...]) -> str:
    parts = [f"{t.row} x {t.col}: {_g(t.value)} against {_g(t.reference_value)} (|error| {t.abs_error:.2e})"
             for t in top]
    return "Largest: " + "; ".join(parts) + "."


def _describe_blocks(blocks: list[BlockShare], limit: int = 4) -> str:
    shown, acc = [], 0.0
    for b in blocks[:limit]:
        shown.append(f"{b.name} ({100 * b.share:.0f}%)")
        acc += b.share
        if acc >= 0.9:
            break
    return ", ".join(shown)


# -- the classifier -------------------------------------------------------------------------


def localise(problem: Problem | Layout, A: FloatArray, R: FloatArray, bound: FloatArray | float | None = None, *,
             rtol: float = DEFAULT_RTOL, top: int = 5) -> Localisation:
    """Say where ``A - R`` lives, in blocks, entries and a shape (see the module text).

    Parameters
    ----------
    problem:
        Names the rows and columns (:attr:`Problem.param_names`) and the
        layer blocks; or a :class:`Layout` that does.
    A, R:
        The method's and the reference's ``(W, W)`` matrices.
    bound:
        Entrywise threshold (array or scalar); default ``rtol * max|R|``.
    top:
        How many of the largest entries to name.
    """
    layout = problem if isinstance(problem, Layout) else Layout.of(problem)
    A = np.asarray(A, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    W = layout.n_params
    if A.shape != (W, W) or R.shape != (W, W):
        raise ValueError(f"localise needs two ({W}, {W}) matrices for {layout.id}, got {A.shape} and {R.shape}")
    names = layout.param_names
    tensors = list(layout.tensors)
    layers = list(layout.layers)

    bad = ~np.isfinite(A)
    if bad.any():
        idx = np.argwhere(bad)
        where = ", ".join(f"{names[i]} x {names[j]}" for i, j in idx[:top])
        more = f" and {len(idx) - top} more" if len(idx) > top else ""
        words = f"{SHAPE_PHRASES['nonfinite']}: {len(idx)} entries are NaN or inf ({where}{more})"
        return Localisation("nonfinite", words + ".", int(len(idx)), head=words)

    # Entries the reference cannot vouch for (NaN or inf there, or an infinite bound: an fd step across a
    # kink) are not checked by hessverify.compare, so they carry no error here either.
    unchecked = ~np.isfinite(R)
    if bound is not None and np.ndim(bound):
        unchecked |= np.isinf(np.asarray(bound))
    if unchecked.any():
        R = np.where(unchecked, A, R)
    E = A - R
    absE = np.abs(E)
    if bound is None:
        thr: FloatArray | float = rtol * float(np.max(np.abs(R), initial=0.0)) + np.finfo(np.float64).tiny
    else:
        thr = np.asarray(bound, dtype=np.float64) if np.ndim(bound) else float(bound)  # type: ignore[arg-type]
        if np.ndim(thr):
            thr = np.where(unchecked, np.inf, thr)
    over = absE > thr
    n_over = int(over.sum())
    if n_over == 0:
        words = f"{SHAPE_PHRASES['none']}: the largest |error| is {float(absE.max(initial=0.0)):.2e}"
        return Localisation("none", words + ".", 0, head=words)

    E2 = E * E
    tshares = _shares(E2, over, tensors)
    lshares = _shares(E2, over, layers)
    norm_E = float(np.sqrt(E2.sum()))
    antisym = float(np.linalg.norm((E - E.T) / 2.0))
    symmetric_error = antisym < ASYMMETRY_SHARE * norm_E
    top_entries = _top_entries(A, R, absE, names, top, symmetric_error)
    tail = f" {n_over} of {W * W} entries over the threshold; by block: {_describe_blocks(tshares)}. " + \
        _describe_top(top_entries)

    def result(shape: str, head: str, **kw: Any) -> Localisation:
        return Localisation(shape, f"{SHAPE_PHRASES[shape]}: {head}." + tail, n_over, tuple(tshares),
                            tuple(lshares), top_entries, head=f"{SHAPE_PHRASES[shape]}: {head}", **kw)

    # scaled: A = c R everywhere R is not negligible (the whole matrix, not one part)
    rr = float(np.sum(R * R))
    if rr > 0:
        c = float(np.sum(A * R) / rr)
        resid = A - c * R
        fits = bool(np.all(np.abs(resid) <= max(1.0, abs(c)) * thr)) or \
            float(np.linalg.norm(resid)) <= SCALE_RESIDUAL * norm_E
        covered = np.abs(R) > thr
        if fits and c != 1.0 and covered.any() and over[covered].mean() >= 0.5:
            return result("scaled", f"A = {_g(c)} x R{_factor_hint(c, layout.n_patterns)}", factor=c)

    if not symmetric_error:
        # one triangle is off: name the block whose mirror disagrees with it most
        D = np.abs(E - E.T)
        i, j = (int(x) for x in np.unravel_index(int(np.argmax(D)), D.shape))
        wrong = (i, j) if absE[i, j] >= absE[j, i] else (j, i)
        return result("asymmetry", _asym_head(names, tensors, _group_index(W, tensors), E, D, over, thr, wrong))

    if not np.any(over & ~np.eye(W, dtype=bool)):
        diag = np.flatnonzero(np.diag(over))
        where = sorted({tensors[g][0] for g in _group_index(W, tensors)[diag]},
                       key=lambda n: [t[0] for t in tensors].index(n))
        return result("diagonal", f"{len(diag)} diagonal entries, in {', '.join(where)}; no off-diagonal "
                      "entry is over the threshold")

    for level, groups, shares in (("tensor", tensors, tshares), ("layer", layers, lshares)):
        if len(groups) < 2:
            continue  # one group is the whole matrix: "one whole block" would say nothing
        touched = [b for b in shares if b.over]
        if len(touched) == 1 and touched[0].over >= BLOCK_FILL * _live(touched[0], groups, A, R, over, thr):
            b = touched[0]
            mirror = "" if b.rows == b.cols else f" and its mirror {b.cols} x {b.rows}"
            inside = ""
            if level == "tensor":
                lay = [s for s in lshares if s.over]
                inside = f", inside {lay[0].name}" if len(lay) == 1 else ""
            factor = _block_factor(A, R, groups, b)
            scaled = f"; the block is the reference's times {_g(factor)}" if factor is not None else ""
            return result("block", f"{b.name}{mirror}{inside} ({b.over} of {b.size} entries over the threshold"
                          f"{scaled})", factor=factor)

    params = _row_column(over, W)
    if params is not None:
        who = [names[k] for k in params]
        return result("row_column", f"the rows and columns of {', '.join(who)}: every entry over the threshold "
                      f"has {'this parameter' if len(who) == 1 else 'one of these parameters'} as row or column",
                      params=tuple(who))

    # which layer pairs (Bishop's within-layer and cross-layer terms) hold the error, and which agree
    wrong = [b for b in lshares if b.over]
    names_wrong = [b.name for b in wrong]
    depth = len(layers)
    wrong_set = set(names_wrong)
    clean: list[str] = []
    for i, (b, _) in enumerate(layers):  # the first NAMED + 1 pairs that agree; the others are only counted
        clean += [name for c, _ in layers[: i + 1] if (name := f"{b} x {c}") not in wrong_set]
        if len(clean) > NAMED:
            break
    agree = (f"; layer pairs {_named(clean, depth * (depth + 1) // 2 - len(wrong_set))} agree" if clean
             else "; no layer pair is free of it")
    if depth >= 2 and all(b.rows != b.cols for b in wrong):
        return result("cross_layer", f"every entry over the threshold is in a layer pair of two different layers "
                      f"({_named(names_wrong)}), where a later weight meets an earlier layer's output{agree}")
    if len(wrong) > 1 and all(b.rows == b.cols for b in wrong):
        return result("within_layer", f"every entry over the threshold is in a layer's own block "
                      f"({_named(names_wrong)}){agree}")
    return result("scattered", f"no simple pattern; over the threshold in {len([b for b in tshares if b.over])} "
                  f"tensor blocks, in layer pairs {_named(names_wrong)}{agree}")


def _asym_head(names: tuple[str, ...], tensors: list[tuple[str, slice]], group_of: np.ndarray, E: FloatArray,
               D: FloatArray, over: np.ndarray, thr: FloatArray | float,
               wrong: tuple[int, int]) -> str:
    """Words for an asymmetry: which block is off while its mirror is right."""
    thr_t = np.transpose(thr) if np.ndim(thr) else thr
    pairs = int(np.sum(np.triu(D > np.asarray(thr) + thr_t, k=1)))
    # the wrong triangle: where over-threshold entries sit without their mirror
    lone = over & ~over.T
    mass: dict[tuple[int, int], int] = {}
    for i, j in np.argwhere(lone if lone.any() else over):
        key = (int(group_of[i]), int(group_of[j]))
        mass[key] = mass.get(key, 0) + 1
    gr, gc = max(mass, key=lambda k: mass[k])
    row, col = tensors[gr][0], tensors[gc][0]
    i, j = wrong
    mirror = f"its mirror {col} x {row} agrees" if lone.any() else f"its mirror {col} x {row} differs by other amounts"
    if row == col:
        mirror = "the mirrored entries of the same block agree" if lone.any() else \
            "the mirrored entries differ by other amounts"
    return (f"A is not symmetric ({pairs} mirrored pairs disagree by more than the threshold, "
            f"largest entry of |(A - A^T) - (R - R^T)| {float(D.max()):.2e}); the error is in block {row} x {col} "
            f"while {mirror}; worst: {names[i]} x {names[j]} is off by {float(E[i, j]):.2e}, "
            f"{names[j]} x {names[i]} by {float(E[j, i]):.2e}")


def _live(b: BlockShare, groups: list[tuple[str, slice]], A: FloatArray, R: FloatArray, over: np.ndarray,
          thr: FloatArray | float) -> int:
    """Entries of a block pair that could be wrong: over the threshold, or non-negligible in A or R.

    A block that is mostly exact zeros (at a saddle with zero weights, say)
    and wrong in every other entry is still one whole block wrong.
    """
    s = dict(groups)
    live = over | (np.abs(R) > thr) | (np.abs(A) > thr)
    sa, sb = s[b.rows], s[b.cols]
    n = int(live[sa, sb].sum())
    if sa != sb:
        n += int(live[sb, sa].sum())
    return max(n, 1)


def _block_factor(A: FloatArray, R: FloatArray, groups: list[tuple[str, slice]], b: BlockShare) -> float | None:
    """If the block is the reference's block times a constant, that constant."""
    s = dict(groups)
    sa, sb = s[b.rows], s[b.cols]
    Ab, Rb = A[sa, sb], R[sa, sb]
    rr = float(np.sum(Rb * Rb))
    if rr == 0:
        return None
    c = float(np.sum(Ab * Rb) / rr)
    resid = float(np.linalg.norm(Ab - c * Rb))
    err = float(np.linalg.norm(Ab - Rb))
    return c if err > 0 and resid <= SCALE_RESIDUAL * err else None


def _row_column(over: np.ndarray, W: int) -> list[int] | None:
    """The few parameters whose rows and columns hold every entry over the threshold, if any."""
    sym = over | over.T
    counts = sym.sum(axis=1)
    top = int(counts.max())
    chosen = [int(k) for k in np.flatnonzero(counts >= max(2, top // 2))]
    if not chosen or len(chosen) > max(1, W // 4):
        return None
    inside = np.zeros(W, dtype=bool)
    inside[chosen] = True
    covered = inside[:, None] | inside[None, :]
    if np.any(sym & ~covered):
        return None
    if not np.any(sym & ~(inside[:, None] & inside[None, :])):
        return None  # everything within the chosen set: a block, not a cross
    return chosen
