"""Deep networks from the command line (issue 24): computed, or refused by the budget in one line, never a
recursion error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hessverify
from hessverify import BudgetError
from hessverify.cli import main


def _chain_case(path: Path, depth: int, bias: bool) -> Path:
    """A case file of ``depth`` one-unit tanh layers on one input."""
    layers = "\n".join(f'  {{ units = 1, activation = "tanh", bias = {str(bias).lower()} }},' for _ in range(depth))
    path.write_text(f'id = "chain-{depth}"\n\n[network]\ninputs = 1\nlayers = [\n{layers}\n]\nloss = "sse"\n\n'
                    "[data]\nseed = 1\npatterns = 4\n\n[params]\nseed = 2\nscale = 1.0\n")
    return path


def test_hessian_of_a_chain_deeper_than_the_recursion_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = _chain_case(tmp_path / "deep.toml", 1500, bias=False)
    out = tmp_path / "H.npy"
    assert main(["hessian", str(case), "--method", "backprop", "--out", str(out)]) == 0
    H = np.load(out)
    assert H.shape == (1500, 1500) and np.array_equal(H, H.T)
    assert "1500x1500 written" in capsys.readouterr().out


def test_verify_of_ten_thousand_layers_is_refused_by_the_budget_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every reference needs W passes through 10 000 layers: refused before any work, with the figure."""
    case = _chain_case(tmp_path / "deep.toml", 10_000, bias=False)
    assert main(["verify", str(case)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "would need about" in err or "would take about" in err
    assert main(["verify", str(case), "--method", "backprop", "--reference", "complex_step", "--max-memory", "64G"]) == 2
    assert "would take about" in capsys.readouterr().err


def test_the_python_api_refuses_a_hessian_past_the_memory_budget() -> None:
    """W = 20 000 (a weight and a bias per layer): a 3.2 GB Hessian, past the budget of a small machine."""
    from hessverify.engine.budget import limit

    arch = hessverify.Architecture(1, tuple(hessverify.Layer(1, "tanh") for _ in range(10_000)))
    problem = hessverify.Problem(arch, "sse", np.full(arch.n_params, 0.5), np.ones((2, 1)), np.zeros((2, 1)))
    with limit(4 * 2**30), pytest.raises(BudgetError, match="W = 20000, N = 2.*would need about"):
        hessverify.hessian(problem)
