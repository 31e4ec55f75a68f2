"""Fixtures for the report tests: a few small cases, a planted bug, stand-in approximations.

The planted bug is a registry entry with role ``"method"`` whose Hessian has
its layer 2 x layer 1 block (and mirror) scaled by 1.5, so every report
has a failing comparison to localise.  The approximations are stand-ins
(the exact diagonal, the exact layer blocks) registered only for these tests:
the report must handle whatever ``role == "approximation"`` entries exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hessverify
from hessverify.methods import backprop
from hessverify.engine.registry import METHODS, Method
from hessverify.reports import write_report
from hessverify.engine.run import run_cases

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["xor-2-2-1-sigmoid", "saddle-2-3-1-tanh-zero", "gelu-silu-3-4-3-2-bce"]
BUG = "buggy-backprop"
REFERENCES = ["autograd", "fd"]  # one exact reference, one with its own error estimate: both kinds of bound


def plant_block_bug(problem: hessverify.Problem) -> np.ndarray:
    """backprop's Hessian with the layer 2 x layer 1 block and its mirror scaled by 1.5."""
    H = np.array(backprop.hessian(problem), dtype=np.float64)
    b1, b2 = problem.architecture.blocks[:2]
    H[b2.slice, b1.slice] *= 1.5
    H[b1.slice, b2.slice] *= 1.5
    return H


def _diagonal(problem: hessverify.Problem) -> np.ndarray:
    return np.diag(backprop.hessian(problem)).copy()


def _layer_blocks(problem: hessverify.Problem) -> list[np.ndarray]:
    H = backprop.hessian(problem)
    return [H[b.slice, b.slice].copy() for b in problem.architecture.blocks]


EXTRA = {
    BUG: Method(BUG, plant_block_bug, "method", "matrix", "backprop with a planted layer-pair bug (tests only)"),
    "test-diagonal": Method("test-diagonal", _diagonal, "approximation", "vector", "exact diagonal (tests only)"),
    "test-blocks": Method("test-blocks", _layer_blocks, "approximation", "blocks", "exact layer blocks (tests only)"),
}


@pytest.fixture(scope="session")
def small_cases() -> list[hessverify.Problem]:
    return [hessverify.load_case(ROOT / "cases" / f"{c}.toml") for c in SMALL]


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory: pytest.TempPathFactory, small_cases: list[hessverify.Problem]) -> Path:
    """A full report (json, md, html) of the small cases, backprop and the planted bug against autograd and fd.

    Written once per session; the registry holds the extra entries only while it is written, so no other
    test sees them.
    """
    out = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        for name, m in EXTRA.items():
            mp.setitem(METHODS, name, m)
        runs = list(run_cases(small_cases, ["backprop", BUG], REFERENCES))
        write_report(out, runs, show_progress=False)
    return out
