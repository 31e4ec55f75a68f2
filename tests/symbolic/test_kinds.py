"""The ``symbolic`` reference on networks of every layer kind, against PyTorch's double backward and the methods.

The PyTorch twin is written here from the issue's table (each kind the
``torch.nn`` module of that name; ``nn.MultiheadAttention`` on the MATH
kernel, which has a double backward), not from anything in hessverify.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import sympy

from hessverify.engine.verify import verify_problem
from hessverify.errors import NotDifferentiableError
from hessverify.model.network import Architecture, Layer
from hessverify.model.problem import Problem
from hessverify.symbolic import kinds

torch = pytest.importorskip("torch")


CASES: dict[str, tuple[Architecture, str, int]] = {
    "conv1d": (Architecture(12, (Layer(kind="conv1d", options={"channels": 3, "kernel": 3, "padding": 1, "stride": 2},
                                       activation="tanh"), Layer(kind="flatten"), Layer(2)), input_shape=(2, 6)),
               "sse", 3),
    "conv1d-groups-pool": (Architecture(12, (Layer(kind="conv1d", options={"channels": 4, "kernel": 2, "groups": 2},
                                                   activation="sigmoid"), Layer(kind="avg_pool1d", options={"kernel": 2}),
                                             Layer(kind="flatten"), Layer(2)), input_shape=(2, 6)), "cross_entropy", 3),
    "conv2d-pool2d": (Architecture(2 * 4 * 4, (Layer(kind="conv2d", options={"channels": 2, "kernel": [2, 3],
                                                                              "padding": [1, 0]}, activation="tanh"),
                                               Layer(kind="avg_pool2d", options={"kernel": 2}), Layer(kind="flatten"),
                                               Layer(1)), input_shape=(2, 4, 4)), "sse", 2),
    "layer_norm-add": (Architecture(3, (Layer(3, "tanh"), Layer(kind="layer_norm"), Layer(3, "gelu"),
                                        Layer(kind="add", sources=(2, 3)), Layer(1))), "sse", 3),
    # an add that reads a row of every weight below it and one of fewer, the first read again later: the rows of
    # the chain rule are combined into new arrays, never into an argument's (a bug that once gave 20 % off)
    "add-residual-chain": (Architecture(3, (Layer(3, "tanh"), Layer(3, "tanh"), Layer(kind="add", sources=(2, 1)),
                                            Layer(kind="add", sources=(3, 2)), Layer(1, "tanh"))), "sse", 3),
    "batch_norm-train": (Architecture(4, (Layer(3, "tanh"), Layer(kind="batch_norm"), Layer(2))), "sse", 4),
    "batch_norm-eval": (Architecture(4, (Layer(kind="batch_norm", options={
        "mode": "eval", "running_mean": [0.1, 0.2, -0.3, 0.0], "running_var": [1.0, 2.0, 0.5, 1.5]}), Layer(2, "tanh"))),
        "binary_cross_entropy", 3),
    "attention": (Architecture(3 * 4, (Layer(kind="attention", options={"heads": 2}), Layer(kind="flatten"),
                                       Layer(1)), input_shape=(3, 4)), "sse", 2),
    "embedding": (Architecture(3, (Layer(kind="embedding", options={"vocab": 4, "dim": 2}), Layer(kind="flatten"),
                                   Layer(2, "tanh"))), "sse", 3),
    "linear-conv-exact": (Architecture(8, (Layer(kind="conv1d", options={"channels": 2, "kernel": 2}),
                                           Layer(kind="avg_pool1d", options={"kernel": 3}), Layer(kind="flatten"),
                                           Layer(1)), input_shape=(2, 4)), "sse", 3),
}
"""Every kind at least once (``add``, ``flatten``, the pools in passing); arch, loss, patterns."""


def case(name: str) -> Problem:
    arch, loss, N = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    x = rng.integers(0, 4, size=(N, arch.inputs)).astype(float) if name == "embedding" else \
        rng.standard_normal((N, arch.inputs))
    t = rng.standard_normal((N, arch.outputs))
    if loss == "cross_entropy":
        t = np.abs(t)
    if loss == "binary_cross_entropy":
        t = rng.uniform(size=t.shape)
    return Problem(arch, loss, rng.standard_normal(arch.n_params) * 0.5, x, t, id=name,
                   reduction="mean" if name == "attention" else "sum")


_ACT = {"identity": lambda a: a, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
        "gelu": torch.nn.functional.gelu}


def _module(arch: Architecture, index: int, layer: Layer) -> object:
    srcs = (index - 1,) if layer.sources is None else layer.sources
    shape = arch.shapes[srcs[0]]
    o, k = layer.opts, layer.kind
    nn = torch.nn
    if k == "dense":
        return nn.Linear(sum(arch.shapes[s][-1] for s in srcs), o["units"], bias=o["bias"])
    if k in ("conv1d", "conv2d"):
        cls = nn.Conv1d if k == "conv1d" else nn.Conv2d
        return cls(shape[0], o["channels"], o["kernel"], o["stride"], o["padding"], groups=o["groups"], bias=o["bias"])
    if k in ("avg_pool1d", "avg_pool2d"):
        return (nn.AvgPool1d if k == "avg_pool1d" else nn.AvgPool2d)(o["kernel"], o["stride"] or o["kernel"])
    if k == "flatten":
        return nn.Flatten()
    if k == "layer_norm":
        return nn.LayerNorm(shape[-1], elementwise_affine=o["affine"], eps=o["eps"])
    if k == "batch_norm":
        m = (nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d)(shape[0], eps=o["eps"], affine=o["affine"],
                                                                    track_running_stats=o["mode"] == "eval")
        if o["mode"] == "eval":  # the running statistics in float64, as the case gives them
            m = m.double().eval()
            m.running_mean[:] = torch.tensor(o["running_mean"], dtype=torch.float64)
            m.running_var[:] = torch.tensor(o["running_var"], dtype=torch.float64)
        return m
    if k == "attention":
        return nn.MultiheadAttention(shape[1], o["heads"], bias=o["bias"], batch_first=True)
    if k == "embedding":
        return nn.Embedding(o["vocab"], o["dim"])
    return None  # add


def torch_hessian(problem: Problem) -> np.ndarray:
    """PyTorch's double backward of the same network, loss and data."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    arch = problem.architecture
    with torch.random.fork_rng():
        mods = [_module(arch, i, layer) for i, layer in enumerate(arch.layers, start=1)]
    x0 = torch.tensor(problem.inputs, dtype=torch.float64).reshape((problem.n_patterns,) + arch.shape)
    t = torch.tensor(problem.targets, dtype=torch.float64)

    def E(theta: torch.Tensor) -> torch.Tensor:
        outs, pos = [x0], 0
        for i, (layer, m) in enumerate(zip(arch.layers, mods, strict=True), start=1):
            srcs = (i - 1,) if layer.sources is None else layer.sources
            ps = {}
            for name, p in ([] if m is None else m.named_parameters()):
                ps[name] = theta[pos:pos + p.numel()].reshape(p.shape)
                pos += p.numel()
            xs = [outs[s] for s in srcs]
            if layer.kind == "add":
                y = xs[0] + xs[1]
            elif layer.kind == "attention":
                y = torch.func.functional_call(m, ps, (xs[0], xs[0], xs[0]), {"need_weights": False})[0]
            elif layer.kind == "embedding":
                y = torch.func.functional_call(m, ps, (xs[0].long(),))
            else:
                y = torch.func.functional_call(m, {**ps, **dict(m.named_buffers())}, (xs[0].to(torch.float64),))
            outs.append(_ACT[layer.activation](y))
        y = outs[-1].reshape(problem.n_patterns, -1)
        if problem.loss == "sse":
            e = 0.5 * ((y - t) ** 2).sum()
        elif problem.loss == "cross_entropy":
            e = -(t * torch.log_softmax(y, dim=1)).sum()
        else:
            e = (torch.nn.functional.softplus(y) - t * y).sum()
        return e / problem.n_patterns if problem.reduction == "mean" else e

    for m in mods:
        if m is not None:
            m.to(torch.float64)
    with sdpa_kernel(SDPBackend.MATH):
        return torch.autograd.functional.hessian(E, torch.tensor(problem.params, dtype=torch.float64)).numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_symbolic_equals_torch_double_backward_and_the_methods(name: str) -> None:
    problem = case(name)
    H, err = kinds.hessian_with_error(problem)
    Ht = torch_hessian(problem)
    scale = np.abs(Ht).max()
    assert np.abs(H - Ht).max() <= 5e-15 * scale, np.abs(H - Ht).max() / scale
    assert np.all(err <= 1e-15 * scale + 1e-300)  # the rounding to float64, and 1e-48 beyond
    for c in verify_problem(problem, ["backprop", "rop"], ["symbolic"]):
        assert c.passed, c


