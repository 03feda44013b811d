"""Cohen's and Fleiss' kappa and Krippendorff's alpha against values worked out by hand (the
arithmetic is in the comments) and against published worked examples."""

import pytest

from app.admin.agreement_stats import Metric, cohen_kappa, fleiss_kappa, krippendorff_alpha


def _pairs(counts: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    return [pair for pair, n in counts.items() for _ in range(n)]


def test_cohen_kappa_wikipedia_example():
    # Wikipedia, "Cohen's kappa", 50 grant proposals: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    # p_o = 35/50 = 0.7; rater 1 says yes 25/50, rater 2 30/50: p_e = .5*.6 + .5*.4 = 0.5.
    pairs = _pairs({("yes", "yes"): 20, ("yes", "no"): 5, ("no", "yes"): 10, ("no", "no"): 15})
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_cohen_kappa_uses_each_raters_own_marginals():
    # 4 items: (a,a) (a,b) (b,b) (a,a). p_o = 3/4. Rater 1: a 3, b 1; rater 2: a 2, b 2.
    # p_e = (3*2 + 1*2) / 16 = 1/2 -> kappa = (3/4 - 1/2) / (1/2) = 1/2.
    # (Pooling the marginals, as Scott's pi does, would give p_e = (5/8)^2 + (3/8)^2 = 17/32.)
    assert cohen_kappa([("a", "a"), ("a", "b"), ("b", "b"), ("a", "a")]) == pytest.approx(0.5)


def test_cohen_kappa_perfect_reversed_and_undefined():
    assert cohen_kappa([("x", "x"), ("y", "y"), ("z", "z")]) == pytest.approx(1.0)
    # Always opposite on a balanced binary item set: p_o = 0, p_e = 1/2 -> -1.
    assert cohen_kappa([("g", "b"), ("b", "g")]) == pytest.approx(-1.0)
    assert cohen_kappa([("g", "g"), ("g", "g")]) is None  # one category only: chance is already 1
    assert cohen_kappa([]) is None


def test_fleiss_kappa_wikipedia_worked_example():
    # Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories.
    # Published: P-bar = 0.378, P_e = 0.213, kappa = 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    items = [[category for category, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(items) == pytest.approx(0.20993, abs=1e-5)
    assert round(fleiss_kappa(items), 3) == 0.210


def test_fleiss_kappa_with_different_rater_counts():
    # Item 1: a a a -> P_1 = 3*2 / (3*2) = 1. Item 2: a b -> P_2 = 0. P-bar = 1/2 (items weigh
    # the same). Ratings: a 4 of 5, b 1 of 5 -> P_e = 0.64 + 0.04 = 0.68.
    # kappa = (0.5 - 0.68) / (1 - 0.68) = -0.5625. A single-rating item is left out.
    assert fleiss_kappa([["a", "a", "a"], ["a", "b"], ["b"]]) == pytest.approx(-0.5625)


def test_fleiss_kappa_on_two_raters_is_scotts_pi():
    # Two raters per item: Fleiss' kappa is Scott's pi (pooled marginals). For the Cohen example
    # above: p_o = 3/4, pooled a 5/8, b 3/8 -> p_e = 34/64 -> pi = (3/4 - 17/32) / (15/32) = 7/15.
    items = [["a", "a"], ["a", "b"], ["b", "b"], ["a", "a"]]
    assert fleiss_kappa(items) == pytest.approx(7 / 15)
    assert fleiss_kappa([["a", "a"], ["a", "a"]]) is None
    assert fleiss_kappa([["a"], []]) is None


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
# 12 units, values 1-5, missing data (None). Published: nominal .743, ordinal .815, interval .849.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
# Wikipedia, "Krippendorff's alpha", and the `krippendorff` package's README: 3 coders, 15 units.
# Published: nominal 0.691, interval 0.811.
WIKIPEDIA = [
    [None, None, None, None, None, 3, 4, 1, 2, 1, 1, 3, 3, None, 3],
    [1, None, 2, 1, 3, 3, 4, 3, None, None, None, None, None, None, None],
    [None, None, 2, 1, 3, 4, 4, None, 2, 1, 1, 3, 3, None, 4],
]


def _units(by_coder):
    return [[v for v in column if v is not None] for column in zip(*by_coder, strict=True)]


@pytest.mark.parametrize(
    ("data", "metric", "published"),
    [
        (KRIPPENDORFF_2011, Metric.nominal, 0.743),
        (KRIPPENDORFF_2011, Metric.ordinal, 0.815),
        (KRIPPENDORFF_2011, Metric.interval, 0.849),
        (WIKIPEDIA, Metric.nominal, 0.691),
        (WIKIPEDIA, Metric.interval, 0.811),
    ],
)
def test_krippendorff_alpha_published_examples(data, metric, published):
    assert round(krippendorff_alpha(_units(data), metric), 3) == published


def test_krippendorff_alpha_2011_nominal_exactly():
    from fractions import Fraction

    # Unit 2 (2,2,3,2): o23 = o32 = 3 * 1 / 3 = 1 each. Unit 6 (1,2,3,4): each ordered pair of
    # different values 1/3, 12 pairs = 4. Unit 8 (1,1,2,1): o12 = o21 = 1 each. Off-diagonal sum
    # = 2 + 4 + 2 = 8. n_c: 1 -> 9, 2 -> 13, 3 -> 10, 4 -> 5, 5 -> 3 (n = 40).
    # D_e numerator = n^2 - sum n_c^2 = 1600 - (81 + 169 + 100 + 25 + 9) = 1216.
    # alpha = 1 - (n - 1) * 8 / 1216 = 1 - 312 / 1216 = 904 / 1216 = 0.74342...
    assert krippendorff_alpha(_units(KRIPPENDORFF_2011), Metric.nominal) == pytest.approx(float(Fraction(904, 1216)))


def test_krippendorff_alpha_by_hand_three_metrics():
    # Units (two raters each): [1,1], [2,3], [3,3]. Coincidences o11 = 2, o23 = o32 = 1, o33 = 2;
    # n1 = 2, n2 = 1, n3 = 3, n = 6. alpha = 1 - (n-1) * sum o d2 / sum n_c n_k d2.
    units = [[1, 1], [2, 3], [3, 3]]
    # nominal: observed 2; expected 2 * (2*1 + 2*3 + 1*3) = 22 -> 1 - 5*2/22 = 6/11.
    assert krippendorff_alpha(units, Metric.nominal) == pytest.approx(6 / 11)
    # interval: d2 12 = 1, 13 = 4, 23 = 1. observed 2; expected 2 * (2 + 24 + 3) = 58 -> 24/29.
    assert krippendorff_alpha(units, Metric.interval) == pytest.approx(24 / 29)
    # ordinal: d2(c,k) = (sum_{g=c..k} n_g - (n_c + n_k)/2)^2: 12 -> 1.5^2 = 2.25,
    # 23 -> 2^2 = 4, 13 -> (6 - 2.5)^2 = 12.25. observed 2 * 4 = 8;
    # expected 2 * (2*1*2.25 + 2*3*12.25 + 1*3*4) = 180 -> 1 - 5*8/180 = 7/9.
    assert krippendorff_alpha(units, Metric.ordinal) == pytest.approx(7 / 9)


def test_krippendorff_alpha_missing_values_and_undefined_cases():
    # A unit with one value is unpairable: adding it changes nothing.
    base = [[1, 1], [2, 3], [3, 3]]
    assert krippendorff_alpha([*base, [5]], Metric.interval) == krippendorff_alpha(base, Metric.interval)
    assert krippendorff_alpha([[1, 1, 1], [1, 1]], Metric.ordinal) is None  # one value: 0/0
    assert krippendorff_alpha([[4], []], Metric.nominal) is None
    assert krippendorff_alpha([[1, 2], [1, 2]], Metric.interval) < 0  # systematic disagreement
    assert krippendorff_alpha([[1, 1], [7, 7], [4, 4]], Metric.interval) == pytest.approx(1.0)


def test_ordinal_alpha_depends_on_order_not_spacing():
    # Relabelling values monotonically (1,2,3 -> 1,10,100) leaves ordinal alpha unchanged and
    # changes interval alpha.
    units = [[1, 1], [2, 2, 3], [3, 3], [1, 2]]
    stretched = [[{1: 1, 2: 10, 3: 100}[v] for v in unit] for unit in units]
    assert krippendorff_alpha(stretched, Metric.ordinal) == pytest.approx(krippendorff_alpha(units, Metric.ordinal))
    assert krippendorff_alpha(units, Metric.interval) == pytest.approx(0.7037, abs=1e-4)
    assert krippendorff_alpha(stretched, Metric.interval) == pytest.approx(0.5956, abs=1e-4)
