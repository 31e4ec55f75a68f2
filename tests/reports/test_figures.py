"""The report's pictures: what each heatmap shows, read back from its SVG and the pixels of its matrices."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hessverify
from hessverify.engine.registry import METHODS
from hessverify.engine.run import Run, run_problem
from hessverify.reports.analysis import analyse_case
from hessverify.reports.figures import LEVELS, drawn_comparisons, heatmaps_svg, spectrum_svg
from tests.reports.conftest import BUG, EXTRA

ROOT = Path(__file__).resolve().parents[2]
_IMAGE = re.compile(r'<image x="[^"]+" y="[^"]+" width="([^"]+)" height="([^"]+)"[^>]*href="data:image/png;base64,'
                    r'([A-Za-z0-9+/=]+)"')


def _matrices(svg: str | None) -> list[np.ndarray]:
    """Each panel's matrix as RGB pixels (the colour scales, 12 wide, left out)."""
    assert svg is not None and svg.startswith("<svg") and svg.endswith("</svg>")
    out = []
    for width, height, b64 in _IMAGE.findall(svg):
        if width == height:
            out.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")))
    return out


def _rings(svg: str) -> int:
    return sum(group.count("<circle") for group in re.findall(r'<g class="over"[^>]*>(.*?)</g>', svg))


def test_entries_over_the_bound_are_ringed_in_red(monkeypatch: pytest.MonkeyPatch) -> None:
    case = hessverify.load_case(ROOT / "cases" / "xor-2-2-1-sigmoid.toml")
    monkeypatch.setitem(METHODS, BUG, EXTRA[BUG])
    failing = analyse_case(run_problem(case, ["backprop", BUG], ["autograd"]))
    passing = analyse_case(run_problem(case, ["backprop"], ["autograd"]))
    assert [c.passed for c in drawn_comparisons(failing)] == [True, False]
    # the planted bug scales the layer 2 x layer 1 block and its mirror: 2 x (3 x 6) entries over the bound
    assert _rings(heatmaps_svg(failing)) == 2 * 3 * 6
    assert _rings(heatmaps_svg(passing)) == 0


def test_one_panel_per_drawn_comparison_and_the_hessian_one_pixel_per_entry() -> None:
    case = hessverify.load_case(ROOT / "cases" / "xor-2-2-1-sigmoid.toml")
    H = hessverify.hessian(case, "autograd")
    one = analyse_case(Run.from_matrices(case, [], {"autograd": H}))
    many = analyse_case(run_problem(case, ["backprop", "rop", "pairwise"], ["autograd"]))
    assert len(drawn_comparisons(many)) == 3
    assert len(_matrices(heatmaps_svg(one))) == 1
    panels = _matrices(heatmaps_svg(many))
    assert len(panels) == 4 and all(p.shape == (case.n_params, case.n_params, 3) for p in panels)


def test_the_hessian_panel_shows_the_signs_of_the_entries() -> None:
    """RdBu_r: positive entries red, negative ones blue (held to autograd's Hessian, not to the drawing code)."""
    case = hessverify.load_case(ROOT / "cases" / "xor-2-2-1-sigmoid.toml")
    H = hessverify.hessian(case, "autograd")
    pixels = _matrices(heatmaps_svg(analyse_case(Run.from_matrices(case, [], {"autograd": H}))))[0].astype(int)
    clear = np.abs(H) > 1e-2 * np.abs(H).max()
    redder = pixels[..., 0] > pixels[..., 2]
    assert clear.sum() > 10
    assert np.array_equal(redder[clear], H[clear] > 0)
    assert len({tuple(p) for p in pixels.reshape(-1, 3)}) <= LEVELS + 1


def test_a_large_case_is_labelled_by_tensor_and_drawn() -> None:
    """Past MAX_NAMED_TICKS parameters the axes name tensors; the picture and the spectrum are still drawn."""
    case = hessverify.load_case(ROOT / "cases" / "tanh-6-12-8-2.toml")
    a = analyse_case(Run.from_matrices(case, [], {"backprop": hessverify.hessian(case)}))
    svg = heatmaps_svg(a)
    assert svg is not None
    (matrix,) = _matrices(svg)
    assert matrix.shape[:2] == (case.n_params, case.n_params) and _rings(svg) == 0
    assert ">W1<" in svg and ">b3<" in svg and "W1[0,0]" not in svg
    assert spectrum_svg(a)


def test_the_spectrum_shows_each_eigenvalue_once_in_its_colour_and_order() -> None:
    """One dot per exact eigenvalue, coloured by the inertia's count, heights in the eigenvalues' order; one marker
    path per approximation, named in the legend with its inertia."""
    case = hessverify.load_case(ROOT / "cases" / "tanh-6-12-8-2.toml")
    a = analyse_case(run_problem(case, ["backprop", "gauss_newton"], ["autograd"]))
    s = a.spectrum
    assert s is not None
    svg = spectrum_svg(a)
    assert svg is not None and svg.startswith('<svg class="spectrum"')
    dots = {name: re.findall(r'<circle cx="([^"]+)" cy="([^"]+)"', group)
            for name, group in re.findall(r'<g class="exact (\w+)"[^>]*>(.*?)</g>', svg)}
    assert (len(dots["positive"]), len(dots["negative"]), len(dots["zero"])) == (s.positive, s.negative, s.zero)
    points = sorted((float(x), float(y)) for group in dots.values() for x, y in group)
    assert len(points) == case.n_params
    heights = [y for _, y in points]  # ascending eigenvalues: the dots go up (SVG y grows downwards)
    assert all(b <= a_ + 1e-9 for a_, b in zip(heights, heights[1:]))
    names = re.findall(r'<path class="approximation" data-name="([^"]+)"', svg)
    assert names == [x.name for x in a.approximations if x.inertia is not None] and names
    for x in a.approximations:
        if x.inertia is not None:
            assert f"{x.name}: +{x.inertia.positive} / −{x.inertia.negative} / 0×{x.inertia.zero}" in svg


def test_the_spectrum_has_finite_coordinates_and_no_tick_beyond_the_values() -> None:
    """Eigenvalues all within the linear part get no power-of-ten tick (it would sit at the edge with the wrong
    value); an approximation 1e300 times the exact spectrum keeps every coordinate finite (found in review)."""
    from types import SimpleNamespace

    from hessverify.reports.analysis import Inertia

    def analysis(ev: list[float], tau: float, approx: list[float] | None = None) -> SimpleNamespace:
        def inertia(values: list[float]) -> Inertia:
            v = np.sort(np.asarray(values))
            return Inertia(v, tau, int((v > tau).sum()), int((v < -tau).sum()), int((np.abs(v) <= tau).sum()))

        extra = [SimpleNamespace(name="ggn", inertia=inertia(approx))] if approx is not None else []
        return SimpleNamespace(spectrum=inertia(ev), approximations=extra, problem=SimpleNamespace(id="fake"),
                               point="indefinite", exact_name="autograd")

    small = spectrum_svg(analysis([-0.5, 0.2, 0.9], 1.0))  # type: ignore[arg-type]
    assert small is not None and re.findall(r'font-size="9">([^<]+)</text>', small)[:1] == ["0"]
    assert ">10<" not in small and ">-10<" not in small
    huge = spectrum_svg(analysis([-1e-10, 1e-10], 1e-20, [-1e300, 1e300]))  # type: ignore[arg-type]
    assert huge is not None and not re.search(r"(?<![a-z])(nan|inf)(?![a-z])", huge)  # not in "dominant"
