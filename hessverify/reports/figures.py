"""Pictures for ``report.html``, as inline SVG: heatmaps over one-pixel-per-entry PNGs, and spectra.

A heatmap's matrix is a raster, one pixel per entry in a palette PNG of
:data:`LEVELS` colours, scaled up by the browser without smoothing; its lines,
rings, names and colour scale are SVG.  Exact, sharp at any zoom, and a few
kilobytes where a drawn picture of the same panel took hundreds.  The
spectrum, a scatter plot on a symmetric log axis, is SVG throughout.  Only
matplotlib's colour maps and norms are used; nothing is laid out or drawn by
a plotting library (drawing the spectrum with matplotlib took 0.25 s a case,
most of a report's time).

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
import numpy as np
import numpy.typing as npt
from matplotlib.colors import LogNorm, SymLogNorm

from hessverify.base.typing import FloatArray
from hessverify.engine.compare import Comparison
from hessverify.model.problem import Problem
from hessverify.reports.analysis import CaseAnalysis, is_approximation

__all__ = ["LEVELS", "MAX_NAMED_TICKS", "drawn_comparisons", "heatmaps_svg", "spectrum_svg"]

MAX_NAMED_TICKS = 40
"""Up to this many parameters every tick is labelled with its name."""

PANELS_PER_ROW = 3
"""Heatmaps side by side; more wrap onto another row, so each stays readable at page width."""

POSITIVE = "#1f5fbf"
"""The spectrum's colour of a positive exact eigenvalue (and of the exact spectrum in its legend)."""

APPROXIMATION_COLOURS = ("#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
"""Stroke colours of the approximations' markers in the spectrum, in the order of the legend."""

MISSING = "#e8e8e8"
"""Grey: entries with no colour (exact zeros of ``|A - R|``, entries a diagonal or block method does not compute)."""


def _sci(value: float, _pos: int | None = None) -> str:
    """Plain ``1e-12`` labels."""
    if value == 0:
        return "0"
    if 1e-2 <= abs(value) < 1e3:
        return f"{value:.2g}"
    return f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e").replace(".0e", "e")


@dataclass(frozen=True)
class _Panel:
    """One heatmap: its title, one colour index per entry, its colour scale, and the entries to ring."""

    title: str
    index: npt.NDArray[np.uint8]  # (W, W) indices into palette; LEVELS is the "missing" grey
    palette: npt.NDArray[np.uint8]  # (LEVELS + 1, 3): the colour scale bottom to top, then the grey
    ticks: list[tuple[float, str]]  # (height on the colour scale in [0, 1], label)
    over: npt.NDArray[np.bool_] | None = None  # entries over the bound, ringed in red
    note: str = ""  # written across the panel ("identical")
    failed: bool = False


LEVELS = 64
"""Colours of a heatmap's scale: the entries are quantised to this many levels (and a grey for no colour);
the eye tells apart far fewer, and a small palette keeps each matrix a few kilobytes."""


def _palette(cmap: Any) -> npt.NDArray[np.uint8]:
    colours = np.asarray(cmap(np.linspace(0.0, 1.0, LEVELS), bytes=True), dtype=np.uint8)[:, :3]
    grey = np.asarray(matplotlib.colors.to_rgb(MISSING)) * 255
    return np.vstack([colours, np.round(grey).astype(np.uint8)])


def _levels(scaled: Any) -> npt.NDArray[np.uint8]:
    """Values of a norm in [0, 1] (masked: no colour) as palette indices 0 .. LEVELS - 1, masked as LEVELS."""
    values = np.ma.filled(np.ma.masked_invalid(np.ma.asarray(scaled, dtype=np.float64)), np.nan)
    index = np.clip(np.floor(np.nan_to_num(values, nan=0.0) * LEVELS), 0, LEVELS - 1).astype(np.uint8)
    index[np.isnan(values)] = LEVELS
    return index


def _hessian_panel(title: str, H: FloatArray) -> _Panel:
    """Symmetric log colours: Hessian entries span decades and change sign."""
    vmax = float(np.max(np.abs(np.nan_to_num(H, nan=0.0, posinf=0.0, neginf=0.0)), initial=0.0)) or 1.0
    lin = vmax * 1e-3
    norm = SymLogNorm(linthresh=lin, vmin=-vmax, vmax=vmax, base=10)
    with np.errstate(invalid="ignore", over="ignore"):
        index = _levels(norm(np.ma.masked_invalid(H)))
    ticks = [-vmax, -lin, 0.0, lin, vmax]
    return _Panel(title, index, _palette(matplotlib.colormaps["RdBu_r"]), [(float(norm(t)), _sci(t)) for t in ticks])


def _error_panel(title: str, E: FloatArray, over: npt.NDArray[np.bool_] | None, failed: bool) -> _Panel:
    """``|A - R|`` on a log scale; exact zeros, and entries a diagonal or block method leaves out, grey."""
    positive = E[(E > 0) & np.isfinite(E)]
    if not positive.size:
        grey = matplotlib.colormaps["Greys"]
        return _Panel(title, np.zeros(E.shape, dtype=np.uint8), _palette(grey),
                      [(t, _sci(t)) for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)], over, "identical", failed)
    lo, hi = float(positive.min()), float(positive.max())
    lo = max(lo, hi * 1e-12)  # a floor so one tiny entry does not wash out the scale
    norm = LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 10)
    shown = np.ma.masked_where(~(E > 0) | ~np.isfinite(E), E)
    with np.errstate(invalid="ignore", over="ignore"):
        index = _levels(norm(np.ma.maximum(shown, lo)))
    decades = np.arange(np.ceil(np.log10(norm.vmin)), np.floor(np.log10(norm.vmax)) + 1)
    step = max(1, int(np.ceil(len(decades) / 5)))
    ticks = [float(10.0**d) for d in decades[::-1][::step]]
    return _Panel(title, index, _palette(matplotlib.colormaps["magma"]), [(float(norm(t)), _sci(t)) for t in ticks],
                  over, failed=failed)


