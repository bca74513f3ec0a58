"""Histograms as plain SVG geometry, rendered by a Jinja macro: no JavaScript, no CDN."""

from __future__ import annotations

import math

import attrs


@attrs.define
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    count: int
    href: str | None


@attrs.define
class Chart:
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    bars: list[Bar]
    y_max: int
    total: int


def histogram(bins: list[tuple[str, int, str | None]], *, width: int = 420, height: int = 150) -> Chart:
    """``bins``: (label, count, link) in order. Bars share the width; the tallest fills it."""
    left, right, top, bottom = 34, 6, 8, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = max((count for _, count, _ in bins), default=0) or 1
    step = plot_w / max(len(bins), 1)
    gap = min(4.0, step * 0.15)
    bars = []
    for i, (label, count, href) in enumerate(bins):
        h = plot_h * count / y_max
        bars.append(Bar(x=round(left + i * step + gap / 2, 1), y=round(top + plot_h - h, 1),
                        width=round(step - gap, 1), height=round(h, 1), label=label, count=count, href=href))
    return Chart(width, height, top, top + plot_h, bars, y_max, sum(count for _, count, _ in bins))


def value_bins(values: list[float], *, max_distinct: int = 12, n_bins: int = 10) -> list[tuple[float, float, int]]:
    """(low, high, count) bins: one per distinct value when there are few (rewards of 0, 0.5
    and 1 stay exact), else ``n_bins`` equal bins over the range."""
    counts: dict[float, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
        if len(counts) > max_distinct:
            break
    else:
        return [(v, v, n) for v, n in sorted(counts.items())]
    low, high = min(values), max(values)
    width = (high - low) / n_bins or 1.0
    out = [[low + i * width, low + (i + 1) * width, 0] for i in range(n_bins)]
    for value in values:
        out[min(int((value - low) / width), n_bins - 1)][2] += 1
    return [(a, b, n) for a, b, n in out]


def int_bins(counts: dict[int, int], *, max_bars: int = 24) -> list[tuple[int, int, int]]:
    """(low, high, count) for integer values such as turns, merged when they are many."""
    if not counts:
        return []
    low, high = min(counts), max(counts)
    size = max(1, math.ceil((high - low + 1) / max_bars))
    out = []
    for start in range(low, high + 1, size):
        out.append((start, start + size - 1, sum(counts.get(v, 0) for v in range(start, start + size))))
    return out


def number(value: float) -> str:
    """Short label for a bin edge: 1, 0.5, 0.125."""
    return f"{value:.3g}"
