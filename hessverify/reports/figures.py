"""Pictures for ``report.html``: heatmaps and spectra as base64 PNG, drawn with matplotlib's Agg backend.

PNG rather than SVG: a ``(W, W)`` heatmap is a raster anyway, and a PNG data
URI keeps the single HTML file small and identical in every browser.

Every heatmap has the same axes: parameters in the public order, solid lines
at layer boundaries, dotted lines between a layer's ``W`` and ``b``; tick
labels are the parameter names when there are few enough to read
(:data:`MAX_NAMED_TICKS`), else the tensor names at the middle of each block.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit: the report is written on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.colors import LogNorm, SymLogNorm  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullLocator  # noqa: E402

from hessverify.base.typing import FloatArray  # noqa: E402
from hessverify.engine.compare import Comparison  # noqa: E402
from hessverify.model.problem import Problem  # noqa: E402
from hessverify.reports.analysis import CaseAnalysis, is_approximation  # noqa: E402

__all__ = ["MAX_NAMED_TICKS", "drawn_comparisons", "heatmaps_png", "spectrum_png"]

MAX_NAMED_TICKS = 40
"""Up to this many parameters every tick is labelled with its name."""

DPI = 90

PANELS_PER_ROW = 3
"""Heatmaps side by side; more wrap onto another row, so each stays readable at page width."""

MISSING = "#e8e8e8"
"""Grey: entries with no colour (exact zeros of ``|A - R|``, entries a diagonal or block method does not compute)."""


def _png(fig: Any) -> str:
    """The figure at :data:`DPI` as base64 PNG: RGB (the figure is opaque), zlib at its fastest level.

    As ``savefig`` draws it, without the alpha channel: a quarter fewer bytes
    to compress, and at level 1 about the size of ``savefig``'s RGBA at level 6
    in a third of the time.
    """
    from PIL import Image

    buf = io.BytesIO()
    fig.set_dpi(DPI)
    # a symlog axis whose range reaches far below its linear threshold overflows inside
    # matplotlib's inverse transform while laying out ticks: harmless, and not the user's news
    with np.errstate(over="ignore", invalid="ignore"):
        fig.canvas.draw()
    rgb = np.ascontiguousarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
    plt.close(fig)
    Image.fromarray(rgb).save(buf, format="png", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _sci(value: float, _pos: int | None = None) -> str:
    """Plain ``1e-12`` labels: matplotlib's mathtext ``10^x`` costs most of the drawing time."""
    if value == 0:
        return "0"
    if 1e-2 <= abs(value) < 1e3:
        return f"{value:.2g}"
    return f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e").replace(".0e", "e")


@dataclass(frozen=True)
class _Panel:
    """One heatmap: its title, the RGBA pixels (one per entry), its colour scale, and the entries to ring."""

    title: str
    rgba: npt.NDArray[np.uint8]
    scale: Any  # the colormap's 256 colours, bottom to top
    ticks: list[tuple[float, str]]  # (height on the colour scale in [0, 1], label)
    over: npt.NDArray[np.bool_] | None = None  # entries over the bound, ringed in red
    note: str = ""  # written across the panel ("identical")
    failed: bool = False


def _hessian_panel(title: str, H: FloatArray) -> _Panel:
    """Symmetric log colours: Hessian entries span decades and change sign."""
    vmax = float(np.max(np.abs(H), initial=0.0)) or 1.0
    lin = vmax * 1e-3
    norm = SymLogNorm(linthresh=lin, vmin=-vmax, vmax=vmax, base=10)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad=MISSING)
    with np.errstate(invalid="ignore"):
        rgba = cmap(norm(np.ma.masked_invalid(H)), bytes=True)
    ticks = [-vmax, -lin, 0.0, lin, vmax]
    return _Panel(title, rgba, cmap(np.linspace(0, 1, 256)), [(float(norm(t)), _sci(t)) for t in ticks])


def _error_panel(title: str, E: FloatArray, over: npt.NDArray[np.bool_] | None, failed: bool) -> _Panel:
    """``|A - R|`` on a log scale; exact zeros, and entries a diagonal or block method leaves out, grey."""
    positive = E[(E > 0) & np.isfinite(E)]
    if not positive.size:
        grey = matplotlib.colormaps["Greys"]
        rgba = np.broadcast_to(np.array(grey(0.0, bytes=True), dtype=np.uint8), (*E.shape, 4))
        return _Panel(title, rgba, grey(np.linspace(0, 1, 256)),
                      [(t, _sci(t)) for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)], over, "identical", failed)
    lo, hi = float(positive.min()), float(positive.max())
    lo = max(lo, hi * 1e-12)  # a floor so one tiny entry does not wash out the scale
    norm = LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 10)
    cmap = matplotlib.colormaps["magma"].with_extremes(bad=MISSING)
    shown = np.ma.masked_where(~(E > 0) | ~np.isfinite(E), E)
    rgba = cmap(norm(np.ma.maximum(shown, lo)), bytes=True)
    decades = np.arange(np.ceil(np.log10(norm.vmin)), np.floor(np.log10(norm.vmax)) + 1)
    step = max(1, int(np.ceil(len(decades) / 5)))
    ticks = [float(10.0**d) for d in decades[::-1][::step]]
    return _Panel(title, rgba, cmap(np.linspace(0, 1, 256)), [(float(norm(t)), _sci(t)) for t in ticks], over,
                  failed=failed)


