"""``backprop``: the exact Hessian by second-order backpropagation (Bishop 1992).

The Hessian of ``E`` is assembled block by block, one block for each pair of
layers ``(m, m')``, from quantities that are propagated through the network
once per pattern, all patterns at a time:

* forward, the Jacobians between net inputs,
  ``B_{l,m} = da_l/da_m = W_l diag(f'_{l-1}) B_{l-1,m}`` with ``B_{m,m} = I``
  (Bishop 1992, eq. 13: the forward "g" quantities);
* backward, the first-order ``delta_l = dE/da_l`` and the second-order
  ``Q_l = d2E/da_l da_l^T`` (with the layers above held as functions of
  ``a_l``; here for a chain, ``l + 1`` the layer that ``l`` feeds):

  .. math::

     Q_L = \\mathrm{diag}(f'_L)\\, H_y\\, \\mathrm{diag}(f'_L) + \\mathrm{diag}(g_y \\odot f''_L),\\qquad
     Q_l = \\mathrm{diag}(f'_l)\\, W_{l+1}^T Q_{l+1} W_{l+1}\\, \\mathrm{diag}(f'_l)
           + \\mathrm{diag}\\big((W_{l+1}^T \\delta_{l+1}) \\odot f''_l\\big)

  (Bishop 1992, eq. 16-18: the backward "b" quantities).

For ``m <= m'`` the block of the weights ``W_m[k, j]`` and ``W_m'[k', j']`` is

.. math::

   \\sum_n (B_{m',m}^T Q_{m'})_{k k'}\\, z_{m-1,j}\\, z_{m'-1,j'}
   \\;+\\; [m < m']\\, \\sum_n \\delta_{m',k'}\\, f'_{m'-1,j'}\\, (B_{m'-1,m})_{j' k}\\, z_{m-1,j}

where the second term is the bilinear cross term: ``W_m'`` multiplies
``z_{m'-1}``, which itself depends on ``W_m`` (Bishop 1992, eq. 22).  A bias
is a weight whose input is the constant 1.  Each sum over patterns of
products is one matrix product of size (block rows) x N x (block columns), so
the whole Hessian costs about ``2 N W^2`` flops in a few large ``matmul`` s,
with no Python loop over patterns or weights.

The assembly is the model's kernel, :func:`hessverify.model.kernel.hessian_from_quantities`,
written against plain arrays so that the rounding model (:mod:`hessverify.engine.bounds`)
runs the same assembly on the magnitudes of the same quantities without
borrowing from a method under test.
"""

from __future__ import annotations

from hessverify.base.typing import FloatArray
from hessverify.engine.components import Component, Cost, Role
from hessverify.engine.forms import FullHessian
from hessverify.engine.point import Point, checked
from hessverify.model import assembly
from hessverify.model.kernel import Quantities, backward_second_order, hessian_from_quantities, quantities
from hessverify.model.problem import Problem

__all__ = ["Quantities", "backward_second_order", "hessian", "hessian_from_quantities", "quantities"]


def hessian(problem: Problem | Point) -> FloatArray:
    """The exact Hessian of ``E`` by second-order backpropagation.

    Bishop, C. M. (1992). Exact calculation of the Hessian matrix for the
    multilayer perceptron. Neural Computation 4(4), 494-501.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/single-neuron-tanh.toml")
    >>> H = hessian(case)
    >>> H.shape == (case.n_params, case.n_params)
    True
    """
    problem, fp = checked(problem)
    if not problem.architecture.is_dense:  # other layer kinds: the same, block by block over their graph
        return assembly.hessian_by_blocks(fp.graph, fp)
    return hessian_from_quantities(problem.architecture, quantities(fp))


COMPONENT = Component(
    "backprop", hessian, Role.METHOD, FullHessian,
    "exact Hessian by second-order backpropagation (Bishop 1992)",
    cost=Cost(memory=(2.5, 2.5), seconds=(9e-10, 1e-6), per_layer=1.5e-3, passes="layer"),
    rank=10,
)
