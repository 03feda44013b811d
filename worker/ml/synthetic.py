"""Synthetic, learnable ranking data for tests and benchmarks.

Each completion is a shuffled bag of filler words plus some "good" and "bad" words; its true
quality is (#good - #bad). A ranking orders the K completions by quality, best first, and
completions of equal quality share a group (a tie). A reward model that learns to count good
and bad words ranks them perfectly, so validation accuracy measures learning, not noise.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from worker.ml.data import Ranking

FILLER = (
    "the a cat dog bird fish tree sun moon red blue green one two three four five "
    "is was and of to in on at it this that"
).split()
GOOD = ("great", "good", "yes", "thanks")
BAD = ("bad", "poor", "no", "not")
PROMPT_WORDS = ("write say tell story poem answer question why how what when please hello world").split()


def quality_rankings(
    n: int,
    k: int,
    *,
    seed: int = 0,
    filler: Sequence[str] = FILLER,
    good: Sequence[str] = GOOD,
    bad: Sequence[str] = BAD,
    qualities: Sequence[int] | None = None,
    length: tuple[int, int] = (6, 14),
    labelers: int = 1,
) -> list[Ranking]:
    """`n` tasks of `k` completions, each ranked by `labelers` identical rankings.

    Qualities are drawn from `qualities` (default: -4..4) — a sample without replacement when
    there are at least k of them (no ties), otherwise with replacement (ties happen).
    """
    rng = random.Random(seed)
    pool = list(qualities) if qualities is not None else list(range(-4, 5))
    rankings = []
    for task in range(n):
        prompt = " ".join(rng.choices(PROMPT_WORDS, k=rng.randint(3, 8)))
        scores = rng.sample(pool, k) if len(pool) >= k else rng.choices(pool, k=k)
        completions = [_completion(rng, q, filler, good, bad, length) for q in scores]
        groups = [[i for i in range(k) if scores[i] == q] for q in sorted(set(scores), reverse=True)]
        for _ in range(labelers):
            rankings.append(
                Ranking(prompt=prompt, completions=completions, groups=[list(g) for g in groups], prompt_id=f"p{task}")
            )
    return rankings


def _completion(
    rng: random.Random,
    quality: int,
    filler: Sequence[str],
    good: Sequence[str],
    bad: Sequence[str],
    length: tuple[int, int],
) -> str:
    words = rng.choices(filler, k=rng.randint(*length))
    if quality > 0:
        words += rng.choices(good, k=quality)
    elif quality < 0:
        words += rng.choices(bad, k=-quality)
    rng.shuffle(words)
    return " ".join(words)
