"""What an optimiser of the lab minimises: ``E`` over a parameter vector, its gradient, its curvature.

Every optimiser of :mod:`hessverify.apps.lab` is written against
:class:`Objective`: a start point, ``E(theta)``, ``g(theta)``, the exact
Hessian, a Hessian-vector product and the Gauss-Newton matrix, each call
counted (:class:`Counts`).  Two objectives are here:

* :class:`ModelObjective`: the case's own error over its parameters, by the
  model's backpropagation (:func:`hessverify.error`, :func:`hessverify.gradient`,
  the ``backprop``, ``rop`` and ``gauss_newton`` methods);
* :class:`GainObjective`: adaptive gain, one gain ``c_j`` per logistic unit,
  ``z_j = f(c_j a_j)``, over the extended vector ``(w, b, c)``.

The gains are written here as an explicit reparametrisation of the model,
kept apart from every optimiser so that it can be replaced by gain layers of
the model itself without touching them: a unit ``j`` with gain ``c_j`` and
net input ``a_j = w_j . x + b_j`` computes ``f(c_j a_j) = f(w'_j . x + b'_j)``
with ``w'_j = c_j w_j`` and ``b'_j = c_j b_j`` (the gain is a per-unit scale
of the incoming weights and bias; Thimm, Moerland & Fiesler 1996, Neural
Computation 8(2), 451-460, prove this equivalence and its consequence for the
learning rate).  So ``E_gain(w, b, c) = E(theta'(w, b, c))`` and, with
``g' = dE/dtheta'`` and ``H'`` at ``theta'``:

.. math::

    \\frac{\\partial E}{\\partial w_{ji}} = c_j\\, g'_{w'_{ji}}, \\qquad
    \\frac{\\partial E}{\\partial b_j} = c_j\\, g'_{b'_j}, \\qquad
    \\frac{\\partial E}{\\partial c_j} = \\sum_i w_{ji}\\, g'_{w'_{ji}} + b_j\\, g'_{b'_j}
    = \\sum_n \\delta_{nj}\\, a_{nj}

(``delta_nj = dE/d(c_j a_nj)``: the gain's gradient is the unit's back-propagated
error times its net input, the rule of Kruschke & Movellan 1991, IEEE SMC 21(1),
and of Nawi, Ransing & Ransing 2006/2007, "An improved learning algorithm based
on the conjugate gradient method for back propagation neural networks", whose
CGFR/AG, and BP-AG and BFGS-AG after it, take the step in ``(w, b, c)``
together).  With ``J = d theta' / d(w, b, c)``, the Hessian is
``J^T H' J + sum_k g'_k d^2 theta'_k``, whose second term is ``g'_k`` at the
pairs ``(w_ji, c_j)`` and ``(b_j, c_j)`` (``d^2 (c w) / dc dw = 1``).

The redundancy of gain and weight scale (Thimm et al. 1996): ``E`` is
unchanged along ``(s w_j, s b_j, c_j / s)``, so ``g . v_j = 0`` at every point
and ``H v_j = 0`` at every stationary point, for ``v_j = (w_j, b_j, -c_j)``
(:meth:`GainObjective.redundant_directions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.objective import error, gradient
from hessverify.model.problem import Problem

__all__ = ["GAIN_ACTIVATIONS", "Counts", "GainObjective", "ModelObjective", "Objective", "objective_for"]

GAIN_ACTIVATIONS = ("sigmoid",)
"""The units that carry a gain by default: the logistic ones (Nawi et al.)."""


@dataclass
class Counts:
    """How often an objective was evaluated.

    ``evaluations``: points at which ``E`` or ``g`` (or both) was computed,
    ``E`` and ``g`` at the same point counting once (one forward pass, as a
    library's ``value_and_gradients`` call); ``gradients``: gradients computed;
    ``hessians``: Hessians or Gauss-Newton matrices formed; ``hvps``:
    Hessian-vector products.
    """

    evaluations: int = 0
    gradients: int = 0
    hessians: int = 0
    hvps: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"evaluations": self.evaluations, "gradients": self.gradients, "hessians": self.hessians,
                "hvps": self.hvps}


class Objective(Protocol):
    """What every optimiser of the lab needs of the function it minimises."""

    problem: Problem
    counts: Counts

    @property
    def n(self) -> int: ...

    @property
    def names(self) -> tuple[str, ...]: ...

    def start(self, params: FloatArray | None = None) -> FloatArray: ...

    def E(self, theta: FloatArray) -> float: ...

    def g(self, theta: FloatArray) -> FloatArray: ...

    def hessian(self, theta: FloatArray) -> FloatArray: ...

    def gauss_newton(self, theta: FloatArray) -> FloatArray: ...

    def hvp(self, theta: FloatArray, v: FloatArray) -> FloatArray: ...

    def model_params(self, theta: FloatArray) -> FloatArray: ...


class _Counted:
    """The counting shared by the objectives: a new point is a new evaluation."""

    def __init__(self) -> None:
        self.counts = Counts()
        self._last: FloatArray | None = None

    def _at(self, theta: FloatArray) -> None:
        if self._last is None or self._last.shape != theta.shape or not np.array_equal(self._last, theta):
            self.counts.evaluations += 1
            self._last = np.array(theta, dtype=np.float64, copy=True)


class ModelObjective(_Counted):
    """The case's error over its own parameters (the model's backpropagation)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__()
        self.problem = problem

    @property
    def n(self) -> int:
        return self.problem.n_params

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.problem.param_names)

    def start(self, params: FloatArray | None = None) -> FloatArray:
        from hessverify.engine.objective import as_params

        return as_params(self.problem, params).copy()

    def model_params(self, theta: FloatArray) -> FloatArray:
        return theta

    def E(self, theta: FloatArray) -> float:
        self._at(theta)
        with np.errstate(all="ignore"):
            return error(self.problem, theta)

    def g(self, theta: FloatArray) -> FloatArray:
        self._at(theta)
        self.counts.gradients += 1
        with np.errstate(all="ignore"):
            return gradient(self.problem, theta)

    def hessian(self, theta: FloatArray) -> FloatArray:
        from hessverify.engine.registry import METHODS

        self.counts.hessians += 1
        return np.asarray(METHODS["backprop"].fn(self.problem.with_params(theta)), dtype=np.float64)

    def gauss_newton(self, theta: FloatArray) -> FloatArray:
        from hessverify.engine.registry import METHODS

        self.counts.hessians += 1
        return np.asarray(METHODS["gauss_newton"].fn(self.problem.with_params(theta)), dtype=np.float64)

    def hvp(self, theta: FloatArray, v: FloatArray) -> FloatArray:
        from hessverify.methods.rop import hvp

        self.counts.hvps += 1
        return np.asarray(hvp(self.problem.with_params(theta), v), dtype=np.float64)