def test_a_polynomial_network_is_exact() -> None:
    problem = case("linear-conv-exact")
    assert kinds.exact_allowed(problem)
    exact = kinds.hessian_exact(problem)
    assert all(isinstance(v, Fraction) for v in exact.ravel())
    # the error of the float64 value is its rounding alone: half an ulp at most
    H, err = kinds.hessian_with_error(problem)
    assert np.all(err <= np.spacing(np.abs(H)) * 0.5 * (1 + 1e-12))
    assert np.array_equal(H, np.vectorize(float)(exact))
    assert not kinds.exact_allowed(case("conv1d"))  # tanh
    assert not kinds.exact_allowed(case("batch_norm-eval"))  # 1/sqrt(var + eps) is irrational


def test_decimal_and_mpmath_agree_to_their_digits() -> None:
    problem = case("layer_norm-add")
    num_d, den_d, _ = kinds.hessian_high_precision(problem, 40)
    num_m, den_m, _ = kinds.hessian_high_precision(problem, 40, numbers="mpmath")
    diff = max(abs(Fraction(a, den_d) - Fraction(b, den_m)) for a, b in zip(num_d.ravel(), num_m.ravel(), strict=True))
    M = kinds.magnitudes(problem).max()
    assert diff < 1e-36 * M


def test_the_bound_covers_a_lower_precision_run() -> None:
    # the 30-digit value is within its own bound of the 60-digit one (which is 30 digits closer to the truth)
    problem = case("attention")
    low, _, r = kinds.hessian_high_precision(problem, 30)
    high, den_high, _ = kinds.hessian_high_precision(problem, 60)
    _, den_low, _ = kinds.hessian_high_precision(problem, 30)
    M = kinds.magnitudes(problem)
    bound = kinds.OWN_FACTOR * r.chain * 1e-29 * M
    gap = np.vectorize(lambda a, b: float(abs(Fraction(a, den_low) - Fraction(b, den_high))))(low, high)
    assert np.all(gap <= bound)
    assert gap.max() > 0  # 30 digits do round


