"""float32 judged by float32 rounding: false alarms on correct float32 Hessians, and the smallest block error caught.

The figures of docs/trust.md ("float32, judged by float32's rounding")::

    .venv/bin/python benchmarks/float32_judging.py

Every problem is drawn by ``hessverify.checking.strategies.problems()`` (seed 0) and
held to backprop; the torch and jax runs are timed in separate blocks.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import torch

import hessverify.adapters.jax as hvj
import hessverify.adapters.torch as hvt
from hessverify.checking.strategies import problems

EXAMPLES = 200  # the ci profile's count
BLOCK_EXAMPLES = 50


def torch_hessian(c: hvt.TorchCase) -> torch.Tensor:
    return torch.func.hessian(c.loss)(c.params)


def jax_hessian(c: hvj.JaxCase) -> jax.Array:
    return jax.hessian(c.loss)(c.flat_params)


def block_off(rel: float):  # noqa: ANN201 - a function under test
    def off(c: hvt.TorchCase) -> torch.Tensor:
        H = torch_hessian(c).clone()
        b = c.problem.architecture.blocks[-1].slice
        H[b, b] *= 1 + rel  # the output layer's block, off by rel
        return H

    return off


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    runs = (("torch", hvt.check_model, torch_hessian, torch.float32), ("jax", hvj.check_model, jax_hessian, np.float32))
    for name, check_model, fn, dtype in runs:
        t = time.perf_counter()
        r = check_model(fn, problems(kinds=False), dtype=dtype, against=("backprop",), max_examples=EXAMPLES, seed=0)
        print(f"{name} float32 correct: passed={r.passed} on {r.n_problems} problems ({time.perf_counter() - t:.0f} s)",
              flush=True)
    for rel in (1e-2, 1e-3, 1e-4, 1e-5):
        r = hvt.check_model(block_off(rel), problems(kinds=False), dtype=torch.float32, against=("backprop",),
                            max_examples=BLOCK_EXAMPLES, seed=0)
        print(f"torch float32 block off by {rel:g}: caught={not r.passed} after {r.n_problems} problem(s)", flush=True)


if __name__ == "__main__":
    main()
