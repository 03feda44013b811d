"""How one simulated labeler departs from gold: its own weights, a position bias, and noise.

Labeler l perceives an answer shown at position i of K as

    u_l(answer) + σ·√2·z·(K − 1 − i)/(K − 1) + Normal(0, σ),    z = Φ⁻¹(sigmoid(position_logit))

where u_l weighs gold's parts (gold.PARTS) with gold's weights each multiplied by its own
exp(Normal(0, WEIGHT_SPREAD)) draw (seeded per labeler): one cares more for correctness, another
for finishing. The position term makes the earlier-shown item win a tied pair with probability
sigmoid(position_logit) (0.55 at the default 0.2), whatever σ is. It then ranks by perception.

σ is solved (bisection) so that two labelers are expected to agree on TARGET_AGREEMENT of pairs
(InstructGPT: 72.6 ± 1.5%) over the pairs seen so far. For a pair whose utility gap for l is Δ_l,
shown in random order, l orders it like its own utility with
p_l = ½[Φ(Δ_l/(σ√2) + z) + Φ(Δ_l/(σ√2) − z)], and labelers l, m agree with
p_l·p_m + (1 − p_l)(1 − p_m); the solve averages that over pairs and over pairs of labelers.
(In a K-wise ranking two items are on average closer than 1 position apart in K − 1, so the
position term there is smaller than in this pairwise formula: measured agreement is within a
point or two of it, tests/loop/test_simulation.py.)
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist

from app.simulation.gold import PARTS, WEIGHTS, combine

TARGET_AGREEMENT = 0.726
POSITION_LOGIT = 0.2
WEIGHT_SPREAD = 0.35
MAX_PAIRS = 1200
"""σ is solved on the most recent pairs: the completions change from round to round."""
_NORMAL = NormalDist()


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@dataclass(frozen=True)
class Profile:
    weights: dict[str, float]
    position_logit: float = POSITION_LOGIT

    @classmethod
    def draw(
        cls, rng: random.Random, *, spread: float = WEIGHT_SPREAD, position_logit: float = POSITION_LOGIT
    ) -> Profile:
        return cls({part: WEIGHTS[part] * math.exp(rng.gauss(0.0, spread)) for part in PARTS}, position_logit)

    @property
    def z(self) -> float:
        """The position bias in units of the pair's noise (σ√2)."""
        return _NORMAL.inv_cdf(1.0 / (1.0 + math.exp(-self.position_logit)))

    def utility(self, values: dict[str, float]) -> float:
        return combine(values, self.weights)

    def perceive(self, utilities: Sequence[float], sigma: float, rng: random.Random) -> list[float]:
        """Perceived values of items shown in this order (the first is shown first)."""
        k = len(utilities)
        shift = sigma * math.sqrt(2.0) * self.z
        return [
            u + (shift * (k - 1 - i) / (k - 1) if k > 1 else 0.0) + rng.gauss(0.0, sigma)
            for i, u in enumerate(utilities)
        ]


def expected_agreement(gaps: Sequence[Sequence[float]], profiles: Sequence[Profile], sigma: float) -> float:
    """Expected pairwise agreement of two labelers; gaps[pair][l] = labeler l's utility gap
    (signed, first item minus second)."""
    if not gaps:
        return 1.0
    labeler_pairs = list(combinations(range(len(profiles)), 2)) or [(0, 0)]
    total = 0.0
    for gap in gaps:
        p = [_p_first(g, sigma, prof.z) for g, prof in zip(gap, profiles, strict=True)]
        total += sum(p[a] * p[b] + (1 - p[a]) * (1 - p[b]) for a, b in labeler_pairs) / len(labeler_pairs)
    return total / len(gaps)


def _p_first(gap: float, sigma: float, z: float) -> float:
    """Probability the labeler prefers the pair's first item (random sides)."""
    if gap == 0:
        return 0.5
    x = gap / (sigma * math.sqrt(2.0))
    return 0.5 * (_phi(x + z) + _phi(x - z))


def solve_sigma(
    gaps: Sequence[Sequence[float]], profiles: Sequence[Profile], target: float = TARGET_AGREEMENT
) -> float:
    """σ whose expected agreement over `gaps` is `target` (bisection on log σ; agreement falls as σ
    grows). When even σ → 0 cannot reach it (many exact ties), the smallest σ."""
    gaps = list(gaps)[-MAX_PAIRS:]
    low, high = 1e-3, 1e2
    if expected_agreement(gaps, profiles, low) <= target:
        return low
    for _ in range(40):
        mid = math.sqrt(low * high)
        if expected_agreement(gaps, profiles, mid) > target:
            low = mid
        else:
            high = mid
    return math.sqrt(low * high)


def pairwise_agreement(order_a: Sequence[int], order_b: Sequence[int]) -> tuple[int, int]:
    """(agreeing pairs, pairs) of two strict best-first orders of the same ids."""
    rank_a = {cid: i for i, cid in enumerate(order_a)}
    rank_b = {cid: i for i, cid in enumerate(order_b)}
    agree = total = 0
    for x, y in combinations(list(rank_a), 2):
        total += 1
        agree += (rank_a[x] < rank_a[y]) == (rank_b[x] < rank_b[y])
    return agree, total


def agreement_with_gold(order: Sequence[int], gold: dict[int, float]) -> tuple[float, int]:
    """(pairs ordered like gold, pairs) of one ranking; gold ties count half."""
    agree, total = 0.0, 0
    for i, x in enumerate(order):
        for y in order[i + 1 :]:
            total += 1
            agree += 0.5 if gold[x] == gold[y] else float(gold[x] > gold[y])
    return agree, total


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
