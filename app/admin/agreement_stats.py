"""Chance-corrected agreement statistics: pure functions, no DB.

- Cohen's kappa: two raters, each item rated by both, categories compared for equality.
- Fleiss' kappa: any number of raters per item (the counts may differ between items).
- Krippendorff's alpha: any number of raters per item, missing ratings allowed, with a metric
  (nominal, ordinal, interval) that says how far apart two different values are.

Each returns None where the statistic is undefined: no pairable ratings, or every rating the
same value, so that chance agreement is already perfect and "agreement beyond chance" is 0/0.
The page shows that as "—" rather than a misleading 1.0 or 0.0.

Kappa = (observed agreement - chance agreement) / (1 - chance agreement); alpha = 1 - observed
disagreement / expected disagreement. 1 is perfect agreement, 0 what chance gives, below 0
systematic disagreement.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from enum import StrEnum


def cohen_kappa(pairs: Iterable[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen (1960). `pairs`: one (rater 1's category, rater 2's category) per item.

    Chance agreement uses each rater's own marginal distribution (that is Cohen's, unlike Scott's
    pi or Fleiss' kappa, which pool the two)."""
    pairs = list(pairs)
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    chance = sum(first[c] * second[c] for c in first) / (n * n)
    if chance == 1:
        return None
    return (observed - chance) / (1 - chance)


def fleiss_kappa(items: Iterable[Sequence[Hashable]]) -> float | None:
    """Fleiss (1971). `items`: per item, the categories its raters gave (one entry per rater).

    Items may have different numbers of raters. Each item's agreement P_i is the share of its
    ordered rater pairs that agree, sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)), and the items are
    averaged with equal weight; chance agreement is sum_j p_j^2, with p_j the share of all ratings
    in category j. With the same number of raters on every item this is Fleiss' formula exactly.
    Items with fewer than two ratings carry no agreement and are left out."""
    per_item: list[float] = []
    totals: Counter[Hashable] = Counter()
    for ratings in items:
        m = len(ratings)
        if m < 2:
            continue
        counts = Counter(ratings)
        per_item.append(sum(c * (c - 1) for c in counts.values()) / (m * (m - 1)))
        totals.update(counts)
    if not per_item:
        return None
    observed = sum(per_item) / len(per_item)
    n_ratings = sum(totals.values())
    chance = sum((c / n_ratings) ** 2 for c in totals.values())
    if chance == 1:
        return None
    return (observed - chance) / (1 - chance)


class Metric(StrEnum):
    """How Krippendorff's alpha weighs a disagreement between two values c and k."""

    nominal = "nominal"
    """Any two different values disagree equally (1)."""
    ordinal = "ordinal"
    """Ranks: the squared number of ratings lying between c and k (counting half of c's and k's
    own), so a jump across a crowded part of the scale weighs more than across an empty one."""
    interval = "interval"
    """Equal steps: (c - k)^2."""


def krippendorff_alpha(units: Iterable[Sequence[float]], metric: Metric = Metric.interval) -> float | None:
    """Krippendorff's alpha by the coincidence matrix ("Computing Krippendorff's Alpha-
    Reliability", 2011). `units`: per unit, the values its raters gave; a rater who did not rate
    the unit is simply absent, so missing data needs no marker. Units with fewer than two values
    are unpairable and left out, as the paper does.

    Each unit with m values adds 1 / (m - 1) to o[c][k] for every ordered pair of its values
    (two different raters); n_c are the row sums and n their total (the pairable values). Then
    alpha = 1 - (n - 1) * sum o_ck d2(c,k) / sum n_c n_k d2(c,k)."""
    coincidences: defaultdict[tuple[float, float], float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                # Ordered pairs of different raters: n_c * n_k, or n_c * (n_c - 1) when c == k.
                coincidences[(c, k)] += (n_c * (n_k - (c == k))) / (m - 1)
    marginals: defaultdict[float, float] = defaultdict(float)
    for (c, _k), o in coincidences.items():
        marginals[c] += o
    n = sum(marginals.values())
    if n <= 1:
        return None
    distance = _squared_distance(metric, marginals)
    observed = sum(o * distance(c, k) for (c, k), o in coincidences.items())
    expected = sum(n_c * n_k * distance(c, k) for c, n_c in marginals.items() for k, n_k in marginals.items())
    if expected == 0:  # a single value throughout: nothing to disagree on
        return None
    return 1 - (n - 1) * observed / expected


def _squared_distance(metric: Metric, marginals: Mapping[float, float]) -> Callable[[float, float], float]:
    """delta^2(c, k) for `metric`; the ordinal one needs the marginal count of every value."""
    if metric is Metric.nominal:
        return lambda c, k: float(c != k)
    if metric is Metric.interval:
        return lambda c, k: float(c - k) ** 2
    ordered = sorted(marginals)
    # cumulative[i] = the number of pairable values up to and including ordered[i].
    cumulative: dict[float, float] = {}
    running = 0.0
    for value in ordered:
        running += marginals[value]
        cumulative[value] = running

    def ordinal(c: float, k: float) -> float:
        low, high = (c, k) if c <= k else (k, c)
        # sum_{g=low..high} n_g - (n_low + n_high) / 2
        between = cumulative[high] - cumulative[low] + marginals[low] - (marginals[low] + marginals[high]) / 2
        return between**2

    return ordinal