def test_the_program_reads_like_the_layer() -> None:
    arch = Architecture(3, (Layer(kind="layer_norm"), Layer(1)))
    prog = kinds.program(arch, "sse")
    defs = {str(k): v for k, v in prog.definitions.items()}
    x0, x1, x2 = sympy.symbols("x[0] x[1] x[2]", real=True)
    assert defs["h1.1"] == x0 / 3 + x1 / 3 + x2 / 3  # the mean, one line
    labels = set(prog.tape.labels.values())
    assert {"a1[0]", "a1[2]", "a2[0]"} <= labels
    assert not prog.batch and prog.inputs is not None and prog.inputs.shape == (1, 3)


def test_the_patterns_meet_in_one_program_for_batch_statistics_and_token_ids() -> None:
    assert kinds.program_of(case("batch_norm-train")).batch
    assert kinds.program_of(case("embedding")).batch
    assert not kinds.program_of(case("batch_norm-eval")).batch


def test_work_is_counted_on_the_program_as_the_run_measures_it() -> None:
    problem = case("conv1d")
    counted, measured = kinds.work(problem), kinds.counts(problem)
    for key in ("evaluations", "jacobian"):
        assert counted[key] == measured[key]
    assert counted["products"] == measured["products"]
    assert kinds.estimated_seconds(problem) > 0 and kinds.small_enough(problem)


def test_a_relu_at_its_kink_is_refused() -> None:
    arch = Architecture(2, (Layer(kind="layer_norm", options={"affine": False}), Layer(1, "relu")))
    # LayerNorm of two values is (-1, 1) (up to eps); W = (1, 1) makes the relu's input exactly 0
    problem = Problem(arch, "sse", np.array([1.0, 1.0, 0.0]), np.array([[0.5, 2.0]]), np.array([[1.0]]))
    with pytest.raises(NotDifferentiableError, match="kink"):
        kinds.hessian_with_error(problem)


def test_verify_uses_symbolic_on_a_shipped_case_of_each_kind(capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from hessverify.cli import main

    root = Path(__file__).resolve().parents[2] / "cases"
    for name in ("conv2d-1x5x5-2-stride-bce", "batchnorm-train-4-3-1", "residual-mlp-3-3-add-1-gelu"):
        assert main(["verify", str(root / f"{name}.toml"), "--method", "backprop", "--reference", "symbolic"]) == 0
        out = capsys.readouterr().out
        assert "symbolic" in out and "0 failed" in out, out


def test_numbers_without_an_integer_image_are_summed_in_their_own_arithmetic() -> None:
    # the hook an interval system (python-flint's arb) would use: mpmath numbers summed as mpf, no integers
    import mpmath

    from hessverify.symbolic.chain import mpmath_numbers

    problem = case("conv1d")
    numbers = mpmath_numbers(30)
    numbers.ints = None
    numbers.name = "mpmath30-objects"
    r = kinds._run(problem, numbers)
    num, den, _ = kinds.hessian_high_precision(problem, 30, numbers="mpmath")
    with mpmath.workdps(30):
        gap = max(abs(a - mpmath.mpf(b) / den) for a, b in zip(r.num.ravel(), num.ravel(), strict=True))
    assert r.den == 1 and gap < 1e-25 * kinds.magnitudes(problem).max()


def test_every_shipped_case_of_other_kinds_is_small_enough() -> None:
    from pathlib import Path

    import hessverify

    paths = sorted((Path(__file__).resolve().parents[2] / "cases").glob("*.toml"))
    others = [c for c in map(hessverify.load_case, paths) if not c.architecture.is_dense]
    assert len(others) >= 8
    for c in others:
        assert kinds.small_enough(c), f"{c.id}: {kinds.work(c)}, {kinds.estimated_seconds(c):.1f} s"
