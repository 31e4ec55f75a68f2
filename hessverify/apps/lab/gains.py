r"""Gains in the lab: a case's network with gain layers, and the gain/weight-scale redundancy.

A dense layer with ``gain = true`` (:mod:`hessverify.model.layers.dense`)
computes ``z_j = f(c_j a_j)`` with ``a_j = w_j . x + b_j``: the net input
``x W^T + b`` times the gain, then the activation.  Its parameters are ``W``,
``b``, ``c`` in that order, so the model's methods and references compute
``E``, its gradient and its Hessian over ``(w, b, c)`` like any other
parameters.

* :func:`with_gains` turns a case into its adaptive-gain network: a gain on
  every unit of the chosen activations (the logistic ones, Nawi et al.), the
  case's own point with every new gain 1 (:class:`GainMap` maps the points);
* :func:`gain_directions` and :func:`gain_redundancy`: the redundancy of gain
  and weight scale (Thimm, Moerland & Fiesler 1996, Neural Computation 8(2),
  451-460).

**The redundancy.**  For one gain unit ``j`` and ``s > 0``, the map
``phi_s: (w_j, b_j, c_j) -> (s w_j, s b_j, c_j / s)`` (every other parameter
kept) leaves ``c_j a_j = (c_j / s)(s w_j . x + s b_j)`` unchanged for every
pattern, hence every output, hence ``E``: ``E(phi_s(theta)) = E(theta)`` for
all ``theta`` and ``s``.  Its tangent at ``s = 1`` is

.. math:: v_j(\theta) = \frac{d}{ds}\phi_s(\theta)\Big|_{s=1} = (w_j,\ b_j,\ -c_j)

on unit ``j``'s row of ``W``, its bias and its gain, zero elsewhere (without
a bias, ``(w_j, -c_j)``).  Differentiating ``E(phi_s(theta)) = E(theta)`` in
``s`` at ``s = 1`` gives ``g(theta) . v_j(theta) = 0`` at every point;
differentiating that identity in ``theta`` gives

.. math:: H(\theta)\, v_j(\theta) + D_j\, g(\theta) = 0,

``D_j = d v_j / d theta`` the diagonal matrix with ``+1`` on ``w_j, b_j``,
``-1`` on ``c_j``.  So ``H v_j = -D_j g``: zero at every stationary point,
and ``|H v_j| <= |g|`` anywhere.  The ``v_j`` of different units have
disjoint supports, so at a stationary point they span a null space of
dimension ``k`` = the number of units whose ``v_j`` is not zero: the
redundancy forces ``k`` eigenvalues of ``H`` to zero.  At a computed point
(``|g|`` small but not 0) it forces ``k`` eigenvalues within ``2 |H Q|_2``
of zero, ``Q`` an orthonormal basis of the ``v_j`` (Kahan's residual bound:
Parlett 1998, *The Symmetric Eigenvalue Problem*, thm. 11.5.1, gives ``k``
eigenvalues of ``H`` within ``|H Q - Q M|_2`` of those of ``M = Q^T H Q``).

A point where ``g = 0``, whose Hessian is positive definite on the
orthogonal complement of the ``v_j`` (``across``), is a local minimum, not
a strict one: the orbit of the scalings is a manifold of critical points
with equal ``E`` whose tangent space is the null space of ``H``, and the
Hessian is nondegenerate across it (Morse-Bott), so ``E`` rises in every
direction away from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.errors import UsageError
from hessverify.model.network import Architecture
from hessverify.model.problem import Problem
from hessverify.reports.analysis import Inertia, inertia

__all__ = ["GAIN_ACTIVATIONS", "GainMap", "GainRedundancy", "gain_directions", "gain_redundancy", "gain_units",
           "with_gains"]

GAIN_ACTIVATIONS = ("sigmoid",)
"""The units that get a gain in the lab's adaptive-gain optimisers: the logistic ones (Nawi et al.)."""


