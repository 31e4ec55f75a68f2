"""A correct Hessian of every layer kind, written independently of hessverify's methods: PyTorch's own modules
(``hessverify.adapters.torch``'s table: ``nn.Linear``, ``nn.Conv1d``, ``nn.LayerNorm``, ``nn.MultiheadAttention``,
...) and ``torch.autograd.functional.hessian`` (double backward).

    hessverify sweep --method-under-test examples/torch_double_backward.py:hessian --examples 300 --seed 0

draws every layer kind (the default strategies) and passes: the sweep that issue 22's "an independent correct
implementation passes 300 examples, having drawn every kind" asks for.  Set ``HESSVERIFY_KINDS_LOG`` to a file
to have each drawn network's layer kinds appended to it, one line a problem.
"""

from __future__ import annotations

import os

import numpy as np
import torch

import hessverify.adapters.torch as hvt


def hessian(problem):  # type: ignore[no-untyped-def]
    log = os.environ.get("HESSVERIFY_KINDS_LOG")
    if log:
        with open(log, "a") as f:
            f.write(" ".join(layer.kind + ("+gain" if layer.kind == "dense" and layer.opts.get("gain") else "")
                             for layer in problem.architecture.layers) + "\n")
    E = hvt.loss(problem)
    theta = torch.tensor(problem.params, dtype=torch.float64)
    return np.asarray(torch.autograd.functional.hessian(E, theta).detach().numpy())
