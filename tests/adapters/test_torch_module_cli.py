"""hessverify check-module (the command line) and the hessverify_check_module fixture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]

BUILD = """
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    return model, nn.MSELoss(), torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
"""

MINE = """
import torch

def hvp(model, loss_fn, x, t, v):
    params = list(model.parameters())
    g = torch.autograd.grad(loss_fn(model(x), t), params, create_graph=True)
    gv = sum((gi.reshape(-1) * vi).sum() for gi, vi in zip(g, v.split([p.numel() for p in params])))
    return torch.cat([h.reshape(-1) for h in torch.autograd.grad(gv, params)])

def bad_hvp(model, loss_fn, x, t, v):
    out = hvp(model, loss_fn, x, t, v)
    out[:12] *= 1.001  # the first layer's weight rows of H v 0.1 % off
    return out
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "build.py").write_text(BUILD)
    (tmp_path / "mine.py").write_text(MINE)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "hessverify", "check-module", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_correct_hvp_passes_and_writes_a_report(tmp_path: Path) -> None:
    out = _run(tmp_path, "build.py:make", "--method-under-test", "mine.py:hvp", "--returns", "hvp",
               "--report", str(tmp_path / "rep"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "judged by imported" in out.stdout
    assert json.loads((tmp_path / "rep" / "results.json").read_text())["passed"] is True


def test_a_faulty_hvp_fails_matrix_free_with_exit_1(tmp_path: Path) -> None:
    out = _run(tmp_path, "build.py:make", "--method-under-test", "mine.py:bad_hvp", "--returns", "hvp",
               "--probes", "1")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "check_hvp FAILED" in out.stdout and "0.weight[" in out.stdout


def test_a_bad_name_is_one_line_exit_2(tmp_path: Path) -> None:
    out = _run(tmp_path, "build.py:nope", "--method-under-test", "mine.py:hvp")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "defines make" in out.stderr


def test_the_fixture(hessverify_check_module) -> None:
    space: dict = {}
    exec(BUILD + MINE, space)  # the same user files, in this process
    assert hessverify_check_module(space["hvp"], *space["make"](), returns="hvp", probes=1).passed
    with pytest.raises(AssertionError, match="FAILED"):
        hessverify_check_module(space["bad_hvp"], *space["make"](), returns="hvp")