def gain_units(architecture: Architecture) -> list[tuple[str, np.ndarray, int]]:
    """Every gain unit: the name of its gain (``c1[0]``), the indices of ``(w_j, b_j)``, the index of ``c_j``."""
    out: list[tuple[str, np.ndarray, int]] = []
    for index, layer in enumerate(architecture.layers, start=1):
        if not (layer.kind == "dense" and layer.opts["gain"]):
            continue
        tensors = {t.name: t for t in architecture.layer_tensors(index)}
        W, c = tensors["W"], tensors["c"]
        b = tensors.get("b")
        fan_in = W.shape[1]
        for j in range(W.shape[0]):
            idx = list(range(W.offset + j * fan_in, W.offset + (j + 1) * fan_in))
            if b is not None:
                idx.append(b.offset + j)
            out.append((f"{c.label}[{j}]", np.array(idx, dtype=np.intp), c.offset + j))
    return out


def gain_directions(problem: Problem, params: FloatArray | None = None) -> tuple[tuple[str, ...], FloatArray]:
    """``v_j = (w_j, b_j, -c_j)`` for every gain unit ``j`` at ``params`` (module text), one per row.

    Returns the gains' names and the ``(m, n)`` matrix; ``m = 0`` without gain layers.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid-gain.toml")
    >>> names, V = gain_directions(case)
    >>> names, V.shape
    (('c1[0]', 'c1[1]', 'c2[0]'), (3, 12))
    """
    theta = problem.params if params is None else np.asarray(params, dtype=np.float64).reshape(-1)
    if theta.size != problem.n_params:
        raise UsageError(f"params has {theta.size} entries; {problem.id} has {problem.n_params} parameters")
    units = gain_units(problem.architecture)
    V = np.zeros((len(units), problem.n_params))
    for row, (_, idx, c) in enumerate(units):
        V[row, idx] = theta[idx]
        V[row, c] = -theta[c]
    return tuple(name for name, _, _ in units), V


@dataclass(frozen=True)
class GainRedundancy:
    """What the gain/weight-scale redundancy does to a Hessian (:func:`gain_redundancy`, module text)."""

    units: tuple[str, ...]  # the gains, c1[0], ...: one v_j each
    directions: FloatArray  # (m, n): v_j, one per row
    residuals: FloatArray  # |H v_j| / (|H|_2 |v_j|), NaN where v_j = 0
    forced: int  # the rank of the v_j: eigenvalues the redundancy forces to zero at a stationary point
    radius: float  # 2 |H Q|_2: at least `forced` eigenvalues of H lie within it of 0 (Kahan)
    near_zero: int  # eigenvalues of H within max(radius, the zero threshold) of 0
    across: Inertia  # H on the orthogonal complement of the v_j

    def to_dict(self) -> dict[str, object]:
        return {"units": [{"gain": u, "residual": None if not np.isfinite(r) else float(r),
                           "norm_v": float(np.linalg.norm(v))}
                          for u, r, v in zip(self.units, self.residuals, self.directions)],
                "forced_zeros": self.forced, "radius": self.radius, "near_zero": self.near_zero,
                "across": {"negative": self.across.negative, "zero": self.across.zero,
                           "positive": self.across.positive, "dimension": int(self.across.eigenvalues.size)}}


def gain_redundancy(problem: Problem, H: FloatArray, threshold: float,
                    params: FloatArray | None = None) -> GainRedundancy | None:
    """The redundancy's directions at ``params`` and what ``H`` does to them; ``None`` without gain layers.

    ``threshold``: an eigenvalue within it of zero counts as zero (the Hessian's
    rounding, :func:`hessverify.reports.analysis.zero_threshold`), for
    ``near_zero`` and for the inertia ``across`` the redundancy.
    """
    units, V = gain_directions(problem, params)
    if not units:
        return None
    H = np.asarray(H, dtype=np.float64)
    H = (H + H.T) / 2.0
    norm_H = float(np.linalg.norm(H, 2))
    norms = np.linalg.norm(V, axis=1)
    with np.errstate(all="ignore"):
        residuals = np.linalg.norm(V @ H, axis=1) / (norm_H * norms)  # H symmetric: row j of V H is (H v_j)^T
    residuals[norms == 0] = np.nan
    U, s, _ = np.linalg.svd(V.T, full_matrices=True)
    forced = int(np.sum(s > max(V.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 0.0)))
    Q, N = U[:, :forced], U[:, forced:]
    radius = 2.0 * float(np.linalg.norm(H @ Q, 2)) if forced else 0.0
    ev = np.linalg.eigvalsh(H)
    near_zero = int(np.sum(np.abs(ev) <= max(radius, threshold)))
    return GainRedundancy(units, V, residuals, forced, radius, near_zero, inertia(N.T @ H @ N, threshold))