def _tick_labels(problem: Problem) -> tuple[list[float], list[str], float, bool]:
    """Where the names go along an axis (in entries), the names, their font size, and whether one per parameter.

    Parameter names when there are few enough to read (:data:`MAX_NAMED_TICKS`),
    else the tensor names at the middle of each block.
    """
    W = problem.n_params
    if W <= MAX_NAMED_TICKS:
        return [i + 0.5 for i in range(W)], list(problem.param_names), (7 if W <= 20 else 5.5), True
    groups: list[tuple[str, int, int]] = []
    for blk in problem.architecture.blocks:
        groups.append((f"W{blk.layer}", blk.w_slice.start, blk.w_slice.stop))
        if blk.bias:
            groups.append((f"b{blk.layer}", blk.b_slice.start, blk.b_slice.stop))
    return [(a + b) / 2 for _, a, b in groups], [g for g, _, _ in groups], 8, False


def drawn_comparisons(analysis: CaseAnalysis) -> list[Comparison]:
    """The comparisons worth a picture: every failing one; for a method that passes, one.

    A method that passes everything gets the panel against the exact
    reference the spectrum uses (the most stringent), so its rounding noise
    is on show without a panel per reference: with five methods and four
    references that would be twenty pictures per case.
    """
    out: list[Comparison] = []
    usable = [c for c in analysis.comparisons if not is_approximation(c)
              and c.method in analysis.matrices and c.reference in analysis.matrices]
    for method in dict.fromkeys(c.method for c in usable):
        mine = [c for c in usable if c.method == method]
        failing = [c for c in mine if not c.passed]
        if failing:
            out += failing
        else:
            out.append(next((c for c in mine if c.reference == analysis.exact_name), mine[0]))
    return out


class _Labels(Artist):
    """Many labels of one style, drawn by one :class:`~matplotlib.text.Text` moved from place to place.

    Creating a ``Text`` per tick name is a third of a heatmap's drawing time;
    drawn this way each name costs only its glyphs, and the pixels are those
    of ``ax.text`` with the same style.
    """

    def __init__(self, ax: Any, **style: Any) -> None:
        super().__init__()
        self._stamp = Text(**style)
        self._stamp.set_figure(ax.figure)
        self._stamp.set_transform(ax.transData)
        self.items: list[tuple[float, float, str]] = []
        self.set_zorder(3)

    def add(self, x: float, y: float, text: str) -> None:
        self.items.append((x, y, text))

    def draw(self, renderer: Any) -> None:
        for x, y, text in self.items:
            self._stamp.set_position((x, y))
            self._stamp.set_text(text)
            self._stamp.draw(renderer)