def _tick_labels(problem: Problem) -> tuple[list[float], list[str], float, bool]:
    """Where the names go along an axis (in entries), the names, their font size, and whether one per parameter.

    Parameter names when there are few enough to read (:data:`MAX_NAMED_TICKS`),
    else the tensor names at the middle of each block.
    """
    W = problem.n_params
    if W <= MAX_NAMED_TICKS:
        return [i + 0.5 for i in range(W)], list(problem.param_names), (9 if W <= 20 else 7), True
    # every parameter tensor, a layer kind's (gamma2, Win3, ...) as a dense layer's W and b
    groups = [(t.label, t.offset, t.offset + t.size) for t in problem.architecture.tensors]
    return [(a + b) / 2 for _, a, b in groups], [g for g, _, _ in groups], 10, False


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


def _png_data(index: npt.NDArray[np.uint8], palette: npt.NDArray[np.uint8]) -> str:
    """A palette PNG, one pixel per entry, as a ``data:`` URI: exact colours, a few kilobytes."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(index), mode="P")
    image.putpalette(palette.reshape(-1).tolist())
    buf = io.BytesIO()
    image.save(buf, format="png", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _x(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _esc(text: str) -> str:
    from html import escape

    return escape(text, quote=True)


def heatmaps_svg(analysis: CaseAnalysis) -> str | None:
    """The exact Hessian, then ``|method - reference|`` (log scale) for :func:`drawn_comparisons`, as inline SVG.

    Each matrix is a palette PNG with one pixel per entry, scaled up without
    smoothing (``image-rendering: pixelated``): every entry is a sharp square
    whatever the zoom, and a (206, 206) matrix costs tens of kilobytes, not
    hundreds.  Lines, rings, names and colour scales are SVG drawn by the
    browser.  Entries over the comparison's bound are ringed in red (up to
    400 per panel); solid lines mark layer boundaries, dotted lines the
    boundary between a layer's ``W`` and ``b``.
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
    side = 220.0 if W <= 20 else 280.0  # the matrix, in px
    at, names, size, per_parameter = _tick_labels(p)
    cols = min(len(panels), PANELS_PER_ROW)
    rows = -(-len(panels) // cols)
    left, bottom, top = 70.0, 55.0 if per_parameter else 20.0, 24.0  # row names, column names, the first titles
    cell_w, cell_h = side + 100.0, side + 40.0  # a panel, its colour scale and its labels; the gap below it
    width, height = left + cols * cell_w, top + rows * cell_h - 40.0 + bottom
    step = side / W
    out = [f'<svg class="heat" viewBox="0 0 {_x(width)} {_x(height)}" width="{_x(width)}" height="{_x(height)}" '
           f'role="img" font-family="sans-serif"><title>heatmaps of {_esc(p.id)}</title>']
    cuts = [b.offset for b in p.architecture.blocks[1:]]
    # the thin lines: where a tensor begins inside its layer (a dense layer's b, a kind's second tensor, ...)
    biases = [t.offset for t in p.architecture.tensors if t.offset and t.offset not in cuts]
    for k, panel in enumerate(panels):
        x0 = left + (k % cols) * cell_w
        y0 = top + (k // cols) * cell_h  # the matrix's top edge
        colour = "#b00020" if panel.failed else "#000"
        out.append(f'<text x="{_x(x0 + side / 2)}" y="{_x(y0 - 6)}" text-anchor="middle" font-size="12" '
                   f'fill="{colour}">{_esc(panel.title)}</text>')
        out.append(f'<image x="{_x(x0)}" y="{_x(y0)}" width="{_x(side)}" height="{_x(side)}" preserveAspectRatio="none" '
                   f'style="image-rendering:pixelated" href="{_png_data(panel.index, panel.palette)}"/>')
        lines = "".join(f"M{_x(x0 + c * step)} {_x(y0)}V{_x(y0 + side)}M{_x(x0)} {_x(y0 + c * step)}H{_x(x0 + side)}"
                        for c in cuts)
        dots = "".join(f"M{_x(x0 + c * step)} {_x(y0)}V{_x(y0 + side)}M{_x(x0)} {_x(y0 + c * step)}H{_x(x0 + side)}"
                       for c in biases)
        if lines:
            out.append(f'<path d="{lines}" stroke="#000" stroke-width="1" fill="none"/>')
        if dots:
            out.append(f'<path d="{dots}" stroke="#000" stroke-width="0.6" stroke-dasharray="2 2" fill="none"/>')
        out.append(f'<rect x="{_x(x0)}" y="{_x(y0)}" width="{_x(side)}" height="{_x(side)}" fill="none" '
                   'stroke="#000" stroke-width="0.8"/>')
        if panel.note:
            out.append(f'<text x="{_x(x0 + side / 2)}" y="{_x(y0 + side / 2)}" text-anchor="middle" '
                       f'dominant-baseline="middle" font-size="13">{_esc(panel.note)}</text>')
        if panel.over is not None and panel.over.any() and panel.over.sum() <= 400:
            r = max(2.0, min(5.0, 0.45 * step))
            rings = "".join(f'<circle cx="{_x(x0 + (j + 0.5) * step)}" cy="{_x(y0 + (i + 0.5) * step)}" r="{_x(r)}"/>'
                            for i, j in zip(*np.nonzero(panel.over), strict=True))
            out.append(f'<g class="over" fill="none" stroke="#e00000" stroke-width="1">{rings}</g>')
        # the colour scale: a strip of the palette, bottom to top, its ticks and their values
        cx = x0 + side + 10
        scale = _png_data(np.arange(LEVELS, dtype=np.uint8)[::-1].reshape(-1, 1), panel.palette)
        out.append(f'<image x="{_x(cx)}" y="{_x(y0)}" width="12" height="{_x(side)}" preserveAspectRatio="none" '
                   f'style="image-rendering:pixelated" href="{scale}"/>')
        out.append(f'<rect x="{_x(cx)}" y="{_x(y0)}" width="12" height="{_x(side)}" fill="none" stroke="#000" '
                   'stroke-width="0.6"/>')
        for where, label in panel.ticks:
            if -1e-9 <= where <= 1 + 1e-9:
                y = y0 + (1 - where) * side
                out.append(f'<path d="M{_x(cx + 12)} {_x(y)}h4" stroke="#000" stroke-width="0.6"/>'
                           f'<text x="{_x(cx + 19)}" y="{_x(y)}" dominant-baseline="middle" font-size="9">'
                           f"{_esc(label)}</text>")
        # names on the outer panels only: every panel has the same axes
        if k % cols == 0:
            out.append(f'<g font-size="{_x(size)}" text-anchor="end" dominant-baseline="middle">'
                       + "".join(f'<text x="{_x(x0 - 4)}" y="{_x(y0 + a * step)}">{_esc(n)}</text>'
                                 for a, n in zip(at, names, strict=True)) + "</g>")
        if k + cols >= len(panels):  # the bottom panel of its column: nothing is drawn below it
            if per_parameter:
                out.append(f'<g font-size="{_x(size)}" text-anchor="end" dominant-baseline="middle">'
                           + "".join(f'<text transform="translate({_x(x0 + a * step)} {_x(y0 + side + 4)}) rotate(-90)">'
                                     f"{_esc(n)}</text>" for a, n in zip(at, names, strict=True)) + "</g>")
            else:
                out.append(f'<g font-size="{_x(size)}" text-anchor="middle">'
                           + "".join(f'<text x="{_x(x0 + a * step)}" y="{_x(y0 + side + 14)}">{_esc(n)}</text>'
                                     for a, n in zip(at, names, strict=True)) + "</g>")
    out.append("</svg>")
    return "".join(out)


SPECTRUM_MARKERS = ("x", "+", "triangle", "square", "diamond", "star")
"""The markers of the approximations' eigenvalues, in the order of the legend."""


def _symlog(y: FloatArray | float, t: float) -> Any:
    """The spectrum's vertical axis: ``sign(y) log10(1 + |y| / t)``, linear within ``t`` of 0 and logarithmic beyond."""
    return np.sign(y) * (np.log10(np.abs(y) + t) - np.log10(t))  # no overflow of |y| / t


def _marker(kind: str, x: float, y: float) -> str:
    """One marker as an SVG path (``x``, ``+``) or shape, centred at ``(x, y)``, about 7 px across."""
    r = 3.5
    if kind == "x":
        return f"M{_x(x - r)} {_x(y - r)}l{_x(2 * r)} {_x(2 * r)}M{_x(x - r)} {_x(y + r)}l{_x(2 * r)} {_x(-2 * r)}"
    if kind == "+":
        return f"M{_x(x - r)} {_x(y)}h{_x(2 * r)}M{_x(x)} {_x(y - r)}v{_x(2 * r)}"
    if kind == "triangle":
        return f"M{_x(x)} {_x(y - r)}L{_x(x + r)} {_x(y + r)}H{_x(x - r)}Z"
    if kind == "square":
        return f"M{_x(x - r)} {_x(y - r)}h{_x(2 * r)}v{_x(2 * r)}h{_x(-2 * r)}Z"
    if kind == "diamond":
        return f"M{_x(x)} {_x(y - r)}L{_x(x + r)} {_x(y)}L{_x(x)} {_x(y + r)}L{_x(x - r)} {_x(y)}Z"
    return (f"M{_x(x - r)} {_x(y)}h{_x(2 * r)}M{_x(x)} {_x(y - r)}v{_x(2 * r)}"  # star: + and x
            f"M{_x(x - 0.7 * r)} {_x(y - 0.7 * r)}l{_x(1.4 * r)} {_x(1.4 * r)}"
            f"M{_x(x - 0.7 * r)} {_x(y + 0.7 * r)}l{_x(1.4 * r)} {_x(-1.4 * r)}")


def _spectrum_ticks(top: float, t: float) -> list[float]:
    """Tick values of the symlog axis: 0 and powers of ten above the linear part up to ``top``, at most 4 a side."""
    lo = int(np.floor(np.log10(t))) + 1
    hi = int(np.floor(np.log10(top))) if top > 0 else lo - 1
    decades = list(range(lo, hi + 1))  # none when every value is within the linear part
    step = max(1, -(-len(decades) // 4))
    positive = sorted(10.0**d for d in decades[::-1][::step])
    return [-v for v in positive[::-1]] + [0.0] + positive


def spectrum_svg(analysis: CaseAnalysis) -> str | None:
    """Sorted eigenvalues of the exact Hessian (symlog axis, +-threshold band) and of each approximation, as SVG.

    The exact eigenvalues are dots, blue above the zero threshold, red below
    its negative, grey within it (the shaded band); each approximation's
    eigenvalues are overlaid with a marker of its own, named in the legend
    with its inertia.  Written directly as SVG, like the heatmaps: a few
    kilobytes, drawn by the browser, and no plotting library to lay out.
    """
    s = analysis.spectrum
    if s is None:
        return None
    ev, tau = np.asarray(s.eigenvalues, dtype=np.float64), float(s.threshold)
    approximations = [(a.name, a.inertia) for a in analysis.approximations if a.inertia is not None]
    finite = np.abs(np.concatenate([ev, *(inertia.eigenvalues for _, inertia in approximations)]))
    finite = finite[np.isfinite(finite)]
    top = float(np.max(finite, initial=0.0))
    t = max(tau, float(np.max(np.abs(ev[np.isfinite(ev)]), initial=0.0)) * 1e-6, float(np.finfo(np.float64).tiny))
    ticks = _spectrum_ticks(max(top, t), t)
    span = float(_symlog(max(top, t), t)) * 1.05
    left, top_px, plot_w, plot_h, legend_w = 62.0, 26.0, 520.0, 240.0, 300.0
    width, height = left + plot_w + 16.0 + legend_w, top_px + plot_h + 40.0
    n = ev.size

    def px(i: Any) -> Any:
        return left + plot_w * (np.asarray(i) + 0.5) / max(n, 1)

    def py(y: Any) -> Any:
        return top_px + plot_h * (0.5 - np.clip(_symlog(np.asarray(y, dtype=np.float64), t), -span, span) / (2 * span))

    out = [f'<svg class="spectrum" viewBox="0 0 {_x(width)} {_x(height)}" width="{_x(width)}" '
           f'height="{_x(height)}" role="img" font-family="sans-serif"><title>eigenvalue spectrum of '
           f"{_esc(analysis.problem.id)}</title>",
           f'<text x="{_x(left + plot_w / 2)}" y="16" text-anchor="middle" font-size="12">'
           f"spectrum: {_esc(analysis.point)}</text>"]
    band_top, band_bottom = float(py(tau)), float(py(-tau))
    out.append(f'<rect x="{_x(left)}" y="{_x(band_top)}" width="{_x(plot_w)}" height="{_x(band_bottom - band_top)}" '
               'fill="#dddddd"/>')
    out.append(f'<path d="M{_x(left)} {_x(float(py(0.0)))}h{_x(plot_w)}" stroke="#000" stroke-width="0.6"/>')
    for v in ticks:  # the vertical axis: a tick and a label per value, a faint line across
        y = float(py(v))
        if v != 0 and abs(y - float(py(0.0))) < 12:  # would sit on the label of 0 (a narrow linear part)
            continue
        out.append(f'<path d="M{_x(left - 4)} {_x(y)}h4" stroke="#000" stroke-width="0.6"/>'
                   f'<path d="M{_x(left)} {_x(y)}h{_x(plot_w)}" stroke="#eee" stroke-width="0.5"/>'
                   f'<text x="{_x(left - 7)}" y="{_x(y)}" text-anchor="end" dominant-baseline="middle" '
                   f'font-size="9">{_esc(_sci(v))}</text>')
    decade = 10 ** int(np.floor(np.log10(max(n, 1))))  # a tick every power of ten below n, or half of one
    step = max(1, decade // 2 if n < 3 * decade else decade)
    indices = list(range(0, n, step))
    if n and n - 1 - indices[-1] >= step / 2:  # the last index too, unless it would crowd the last tick
        indices.append(n - 1)
    for i in indices:  # the horizontal axis: indices
        x = float(px(i))
        out.append(f'<path d="M{_x(x)} {_x(top_px + plot_h)}v4" stroke="#000" stroke-width="0.6"/>'
                   f'<text x="{_x(x)}" y="{_x(top_px + plot_h + 14)}" text-anchor="middle" font-size="9">{i}</text>')
    out.append(f'<rect x="{_x(left)}" y="{_x(top_px)}" width="{_x(plot_w)}" height="{_x(plot_h)}" fill="none" '
               'stroke="#000" stroke-width="0.8"/>')
    out.append(f'<text x="{_x(left + plot_w / 2)}" y="{_x(height - 6)}" text-anchor="middle" font-size="10">'
               "eigenvalue index (ascending)</text>")
    out.append(f'<text transform="translate(12 {_x(top_px + plot_h / 2)}) rotate(-90)" text-anchor="middle" '
               'font-size="10">eigenvalue (symlog)</text>')
    groups = {"positive": (POSITIVE, ev > tau), "negative": ("#c0392b", ev < -tau),
              "zero": ("#888888", ~(ev > tau) & ~(ev < -tau))}
    for name, (colour, where) in groups.items():
        dots = "".join(f'<circle cx="{_x(float(px(i)))}" cy="{_x(float(py(ev[i])))}" r="2.5"/>'
                       for i in np.flatnonzero(where & np.isfinite(ev)))
        out.append(f'<g class="exact {name}" fill="{colour}">{dots}</g>')
    legend = [(f"|λ| ≤ {tau:.1e} (counted zero)", '<rect x="-5" y="-4" width="10" height="8" fill="#dddddd"/>'),
              (f"exact ({analysis.exact_name}): +{s.positive} / −{s.negative} / 0×{s.zero}",
               f'<circle r="2.5" fill="{POSITIVE}"/>')]
    for k, (name, inertia) in enumerate(approximations):
        kind = SPECTRUM_MARKERS[k % len(SPECTRUM_MARKERS)]
        stroke = f'fill="none" stroke="{APPROXIMATION_COLOURS[k % len(APPROXIMATION_COLOURS)]}" stroke-width="1"'
        values = np.asarray(inertia.eigenvalues, dtype=np.float64)
        path = "".join(_marker(kind, float(px(i)), float(py(values[i]))) for i in np.flatnonzero(np.isfinite(values)))
        out.append(f'<path class="approximation" data-name="{_esc(name)}" d="{path}" {stroke}/>')
        legend.append((f"{name}: +{inertia.positive} / −{inertia.negative} / 0×{inertia.zero}",
                       f'<path d="{_marker(kind, 0.0, 0.0)}" {stroke}/>'))
    lx = left + plot_w + 16.0
    for k, (label, symbol) in enumerate(legend):
        y = top_px + 8 + 15 * k
        out.append(f'<g transform="translate({_x(lx + 6)} {_x(y)})">{symbol}</g>'
                   f'<text x="{_x(lx + 16)}" y="{_x(y)}" dominant-baseline="middle" font-size="9">{_esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)
