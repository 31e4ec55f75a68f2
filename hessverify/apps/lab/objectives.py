"""What an optimiser of the lab minimises: ``E`` over a parameter vector, its gradient, its curvature.

Every optimiser of :mod:`hessverify.apps.lab` is written against
:class:`Objective`: a start point, ``E(theta)``, ``g(theta)``, the exact
Hessian, a Hessian-vector product and the Gauss-Newton matrix, each call
counted (:class:`Counts`).  Two objectives are here:

* :class:`ModelObjective`: the case's own error over its parameters, by the
  model's backpropagation (:func:`hessverify.error`, :func:`hessverify.gradient`,
  the ``backprop``, ``rop`` and ``gauss_newton`` methods);
* :class:`GainObjective`: adaptive gain, one gain ``c_j`` per logistic unit,
  ``z_j = f(c_j a_j)``, over ``(w, b, c)``: the model's error with gain layers.

The gains are the model's own: :class:`GainObjective` is a
:class:`ModelObjective` on the case's network with ``gain = true`` on its
logistic layers (:func:`hessverify.apps.lab.gains.with_gains`), so ``E``,
the gradient with respect to ``(w, b, c)``, the Hessian and its products come
from the model's backpropagation, verified against every reference like any
other parameters.  The gain's gradient is then the unit's back-propagated
error times its net input, ``dE/dc_j = sum_n delta_nj a_nj`` with
``delta_nj = dE/d(c_j a_nj)`` (the rule of Kruschke & Movellan 1991, IEEE SMC
21(1), and of Nawi, Ransing & Ransing 2006/2007, "An improved learning
algorithm based on the conjugate gradient method for back propagation neural
networks", whose CGFR/AG, and BP-AG and BFGS-AG after it, take the step in
``(w, b, c)`` together).  A unit with gain computes ``f(c_j a_j) =
f(w'_j . x + b'_j)`` with ``w'_j = c_j w_j``, ``b'_j = c_j b_j`` (Thimm,
Moerland & Fiesler 1996, Neural Computation 8(2), 451-460):
:meth:`GainObjective.model_params` folds the gains back into the case's
weights.

The redundancy of gain and weight scale (Thimm et al. 1996): ``E`` is
unchanged along ``(s w_j, s b_j, c_j / s)``, so ``g . v_j = 0`` at every point
and ``H v_j = 0`` at every stationary point, for ``v_j = (w_j, b_j, -c_j)``
(:mod:`hessverify.apps.lab.gains`, :meth:`GainObjective.redundant_directions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hessverify.apps.lab.gains import GAIN_ACTIVATIONS, gain_directions, with_gains
from hessverify.base.typing import FloatArray
from hessverify.engine.objective import error, gradient
from hessverify.model.problem import Problem

__all__ = ["GAIN_ACTIVATIONS", "Counts", "GainObjective", "ModelObjective", "Objective", "objective_for"]


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


class GainObjective(ModelObjective):
    """Adaptive gain: the case's network with a gain on every unit of the chosen activations (module text).

    The error, gradient, Hessian, Hessian-vector products and Gauss-Newton
    matrix are the model's own on the network with ``gain = true`` layers
    (:func:`hessverify.apps.lab.gains.with_gains`): verified like any other
    parameters.  The vector is the gain network's, in its public order
    (``W1``, ``b1``, ``c1``, ``W2``, ...); :meth:`start` puts a case's point
    into it with every new gain 1, :meth:`model_params` folds the gains back
    into the case's weights.

    Examples
    --------
    >>> import hessverify, numpy as np
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> obj = GainObjective(case)
    >>> obj.n, obj.names[4:7]
    (12, ('b1[0]', 'b1[1]', 'c1[0]'))
    >>> theta = obj.start()                      # every gain 1: the model's own point
    >>> bool(obj.E(theta) == hessverify.error(case))
    True
    """

    def __init__(self, problem: Problem, activations: Sequence[str] = GAIN_ACTIVATIONS) -> None:
        self.map = with_gains(problem, activations)
        super().__init__(self.map.gained)
        self.case = problem
        self.m = int(self.map.added.size)

    def start(self, params: FloatArray | None = None) -> FloatArray:
        """``params`` (the case's, default its point, with every new gain 1; or already the gain network's)."""
        from hessverify.engine.objective import as_params

        if params is not None and np.asarray(params).size == self.n:
            return np.asarray(params, dtype=np.float64).reshape(-1).copy()
        return self.map.extend(as_params(self.case, params))

    def model_params(self, theta: FloatArray) -> FloatArray:
        """The case's parameters computing the same function: ``(c_j w_j, c_j b_j)`` for every new gain."""
        return self.map.model_params(theta)

    def redundant_directions(self, theta: FloatArray) -> FloatArray:
        """``v_j = (w_j, b_j, -c_j)`` for every gain ``j``, one per row: ``E`` is constant along each."""
        return gain_directions(self.problem, theta)[1]


def objective_for(problem: Problem, gains: bool) -> ModelObjective | GainObjective:
    """The objective an optimiser runs on: the case's own, or with adaptive gains (``NAME-ag``)."""
    return GainObjective(problem) if gains else ModelObjective(problem)
