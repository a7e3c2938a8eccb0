"""The report's key figures as SVG, written with the standard library only: they render offline (in the report,
in `dvc plots show` as image plots, in any browser) and the same data gives the same bytes.

A figure is a row of panels; a panel has a title, axes with ticks and labels, and marks: lines (a series of
(x, y) points), points (a scatter coloured by a category) or bars (one value per category and group).
Every figure's title names what it shows (backbone, generator, space)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
PANEL_W, PANEL_H, MARGIN_L, MARGIN_B, MARGIN_T, MARGIN_R = 320, 240, 56, 44, 28, 12
TITLE_H, LEGEND_H = 30, 22


@dataclass
class Panel:
    """One chart. `lines`: name -> [(x, y)]; `points`: category -> [(x, y)]; `bars`: (groups along x,
    {series: [value per group]}). `diagonal` draws y = x (chance for a ROC). `y_range` fixes the y axis."""

    title: str
    x_label: str
    y_label: str
    lines: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    points: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    bars: tuple[list[str], dict[str, list[float | None]]] | None = None
    diagonal: bool = False
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None
    span: int = 1  # widths of a standard panel (bars of many groups need room for their labels)

    def series(self) -> list[str]:
        return [*self.lines, *self.points, *(self.bars[1] if self.bars else {})]


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _extent(values: Sequence[float], fixed: tuple[float, float] | None) -> tuple[float, float]:
    if fixed is not None:
        return fixed
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    pad = (high - low) * 0.05 or abs(high) * 0.05 or 0.5
    return low - pad, high + pad


def _panel(panel: Panel, x0: float, y0: float, colours: dict[str, str]) -> list[str]:
    """SVG elements of one panel whose top-left corner is (x0, y0)."""
    left, top = x0 + MARGIN_L, y0 + MARGIN_T
    width, height = PANEL_W * panel.span - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B
    out = [f'<text x="{x0 + PANEL_W * panel.span / 2:.1f}" y="{y0 + 18}" text-anchor="middle" font-size="12" '
           f'font-weight="bold">{escape(panel.title)}</text>',
           f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#999"/>']
    if panel.bars:
        groups, values = panel.bars
        x_low, x_high = 0.0, float(len(groups))
        flat = [v for vs in values.values() for v in vs if v is not None]
        y_low, y_high = panel.y_range or (0.0, max(flat, default=1.0) or 1.0)
    else:
        xs = [x for pts in [*panel.lines.values(), *panel.points.values()] for x, _ in pts]
        ys = [y for pts in [*panel.lines.values(), *panel.points.values()] for _, y in pts]
        x_low, x_high = _extent(xs, panel.x_range)
        y_low, y_high = _extent(ys, panel.y_range)

    def sx(x: float) -> float:
        return left + (x - x_low) / ((x_high - x_low) or 1.0) * width

    def sy(y: float) -> float:
        return top + height - (y - y_low) / ((y_high - y_low) or 1.0) * height

    for k in range(5):  # y ticks
        value = y_low + (y_high - y_low) * k / 4
        out.append(f'<line x1="{left - 4}" y1="{sy(value):.1f}" x2="{left}" y2="{sy(value):.1f}" stroke="#999"/>'
                   f'<text x="{left - 6}" y="{sy(value) + 4:.1f}" text-anchor="end" font-size="10">'
                   f'{_fmt(value)}</text>')
    if panel.bars:
        groups, values = panel.bars
        slot = width / len(groups) if groups else width
        bar = slot * 0.8 / max(len(values), 1)
        for g, name in enumerate(groups):
            out.append(f'<text x="{left + slot * (g + 0.5):.1f}" y="{top + height + 14}" text-anchor="middle" '
                       f'font-size="10">{escape(name)}</text>')
            for s, (series, vs) in enumerate(values.items()):
                if vs[g] is None:
                    continue
                x = left + slot * g + slot * 0.1 + bar * s
                out.append(f'<rect x="{x:.1f}" y="{sy(vs[g]):.1f}" width="{bar:.1f}" '
                           f'height="{sy(y_low) - sy(vs[g]):.1f}" fill="{colours[series]}"/>')
    else:
        for k in range(5):  # x ticks
            value = x_low + (x_high - x_low) * k / 4
            out.append(f'<line x1="{sx(value):.1f}" y1="{top + height}" x2="{sx(value):.1f}" '
                       f'y2="{top + height + 4}" stroke="#999"/><text x="{sx(value):.1f}" y="{top + height + 15}" '
                       f'text-anchor="middle" font-size="10">{_fmt(value)}</text>')
    if panel.diagonal:
        out.append(f'<line x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(1):.1f}" y2="{sy(1):.1f}" stroke="#777" '
                   'stroke-dasharray="4 3"/>')
    for name, pts in panel.lines.items():
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colours[name]}" stroke-width="2"/>')
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colours[name]}"/>' for x, y in pts]
    for name, pts in panel.points.items():
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colours[name]}" fill-opacity="0.75"/>'
                for x, y in pts]
    out.append(f'<text x="{left + width / 2:.1f}" y="{top + height + 32}" text-anchor="middle" font-size="11">'
               f'{escape(panel.x_label)}</text>')
    out.append(f'<text transform="translate({x0 + 14},{top + height / 2:.1f}) rotate(-90)" text-anchor="middle" '
               f'font-size="11">{escape(panel.y_label)}</text>')
    return out


def render_svg(title: str, panels: Sequence[Panel]) -> str:
    """A figure: its title, a legend of every series (one colour per name across panels), the panels in a row."""
    names: list[str] = []
    for panel in panels:
        names += [n for n in panel.series() if n not in names]
    colours = {name: PALETTE[k % len(PALETTE)] for k, name in enumerate(names)}
    # wide enough for the title (about 8 px a character at 14 px): a figure's title names what it shows
    width = max(PANEL_W * max(sum(p.span for p in panels), 1), 8 * len(title) + 20)
    height = TITLE_H + LEGEND_H + PANEL_H
    out = ['<svg xmlns="http://www.w3.org/2000/svg" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">'
           f'{escape(title)}</text>']
    x = 10.0
    for name in names:
        out.append(f'<rect x="{x:.0f}" y="{TITLE_H + 4}" width="10" height="10" fill="{colours[name]}"/>'
                   f'<text x="{x + 14:.0f}" y="{TITLE_H + 13}" font-size="11">{escape(name)}</text>')
        x += 24 + 6.5 * len(name)
    x0 = 0
    for panel in panels:
        out += _panel(panel, x0, TITLE_H + LEGEND_H, colours)
        x0 += PANEL_W * panel.span
    return "\n".join([*out, "</svg>"]) + "\n"
