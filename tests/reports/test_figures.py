"""The report's pictures: what each heatmap shows, read back from the PNG's pixels."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

import hessverify
from hessverify.engine.registry import METHODS
from hessverify.reports.analysis import analyse_case
from hessverify.reports.figures import drawn_comparisons, heatmaps_png, spectrum_png
from hessverify.engine.run import Run, run_problem
from tests.reports.conftest import BUG, EXTRA

ROOT = Path(__file__).resolve().parents[2]


def _pixels(b64: str | None) -> np.ndarray:
    assert b64 is not None
    return imread(io.BytesIO(base64.b64decode(b64)), format="png")[..., :3]


def _ring_pixels(img: np.ndarray) -> int:
    """Pixels of the rings' red: no colour map of the heatmaps (RdBu_r, magma, Greys) is this red."""
    return int(np.sum((img[..., 0] > 0.85) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)))


def test_entries_over_the_bound_are_ringed_in_red(monkeypatch: pytest.MonkeyPatch) -> None:
    case = hessverify.load_case(ROOT / "cases" / "xor-2-2-1-sigmoid.toml")
    monkeypatch.setitem(METHODS, BUG, EXTRA[BUG])
    failing = analyse_case(run_problem(case, ["backprop", BUG], ["autograd"]))
    passing = analyse_case(run_problem(case, ["backprop"], ["autograd"]))
    assert [c.passed for c in drawn_comparisons(failing)] == [True, False]
    assert _ring_pixels(_pixels(heatmaps_png(failing))) > 100
    assert _ring_pixels(_pixels(heatmaps_png(passing))) == 0


def test_one_panel_per_drawn_comparison_and_the_hessian() -> None:
    """A figure with more panels is taller (three to a row): the exact Hessian and every drawn comparison."""
    case = hessverify.load_case(ROOT / "cases" / "xor-2-2-1-sigmoid.toml")
    H = hessverify.hessian(case)
    one = analyse_case(Run.from_matrices(case, [], {"backprop": H}))
    many = analyse_case(run_problem(case, ["backprop", "rop", "pairwise"], ["autograd"]))
    assert len(drawn_comparisons(many)) == 3
    h1, hm = _pixels(heatmaps_png(one)), _pixels(heatmaps_png(many))
    assert hm.shape[0] > 1.8 * h1.shape[0] and hm.shape[1] > 2.5 * h1.shape[1]


def test_a_large_case_is_labelled_by_tensor_and_drawn() -> None:
    """Past MAX_NAMED_TICKS parameters the axes name tensors; the picture and the spectrum are still drawn."""
    case = hessverify.load_case(ROOT / "cases" / "tanh-6-12-8-2.toml")
    a = analyse_case(Run.from_matrices(case, [], {"backprop": hessverify.hessian(case)}))
    img = _pixels(heatmaps_png(a))
    assert img.shape[0] > 300 and _ring_pixels(img) == 0
    assert spectrum_png(a)
