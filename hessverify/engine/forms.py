"""The forms a Hessian result takes, as types: full matrix, diagonal, layer blocks, Hessian-vector products.

Each method returns one form (the registry's ``form``); everything that
compares, draws or stores a result asks the form, never a string:

* :meth:`HessianForm.entries`: the entries it computes, with where they sit in
  the ``(W, W)`` Hessian (for naming the worst one by its parameters);
* :meth:`HessianForm.dense`: the ``(W, W)`` matrix, ``fill`` where the form
  computes nothing (0 for an approximation, NaN for an exact partial result);
* :meth:`HessianForm.known`: which entries of the ``(W, W)`` matrix it computes;
* :meth:`HessianForm.symmetry_error`: ``max |A - A^T|`` over what it computes;
* :meth:`HessianForm.of_matrix`: the same form cut from a full Hessian (a
  reference's), so a partial result is held to the matching entries.

Every form checks its shape against the architecture and says what is wrong
in one line (``ValueError``).

Examples
--------
>>> import numpy as np
>>> from hessverify.model.network import Architecture, Layer
>>> arch = Architecture(1, (Layer(1, "identity"),))
>>> H = np.array([[2.0, 1.0], [1.0, 3.0]])
>>> DiagonalHessian.of_matrix(H, arch).value.tolist()
[2.0, 3.0]
>>> DiagonalHessian(np.array([2.0, 3.0])).dense(arch, fill=np.nan).tolist()
[[2.0, nan], [nan, 3.0]]
>>> FullHessian(H).entries(arch)[0].tolist()
[2.0, 1.0, 1.0, 3.0]
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from hessverify.base.typing import FloatArray, IntArray
from hessverify.model.network import Architecture

__all__ = [
    "FORMS", "BlockDiagonalHessian", "DiagonalHessian", "FullHessian", "HessianForm", "HessianVectorProduct",
    "form_named",
]

Entries = tuple[FloatArray, IntArray, IntArray]


class HessianForm:
    """A result of some form; subclasses say which entries of ``H`` it holds and how to read them."""

    kind: ClassVar[str]
    """The form's short name, as the registry and ``results.json`` write it."""
    covers: ClassVar[str]
    """Which entries of the Hessian it holds, in words."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind})"

    # -- what each form defines --------------------------------------------------

    def positions(self, arch: Architecture) -> tuple[IntArray, IntArray]:
        """Row and column in ``H`` of every entry, in the order of :meth:`values`."""
        raise NotImplementedError

    def values(self, arch: Architecture) -> FloatArray:
        """The entries, flat, after checking the shape against ``arch``."""
        raise NotImplementedError

    @classmethod
    def of_matrix(cls, H: FloatArray, arch: Architecture) -> HessianForm:
        """The same form cut from a full ``(W, W)`` matrix."""
        raise NotImplementedError

    # -- shared by all ---------------------------------------------------------------

    def entries(self, arch: Architecture) -> Entries:
        """``(values, rows, cols)``: the entries it computes and where they sit in ``H``."""
        values = self.values(arch)
        rows, cols = self.positions(arch)
        return values, rows, cols

    def dense(self, arch: Architecture, fill: float = 0.0) -> FloatArray:
        """The ``(W, W)`` matrix, ``fill`` where the form computes nothing."""
        values, rows, cols = self.entries(arch)
        W = arch.n_params
        out = np.full((W, W), fill, dtype=np.float64)
        out[rows, cols] = values
        return out

    def known(self, arch: Architecture) -> np.ndarray:
        """Boolean ``(W, W)`` mask of the entries it computes."""
        rows, cols = self.positions(arch)
        mask = np.zeros((arch.n_params, arch.n_params), dtype=bool)
        mask[rows, cols] = True
        return mask

    def symmetry_error(self) -> float:
        """``max |A - A^T|`` over the square parts it holds (0 for a diagonal)."""
        parts = [np.asarray(p, dtype=np.float64) for p in self._square_parts()]
        with np.errstate(invalid="ignore", over="ignore"):
            return max((float(np.max(np.abs(p - p.T))) for p in parts if p.size), default=0.0)

    def _square_parts(self) -> list[FloatArray]:
        return []


def _as_float(value: Any) -> FloatArray:
    return np.asarray(value, dtype=np.float64)


class FullHessian(HessianForm):
    """The whole ``(W, W)`` matrix."""

    kind = "matrix"
    covers = "all"

    def values(self, arch: Architecture) -> FloatArray:
        M = _as_float(self.value)
        W = arch.n_params
        if M.shape != (W, W):
            raise ValueError(f"expected a ({W}, {W}) matrix, got {M.shape}")
        return M.reshape(-1)

    def positions(self, arch: Architecture) -> tuple[IntArray, IntArray]:
        rows, cols = np.indices((arch.n_params, arch.n_params)).reshape(2, -1)
        return rows, cols

    def dense(self, arch: Architecture, fill: float = 0.0) -> FloatArray:
        return self.values(arch).reshape(arch.n_params, arch.n_params)

    @classmethod
    def of_matrix(cls, H: FloatArray, arch: Architecture) -> FullHessian:
        return cls(_as_float(H))

    def _square_parts(self) -> list[FloatArray]:
        return [self.value]


class DiagonalHessian(HessianForm):
    """The diagonal, ``(W,)`` in the public order."""

    kind = "vector"
    covers = "diagonal"

    def values(self, arch: Architecture) -> FloatArray:
        v = _as_float(self.value).reshape(-1)
        if v.shape != (arch.n_params,):
            raise ValueError(f"a diagonal needs {arch.n_params} entries, got {v.shape}")
        return v

    def positions(self, arch: Architecture) -> tuple[IntArray, IntArray]:
        idx = np.arange(arch.n_params)
        return idx, idx

    @classmethod
    def of_matrix(cls, H: FloatArray, arch: Architecture) -> DiagonalHessian:
        return cls(np.diag(_as_float(H)).copy())


class BlockDiagonalHessian(HessianForm):
    """One square block per layer, ``(size_l, size_l)`` in the public order within each, in layer order."""

    kind = "blocks"
    covers = "diagonal blocks"

    def values(self, arch: Architecture) -> FloatArray:
        blocks = list(self.value)
        if len(blocks) != arch.depth:
            raise ValueError(f"expected {arch.depth} layer blocks, got {len(blocks)}")
        out = []
        for blk, B in zip(arch.blocks, blocks, strict=True):
            B = _as_float(B)
            if B.shape != (blk.size, blk.size):
                raise ValueError(f"layer {blk.layer} block should be ({blk.size}, {blk.size}), got {B.shape}")
            out.append(B.reshape(-1))
        return np.concatenate(out)

    def positions(self, arch: Architecture) -> tuple[IntArray, IntArray]:
        rows, cols = [], []
        for blk in arch.blocks:
            r, c = np.meshgrid(np.arange(blk.slice.start, blk.slice.stop), np.arange(blk.slice.start, blk.slice.stop),
                               indexing="ij")
            rows.append(r.reshape(-1))
            cols.append(c.reshape(-1))
        return np.concatenate(rows), np.concatenate(cols)

    @classmethod
    def of_matrix(cls, H: FloatArray, arch: Architecture) -> BlockDiagonalHessian:
        H = _as_float(H)
        return cls([H[blk.slice, blk.slice].copy() for blk in arch.blocks])

    def _square_parts(self) -> list[FloatArray]:
        return list(self.value)


class HessianVectorProduct(HessianForm):
    """Products ``H d`` for directions ``d``: ``value`` is ``(P, W)``, row ``p`` the product with ``directions[p]``.

    Without ``directions`` they are the unit vectors ``e_0 .. e_{W-1}``, so
    the products are the columns of ``H`` and every entry has a place in it.
    For other directions an entry ``(H d_p)_i`` is placed at row ``i`` and
    column ``p``, and :meth:`dense` is not defined (no matrix is known).
    """

    kind = "hvp"
    covers = "H v"

    def __init__(self, value: Any, directions: FloatArray | None = None) -> None:
        super().__init__(np.atleast_2d(_as_float(value)))
        self.directions = None if directions is None else np.atleast_2d(_as_float(directions))

    def values(self, arch: Architecture) -> FloatArray:
        P = self.value
        W = arch.n_params
        expected = (W, W) if self.directions is None else (self.directions.shape[0], W)
        if P.shape != expected:
            raise ValueError(f"expected products of shape {expected}, got {P.shape}")
        return P.T.reshape(-1)  # row i of H, then the next: (H d_p)_i at (i, p)

    def positions(self, arch: Architecture) -> tuple[IntArray, IntArray]:
        P = arch.n_params if self.directions is None else self.directions.shape[0]
        rows, cols = np.indices((arch.n_params, P)).reshape(2, -1)
        return rows, cols

    def dense(self, arch: Architecture, fill: float = 0.0) -> FloatArray:
        if self.directions is not None:
            raise ValueError("products with arbitrary directions do not give the Hessian's entries; "
                             "compare them with HessianVectorProduct.of_matrix(H, arch, directions)")
        return self.values(arch).reshape(arch.n_params, arch.n_params)

    def known(self, arch: Architecture) -> np.ndarray:
        self.dense(arch)
        return np.ones((arch.n_params, arch.n_params), dtype=bool)

    @classmethod
    def of_matrix(cls, H: FloatArray, arch: Architecture, directions: FloatArray | None = None
                  ) -> HessianVectorProduct:
        H = _as_float(H)
        if directions is None:
            return cls(H.T.copy())
        D = np.atleast_2d(_as_float(directions))
        return cls(D @ H.T, D)

    def _square_parts(self) -> list[FloatArray]:
        return [self.value.T] if self.directions is None else []


FORMS: dict[str, type[HessianForm]] = {f.kind: f for f in (FullHessian, DiagonalHessian, BlockDiagonalHessian,
                                                             HessianVectorProduct)}
"""Every form by its short name."""


def form_named(kind: str | type[HessianForm]) -> type[HessianForm]:
    """The form type for ``"matrix"``, ``"vector"``, ``"blocks"`` or ``"hvp"`` (a form type is returned as is)."""
    if isinstance(kind, type) and issubclass(kind, HessianForm):
        return kind
    try:
        return FORMS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown result form {kind!r}; choose one of {', '.join(FORMS)}") from None
