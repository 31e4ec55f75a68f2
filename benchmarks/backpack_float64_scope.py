"""BackPACK's second-order extensions in a float64 network: which modules, losses and extensions raise.

The scope of the BackPACK dtype faults in docs/conformance.md::

    .venv/bin/python benchmarks/backpack_float64_scope.py            # float64
    .venv/bin/python benchmarks/backpack_float64_scope.py float32    # the default dtype, for comparison

Each extension runs once on each small ``nn.Sequential`` (two patterns) and loss; a line says whether it
returns (and in which dtypes), raises because BackPACK does not extend a module (``unsupported``), or raises
otherwise (the message).  Where the extension is exact (DiagHessian, BatchDiagHessian summed over the
batch, DiagGGNExact) its result is compared with ``torch.func.hessian`` and ``J^T H_loss J`` from
``torch.func.jacrev`` on an unextended copy of the model: the largest error over the largest entry.  To
run a patched BackPACK, put its copy first on ``PYTHONPATH``.
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections import Counter

import backpack
import torch
from backpack import backpack as backpack_context
from backpack import extend
from backpack import extensions as E
from backpack.extensions.curvature import Curvature
from backpack.extensions.secondorder.hbp import BackpropStrategy, ExpectationApproximation, LossHessianStrategy
from torch import nn
from torch.func import functional_call, hessian, jacrev

DT = getattr(torch, sys.argv[1] if len(sys.argv) > 1 else "float64")


def models(K: int):  # type: ignore[no-untyped-def]
    """``(name, model, inputs)``, ``K`` outputs; a parameter below each pooling layer (the pooling layer's
    derivatives are then used) but in "AvgPool1d first"."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def r(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=g, dtype=DT)

    yield "Linear", nn.Sequential(nn.Linear(2, K)), r(2, 2)
    yield "Linear-Tanh-Linear", nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, K)), r(2, 2)
    yield "AvgPool1d first", nn.Sequential(nn.AvgPool1d(2), nn.Flatten(), nn.Linear(2, K)), r(2, 1, 4)
    yield "Conv1d-AvgPool1d", nn.Sequential(nn.Conv1d(1, 1, 1), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(2, K)), \
        r(2, 1, 4)
    yield "Conv2d-AvgPool2d", nn.Sequential(nn.Conv2d(1, 1, 1), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(1, K)), \
        r(2, 1, 2, 2)
    yield "Conv1d-MaxPool1d", nn.Sequential(nn.Conv1d(1, 1, 1), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(2, K)), \
        r(2, 1, 4)
    yield "Conv2d-MaxPool2d", nn.Sequential(nn.Conv2d(1, 1, 1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1, K)), \
        r(2, 1, 2, 2)
    yield "Embedding", nn.Sequential(nn.Embedding(3, 2), nn.Flatten(), nn.Linear(2, K)), torch.tensor([[0], [2]])


def losses():  # type: ignore[no-untyped-def]
    yield 2, "CrossEntropyLoss", nn.CrossEntropyLoss(), torch.tensor([0, 1])
    yield 2, "MSELoss(sum)", nn.MSELoss(reduction="sum"), torch.full((2, 2), 0.3, dtype=DT)
    yield 2, "MSELoss(mean)", nn.MSELoss(), torch.full((2, 2), 0.3, dtype=DT)
    yield 1, "BCEWithLogitsLoss", nn.BCEWithLogitsLoss(), torch.tensor([[0.0], [1.0]], dtype=DT)


