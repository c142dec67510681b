"""Small inline SVG charts for the HTML pages (no JavaScript library, no network).

Each function returns one ``<svg>`` element as a string; text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

_FONT = "font-family=\"system-ui, sans-serif\" font-size=\"11\""
_AXIS = "#8a8f98"
_TEXT = "#30343b"


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value / 1000:.3g}k"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}"


def bar_chart(labels: Sequence[str], values: Sequence[float], *, colors: Sequence[str] | None = None,
              width: int = 460, bar_height: int = 16, value_format: str = "{:g}",
              max_value: float | None = None, title: str = "") -> str:
    """A horizontal bar chart, one bar per label, in the given order."""
    n = len(labels)
    label_width = min(170, 14 + 7 * max((len(str(x)) for x in labels), default=4))
    top = 22 if title else 6
    height = top + n * (bar_height + 4) + 6
    scale_max = max_value if max_value is not None else max([float(v) for v in values] + [1e-12])
    plot = width - label_width - 56
    rows = []
    for k, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + k * (bar_height + 4)
        length = 0.0 if scale_max <= 0 else plot * max(0.0, float(value)) / scale_max
        color = colors[k] if colors is not None else "#4c78a8"
        rows.append(
            f'<text x="{label_width - 6}" y="{y + bar_height * 0.75:.1f}" text-anchor="end" '
            f'fill="{_TEXT}">{escape(str(label))}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}" '
            f'fill="{escape(color)}" rx="2"><title>{escape(str(label))}: '
            f'{escape(value_format.format(value))}</title></rect>'
            f'<text x="{label_width + length + 4:.1f}" y="{y + bar_height * 0.75:.1f}" '
            f'fill="{_TEXT}">{escape(value_format.format(value))}</text>'
        )
    heading = (f'<text x="0" y="14" font-weight="600" fill="{_TEXT}">{escape(title)}</text>'
               if title else "")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" {_FONT}>{heading}{"".join(rows)}</svg>')


def histogram(values: np.ndarray, edges: np.ndarray, *, title: str = "", xlabel: str = "",
              tick_labels: Sequence[str] | None = None, width: int = 460, height: int = 200,
              color: str = "#4c78a8", markers: Sequence[tuple[float, str]] = ()) -> str:
    """Counts of ``values`` in the bins ``edges`` (``len(edges) - 1`` bars, equal widths drawn).

    ``markers``: ``(position in edge units, caption)`` vertical lines (e.g. COCO's size limits).
    """
    counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=edges)
    bins = len(counts)
    left, right, top, bottom = 44, 10, 24 if title else 8, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(1, int(counts.max()) if counts.size else 1)
    bar_w = plot_w / max(1, bins)
    parts = []
    if title:
        parts.append(f'<text x="0" y="14" font-weight="600" fill="{_TEXT}">{escape(title)}</text>')
    for tick in range(5):
        value = peak * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#e4e6ea"/><text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" '
                     f'fill="{_AXIS}">{_num(round(value, 1))}</text>')
    for k, count in enumerate(counts):
        h = plot_h * count / peak
        x = left + k * bar_w
        caption = (tick_labels[k] if tick_labels is not None
                   else f"{_num(edges[k])}-{_num(edges[k + 1])}")
        parts.append(f'<rect x="{x + 1:.1f}" y="{top + plot_h - h:.1f}" width="{max(1, bar_w - 2):.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{escape(caption)}: {int(count)}'
                     f'</title></rect>')
    step = max(1, math.ceil(bins / 8))
    for k in range(0, bins + 1, step):
        x = left + k * bar_w
        caption = _num(float(edges[k])) if tick_labels is None else (
            tick_labels[k] if k < bins else "")
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                     f'fill="{_AXIS}">{escape(caption)}</text>')
    for position, caption in markers:
        if edges[0] <= position <= edges[-1]:
            k = int(np.searchsorted(edges, position))
            frac = 0.0
            if 0 < k <= bins:
                frac = (position - edges[k - 1]) / (edges[k] - edges[k - 1])
                k -= 1
            x = left + (k + frac) * bar_w
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" '
                         f'stroke="#d62728" stroke-dasharray="4 3"/><text x="{x + 3:.1f}" '
                         f'y="{top + 10}" fill="#d62728">{escape(caption)}</text>')
    if xlabel:
        parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" '
                     f'fill="{_AXIS}">{escape(xlabel)}</text>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" '
                 f'y2="{top + plot_h}" stroke="{_AXIS}"/>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" {_FONT}>{"".join(parts)}</svg>')


def line_chart(series: Sequence[tuple[str, np.ndarray, np.ndarray, str]], *, title: str = "",
               xlabel: str = "", ylabel: str = "", width: int = 460, height: int = 320,
               highlight: str | None = None) -> str:
    """Lines on ``[0, 1] x [0, 1]`` (precision-recall curves): ``(name, x, y, colour)`` each.

    Each line is a ``<path data-name=...>`` so a page can highlight one; NaN points are skipped.
    """
    left, right, top, bottom = 40, 10, 24 if title else 8, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = []
    if title:
        parts.append(f'<text x="0" y="14" font-weight="600" fill="{_TEXT}">{escape(title)}</text>')
    for tick in range(6):
        v = tick / 5
        x = left + plot_w * v
        y = top + plot_h - plot_h * v
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#eceef1"/><line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" '
                     f'y2="{top + plot_h}" stroke="#eceef1"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="{_AXIS}">'
                     f'{v:.1f}</text><text x="{x:.1f}" y="{top + plot_h + 14}" '
                     f'text-anchor="middle" fill="{_AXIS}">{v:.1f}</text>')
    for name, xs, ys, color in series:
        xs = np.asarray(xs, dtype=np.float64)
        ys = np.asarray(ys, dtype=np.float64)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if not ok.any():
            continue
        points = " ".join(f"{left + plot_w * x:.1f},{top + plot_h - plot_h * y:.1f}"
                          for x, y in zip(xs[ok], ys[ok], strict=True))
        bold = name == highlight
        parts.append(f'<polyline class="curve" data-name="{escape(name)}" points="{points}" '
                     f'fill="none" stroke="{escape(color)}" stroke-width="{2.5 if bold else 1.4}" '
                     f'opacity="{1 if bold or highlight is None else 0.55}">'
                     f'<title>{escape(name)}</title></polyline>')
    if xlabel:
        parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" '
                     f'fill="{_AXIS}">{escape(xlabel)}</text>')
    if ylabel:
        parts.append(f'<text x="10" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
                     f'fill="{_AXIS}" transform="rotate(-90 10 {top + plot_h / 2:.1f})">'
                     f'{escape(ylabel)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
                 f'stroke="{_AXIS}"/>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" {_FONT}>{"".join(parts)}</svg>')