# -- a case's adaptive-gain network ----------------------------------------------------------------


@dataclass(frozen=True)
class GainMap:
    """A case and its adaptive-gain network (:func:`with_gains`), and how their points correspond.

    ``keep[i]``: where the case's parameter ``i`` sits in the gain network's
    vector; ``added``: the new gains' indices there (every other index is one
    of the case's); ``scales[i]``: the new gain that multiplies the case's
    parameter ``i`` (its unit's ``w_j`` or ``b_j``), or -1.
    """

    problem: Problem  # the case
    gained: Problem  # its network with gains, at the case's point and every new gain 1
    keep: np.ndarray
    added: np.ndarray
    scales: np.ndarray

    def extend(self, params: FloatArray) -> FloatArray:
        """The case's ``params`` in the gain network: every new gain 1 (the same function)."""
        theta = np.ones(self.keep.size + self.added.size)
        theta[self.keep] = params
        return theta

    def model_params(self, theta: FloatArray) -> FloatArray:
        """The case's parameters computing the same function as the gain network at ``theta``.

        A new gain folds into its unit: ``f(c_j (w_j . x + b_j)) = f(w'_j . x + b'_j)`` with
        ``w'_j = c_j w_j``, ``b'_j = c_j b_j``.
        """
        theta = np.asarray(theta, dtype=np.float64)
        out = theta[self.keep].copy()
        scaled = self.scales >= 0
        out[scaled] *= theta[self.scales[scaled]]
        return out


def with_gains(problem: Problem, activations: Sequence[str] = GAIN_ACTIVATIONS) -> GainMap:
    """``problem`` with ``gain = true`` on every dense layer of the given activations (those already gained kept).

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> m = with_gains(case)
    >>> m.gained.param_names[4:7], m.gained.n_params
    (('b1[0]', 'b1[1]', 'c1[0]'), 12)
    >>> bool(hessverify.error(m.gained) == hessverify.error(case))
    True
    """
    arch = problem.architecture
    layers = []
    added_layers = []
    for index, layer in enumerate(arch.layers, start=1):
        if layer.kind == "dense" and layer.activation in activations and not layer.opts["gain"]:
            layer = replace(layer, options=tuple((dict(layer.options) | {"gain": True}).items()))
            added_layers.append(index)
        layers.append(layer)
    new = Architecture(arch.inputs, tuple(layers), arch.input_shape)
    keep = np.empty(problem.n_params, dtype=np.intp)
    scales = np.full(problem.n_params, -1, dtype=np.intp)
    where = {(t.layer, t.name): t for t in new.tensors}
    for t in arch.tensors:
        keep[t.slice] = np.arange(where[t.layer, t.name].offset, where[t.layer, t.name].offset + t.size)
    added: list[int] = []
    for index in added_layers:
        c = where[index, "c"]
        added += range(c.offset, c.slice.stop)
        tensors = {t.name: t for t in arch.layer_tensors(index)}
        W = tensors["W"]
        gains = np.arange(c.offset, c.slice.stop)
        scales[W.slice] = np.repeat(gains, W.shape[1])
        if "b" in tensors:
            scales[tensors["b"].slice] = gains
    m = GainMap(problem, problem, keep, np.array(added, dtype=np.intp), scales)
    gained = replace(problem, architecture=new, params=m.extend(problem.params), meta={})
    return replace(m, gained=gained)
