"""Server-side SVG line charts for the round page (no JavaScript chart library).

Pure functions: points in, SVG markup out. The SVG scales to its container through its viewBox,
so one rendering serves desktop and phone. Non-finite values (a NaN loss, an overflowed KL) are
left out rather than breaking the scale; very long series are thinned to min/max per bucket so a
spike stays visible."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

Point = tuple[float, float]
"""(x, y): x is the training step."""

WIDTH, HEIGHT = 480, 200
# Room for tick labels on the left and below, a little air on the right and top.
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 52, 14, 12, 24
MAX_POINTS = 400


@dataclass(frozen=True)
class Frame:
    """The data range mapped onto the plot area."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float

    def sx(self, x: float) -> float:
        return PAD_LEFT + (x - self.x_min) / (self.x_max - self.x_min) * (WIDTH - PAD_LEFT - PAD_RIGHT)

    def sy(self, y: float) -> float:
        return HEIGHT - PAD_BOTTOM - (y - self.y_min) / (self.y_max - self.y_min) * (HEIGHT - PAD_TOP - PAD_BOTTOM)


def finite_points(points: Sequence[Point]) -> list[Point]:
    """Drops points with a missing or non-finite coordinate and sorts by x."""
    kept = []
    for x, y in points:
        if x is None or y is None:
            continue
        x, y = float(x), float(y)
        if math.isfinite(x) and math.isfinite(y):
            kept.append((x, y))
    return sorted(kept, key=lambda p: p[0])


def thin(points: Sequence[Point], max_points: int = MAX_POINTS) -> list[Point]:
    """At most `max_points` points: each bucket of neighbours keeps its lowest and highest point
    (in x order), and the first and last points are always kept."""
    if len(points) <= max_points:
        return list(points)
    buckets = max(1, (max_points - 2) // 2)
    inner = points[1:-1]
    size = len(inner) / buckets
    kept = [points[0]]
    for b in range(buckets):
        chunk = inner[int(b * size) : int((b + 1) * size)]
        if not chunk:
            continue
        low, high = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
        kept.extend(sorted({low, high}, key=lambda p: p[0]))
    kept.append(points[-1])
    return kept


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 × 10ⁿ apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("nice_ticks: low and high must be finite")
    if high < low:
        low, high = high, low
    if high == low:
        spread = abs(low) * 0.1 or 1.0
        low, high = low - spread, high + spread
    raw_step = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.5:
        ticks.append(round(value, 12) + 0.0)  # + 0.0 turns -0.0 into 0.0
        value += step
    if ticks[-1] < high:  # float drift left the top uncovered
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def format_number(value: float) -> str:
    """Short labels: 3 significant digits, no trailing zeros, no scientific notation for everyday sizes."""
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e6:
        text = f"{value:.3g}"
        if "e" in text:  # .3g chose exponent form for e.g. 12345; spell it out
            text = f"{value:.0f}"
        return text
    # Tiny or huge (learning rates): the shortest exponent form, so an axis label fits its margin.
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def frame_for(points: Sequence[Point], y_ticks: Sequence[float]) -> Frame:
    xs = [p[0] for p in points]
    x_min, x_max = min(xs), max(xs)
    if x_min == x_max:
        x_min, x_max = x_min - 1, x_max + 1
    return Frame(x_min, x_max, y_ticks[0], y_ticks[-1])


def line_chart(
    points: Sequence[Point], *, title: str, unit: str = "", x_label: str = "step", max_points: int = MAX_POINTS
) -> Markup:
    """An inline SVG line chart of `points`, or a short note when there is nothing to draw yet.

    The latest value is written under the title, so the number is readable without the plot."""
    clean = finite_points(points)
    heading = escape(title)
    if not clean:
        return Markup(
            '<figure class="chart chart-empty"><figcaption>{}</figcaption><p class="hint">No points yet.</p></figure>'
        ).format(heading)
    shown = thin(clean, max_points)
    ys = [p[1] for p in shown]
    y_ticks = nice_ticks(min(ys), max(ys))
    frame = frame_for(shown, y_ticks)
    last_x, last_y = clean[-1]
    parts = [
        f'<svg class="chart-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" preserveAspectRatio="xMidYMid meet" '
        f'aria-label="{heading}: {len(clean)} point{"s" if len(clean) != 1 else ""}, '
        f"latest {format_number(last_y)} at {escape(x_label)} "
        f'{format_number(last_x)}">'
    ]
    parts += _grid(frame, y_ticks, whole_x=all(x == int(x) for x, _ in shown))
    coords = " ".join(f"{frame.sx(x):.1f},{frame.sy(y):.1f}" for x, y in shown)
    if len(shown) > 1:
        parts.append(f'<polyline class="chart-line" fill="none" points="{coords}"/>')
    parts.append(f'<circle class="chart-dot" r="3" cx="{frame.sx(last_x):.1f}" cy="{frame.sy(last_y):.1f}"/>')
    parts.append("</svg>")
    latest = Markup("{}{}").format(format_number(last_y), unit)
    return Markup(
        '<figure class="chart"><figcaption>{} <span class="chart-latest">{} {} · {}</span></figcaption>'
    ).format(heading, x_label, format_number(last_x), latest) + Markup("".join(parts) + "</figure>")


def _grid(frame: Frame, y_ticks: Sequence[float], whole_x: bool) -> list[str]:
    """Horizontal grid lines with y labels, the x axis with a few step labels (whole numbers
    only when x is a step count)."""
    left, right, bottom = PAD_LEFT, WIDTH - PAD_RIGHT, HEIGHT - PAD_BOTTOM
    parts = []
    for tick in y_ticks:
        y = frame.sy(tick)
        parts.append(f'<line class="chart-grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="chart-label" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{format_number(tick)}</text>'
        )
    parts.append(f'<line class="chart-axis" x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>')
    x_ticks = [
        t
        for t in nice_ticks(frame.x_min, frame.x_max, 5)
        if frame.x_min <= t <= frame.x_max and (not whole_x or t == int(t))
    ]
    for tick in x_ticks:
        x = frame.sx(tick)
        parts.append(
            f'<text class="chart-label" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{format_number(tick)}</text>'
        )
    return parts
