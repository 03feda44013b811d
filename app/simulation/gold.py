"""The simulated team's hidden preference and its noise.

Gold reward (what every simulated labeler "really" prefers): concise answers that finish.

    gold(text) = 1.0 · [the text ends a sentence: . ! ? or a closing quote/bracket after one]
                 − 0.04 · (number of words)

A 20-word finished answer scores 0.2; a 40-word answer cut off mid-sentence scores −1.6. It is
a fixed heuristic on the text alone, so the simulation (and this module) needs no model.

Each labeler perceives gold + Normal(0, σ) per completion and ranks by that. σ is solved so
that two labelers are expected to agree on ~72.6% of pairs (InstructGPT's inter-labeler figure)
for the completions seen so far: for a pair whose gold gap is d, one labeler orders it like
gold with p = Φ(|d| / (σ√2)), and two labelers agree with p² + (1 − p)².
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from itertools import combinations

TARGET_AGREEMENT = 0.726
_FINISHED = re.compile(r"[.!?][\"')\]]*\s*$")


def gold_reward(text: str) -> float:
    finished = 1.0 if _FINISHED.search(text.strip()) else 0.0
    return finished - 0.04 * len(text.split())


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def p_gold_order(gap: float, sigma: float) -> float:
    """Probability one noisy labeler orders a pair like gold does (0.5 for a tie)."""
    if gap == 0:
        return 0.5
    return _phi(abs(gap) / (sigma * math.sqrt(2.0)))


def expected_agreement(gaps: Sequence[float], sigma: float) -> float:
    if not gaps:
        return 1.0
    total = 0.0
    for gap in gaps:
        p = p_gold_order(gap, sigma)
        total += p * p + (1 - p) * (1 - p)
    return total / len(gaps)


def solve_sigma(gaps: Sequence[float], target: float = TARGET_AGREEMENT) -> float:
    """σ whose expected pairwise agreement over `gaps` is `target` (bisection on log σ; agreement
    falls as σ grows). When even σ → 0 cannot reach it (many exact ties), the smallest σ."""
    low, high = 1e-4, 1e3
    if expected_agreement(gaps, low) <= target:
        return low
    for _ in range(60):
        mid = math.sqrt(low * high)
        if expected_agreement(gaps, mid) > target:
            low = mid
        else:
            high = mid
    return math.sqrt(low * high)


def pair_gaps(scores: Sequence[float]) -> list[float]:
    return [a - b for a, b in combinations(scores, 2)]


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
