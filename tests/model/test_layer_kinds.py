"""Layer kinds: every method equals an independent PyTorch model of the same layers; bad shapes are one line.

The PyTorch models here are built by hand from the case's layers (``nn.Conv1d``,
``nn.LayerNorm``, ``nn.MultiheadAttention``, ...) and differentiated twice by
PyTorch's own double backward: nothing of hessverify's but the flat parameter
vector and the data is shared.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import hessverify
from hessverify.checking.layer_draws import SIGNATURES, layered_architectures
from hessverify.errors import CaseError
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem

ROOT = Path(__file__).resolve().parents[2]
KIND_CASES = ["conv1d-2x8-3-pool-2-tanh", "conv2d-1x5x5-2-stride-bce", "layernorm-mlp-3-4-2-ce",
              "residual-mlp-3-3-add-1-gelu", "batchnorm-train-4-3-1", "batchnorm-eval-2x3-1", "attention-3x4-2heads",
              "transformer-block-embedding", "xor-2-2-1-sigmoid-gain", "curve-1-2-1-sigmoid-gain"]
EXACT = ["backprop", "rop", "pairwise"]


def _torch_hessian(problem: Problem) -> np.ndarray:
    """PyTorch's double backward of the same network, built from its layers with torch.nn modules."""
    torch = pytest.importorskip("torch")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    arch = problem.architecture
    acts = {"identity": lambda a: a, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": torch.nn.functional.softplus,
            "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu, "relu": torch.relu, "sin": torch.sin}
    mods = []
    for index, layer in enumerate(arch.layers, start=1):
        srcs = (index - 1,) if layer.sources is None else layer.sources
        ins = [arch.shapes[s] for s in srcs]
        o, k = layer.opts, layer.kind
        if k == "dense":
            m = torch.nn.Linear(sum(s[-1] for s in ins), o["units"], bias=o["bias"], dtype=torch.float64)
        elif k in ("conv1d", "conv2d"):
            cls = torch.nn.Conv1d if k == "conv1d" else torch.nn.Conv2d
            m = cls(ins[0][0], o["channels"], o["kernel"], o["stride"], o["padding"], groups=o["groups"], bias=o["bias"],
                    dtype=torch.float64)
        elif k in ("avg_pool1d", "avg_pool2d"):
            cls = torch.nn.AvgPool1d if k == "avg_pool1d" else torch.nn.AvgPool2d
            m = cls(o["kernel"], o["stride"] or o["kernel"])
        elif k == "flatten":
            m = torch.nn.Flatten()
        elif k == "layer_norm":
            m = torch.nn.LayerNorm(ins[0][-1], elementwise_affine=o["affine"], eps=o["eps"], dtype=torch.float64)
        elif k == "batch_norm":
            cls = torch.nn.BatchNorm2d if len(ins[0]) == 3 else torch.nn.BatchNorm1d
            m = cls(ins[0][0], eps=o["eps"], affine=o["affine"], track_running_stats=o["mode"] == "eval",
                    dtype=torch.float64)
            if o["mode"] == "eval":
                m.eval()
                if o["running_mean"] is not None:
                    m.running_mean[:] = torch.tensor(o["running_mean"])
                if o["running_var"] is not None:
                    m.running_var[:] = torch.tensor(o["running_var"])
        elif k == "attention":
            m = torch.nn.MultiheadAttention(ins[0][1], o["heads"], bias=o["bias"], batch_first=True, dtype=torch.float64)
        elif k == "embedding":
            m = torch.nn.Embedding(o["vocab"], o["dim"], dtype=torch.float64)
        else:
            m = None
        mods.append(m)
    n = problem.n_patterns
    x0 = torch.tensor(problem.inputs).reshape((n,) + arch.shape)
    t = torch.tensor(problem.targets)

    def E(theta: torch.Tensor) -> torch.Tensor:
        outs, pos = [x0], 0
        for index, (layer, m) in enumerate(zip(arch.layers, mods), start=1):
            srcs = (index - 1,) if layer.sources is None else layer.sources
            xs = [outs[s] for s in srcs]
            ps = {}
            if m is not None:
                for name, p in m.named_parameters():
                    ps[name] = theta[pos:pos + p.numel()].reshape(p.shape)
                    pos += p.numel()
            if layer.kind == "add":
                y = xs[0] + xs[1]
            elif layer.kind == "attention":
                y = torch.func.functional_call(m, ps, (xs[0], xs[0], xs[0]), {"need_weights": False})[0]
            elif layer.kind == "embedding":
                y = torch.func.functional_call(m, ps, (xs[0].long(),))
            elif layer.kind == "dense" and len(xs) > 1:
                y = torch.func.functional_call(m, ps, (torch.cat(xs, -1),))
            else:
                y = torch.func.functional_call(m, ps, (xs[0],))
            if layer.kind == "dense" and layer.opts["gain"]:
                y = y * theta[pos:pos + layer.units]
                pos += layer.units
            outs.append(acts[layer.activation](y))
        y = outs[-1].reshape(n, -1)
        if problem.loss == "sse":
            e = 0.5 * ((y - t) ** 2).sum()
        elif problem.loss == "cross_entropy":
            e = -(t * torch.log_softmax(y, dim=1)).sum()
        elif problem.loss == "binary_cross_entropy":
            e = torch.nn.functional.binary_cross_entropy_with_logits(y, t, reduction="sum")
        else:
            e = y.sum()
        return e / n if problem.reduction == "mean" else e

    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernel has no double backward
        return torch.autograd.functional.hessian(E, torch.tensor(problem.params)).numpy()


@pytest.mark.parametrize("case", KIND_CASES)
def test_every_exact_method_equals_pytorch_double_backward(case: str) -> None:
    problem = hessverify.load_case(ROOT / "cases" / f"{case}.toml")
    H = _torch_hessian(problem)
    scale = np.abs(H).max()
    for method in EXACT:
        assert np.abs(hessverify.hessian(problem, method) - H).max() <= 1e-12 * scale, method
    blocks = hessverify.hessian(problem, "block_diagonal")
    for blk, part in zip(problem.architecture.blocks, blocks):
        np.testing.assert_allclose(part, H[blk.slice, blk.slice], rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(hessverify.hessian(problem, "diagonal"), np.diag(H), rtol=0, atol=1e-12 * scale)
    v = np.linspace(-1.0, 1.0, problem.n_params)
    np.testing.assert_allclose(hessverify.hvp(problem, v), H @ v, rtol=0, atol=1e-12 * scale * problem.n_params)


def test_a_kind_case_round_trips_through_its_toml() -> None:
    problem = hessverify.load_case(ROOT / "cases" / "transformer-block-embedding.toml")
    again = hessverify.parse_case(problem.to_toml())
    assert again.architecture == problem.architecture
    np.testing.assert_array_equal(again.params, problem.params)
    np.testing.assert_array_equal(again.inputs, problem.inputs)
    assert again.param_names == problem.param_names


@pytest.mark.parametrize(("layer", "message"), [
    ('{ kind = "conv1d", channels = 3, kernel = 9 }', "does not fit"),
    ('{ kind = "conv1d", channels = 3, kernel = 3, groups = 2 }', "must divide"),
    ('{ kind = "conv1d", channel = 3, kernel = 3 }', "not an option of conv1d"),
    ('{ kind = "attention", heads = 3 }', "must divide d"),
    ('{ kind = "add", from = [0, 1] }', "must be equal"),
    ('{ kind = "embedding", vocab = 3, dim = 2 }', "must be the first layer"),
])
def test_shapes_that_do_not_fit_are_one_line_naming_the_layer(layer: str, message: str) -> None:
    text = f"""[network]
input_shape = [2, 6]
layers = [{{ units = 2, activation = "tanh" }}, {layer}, {{ kind = "flatten" }}, {{ units = 1 }}]
loss = "sse"
[data]
seed = 0
patterns = 2
[params]
seed = 0
scale = 1.0
"""
    with pytest.raises(CaseError, match=message) as info:
        hessverify.parse_case(text)
    assert "\n" not in str(info.value)


def test_a_token_id_outside_the_vocabulary_is_refused() -> None:
    text = """[network]
input_shape = [2]
layers = [{ kind = "embedding", vocab = 3, dim = 2 }, { kind = "flatten" }, { units = 1 }]
loss = "sse"
[data]
inputs = [[0, 3]]
targets = [[1.0]]
[params]
seed = 0
scale = 1.0
"""
    with pytest.raises(CaseError, match="token id 3 .* not a whole number in 0 .. 2"):
        hessverify.parse_case(text)


def test_the_draws_reach_every_kind() -> None:
    seen: collections.Counter[str] = collections.Counter()

    # derandomized: a fixed sequence of draws, so that a run that happens to miss a kind is not a failure
    @settings(max_examples=300, database=None, suppress_health_check=list(HealthCheck), deadline=None,
              derandomize=True)
    @given(layered_architectures())
    def draw(arch: Architecture) -> None:
        seen.update({layer.kind for layer in arch.layers})

    draw()
    assert set(SIGNATURES) <= set(seen), seen


def test_a_dense_network_with_gains_is_checked_through_its_graph() -> None:
    arch = Architecture(2, (Layer(2, "sigmoid", options={"gain": True}), Layer(1, "sigmoid", options={"gain": True})))
    assert not arch.is_dense and arch.param_names[-1] == "c2[0]"
    problem = hessverify.load_case(ROOT / "cases" / "xor-2-2-1-sigmoid-gain.toml")
    assert all(c.passed for c in hessverify.verify_problem(problem, references=["autograd"]))
