"""charts.py: tick choice, thinning, escaping, and that the SVG draws the given points where they belong."""

import math
import re

import pytest

from app.rounds import charts
from app.rounds.charts import HEIGHT, PAD_BOTTOM, PAD_LEFT, PAD_RIGHT, PAD_TOP, WIDTH


def polyline(svg: str) -> list[tuple[float, float]]:
    match = re.search(r'<polyline[^>]* points="([^"]+)"', svg)
    assert match, "no line drawn"
    return [tuple(map(float, pair.split(","))) for pair in match.group(1).split()]


def y_labels(svg: str) -> list[str]:
    return re.findall(r'<text class="chart-label" x="46" y="[\d.]+" text-anchor="end">([^<]+)</text>', svg)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.5, 0.72, [0.5, 0.6, 0.7, 0.8]),
        (0, 10, [0, 2.5, 5, 7.5, 10]),
        (-3, 7, [-5, -2.5, 0, 2.5, 5, 7.5]),
        (0.0012, 0.0049, [0.001, 0.002, 0.003, 0.004, 0.005]),
    ],
)
def test_nice_ticks_are_round_and_cover_the_range(low, high, expected):
    ticks = charts.nice_ticks(low, high)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= low and ticks[-1] >= high


def test_nice_ticks_widen_a_flat_series_and_refuse_nan():
    assert charts.nice_ticks(3, 3)[0] < 3 < charts.nice_ticks(3, 3)[-1]
    assert charts.nice_ticks(0, 0)[0] < 0 < charts.nice_ticks(0, 0)[-1]
    with pytest.raises(ValueError):
        charts.nice_ticks(float("nan"), 1)


def test_points_land_on_the_plot_area_in_order():
    points = [(3, 0.6), (1, 0.5), (2, 0.55)]  # out of order on purpose
    svg = charts.line_chart(points, title="RM validation accuracy")
    drawn = polyline(svg)
    # x: first step on the left edge, last on the right edge, evenly in between
    assert [x for x, _ in drawn] == pytest.approx([PAD_LEFT, (PAD_LEFT + WIDTH - PAD_RIGHT) / 2, WIDTH - PAD_RIGHT])
    # y: ticks 0.5..0.6 span the plot height, so 0.5 sits on the bottom and 0.6 on the top
    assert y_labels(svg) == ["0.5", "0.525", "0.55", "0.575", "0.6"]
    assert drawn[0][1] == pytest.approx(HEIGHT - PAD_BOTTOM)
    assert drawn[2][1] == pytest.approx(PAD_TOP)
    assert drawn[1][1] == pytest.approx((HEIGHT - PAD_BOTTOM + PAD_TOP) / 2)
    assert "step 3 · 0.6" in svg and 'aria-label="RM validation accuracy: 3 points, latest 0.6 at step 3"' in svg


def test_non_finite_values_are_left_out():
    svg = charts.line_chart([(1, 1.0), (2, float("nan")), (3, math.inf), (4, 2.0), (5, None)], title="KL")
    assert len(polyline(svg)) == 2
    assert "2 points, latest 2 at step 4" in svg


def test_one_point_is_a_dot_and_no_points_is_a_note():
    svg = charts.line_chart([(7, 0.25)], title="Entropy")
    assert "<polyline" not in svg and '<circle class="chart-dot"' in svg
    cx = float(re.search(r'cx="([\d.]+)"', svg).group(1))
    assert PAD_LEFT < cx < WIDTH - PAD_RIGHT
    empty = charts.line_chart([], title="Entropy")
    assert "<svg" not in empty and "No points yet" in empty


def test_title_and_unit_are_escaped():
    svg = charts.line_chart([(1, 2)], title='<script>alert("x")</script>', unit="<b>")
    assert "<script>" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg and "&lt;b&gt;" in svg


def test_long_series_are_thinned_but_keep_ends_and_spikes():
    points = [(i, 1.0) for i in range(10_000)]
    points[5_000] = (5_000, 50.0)  # one spike
    thinned = charts.thin(points, 200)
    assert len(thinned) <= 200
    assert thinned[0] == (0, 1.0) and thinned[-1] == (9_999, 1.0)
    assert (5_000, 50.0) in thinned
    assert [x for x, _ in thinned] == sorted(x for x, _ in thinned)
    svg = charts.line_chart(points, title="Reward")
    assert len(polyline(svg)) <= charts.MAX_POINTS and "10000 points" in svg


def test_whole_step_axes_get_whole_labels():
    svg = charts.line_chart([(1, 0.1), (2, 0.2), (3, 0.3)], title="x")
    x_labels = re.findall(r'text-anchor="middle">([^<]+)</text>', svg)
    assert x_labels == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (0.123456, "0.123"),
        (12345.6, "12346"),
        (2.5, "2.5"),
        (1.2e-5, "1.2e-5"),
        (1e-5, "1e-5"),
        (2.5e7, "2.5e7"),
        (-0.5, "-0.5"),
    ],
)
def test_format_number(value, text):
    assert charts.format_number(value) == text
