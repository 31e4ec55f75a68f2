"""Other libraries' optimisers in the lab, on the lab's own objective: TensorFlow Probability and PSGD.

* ``tfp-bfgs``, ``tfp-lbfgs``: :func:`tfp.optimizer.bfgs_minimize` and
  :func:`tfp.optimizer.lbfgs_minimize` (TensorFlow Probability 0.25, the
  extra ``hessverify[tensorflow]``; ``make frameworks`` installs it with its
  pins, Makefile target ``tensorflow``), in float64, with ``max_iterations``
  passed explicitly (TFP's default is 50) and ``tolerance = tol / sqrt(n)``
  (TFP stops on the sup norm of the gradient; this makes its stop imply the
  lab's ``|g|_2 < tol``).  Its ``num_iterations``,
  ``num_objective_evaluations``, ``converged`` and ``failed`` are reported
  as it gives them (:attr:`Run.library`); the run's ``iterations`` and
  ``evaluations`` are those two counts.
* ``psgd``: Li's preconditioned SGD (Li 2018, "Preconditioned stochastic
  gradient descent", IEEE TNNLS 29(5)) from the ``psgd-torch`` package, its
  ``Newton`` preconditioner (a dense ``Q``, ``P = Q^T Q`` fitted to Hessian-vector
  products, the psgd-torch README's Table I), full batch, on the float64 error
  written in torch by :mod:`hessverify.adapters.torch`; one ``step`` is one
  iteration.

The library calls the lab's objective for ``E`` and ``g``
(:class:`~hessverify.apps.lab.objectives.Objective`, counted independently of
the library's own count), so every optimiser of the lab minimises the same
function, and the log has one row per evaluation (``log_unit``
``"evaluation"``): these libraries do not expose their iterates.  Their
tensors are allocated outside Python's :mod:`tracemalloc`, so their peak
memory is not measured (``memory_traced`` false).  A time limit is not
applied inside a library's loop.
"""

from __future__ import annotations

import importlib.util
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from hessverify.base.typing import FloatArray
from hessverify.errors import UsageError
from hessverify.model.problem import Problem

if TYPE_CHECKING:
    from hessverify.apps.lab import Optimizer, Run
    from hessverify.apps.lab.objectives import Objective

__all__ = ["INSTALL", "available", "ensure_library", "run_library"]

INSTALL = {
    "tfp-bfgs": "make tensorflow (or: pip install tensorflow-cpu==2.21.0 dm-tree decorator cloudpickle gast && "
                "pip install --no-deps tf-keras==2.21.0 tensorflow-probability==0.25.0)",
    "tfp-lbfgs": "make tensorflow (see tfp-bfgs)",
    "psgd": "pip install 'hessverify[psgd]' (torch==2.13.0 and psgd-torch==0.6.1)",
}
"""How to install what each library optimiser needs (said when it is missing)."""

_MODULES = {"tfp-bfgs": ("tensorflow", "tensorflow_probability", "tf_keras"),
            "tfp-lbfgs": ("tensorflow", "tensorflow_probability", "tf_keras"),
            "psgd": ("torch", "psgd_torch")}


def available(name: str) -> bool:
    """Whether the library of optimiser ``name`` is installed (asked of the installation, nothing imported)."""
    return all(importlib.util.find_spec(m) is not None for m in _MODULES[name])


def ensure_library(name: str) -> None:
    """A one-line :class:`UsageError` naming the install command when ``name``'s library is missing."""
    if not available(name):
        raise UsageError(f"optimizer {name} needs a library that is not installed; {INSTALL[name]}")


class _Logged:
    """The objective as the library calls it: ``E`` and ``g`` together, each call logged."""

    def __init__(self, obj: Objective, start: float) -> None:
        self.obj = obj
        self.start = start
        self.rows: list[tuple[float, float, float]] = []  # E, |g|, seconds since the start
        self.calls = 0

    def __call__(self, theta: FloatArray) -> tuple[float, FloatArray]:
        theta = np.asarray(theta, dtype=np.float64)
        E = self.obj.E(theta)
        g = self.obj.g(theta)
        self.calls += 1
        self.rows.append((E, float(np.linalg.norm(g)), time.perf_counter() - self.start))
        return E, g


