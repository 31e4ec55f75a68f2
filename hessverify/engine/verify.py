"""Verify a problem: every method against every reference, within derived bounds.

The public face of :mod:`hessverify.engine.run`, which computes everything once per problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.engine.budget import check_memory
from hessverify.engine.compare import BOUND_KEY, Comparison
from hessverify.engine.point import Point
from hessverify.engine.registry import Lazy, get_method
from hessverify.engine.run import (
    check_reference,
    finite_rounding_bound,
    not_applicable_reason,
    not_applicable_record,
    plan,
    reference_skips,
    run_problem,
)
from hessverify.errors import UsageError
from hessverify.model.problem import Problem

__all__ = ["BOUND_KEY", "check_reference", "finite_rounding_bound", "hessian", "hessian_entry", "hvp",
           "not_applicable_reason", "not_applicable_record", "plan", "reference_skips", "verify_problem"]


_HVP = Lazy("hessverify.methods.rop", "hvp")  # named, not imported: the engine sits below the methods
_ENTRY = Lazy("hessverify.methods.pairwise", "hessian_entry")


def _problem(problem: object, caller: str) -> Problem:
    """``problem`` if it is a :class:`Problem`, else a one-line :class:`UsageError` that says how to get one."""
    if not isinstance(problem, Problem):
        raise UsageError(f"{caller}() takes a Problem, got {type(problem).__name__}"
                         + (" (read a case file with hessverify.load_case(path) first)"
                            if isinstance(problem, (str, PathLike)) else ""))
    return problem


def hvp(problem: Problem, v: FloatArray) -> FloatArray:
    """The exact Hessian-vector product :math:`H v` (Pearlmutter's R-operator, :func:`hessverify.methods.rop.hvp`).

    ``v`` must be a real vector of one finite number per parameter, in the
    public order; anything else (a complex vector, text, the wrong length)
    is a :class:`~hessverify.errors.UsageError` naming ``v``, never a silent
    conversion (NumPy would keep a complex vector's real part).

    Examples
    --------
    >>> import numpy as np, hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> hessverify.hvp(case, np.ones(case.n_params)).shape
    (9,)
    >>> hessverify.hvp(case, np.ones(case.n_params) * 1j)
    Traceback (most recent call last):
    ...
    hessverify.errors.UsageError: v is complex; a direction is real: take hvp(case, v.real) + 1j * hvp(case, v.imag)
    """
    problem = _problem(problem, "hvp")
    if isinstance(v, (str, bytes)):
        raise UsageError(f"v is {type(v).__name__} {v!r:.40}; give a vector of {problem.n_params} numbers")
    try:
        arr = np.asarray(v)
    except Exception as exc:  # an object NumPy cannot look at
        raise UsageError(f"v: a {type(v).__name__} is not a vector of numbers ({type(exc).__name__})") from None
    if np.iscomplexobj(arr):
        raise UsageError("v is complex; a direction is real: take hvp(case, v.real) + 1j * hvp(case, v.imag)")
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise UsageError(f"v is an array of {arr.dtype}, not of real numbers; give a vector of {problem.n_params} "
                         "numbers in the public order (see 'hessverify params')")
    return _HVP(problem, arr.astype(np.float64))  # type: ignore[no-any-return]


def hessian_entry(problem: Problem, i: int | str, j: int | str) -> float:
    """One exact entry :math:`\\partial^2 E / \\partial w_i \\partial w_j` (:func:`hessverify.methods.pairwise.hessian_entry`).

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> round(hessverify.hessian_entry(case, "W2[0,1]", "b1[0]"), 6) == round(float(hessverify.hessian(case)[7, 4]), 6)
    True
    """
    return _ENTRY(_problem(problem, "hessian_entry"), i, j)  # type: ignore[no-any-return]


def hessian(problem: Problem, method: str = "backprop") -> FloatArray | list[FloatArray]:
    """The Hessian of ``problem`` by the named method (float64, public order).

    The form follows the method's ``kind``: ``"matrix"`` gives ``(W, W)``,
    ``"vector"`` the diagonal ``(W,)``, ``"blocks"`` a list with one square
    block per layer.

    Examples
    --------
    >>> import hessverify
    >>> case = hessverify.load_case("cases/xor-2-2-1-sigmoid.toml")
    >>> H = hessverify.hessian(case)
    >>> bool(abs(H - hessverify.hessian(case, method="autograd")).max() < 1e-12)
    True
    """
    _problem(problem, "hessian")
    if not isinstance(method, str):
        raise UsageError(f"hessian(): method must be a name such as 'backprop', got {type(method).__name__}")
    m = get_method(method)
    check_memory(problem, [m.name], kept=1)
    point = Point.of(problem)
    point.well_posed()
    if m.kind == "blocks":
        return [np.asarray(b, dtype=np.float64) for b in m.compute(point)]
    return np.asarray(m.compute(point), dtype=np.float64)


def verify_problem(problem: Problem, methods: Sequence[str] | None = None,
                   references: Sequence[str] | None = None,
                   approximations: Sequence[str] | None = None, *,
                   matrices: dict[str, FloatArray] | None = None) -> list[Comparison]:
    """Compare each exact method with each reference on one problem.

    Exact methods of kind ``"vector"`` or ``"blocks"`` are compared on the
    entries they compute (the diagonal, the diagonal blocks), each entry
    held to the bound of that entry.  Each side of a comparison brings its
    own error (:func:`hessverify.engine.compare.pair_bound`): ``fd`` named as a
    method is held to its own error estimate.  Approximations (role
    ``"approximation"``: every one when ``methods`` is ``None``, otherwise
    those named in ``methods`` or ``approximations``) are appended as
    records of their error against the exact Hessian (``backprop``), with
    ``passed=True`` and ``bound_kind="approximation"``: never failures.
    An approximation named as a reference is a :class:`~hessverify.errors.UsageError`.
    References that declare where they apply (``symbolic``: small enough
    cases) are used by default only there (:func:`reference_skips` says why).

    A reference that cannot serve at this point (NaN or inf where the
    network is finite: :func:`not_applicable_reason`) is not compared; one
    record with ``bound_kind="not_applicable"`` says why, and the methods
    are judged by the references that can serve.

    If ``matrices`` is given, every full matrix computed is also stored in
    it, keyed by method or reference name, its own error estimate under
    ``"<name>.error"``, and the entrywise bound that decided each comparison
    under ``BOUND_KEY.format(method=..., reference=...)``, so a report can
    draw and localise them without computing them again.

    This is :func:`hessverify.engine.run.run_problem`'s records: the run keeps
    everything computed, once, for whoever reads it.

    Raises :class:`~hessverify.errors.NotDifferentiableError` where the
    Hessian does not exist and :class:`~hessverify.errors.OverflowReport`
    where the network overflows, before anything is compared.
    """
    _problem(problem, "verify_problem")
    if matrices is not None and not isinstance(matrices, dict):
        raise UsageError(f"verify_problem(): matrices must be a dict to fill (or None), got {type(matrices).__name__}")
    run = run_problem(problem, methods, references, approximations)
    if run.skip is not None:
        raise run.skip.error
    if matrices is not None:
        matrices.update(run.matrices())
    return list(run.records)
