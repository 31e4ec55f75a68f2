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
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit: the report is written on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, SymLogNorm  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from hessverify._typing import FloatArray  # noqa: E402
from hessverify.compare import Comparison  # noqa: E402
from hessverify.model.problem import Problem  # noqa: E402
from hessverify.reports.analysis import CaseAnalysis, is_approximation  # noqa: E402

__all__ = ["MAX_NAMED_TICKS", "drawn_comparisons", "heatmaps_png", "spectrum_png"]

MAX_NAMED_TICKS = 40
"""Up to this many parameters every tick is labelled with its name."""

DPI = 90

PANELS_PER_ROW = 3
"""Heatmaps side by side; more wrap onto another row, so each stays readable at page width."""


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    # a symlog axis whose range reaches far below its linear threshold overflows inside
    # matplotlib's inverse transform while laying out ticks: harmless, and not the user's news
    with np.errstate(over="ignore", invalid="ignore"):
        fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _sci(value: float, _pos: int | None = None) -> str:
    """Plain ``1e-12`` labels: matplotlib's mathtext ``10^x`` costs most of the drawing time."""
    if value == 0:
        return "0"
    if 1e-2 <= abs(value) < 1e3:
        return f"{value:.2g}"
    return f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e").replace(".0e", "e")


def _colorbar(fig: Any, im: Any, ax: Any, ticks: list[float] | None = None) -> None:
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    if ticks is not None:
        cb.ax.yaxis.set_major_locator(FixedLocator(ticks))
    cb.ax.yaxis.set_major_formatter(FuncFormatter(_sci))
    cb.ax.yaxis.set_minor_locator(NullLocator())
    cb.ax.tick_params(labelsize=7)


def _axes_layout(ax: Any, problem: Problem, *, ylabels: bool = True, xlabels: bool = True) -> None:
    """Parameter names (or tensor names) on the outer axes, lines at the block boundaries.

    Every panel has the same axes, so, as matplotlib's ``label_outer`` does,
    names go only on the left column and the bottom panel of each column:
    each tick label is laid out in Python, and labels are most of the drawing time.
    """
    W = problem.n_params
    names = problem.param_names
    groups: list[tuple[str, int, int]] = []
    for blk in problem.architecture.blocks:
        groups.append((f"W{blk.layer}", blk.w_slice.start, blk.w_slice.stop))
        if blk.bias:
            groups.append((f"b{blk.layer}", blk.b_slice.start, blk.b_slice.stop))
    for blk in problem.architecture.blocks[1:]:
        ax.axhline(blk.offset - 0.5, color="black", lw=1.0)
        ax.axvline(blk.offset - 0.5, color="black", lw=1.0)
    for blk in problem.architecture.blocks:
        if blk.bias:
            ax.axhline(blk.b_slice.start - 0.5, color="black", lw=0.5, ls=":")
            ax.axvline(blk.b_slice.start - 0.5, color="black", lw=0.5, ls=":")
    if W <= MAX_NAMED_TICKS:
        size = 7 if W <= 20 else 5.5
        ticks, labels = list(range(W)), list(names)
        rotation = 90
    else:
        size = 8
        ticks = [(a + b - 1) / 2 for _, a, b in groups]
        labels = [g for g, _, _ in groups]
        rotation = 0
    if xlabels:
        ax.set_xticks(ticks, labels, rotation=rotation, fontsize=size)
    else:
        ax.set_xticks([])
    if ylabels:
        ax.set_yticks(ticks, labels, fontsize=size)
    else:
        ax.set_yticks([])
    ax.tick_params(length=0)


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


def heatmaps_png(analysis: CaseAnalysis) -> str | None:
    """The exact Hessian, then ``|method - reference|`` (log scale) for :func:`drawn_comparisons`.

    Entries over the comparison's bound are ringed in red.
    """
    p = analysis.problem
    H = analysis.exact
    if H is None:
        return None
    panels: list[tuple[str, FloatArray, str, FloatArray | None]] = [(f"Hessian ({analysis.exact_name})", H, "H", None)]
    for c in drawn_comparisons(analysis):
        A, R = analysis.matrices[c.method], analysis.matrices[c.reference]
        bound = analysis.bounds.get((c.method, c.reference))
        with np.errstate(invalid="ignore"):
            over = (np.abs(A - R) > bound) if bound is not None else None
        panels.append((f"|{c.method} - {c.reference}|{'' if c.passed else '  FAIL'}", np.abs(A - R), "E", over))
    side = 3.4 if p.n_params <= 20 else 4.2
    cols = min(len(panels), PANELS_PER_ROW)
    rows = -(-len(panels) // cols)
    width, height = (side + 0.9) * cols + 0.6, (side + 1.1) * rows
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    # a fixed layout: "tight" bounding boxes draw the figure twice, and text layout is most of the cost
    fig.subplots_adjust(left=0.9 / width + 0.02, right=0.97, bottom=0.9 / height + 0.02 * rows,
                        top=1 - 0.35 / height, wspace=0.35, hspace=0.45)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for k, (ax, (title, M, kind, over)) in enumerate(zip(axes.flat, panels, strict=False)):
        if kind == "H":
            vmax = float(np.max(np.abs(M), initial=0.0)) or 1.0
            # symmetric log: Hessian entries span decades and change sign
            lin = vmax * 1e-3
            norm = SymLogNorm(linthresh=lin, vmin=-vmax, vmax=vmax, base=10)
            im = ax.imshow(M, cmap="RdBu_r", norm=norm, interpolation="nearest")
            ticks: list[float] | None = [-vmax, -lin, 0.0, lin, vmax]
        else:
            positive = M[(M > 0) & np.isfinite(M)]
            if positive.size:
                lo, hi = float(positive.min()), float(positive.max())
                lo = max(lo, hi * 1e-12)  # a floor so one tiny entry does not wash out the scale
                norm = LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 10)
                shown = np.ma.masked_where(~(M > 0) | ~np.isfinite(M), M)
                im = ax.imshow(np.ma.maximum(shown, lo), cmap="magma", norm=norm, interpolation="nearest")
                decades = np.arange(np.ceil(np.log10(norm.vmin)), np.floor(np.log10(norm.vmax)) + 1)
                step = max(1, int(np.ceil(len(decades) / 5)))
                ticks = [float(10.0**d) for d in decades[::-1][::step]]
            else:
                ticks = None
                im = ax.imshow(np.zeros_like(M), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
                ax.text(0.5, 0.5, "identical", transform=ax.transAxes, ha="center", va="center")
            if over is not None and over.any() and over.sum() <= 400:
                ii, jj = np.nonzero(over)
                ax.scatter(jj, ii, s=14, facecolors="none", edgecolors="red", linewidths=0.6)
        ax.set_facecolor("#e8e8e8")  # exact zeros of |A - R| (masked) show grey
        ax.set_title(title, fontsize=9, color="#b00020" if "FAIL" in title else "black")
        # the bottom panel of its column: nothing is drawn below it
        _axes_layout(ax, p, ylabels=k % cols == 0, xlabels=k + cols >= len(panels))
        _colorbar(fig, im, ax, ticks)
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
    ax.set_title(f"spectrum: {analysis.point}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    return _png(fig)
