"""``attention``: ``nn.MultiheadAttention(d, heads, bias=bias, batch_first=True)`` as self-attention ``attn(x, x, x)[0]``.

For one pattern ``x`` of shape ``(T, d)``, ``h`` heads of size ``d_h = d / h``:

.. math::

   [Q, K, V] = x W_{in}^T + b_{in},\\qquad
   O_i = \\operatorname{softmax}\\Big(\\frac{Q_i K_i^T}{\\sqrt{d_h}}\\Big) V_i,\\qquad
   y = [O_1, \\dots, O_h]\\, W_{out}^T + b_{out}

(Vaswani et al. 2017, eq. 1-2), ``Q_i`` the columns of head ``i``.  No mask, no
dropout.  Parameters in PyTorch's order: ``in_proj_weight`` (``Win``, ``(3d, d)``),
``in_proj_bias`` (``bin``), ``out_proj.weight`` (``Wout``), ``out_proj.bias`` (``bout``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hessverify.model.layers.base import BOOLEAN, INTEGER, LayerKind, Option, Shape, positive

__all__ = ["KIND", "Attention"]


class Attention(LayerKind):
    name = "attention"
    options = (Option("heads", INTEGER, check=positive, doc="the number of heads, dividing d"),
               Option("bias", BOOLEAN, True))
    torch = "nn.MultiheadAttention(d, heads, bias=bias, batch_first=True); attn(x, x, x)[0]"
    summary = "multi-head self-attention"

    def out_shape(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        if len(shape) != 2:
            raise ValueError(f"reads an input of shape [T, d], got {list(shape)}")
        if shape[1] % o["heads"]:
            raise ValueError(f"heads = {o['heads']} must divide d = {shape[1]}")
        return shape

    def tensors(self, o: dict[str, Any], in_shapes: Sequence[Shape]) -> list[tuple[str, Shape]]:
        d = in_shapes[0][1]
        if o["bias"]:
            return [("Win", (3 * d, d)), ("bin", (3 * d,)), ("Wout", (d, d)), ("bout", (d,))]
        return [("Win", (3 * d, d)), ("Wout", (d, d))]

    def build(self, b: Any, o: dict[str, Any], xs: Sequence[int], ps: Sequence[int], in_shapes: Sequence[Shape],
              ids: Any = None) -> int:
        T, d = in_shapes[0]
        h = o["heads"]
        dh = d // h
        Win, bin_, Wout, bout = (ps[0], ps[1], ps[2], ps[3]) if o["bias"] else (ps[0], None, ps[1], None)
        qkv = b.einsum("nti,oi->nto", xs[0], Win)
        if bin_ is not None:
            qkv = b.add(qkv, bin_)
        heads = np.arange(h)[:, None, None] * dh + np.arange(T)[None, :, None] * 3 * d + np.arange(dh)[None, None, :]
        q, k, v = (b.gather([qkv], heads + part * d) for part in range(3))  # (h, T, dh) each
        scores = b.scale(b.einsum("nhqc,nhsc->nhqs", q, k), 1.0 / np.sqrt(dh))
        weights = b.softmax(scores)
        out = b.einsum("nhqs,nhsc->nhqc", weights, v)  # (h, T, dh)
        joined = np.arange(T)[:, None, None] * dh + np.arange(h)[None, :, None] * T * dh + np.arange(dh)[None, None, :]
        out = b.gather([out], joined.reshape(T, d))
        y = b.einsum("nti,oi->nto", out, Wout)
        return b.add(y, bout) if bout is not None else y

    def xp(self, xp: Any, o: dict[str, Any], xs: Sequence[Any], ps: Sequence[Any]) -> Any:
        x = xs[0]
        n, T, d = x.shape
        h = o["heads"]
        dh = d // h
        Win, bin_, Wout, bout = (ps[0], ps[1], ps[2], ps[3]) if o["bias"] else (ps[0], None, ps[1], None)

        def project(part: int) -> Any:
            z = xp.matmul(x, xp.transpose(Win[part * d:(part + 1) * d]))
            if bin_ is not None:
                z = z + bin_[part * d:(part + 1) * d]
            return xp.transpose(xp.reshape(z, (n, T, h, dh)), (0, 2, 1, 3))  # (n, h, T, dh)

        q, k, v = project(0), project(1), project(2)
        s = xp.matmul(q, xp.transpose(k, (0, 1, 3, 2))) / xp.sqrt(float(dh))  # xp's: exact where xp is
        e = xp.exp(s - xp.max(s, axis=-1, keepdims=True))
        p = e / xp.sum(e, axis=-1, keepdims=True)
        out = xp.reshape(xp.transpose(xp.matmul(p, v), (0, 2, 1, 3)), (n, T, d))
        y = xp.matmul(out, xp.transpose(Wout))
        return y + bout if bout is not None else y

    def describe(self, o: dict[str, Any]) -> str:
        return f"h{o['heads']}" + ("" if o["bias"] else ",nobias")


KIND = Attention()
