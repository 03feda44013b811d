"""A server-side SVG chart of win rate with its 95% interval per round (no JavaScript).

Built from app/rounds/charts.py's frame and tick helpers so it looks like the round page's charts:
a shaded band between the interval ends, an error bar and a dot per round, and a dashed line at
50% (no difference). The y axis is always 0–100%."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from app.rounds.charts import HEIGHT, PAD_BOTTOM, PAD_LEFT, PAD_RIGHT, WIDTH, Frame, format_number, nice_ticks


@dataclass(frozen=True)
class RatePoint:
    x: float
    rate: float
    low: float
    high: float


def interval_chart(points: Sequence[RatePoint], *, title: str, x_label: str = "round") -> Markup:
    """Rates (0..1) with their intervals, drawn in percent; a note when there is nothing yet."""
    heading = escape(title)
    shown = sorted((p for p in points if p.rate is not None and p.low is not None), key=lambda p: p.x)
    if not shown:
        return Markup(
            '<figure class="chart chart-empty"><figcaption>{}</figcaption>'
            '<p class="hint">No judgments of a round’s policy against its previous policy yet.</p></figure>'
        ).format(heading)
    xs = [p.x for p in shown]
    x_min, x_max = (min(xs) - 0.5, max(xs) + 0.5) if len(xs) > 1 else (xs[0] - 1, xs[0] + 1)
    frame = Frame(x_min, x_max, 0.0, 100.0)
    last = shown[-1]
    parts = [
        f'<svg class="chart-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" preserveAspectRatio="xMidYMid meet" '
        f'aria-label="{heading}: {len(shown)} round{"s" if len(shown) != 1 else ""}, latest '
        f"{format_number(last.rate * 100)}% ({format_number(last.low * 100)}–{format_number(last.high * 100)}%) "
        f'at {escape(x_label)} {format_number(last.x)}">'
    ]
    left, right, bottom = PAD_LEFT, WIDTH - PAD_RIGHT, HEIGHT - PAD_BOTTOM
    for tick in nice_ticks(0, 100, 5):
        y = frame.sy(tick)
        parts.append(f'<line class="chart-grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="chart-label" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{format_number(tick)}%</text>'
        )
    half = frame.sy(50)
    parts.append(
        f'<line class="chart-even" x1="{left}" x2="{right}" y1="{half:.1f}" y2="{half:.1f}" '
        'stroke-dasharray="4 3" stroke="currentColor" opacity="0.5"/>'
    )
    parts.append(f'<line class="chart-axis" x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>')
    if len(shown) > 1:
        upper = [f"{frame.sx(p.x):.1f},{frame.sy(p.high * 100):.1f}" for p in shown]
        lower = [f"{frame.sx(p.x):.1f},{frame.sy(p.low * 100):.1f}" for p in reversed(shown)]
        parts.append(
            f'<polygon class="chart-band" fill="currentColor" opacity="0.12" points="{" ".join(upper + lower)}"/>'
        )
        line = " ".join(f"{frame.sx(p.x):.1f},{frame.sy(p.rate * 100):.1f}" for p in shown)
        parts.append(f'<polyline class="chart-line" fill="none" points="{line}"/>')
    for p in shown:
        x = frame.sx(p.x)
        parts.append(
            f'<line class="chart-errorbar" stroke="currentColor" x1="{x:.1f}" x2="{x:.1f}" '
            f'y1="{frame.sy(p.low * 100):.1f}" y2="{frame.sy(p.high * 100):.1f}"/>'
        )
        parts.append(
            f'<circle class="chart-dot" r="3" cx="{x:.1f}" cy="{frame.sy(p.rate * 100):.1f}">'
            f"<title>{escape(x_label)} {format_number(p.x)}: {format_number(p.rate * 100)}% "
            f"({format_number(p.low * 100)}–{format_number(p.high * 100)}%)</title></circle>"
        )
        parts.append(
            f'<text class="chart-label" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{format_number(p.x)}</text>'
        )
    parts.append("</svg>")
    latest = Markup("{} {} · {}% ({}–{}%)").format(
        x_label,
        format_number(last.x),
        format_number(last.rate * 100),
        format_number(last.low * 100),
        format_number(last.high * 100),
    )
    return Markup('<figure class="chart"><figcaption>{} <span class="chart-latest">{}</span></figcaption>').format(
        heading, latest
    ) + Markup("".join(parts) + "</figure>")
