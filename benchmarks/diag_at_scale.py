"""check_diagonal with W >= 10^6: BackPACK's DiagHessian as the user's diagonal, and one tensor 1 % off.

Run from the repository root (a benchmark, not a test; it gates nothing):

    .venv/bin/python benchmarks/diag_at_scale.py                  # W = 1,017,400, N = 8, 64 Hutchinson samples
    .venv/bin/python benchmarks/diag_at_scale.py --samples 32 --entries 4

The network: ``benchmarks/hvp_at_scale.py``'s data (``[3, 32, 32]`` images, 10 classes, N = 8,
``CrossEntropyLoss``), through ``Flatten``, ``Linear(3072, 330) + tanh``, ``Linear(330, 10)``, in float32.
Not that benchmark's CNN: BackPACK 1.7's ``DiagHessian`` of it grew past 17 GB (in
``extract_bias_diagonal`` of the convolutions) and was stopped; and in float64 its ``AvgPool2d`` raises
"expected scalar type Double but found Float" (BackPACK builds the pooling layer's convolution in float32,
whatever the loss: docs/conformance.md).  The user's diagonal is BackPACK's
``DiagHessian`` (``backpack-for-pytorch``: the exact diagonal by its own second-order backpropagation);
the faulty one scales one tensor's diagonal (``--bad-tensor``, default the first linear layer's weight)
by 1.01.  Printed: the estimate beside the measured time and peak memory, each entry's and each
Hutchinson sum's margin, the load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from hvp_at_scale import build as build_cnn  # type: ignore[import-not-found]


def build(dtype):  # type: ignore[no-untyped-def]
    from torch import nn

    _, loss_fn, x, t = build_cnn(dtype)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3072, 330), nn.Tanh(), nn.Linear(330, 10)).to(dtype)
    return model, loss_fn, x, t


def backpack_diagonal(model, loss_fn, x, t):  # type: ignore[no-untyped-def]
    import torch
    from backpack import backpack, extend
    from backpack.extensions import DiagHessian

    model, loss_fn = extend(model), extend(loss_fn)
    model.zero_grad()
    with backpack(DiagHessian()):
        loss_fn(model(x), t).backward()
    return torch.cat([p.diag_h.reshape(-1) for p in model.parameters()])


def scaled(tensor: int, factor: float = 1.01):  # type: ignore[no-untyped-def]
    def faulty(model, loss_fn, x, t):  # type: ignore[no-untyped-def]
        d = backpack_diagonal(model, loss_fn, x, t)
        sizes = [p.numel() for p in model.parameters()]
        start = sum(sizes[:tensor])
        d[start:start + sizes[tensor]] *= factor
        return d

    return faulty


def main() -> None:
    import torch

    from hessverify.adapters.torch_diag import check_diagonal

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--entries", type=int, default=8)
    ap.add_argument("--bad-tensor", type=int, default=0, help="index in model.parameters() (0: Linear(3072, 330).weight)")
    args = ap.parse_args()
    model, loss_fn, x, t = build(torch.float32)
    W = sum(p.numel() for p in model.parameters())
    print(f"W = {W:,}, N = {x.shape[0]}, {args.samples} samples, {args.entries} entries; load {os.getloadavg()}")
    for label, fn in (("BackPACK DiagHessian", backpack_diagonal),
                      (f"tensor {args.bad_tensor} 1 % off", scaled(args.bad_tensor))):
        start = time.perf_counter()
        result = check_diagonal(fn, model, loss_fn, x, t, samples=args.samples, entries=args.entries,
                                max_seconds=3600)
        seconds = time.perf_counter() - start
        print(f"\n{label}: {'passed' if result.passed else 'FAILED'} in {seconds:.1f} s "
              f"(estimated {result.estimate['seconds']:.1f} s, {result.estimate['bytes'] / 2**20:.0f} MiB; "
              f"peak RSS of the process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB)")
        for p in result.probes:
            print(f"  {p.name:>28}: {'ok  ' if p.passed else 'FAIL'} margin {p.margin:9.3g}  {p.worst[:90]}")
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