def run_library(problem: Problem, optimizer: str, obj: Objective, theta: FloatArray, opt: Optimizer, m: int,
                o: dict[str, Any]) -> Run:
    """One run of a library's optimiser (module text), as a :class:`~hessverify.apps.lab.Run`."""
    from hessverify.apps.lab import IterationRecord, Run, predicted_memory

    start, cpu0 = time.perf_counter(), time.process_time()
    f = _Logged(obj, start)
    if opt.name in ("tfp-bfgs", "tfp-lbfgs"):
        final, info = _tfp(f, theta, opt.name, o["tol"], o["max_iter"], m)
        iterations, evaluations = info["num_iterations"], info["num_objective_evaluations"]
        reason = "converged" if info["converged"] else ("failed" if info["failed"] else "max-iter")
    else:
        final, info = _psgd(problem, f, theta, o["tol"], o["max_iter"], o["time_limit"], start, o["lr"])
        iterations, evaluations = info["steps"], f.calls
        reason = info["reason"]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    counted = obj.counts.to_dict()
    E, g = obj.E(final), obj.g(final)  # the lab's own E and g at the library's answer
    gn = float(np.linalg.norm(g))
    log = [IterationRecord(j, e, gnorm, None, None, s) for j, (e, gnorm, s) in enumerate(f.rows)]
    info = info | {"lab_counted": {"calls": f.calls, **counted}}
    return Run(optimizer, problem.id, theta.size, int(iterations), reason == "converged", reason, float(E), gn,
               final, seconds, 0, predicted_memory(optimizer, theta.size), o["tol"], log, None, cpu_seconds=cpu,
               evaluations=int(evaluations), gradients=int(evaluations), hessians=0, log_unit="evaluation",
               library=info, memory_traced=False,
               param_names=obj.names if opt.gains else None)


def _tfp(f: _Logged, theta: FloatArray, name: str, tol: float, max_iter: int, m: int
         ) -> tuple[FloatArray, dict[str, Any]]:
    """TensorFlow Probability's BFGS or L-BFGS from ``theta``; its result's counts and flags as it gives them."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    n = theta.size

    def value_and_gradients(x: Any) -> tuple[Any, Any]:
        E, g = tf.numpy_function(lambda v: tuple(np.asarray(a, dtype=np.float64) for a in f(v)), [x],
                                 [tf.float64, tf.float64])
        E.set_shape([])
        g.set_shape([n])
        return E, g

    x0 = tf.constant(theta, dtype=tf.float64)
    common = {"tolerance": tol / math.sqrt(n), "max_iterations": int(max_iter)}
    # eagerly: tracing TFP's loop into a graph (tf.function) costs more than these small runs
    if name == "tfp-bfgs":
        res = tfp.optimizer.bfgs_minimize(value_and_gradients, initial_position=x0, **common)
    else:
        res = tfp.optimizer.lbfgs_minimize(value_and_gradients, initial_position=x0, num_correction_pairs=m, **common)
    info = {"library": "tensorflow_probability", "version": tfp.__version__, "tensorflow": tf.__version__,
            "num_iterations": int(res.num_iterations), "num_objective_evaluations": int(res.num_objective_evaluations),
            "converged": bool(res.converged), "failed": bool(res.failed), "tolerance": common["tolerance"],
            "max_iterations": common["max_iterations"]}
    if name == "tfp-lbfgs":
        info["num_correction_pairs"] = m
    return np.asarray(res.position.numpy(), dtype=np.float64), info


def _psgd(problem: Problem, f: _Logged, theta: FloatArray, tol: float, max_iter: int, time_limit: float | None,
          start: float, lr: float | None = None) -> tuple[FloatArray, dict[str, Any]]:
    """psgd-torch's ``Newton`` preconditioner from ``theta``, full batch, exact Hessian-vector products.

    ``E`` reaches torch as an :class:`torch.autograd.Function` whose backward is
    the lab's gradient and whose second backward is the lab's exact
    Hessian-vector product (:meth:`Objective.hvp`), so PSGD's
    ``exact_hessian_vector_product`` path sees the same function as every
    other optimiser.  PSGD draws its probe vectors from torch's global
    generator, seeded 0 here for a reproducible run, with torch on one thread.
    """
    import psgd_torch
    import torch

    obj = f.obj

    class _Grad(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.save_for_backward(x)
            return torch.from_numpy(obj.g(x.detach().numpy().copy()))

        @staticmethod
        def backward(ctx: Any, v: Any) -> Any:
            (x,) = ctx.saved_tensors
            return torch.from_numpy(obj.hvp(x.detach().numpy().copy(), v.detach().numpy().copy()))

    class _Error(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.save_for_backward(x)
            return torch.tensor(obj.E(x.detach().numpy().copy()), dtype=torch.float64)

        @staticmethod
        def backward(ctx: Any, go: Any) -> Any:
            (x,) = ctx.saved_tensors
            return go * _Grad.apply(x)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        x = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        opt = psgd_torch.Newton([x], lr_params=0.1 if lr is None else lr, exact_hessian_vector_product=True)
        steps, reason = 0, "max-iter"
        while True:
            E, g = f(x.detach().numpy().copy())
            if not (math.isfinite(E) and np.all(np.isfinite(g))):
                reason = "diverged"
                break
            if float(np.linalg.norm(g)) < tol:
                reason = "converged"
                break
            if steps >= max_iter:
                break
            if time_limit is not None and time.perf_counter() - start > time_limit:
                reason = "time-limit"
                break
            opt.step(lambda: _Error.apply(x))
            steps += 1
        final = x.detach().numpy().astype(np.float64).copy()
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(state)
    return final, {"library": "psgd_torch", "version": _version("psgd-torch"), "torch": torch.__version__,
                   "preconditioner": "Newton", "lr_params": opt.lr_params, "steps": steps, "reason": reason}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:  # pragma: no cover - imported, so installed
        return "unknown"