def heatmaps_png(analysis: CaseAnalysis) -> str | None:
    """The exact Hessian, then ``|method - reference|`` (log scale) for :func:`drawn_comparisons`.

    Entries over the comparison's bound are ringed in red (up to 400 per panel).

    Every panel, its colour scale and its labels are drawn on one full-figure
    canvas, in inches, rather than as matplotlib Axes and colorbars with their
    tick machinery: the picture says the same and costs a fraction of the time.
    """
    p = analysis.problem
    H = analysis.exact
    if H is None:
        return None
    panels = [_hessian_panel(f"Hessian ({analysis.exact_name})", H)]
    for c in drawn_comparisons(analysis):
        A, R = analysis.matrices[c.method], analysis.matrices[c.reference]
        bound = analysis.bounds.get((c.method, c.reference))
        with np.errstate(invalid="ignore"):
            E = np.abs(A - R)
            over = (E > bound) if bound is not None else None
        panels.append(_error_panel(f"|{c.method} - {c.reference}|{'' if c.passed else '  FAIL'}", E, over,
                                   not c.passed))
    W = p.n_params
    side = 2.9 if W <= 20 else 3.6  # the matrix, in inches
    at, names, size, per_parameter = _tick_labels(p)
    cols = min(len(panels), PANELS_PER_ROW)
    rows = -(-len(panels) // cols)
    left, bottom, top = 0.9, 0.7, 0.35  # room for the row names, the column names, the first titles
    cell_w, cell_h = side + 1.3, side + 0.75  # a panel, its colour scale and its labels; the gap below it
    width, height = left + cols * cell_w, top + rows * cell_h - 0.45 + bottom
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    step = side / W  # inches per entry
    scale_labels = _Labels(ax, ha="left", va="center", fontsize=7)
    row_names = _Labels(ax, ha="right", va="center", fontsize=size)
    column_names = _Labels(ax, ha="center", va="top", fontsize=size, rotation=90 if per_parameter else 0)
    solid: list[list[tuple[float, float]]] = []
    dotted: list[list[tuple[float, float]]] = []
    frames: list[list[tuple[float, float]]] = []
    for k, panel in enumerate(panels):
        x0 = left + (k % cols) * cell_w
        y1 = height - top - (k // cols) * cell_h  # the matrix's top edge; rows go down from it
        y0 = y1 - side
        ax.imshow(panel.rgba, extent=(x0, x0 + side, y0, y1), interpolation="nearest", aspect="auto")
        frames.append([(x0, y0), (x0 + side, y0), (x0 + side, y1), (x0, y1), (x0, y0)])
        # solid lines at layer boundaries, dotted between a layer's W and b
        for cuts, lines in (([b.offset for b in p.architecture.blocks[1:]], solid),
                            ([b.b_slice.start for b in p.architecture.blocks if b.bias], dotted)):
            for cut in cuts:
                lines += [[(x0 + cut * step, y0), (x0 + cut * step, y1)], [(x0, y1 - cut * step), (x0 + side, y1 - cut * step)]]
        if panel.note:
            ax.text(x0 + side / 2, y0 + side / 2, panel.note, ha="center", va="center", fontsize=10)
        if panel.over is not None and panel.over.any() and panel.over.sum() <= 400:
            ii, jj = np.nonzero(panel.over)
            ax.scatter(x0 + (jj + 0.5) * step, y1 - (ii + 0.5) * step, s=14, facecolors="none",
                       edgecolors="red", linewidths=0.6, zorder=4)
        ax.text(x0 + side / 2, y1 + 0.08, panel.title, ha="center", va="bottom", fontsize=9,
                color="#b00020" if panel.failed else "black")
        # the colour scale: a strip of the colormap, its ticks and their values
        cx = x0 + side + 0.12
        ax.imshow(panel.scale[::-1, None], extent=(cx, cx + 0.14, y0, y1), interpolation="nearest", aspect="auto")
        frames.append([(cx, y0), (cx + 0.14, y0), (cx + 0.14, y1), (cx, y1), (cx, y0)])
        for where, label in panel.ticks:
            if -1e-9 <= where <= 1 + 1e-9:
                y = y0 + where * side
                frames.append([(cx + 0.14, y), (cx + 0.19, y)])
                scale_labels.add(cx + 0.22, y, label)
        # names on the outer panels only, as matplotlib's label_outer does: every panel has the same axes
        if k % cols == 0:
            for a, name in zip(at, names, strict=True):
                row_names.add(x0 - 0.06, y1 - a * step, name)
        if k + cols >= len(panels):  # the bottom panel of its column: nothing is drawn below it
            for a, name in zip(at, names, strict=True):
                column_names.add(x0 + a * step, y0 - 0.06, name)
    for labels in (scale_labels, row_names, column_names):
        ax.add_artist(labels)
    ax.add_collection(LineCollection(solid, colors="black", linewidths=1.0, zorder=3))
    ax.add_collection(LineCollection(dotted, colors="black", linewidths=0.5, linestyles=":", zorder=3))
    ax.add_collection(LineCollection(frames, colors="black", linewidths=0.8, zorder=3))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    return _png(fig)


def spectrum_png(analysis: CaseAnalysis) -> str | None:
    """Sorted eigenvalues of the exact Hessian (symlog axis, +-threshold band) and of each approximation."""
    s = analysis.spectrum
    if s is None:
        return None
    ev, tau = s.eigenvalues, s.threshold
    fig, ax = plt.subplots(figsize=(8.6, 3.4))
    fig.subplots_adjust(left=0.1, right=0.66, bottom=0.15, top=0.9)  # the legend sits right of the axes
    idx = np.arange(ev.size)
    colours = np.where(ev > tau, "#1f5fbf", np.where(ev < -tau, "#c0392b", "#888888"))
    ax.axhspan(-tau, tau, color="#dddddd", zorder=0, label=f"|λ| ≤ {tau:.1e} (counted zero)")
    ax.scatter(idx, ev, c=colours, s=18, zorder=3, label=f"exact ({analysis.exact_name}): "
               f"+{s.positive} / −{s.negative} / 0×{s.zero}")
    markers = ["x", "+", "1", "^", "s", "d"]
    for k, a in enumerate(x for x in analysis.approximations if x.inertia is not None):
        assert a.inertia is not None
        ax.scatter(idx, a.inertia.eigenvalues, marker=markers[k % len(markers)], s=22, zorder=4, lw=0.9,
                   label=f"{a.name}: +{a.inertia.positive} / −{a.inertia.negative} / 0×{a.inertia.zero}")
    top = float(np.max(np.abs(ev), initial=0.0))
    ax.set_yscale("symlog", linthresh=max(tau, top * 1e-6, np.finfo(np.float64).tiny))
    ax.yaxis.set_major_formatter(FuncFormatter(_sci))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("eigenvalue index (ascending)", fontsize=8)
    ax.set_ylabel("eigenvalue (symlog)", fontsize=8)
    ax.tick_params(labelsize=7)
    # a title at a fixed height: placing it above the tick labels would lay them all out once more
    ax.set_title(f"spectrum: {analysis.point}", fontsize=9, y=1.0, pad=6)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    return _png(fig)