class GainObjective(_Counted):
    """Adaptive gain: ``E`` over ``(w, b, c)``, one gain per unit of the chosen activations (module text).

    The extended vector is the model's parameters in the public order followed
    by the gains, layer by layer and unit by unit (names ``c1[0]``, ``c1[1]``,
    ...).  Only the gained units' rows of ``W`` and entries of ``b`` are scaled;
    every other parameter is passed through.

    Examples
    --------
    >>> import hessverify, numpy as np
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> obj = GainObjective(case)
    >>> obj.n, obj.names[-3:]
    (12, ('c1[0]', 'c1[1]', 'c2[0]'))
    >>> theta = obj.start()                      # every gain 1: the model's own point
    >>> bool(obj.E(theta) == hessverify.error(case))
    True
    """

    def __init__(self, problem: Problem, activations: Sequence[str] = GAIN_ACTIVATIONS) -> None:
        super().__init__()
        self.problem = problem
        arch = problem.architecture
        rows: list[np.ndarray] = []  # per gain: the model-parameter indices it scales
        names: list[str] = []
        for block, layer in zip(arch.blocks, arch.layers):
            if layer.activation not in activations:
                continue
            fan_in = block.fan_in
            for j in range(layer.units):
                idx = list(range(block.w_slice.start + j * fan_in, block.w_slice.start + (j + 1) * fan_in))
                if layer.bias:
                    idx.append(block.b_slice.start + j)
                rows.append(np.array(idx, dtype=np.intp))
                names.append(f"c{block.layer}[{j}]")
        self.m = len(rows)
        self._rows = rows
        self._gain_names = tuple(names)
        n0 = problem.n_params
        # owner[k]: the gain that scales model parameter k, or -1
        self._owner = np.full(n0, -1, dtype=np.intp)
        for u, idx in enumerate(rows):
            self._owner[idx] = u
        self._scaled = np.flatnonzero(self._owner >= 0)

    @property
    def n(self) -> int:
        return self.problem.n_params + self.m

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.problem.param_names) + self._gain_names

    def start(self, params: FloatArray | None = None) -> FloatArray:
        """``params`` (the model's, default the case's point; or already extended) with every gain 1."""
        from hessverify.engine.objective import as_params

        if params is not None and np.asarray(params).size == self.n:
            return np.asarray(params, dtype=np.float64).reshape(-1).copy()
        return np.concatenate([as_params(self.problem, params), np.ones(self.m)])

    def _split(self, theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        n0 = self.problem.n_params
        return theta[:n0], theta[n0:]

    def _scale(self, c: FloatArray) -> FloatArray:
        """Per model parameter, the gain multiplying it (1 where none does)."""
        s = np.ones(self.problem.n_params)
        s[self._scaled] = c[self._owner[self._scaled]]
        return s

    def model_params(self, theta: FloatArray) -> FloatArray:
        """``theta' = (c_j w_j, c_j b_j)``: the model's parameters computing the same function."""
        w, c = self._split(theta)
        return w * self._scale(c)

    def jacobian(self, theta: FloatArray) -> FloatArray:
        """``J = d theta' / d(w, b, c)``, ``(n_model, n_model + m)``."""
        w, c = self._split(theta)
        n0 = self.problem.n_params
        J = np.zeros((n0, self.n))
        J[np.arange(n0), np.arange(n0)] = self._scale(c)
        J[self._scaled, n0 + self._owner[self._scaled]] = w[self._scaled]
        return J

    def E(self, theta: FloatArray) -> float:
        self._at(theta)
        with np.errstate(all="ignore"):
            return error(self.problem, self.model_params(theta))

    def _pull_back(self, theta: FloatArray, gp: FloatArray) -> FloatArray:
        """``J^T gp`` without forming ``J``: the weights' part scaled by the gains, the gains' part summed per unit."""
        w, c = self._split(theta)
        out = np.zeros(self.n)
        out[:w.size] = gp * self._scale(c)
        out[w.size:] = np.bincount(self._owner[self._scaled], weights=w[self._scaled] * gp[self._scaled],
                                   minlength=self.m)
        return out

    def _push(self, theta: FloatArray, v: FloatArray) -> FloatArray:
        """``J v`` without forming ``J``."""
        w, c = self._split(theta)
        vw, vc = self._split(v)
        out = vw * self._scale(c)
        out[self._scaled] += w[self._scaled] * vc[self._owner[self._scaled]]
        return out

    def g(self, theta: FloatArray) -> FloatArray:
        self._at(theta)
        self.counts.gradients += 1
        with np.errstate(all="ignore"):
            return self._pull_back(theta, gradient(self.problem, self.model_params(theta)))

    def _second_term(self, gp: FloatArray) -> FloatArray:
        """``sum_k g'_k d^2 theta'_k``: ``g'_k`` at ``(k, c_owner(k))`` and its mirror."""
        n0 = self.problem.n_params
        S = np.zeros((self.n, self.n))
        k = self._scaled
        S[k, n0 + self._owner[k]] = gp[k]
        S[n0 + self._owner[k], k] = gp[k]
        return S

    def hessian(self, theta: FloatArray) -> FloatArray:
        from hessverify.engine.registry import METHODS

        self.counts.hessians += 1
        tp = self.model_params(theta)
        Hp = np.asarray(METHODS["backprop"].fn(self.problem.with_params(tp)), dtype=np.float64)
        J = self.jacobian(theta)
        with np.errstate(all="ignore"):
            gp = gradient(self.problem, tp)
        return J.T @ Hp @ J + self._second_term(gp)

    def gauss_newton(self, theta: FloatArray) -> FloatArray:
        from hessverify.engine.registry import METHODS

        self.counts.hessians += 1
        tp = self.model_params(theta)
        G = np.asarray(METHODS["gauss_newton"].fn(self.problem.with_params(tp)), dtype=np.float64)
        J = self.jacobian(theta)
        return J.T @ G @ J

    def hvp(self, theta: FloatArray, v: FloatArray) -> FloatArray:
        from hessverify.methods.rop import hvp

        self.counts.hvps += 1
        tp = self.model_params(theta)
        Hv = np.asarray(hvp(self.problem.with_params(tp), self._push(theta, v)), dtype=np.float64)
        with np.errstate(all="ignore"):
            gp = gradient(self.problem, tp)
        n0 = self.problem.n_params
        second = np.zeros(self.n)  # S v, S the second term
        k, u = self._scaled, self._owner[self._scaled]
        second[k] = gp[k] * v[n0 + u]
        second[n0:] = np.bincount(u, weights=gp[k] * v[k], minlength=self.m)
        return self._pull_back(theta, Hv) + second

    def redundant_directions(self, theta: FloatArray) -> FloatArray:
        """``v_j = (w_j, b_j, -c_j)`` for every gain ``j``, one per row: ``E`` is constant along each."""
        w, c = self._split(theta)
        n0 = self.problem.n_params
        V = np.zeros((self.m, self.n))
        for u, idx in enumerate(self._rows):
            V[u, idx] = w[idx]
            V[u, n0 + u] = -c[u]
        return V


def objective_for(problem: Problem, gains: bool) -> ModelObjective | GainObjective:
    """The objective an optimiser runs on: the case's own, or with adaptive gains (``NAME-ag``)."""
    return GainObjective(problem) if gains else ModelObjective(problem)