EXTENSIONS = {
    "DiagHessian": (E.DiagHessian, "diag_h"),
    "BatchDiagHessian": (E.BatchDiagHessian, "diag_h_batch"),
    "DiagGGNExact": (E.DiagGGNExact, "diag_ggn_exact"),
    "DiagGGNMC": (E.DiagGGNMC, "diag_ggn_mc"),
    "BatchDiagGGNExact": (E.BatchDiagGGNExact, "diag_ggn_exact_batch"),
    "KFAC": (E.KFAC, "kfac"),
    "KFLR": (E.KFLR, "kflr"),
    "KFRA": (E.KFRA, "kfra"),
    "HBP(hessian, sum, average)": (lambda: E.HBP(Curvature.HESSIAN, LossHessianStrategy.SUM,
                                                 BackpropStrategy.BATCH_AVERAGE,
                                                 ExpectationApproximation.BOTEV_MARTENS), "hbp"),
    "HMP": (E.HMP, "hmp"),
    "GGNMP": (E.GGNMP, "ggnmp"),
}


def references(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, t: torch.Tensor):  # type: ignore[no-untyped-def]
    """The Hessian's and the GGN's diagonals, by torch.func, in the model's dtype."""
    names = [n for n, _ in model.named_parameters()]
    p0 = tuple(p.detach() for p in model.parameters())
    idx = tuple(range(len(p0)))

    def out(*ps: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(names, ps)), (x,))

    H = hessian(lambda *ps: loss_fn(out(*ps), t), argnums=idx)(*p0)
    h = torch.cat([H[i][i].reshape(p.numel(), p.numel()).diagonal() for i, p in enumerate(p0)])
    y = out(*p0)
    J = torch.cat([j.reshape(y.numel(), -1) for j in jacrev(out, argnums=idx)(*p0)], 1)
    HL = hessian(lambda yy: loss_fn(yy, t))(y).reshape(y.numel(), y.numel())
    return h, (J.T @ HL @ J).diagonal()


def run(name: str, base: nn.Module, loss_fn: nn.Module, x: torch.Tensor, t: torch.Tensor) -> str:
    ext, field = EXTENSIONS[name]
    torch.manual_seed(0)
    clean = copy.deepcopy(base).to(DT)
    model, crit = extend(copy.deepcopy(clean)), extend(copy.deepcopy(loss_fn))
    try:
        with backpack_context(ext()):
            crit(model(x), t).backward()
        values = [getattr(p, field) for p in model.parameters()]
        if name in ("HMP", "GGNMP"):  # matrix-free: multiply by a matrix of ones
            values = [v(torch.ones(1, *p.shape, dtype=DT)) for v, p in zip(values, model.parameters())]
    except NotImplementedError as exc:
        return "unsupported" if "does not have an extension" in str(exc) else f"raises NotImplementedError: {exc}"
    except RuntimeError as exc:
        return f"raises RuntimeError: {str(exc).splitlines()[0]}"
    flat = [v for vs in values for v in (vs if isinstance(vs, list) else [vs])]
    line = "ok " + "/".join(sorted({str(v.dtype).removeprefix("torch.") for v in flat}))
    if name in ("DiagHessian", "BatchDiagHessian", "DiagGGNExact"):
        h, ggn = references(clean, loss_fn, x, t)
        got = torch.cat([(v.sum(0) if name.startswith("Batch") else v).reshape(-1) for v in values])
        ref = ggn if name == "DiagGGNExact" else h
        line += f", error {((got - ref).abs().max() / ref.abs().max()).item():.1e}"
    return line


def main() -> None:
    warnings.filterwarnings("ignore")  # the full backward hook fires with inputs that need no gradient
    print(f"torch {torch.__version__}, BackPACK from {backpack.__file__.rsplit('/', 2)[0]}, {DT}")
    tally: Counter[str] = Counter()
    for K, loss_name, loss_fn, t in losses():
        for model_name, base, x in models(K):
            for name in EXTENSIONS:
                line = run(name, base, loss_fn, x, t)
                tally[line.split(",")[0]] += 1
                print(f"{model_name:18s} {loss_name:18s} {name:27s} {line}")
    print("\n".join(f"{n:4d}  {what}" for what, n in tally.most_common()))


if __name__ == "__main__":
    main()
