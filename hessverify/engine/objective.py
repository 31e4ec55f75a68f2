"""The error function and its gradient, as a user of the suite calls them.

:func:`error` and :func:`gradient` are the ``E`` and ``dE/dtheta`` every
method differentiates a second time: the forward pass and the first-order
backward pass of :mod:`hessverify.model.forward`, with the parameter vector
checked first.  The lab (:mod:`hessverify.apps.lab`) optimises with them; the
tests hold them to the independent autograd implementation
(:mod:`hessverify.references.autograd_ref`).
"""

from __future__ import annotations

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.errors import UsageError
from hessverify.model import forward as _forward
from hessverify.model.problem import Problem

__all__ = ["error", "gradient", "as_params"]


def as_params(problem: Problem, params: FloatArray | None) -> FloatArray:
    """``params`` as a float64 vector of the problem's length (default: the problem's own point).

    Raises :class:`~hessverify.UsageError` in one line for a wrong length or
    a non-finite entry, naming the first offending parameter.
    """
    if not isinstance(problem, Problem):
        raise UsageError(f"problem: give a Problem (hessverify.load_case(path) reads one), got {type(problem).__name__}")
    if params is None:
        return problem.params
    if isinstance(params, (str, bytes)):
        raise UsageError(f"params is {type(params).__name__} {params!r:.40}; give {problem.n_params} numbers")
    try:
        raw = np.asarray(params)
    except Exception as exc:  # an object NumPy cannot look at
        raise UsageError(f"params: a {type(params).__name__} is not a vector of numbers ({type(exc).__name__})") from None
    if np.iscomplexobj(raw) or raw.dtype.kind not in "fiu" or raw.dtype == np.bool_:
        raise UsageError(f"params is an array of {raw.dtype}, not of real numbers; give {problem.n_params} real numbers")
    theta = raw.astype(np.float64).reshape(-1)
    if theta.size != problem.n_params:
        raise UsageError(f"params has {theta.size} numbers but {problem.id} has {problem.n_params} parameters "
                         f"(in the order 'hessverify params' lists)")
    bad = np.flatnonzero(~np.isfinite(theta))
    if bad.size:
        raise UsageError(f"params: {problem.param_names[bad[0]]} is {theta[bad[0]]}; every parameter must be finite")
    return theta


def error(problem: Problem, params: FloatArray | None = None) -> float:
    """The error :math:`E(\\theta)` of ``problem`` at ``params``.

    .. math:: E(\\theta) = s \\sum_n \\ell(y(x_n; \\theta), t_n)

    with :math:`s` the reduction's factor (1 for ``"sum"``, :math:`1/N` for
    ``"mean"``).

    Parameters
    ----------
    problem:
        A loaded case (:func:`hessverify.load_case`) or any :class:`~hessverify.Problem`.
    params:
        A point in the public parameter order (``hessverify params CASE``);
        default the problem's own point.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> round(hessverify.error(case), 6)
    0.562455
    >>> hessverify.error(case, [0.0] * case.n_params)  # every output 1/2: 4 x (1/2)^2 / 2
    0.5
    """
    return _forward.error(problem, as_params(problem, params))


def gradient(problem: Problem, params: FloatArray | None = None) -> FloatArray:
    """The gradient :math:`\\nabla E(\\theta)` in the public order, by backpropagation (Rumelhart et al. 1986).

    Same arguments as :func:`error`; returns a new ``(W,)`` float64 array.

    Examples
    --------
    >>> import hessverify, numpy as np
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> g = hessverify.gradient(case)
    >>> g.shape == (case.n_params,)
    True
    >>> bool(np.linalg.norm(g) > 0)  # the shipped XOR point is not stationary
    True
    """
    return _forward.gradient(problem, as_params(problem, params))
