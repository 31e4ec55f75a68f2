"""Researcher-style PyTorch models for the module adapter's tests, and an independent Hessian by double backward.

Each builder returns ``(model, loss_fn, inputs, targets)`` in float64, seeded.  The reference
Hessian is PyTorch's own plain double backward (row by row, ``torch.autograd.grad`` of each
gradient entry) of the user's model through ``torch.func.functional_call``: it shares nothing
with hessverify's import or its methods.  Attention runs on the math kernel of
scaled_dot_product_attention, whose double backward exists (the fused CPU kernel has none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

D = torch.float64


class ResMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 4)
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        h = h + self.b(F.gelu(self.a(h)))
        return self.out(h)


class Block(nn.Module):
    """A one-block transformer: embedding, self-attention with a residual, LayerNorm, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(6, 4)
        self.att = nn.MultiheadAttention(4, 2, batch_first=True)
        self.ln = nn.LayerNorm(4)
        self.head = nn.Linear(12, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        h = h + self.att(h, h, h, need_weights=False)[0]
        return self.head(torch.flatten(self.ln(h), 1))


class _Tanh(torch.autograd.Function):
    """tanh with a hand-written backward that is itself differentiable (built from tensor ops)."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a)
        return torch.tanh(a)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (a,) = ctx.saved_tensors
        return g * (1 - torch.tanh(a) ** 2)


class _CutTanh(torch.autograd.Function):
    """tanh whose backward detaches: its gradient is right, its second derivative silently zero."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a)
        return torch.tanh(a)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (a,) = ctx.saved_tensors
        return g * (1 - torch.tanh(a.detach()) ** 2).detach()


class CustomMLP(nn.Module):
    def __init__(self, act: type[torch.autograd.Function] = _Tanh) -> None:
        super().__init__()
        self.l1 = nn.Linear(3, 4)
        self.l2 = nn.Linear(4, 2)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.act.apply(self.l1(x)))


def _seeded(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resmlp() -> tuple[nn.Module, Any, torch.Tensor, torch.Tensor]:
    g = _seeded(1)
    return ResMLP().to(D), nn.MSELoss(), torch.randn(5, 3, generator=g, dtype=D), torch.randn(5, 2, generator=g, dtype=D)


def cnn() -> tuple[nn.Module, Any, torch.Tensor, torch.Tensor]:
    g = _seeded(2)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(8, 3)).to(D)
    return model, nn.CrossEntropyLoss(), torch.randn(4, 1, 4, 4, generator=g, dtype=D), torch.tensor([0, 2, 1, 0])


def layernorm_mlp() -> tuple[nn.Module, Any, torch.Tensor, torch.Tensor]:
    g = _seeded(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.SiLU(), nn.Linear(4, 1)).to(D)
    return model, nn.BCEWithLogitsLoss(), torch.randn(5, 3, generator=g, dtype=D), torch.rand(5, 1, generator=g, dtype=D)


def transformer() -> tuple[nn.Module, Any, torch.Tensor, torch.Tensor]:
    g = _seeded(4)
    loss = lambda y, t: F.cross_entropy(y, t, reduction="sum")  # noqa: E731 (a functional loss, traced)
    return Block().to(D), loss, torch.randint(0, 6, (3, 3), generator=g), torch.tensor([0, 2, 1])


def custom_mlp(act: type[torch.autograd.Function] = _Tanh) -> tuple[nn.Module, Any, torch.Tensor, torch.Tensor]:
    g = _seeded(5)
    return CustomMLP(act).to(D), nn.HuberLoss(delta=2.0), torch.randn(4, 3, generator=g, dtype=D), \
        torch.randn(4, 2, generator=g, dtype=D)


IMPORTABLE: dict[str, Callable[[], tuple[nn.Module, Any, torch.Tensor, torch.Tensor]]] = {
    "resmlp": resmlp, "cnn": cnn, "layernorm-mlp": layernorm_mlp, "transformer": transformer}


def double_backward_hessian(model: nn.Module, loss_fn: Any, x: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    """The Hessian in ``model.parameters()`` order by plain double backward, row by row."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).requires_grad_(True)

    def E(theta: torch.Tensor) -> torch.Tensor:
        params, pos = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            params[n] = theta[pos:pos + k].reshape(s)
            pos += k
        return loss_fn(torch.func.functional_call(model, params, (x,)), t)

    with sdpa_kernel(SDPBackend.MATH):
        (g,) = torch.autograd.grad(E(flat), flat, create_graph=True)
        rows = [torch.autograd.grad(g[i], flat, retain_graph=True, allow_unused=True)[0] for i in range(flat.numel())]
    return torch.stack([torch.zeros_like(flat) if r is None else r for r in rows]).detach().numpy()


def _flat_E(model: nn.Module, loss_fn: Any, x: torch.Tensor, t: torch.Tensor) -> tuple[Any, torch.Tensor]:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def E(theta: torch.Tensor) -> torch.Tensor:
        params, pos = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            params[n] = theta[pos:pos + k].reshape(s)
            pos += k
        return loss_fn(torch.func.functional_call(model, params, (x,)), t)

    return E, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def users_hessian(model: nn.Module, loss_fn: Any, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A user's Hessian code: torch.autograd.functional.hessian at the model's dtype."""
    E, theta = _flat_E(model, loss_fn, x, t)
    with sdpa_kernel(SDPBackend.MATH):
        return torch.autograd.functional.hessian(E, theta)


def users_hvp(model: nn.Module, loss_fn: Any, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A user's H v: the double-backward trick, d/dtheta (g . v)."""
    E, theta = _flat_E(model, loss_fn, x, t)
    theta.requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):
        (g,) = torch.autograd.grad(E(theta), theta, create_graph=True)
        (hv,) = torch.autograd.grad(g @ v, theta)
    return hv


def users_ggn(model: nn.Module, loss_fn: Any, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """J^T H_loss J, the Hessian with the outputs' second-derivative term missing."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def outputs(th: torch.Tensor) -> torch.Tensor:
        params, pos = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            params[n] = th[pos:pos + k].reshape(s)
            pos += k
        return torch.func.functional_call(model, params, (x,)).reshape(-1)

    y = outputs(theta).detach()
    shape = model(x).shape
    J = torch.autograd.functional.jacobian(outputs, theta)
    Hl = torch.autograd.functional.hessian(lambda z: loss_fn(z.reshape(shape), t), y)
    return J.T @ Hl @ J
