"""check_hvp on a CNN with W >= 10^6: a correct HVP passes, one with one layer's block 0.1 % off fails.

Run from the repository root (a benchmark, not a test; it gates nothing):

    .venv/bin/python benchmarks/hvp_at_scale.py                    # W = 1,070,794, N = 8, 4 random probes
    .venv/bin/python benchmarks/hvp_at_scale.py --dtype float32 --probes 2

The network: input ``[3, 32, 32]``, ``Conv2d(3, 32, 3, padding=1) + tanh``,
``AvgPool2d(2)``, ``Conv2d(32, 64, 3, padding=1) + tanh``, ``AvgPool2d(2)``,
``Flatten``, ``Linear(4096, 256) + tanh``, ``Linear(256, 10)``;
``CrossEntropyLoss``; seeded.  The user's HVP is the double-backward trick
(``d/dtheta (g . v)``) at ``--dtype``; the faulty one adds ``0.001 H_TT v_T``
to the entries of one tensor ``T`` (``--bad-tensor``, default the first
linear layer's weight, 1,048,576 entries).  Printed: the estimate beside the
measured time and peak memory, each probe's margin, the load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import time


def build(dtype):  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(4096, 256), nn.Tanh(), nn.Linear(256, 10)).to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 32, 32, generator=g, dtype=dtype)
    t = torch.randint(0, 10, (8,), generator=g)
    return model, nn.CrossEntropyLoss(), x, t


def hvp(model, loss_fn, x, t, v):  # type: ignore[no-untyped-def]
    import torch

    params = list(model.parameters())
    g = torch.autograd.grad(loss_fn(model(x), t), params, create_graph=True)
    gv = sum((gi.reshape(-1) * vi).sum() for gi, vi in zip(g, v.split([p.numel() for p in params])))
    return torch.cat([h.reshape(-1) for h in torch.autograd.grad(gv, params)])


def block_off(tensor: int, factor: float = 1.001):  # type: ignore[no-untyped-def]
    def faulty(model, loss_fn, x, t, v):  # type: ignore[no-untyped-def]
        sizes = [p.numel() for p in model.parameters()]
        a = sum(sizes[:tensor])
        only = v.clone()
        only[:a] = 0
        only[a + sizes[tensor]:] = 0
        out = hvp(model, loss_fn, x, t, v)
        out[a:a + sizes[tensor]] += (factor - 1) * hvp(model, loss_fn, x, t, only)[a:a + sizes[tensor]]
        return out

    return faulty


def main() -> None:
    import torch

    from hessverify.adapters.torch_hvp import check_hvp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--bad-tensor", type=int, default=4, help="index in model.parameters() (4: Linear(4096, 256).weight)")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    model, loss_fn, x, t = build(dtype)
    W = sum(p.numel() for p in model.parameters())
    print(f"W = {W:,}, N = {x.shape[0]}, dtype {args.dtype}, {args.probes} random probes; load {os.getloadavg()}")
    for label, fn in (("correct", hvp), (f"tensor {args.bad_tensor} block 0.1 % off", block_off(args.bad_tensor))):
        start = time.perf_counter()
        result = check_hvp(fn, model, loss_fn, x, t, probes=args.probes)
        seconds = time.perf_counter() - start
        print(f"\n{label}: {'passed' if result.passed else 'FAILED'} in {seconds:.1f} s "
              f"(estimated {result.estimate['seconds']:.1f} s, {result.estimate['bytes'] / 2**20:.0f} MiB; "
              f"peak RSS of the process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB)")
        for p in result.probes:
            print(f"  {p.name:>12}: {'ok  ' if p.passed else 'FAIL'} margin {p.margin:9.3g}  served {','.join(p.served)}"
                  + (f"  not served: {sorted(p.not_served)}" if p.not_served else ""))
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
