"""Per-completion ratings turned into what the trainers take: rankings and chosen/rejected pairs.

A rating form (Likert, good/bad, multi-aspect) gives each completion of a task a score; the
reward model trains on best-first rankings (data.Ranking, ties allowed) and DPO and the pairs
export on (chosen, rejected) pairs. Every conversion here is a pure function of one judgment
(one labeler's ratings of one task), so ratings of different labelers are never compared:

- scores -> groups: completions grouped by score, highest first; equal scores share a group (a
  tie: no pair); an unrated completion (None) is left out.
- good/bad -> scores 1 / 0, i.e. two groups, good above bad.
- a ranked aspect (levels, 0 = best) -> scores -level.
- several aspects -> one score per completion: the weighted mean of the aspects' scores, the
  weights normalised to sum 1 (`combine_aspects`); `ranges` first rescales each aspect to [0, 1]
  so that aspects on different scales weigh as their weights say.
- scores -> pairs: every two rated completions of the judgment with different scores, the
  higher one chosen.

docs/feedback-training.md describes how each form becomes reward-model data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from worker.ml.data import Prompt, Ranking

OVERALL = ""
"""The aspect key of a completion's overall rating (the only one of a Likert or good/bad form)."""

Score = float | None


@dataclass
class Rated:
    """One labeler's ratings of the completions of one task (one submitted judgment)."""

    prompt: Prompt
    completions: list[str]
    scores: dict[str, list[Score]]
    """Per aspect (OVERALL = "" for the overall rating), one score per completion, higher is
    better; None = not rated (left out). Likert: the points (1..n); good/bad: `good_bad_scores`;
    a ranked aspect: `level_scores`."""
    prompt_id: str = ""

    def __post_init__(self) -> None:
        for aspect, scores in self.scores.items():
            if len(scores) != len(self.completions):
                raise ValueError(f"scores[{aspect!r}]: {len(scores)} scores for {len(self.completions)} completions")


@dataclass(frozen=True)
class Pair:
    """A preference pair as TRL's trainers take it (prompt, chosen, rejected)."""

    prompt: Prompt
    chosen: str
    rejected: str
    prompt_id: str = ""


def good_bad_scores(labels: Sequence[bool | None]) -> list[Score]:
    """Good -> 1.0, bad -> 0.0, not rated -> None."""
    return [None if label is None else float(label) for label in labels]


def level_scores(levels: Sequence[int | None]) -> list[Score]:
    """A ranked aspect's levels (0 = best, ties share a level) as scores: -level."""
    return [None if level is None else -float(level) for level in levels]


def score_groups(scores: Sequence[Score]) -> list[list[int]]:
    """Completion indices grouped by score, highest first; equal scores share a group (a tie);
    None is left out. [5, 7, 5, None, 1] -> [[1], [0, 2], [4]]."""
    levels = sorted({s for s in scores if s is not None}, reverse=True)
    return [[i for i, s in enumerate(scores) if s == level] for level in levels]


def normalized_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """The weights divided by their sum. Each must be finite and >= 0, and one > 0."""
    for aspect, weight in weights.items():
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weights[{aspect!r}]: must be a finite number >= 0, got {weight}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("weights: at least one aspect needs a weight above 0")
    return {aspect: weight / total for aspect, weight in weights.items()}


def combine_aspects(
    scores: Mapping[str, Sequence[Score]],
    weights: Mapping[str, float],
    *,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> list[Score]:
    """One score per completion: sum over aspects of weight x score, the weights normalised to
    sum 1 (so the result stays on the aspects' scale). With `ranges[aspect] = (low, high)` that
    aspect is first rescaled to (score - low) / (high - low), i.e. [0, 1]: pass each scale's
    range (Likert (1, points); a ranked aspect of K completions (-(K - 1), 0)) whenever the
    aspects do not share one scale, or a 7-point aspect outweighs a 3-point one.

    A completion missing a score for any aspect of positive weight gets None (not rated): a
    partial combination would compare it on other terms than its neighbours.
    """
    norm = normalized_weights(weights)
    used = [aspect for aspect, weight in norm.items() if weight > 0]
    missing = [aspect for aspect in used if aspect not in scores]
    if missing:
        raise ValueError(f"weights: no scores for aspect(s) {', '.join(map(repr, missing))}")
    ranges = ranges or {}
    for aspect, (low, high) in ranges.items():
        if not high > low:
            raise ValueError(f"ranges[{aspect!r}]: high must be above low, got ({low}, {high})")
    n = len(scores[used[0]])
    combined: list[Score] = []
    for k in range(n):
        values = [scores[aspect][k] for aspect in used]
        if any(v is None for v in values):
            combined.append(None)
            continue
        total = 0.0
        for aspect, value in zip(used, values, strict=True):
            assert value is not None
            low, high = ranges.get(aspect, (0.0, 1.0))
            total += norm[aspect] * (value - low) / (high - low)
        combined.append(total)
    return combined


def rated_scores(
    rated: Rated,
    *,
    aspect: str = OVERALL,
    weights: Mapping[str, float] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> list[Score]:
    """The scores a conversion reads: one aspect's (default: the overall rating), or with
    `weights` the weighted combination of aspects (`combine_aspects`)."""
    if weights is not None:
        return combine_aspects(rated.scores, weights, ranges=ranges)
    if aspect not in rated.scores:
        raise ValueError(f"aspect: this judgment has no {aspect!r} ratings (has {sorted(rated.scores)})")
    return list(rated.scores[aspect])


def to_ranking(
    rated: Rated,
    *,
    aspect: str = OVERALL,
    weights: Mapping[str, float] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> Ranking | None:
    """The judgment as a K-way ranking (score levels, best first) of one aspect or a weighted
    combination; None when it orders no two completions (nothing rated, or all equal), since
    then it holds no preference for any trainer."""
    groups = score_groups(rated_scores(rated, aspect=aspect, weights=weights, ranges=ranges))
    if len(groups) < 2:
        return None
    return Ranking(rated.prompt, list(rated.completions), groups, rated.prompt_id)


def to_multi_aspect_ranking(rated: Rated, aspects: Sequence[str]) -> Ranking | None:
    """The judgment for a multi-aspect reward model: `aspect_groups[a]` ranks the completions by
    aspect a (for each of `aspects` the labeler rated and that orders two completions), and
    `groups` holds the overall rating's ranking when there is one (else it is empty). None
    when no aspect orders two completions."""
    aspect_groups = {}
    for aspect in aspects:
        if aspect in rated.scores:
            groups = score_groups(rated.scores[aspect])
            if len(groups) >= 2:
                aspect_groups[aspect] = groups
    if not aspect_groups:
        return None
    overall = score_groups(rated.scores[OVERALL]) if OVERALL in rated.scores else []
    return Ranking(rated.prompt, list(rated.completions), overall, rated.prompt_id, aspect_groups=aspect_groups)


def group_pairs(groups: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """(better, worse) index pairs of best-first groups: each member of a group over each member
    of every later group; members of one group (ties) give none."""
    return [
        (better, worse)
        for level, group in enumerate(groups)
        for better in group
        for lower in groups[level + 1 :]
        for worse in lower
    ]


def ranking_pairs(ranking: Ranking, *, aspect: str | None = None) -> list[Pair]:
    """Chosen/rejected pairs of a ranking (any form's: a pairwise answer is a two-completion
    ranking), from its overall groups or from `aspect_groups[aspect]`."""
    groups = ranking.groups if aspect is None else ranking.aspect_groups.get(aspect, [])
    return [
        Pair(ranking.prompt, ranking.completions[better], ranking.completions[worse], ranking.prompt_id)
        for better, worse in group_pairs(groups)
    ]


def to_pairs(
    rated: Rated,
    *,
    aspect: str = OVERALL,
    weights: Mapping[str, float] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> list[Pair]:
    """Every two completions of the judgment with different scores (of one aspect or the
    weighted combination) as a pair, the higher chosen; equal scores give none."""
    ranking = to_ranking(rated, aspect=aspect, weights=weights, ranges=ranges)
    return [] if ranking is None else ranking_pairs(ranking)


def to_rankings(
    judgments: Sequence[Rated],
    *,
    aspect: str = OVERALL,
    weights: Mapping[str, float] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> list[Ranking]:
    """`to_ranking` of each judgment, those holding no preference left out."""
    rankings = (to_ranking(r, aspect=aspect, weights=weights, ranges=ranges) for r in judgments)
    return [r for r in rankings if r is not None]


def to_multi_aspect_rankings(judgments: Sequence[Rated], aspects: Sequence[str]) -> list[Ranking]:
    """`to_multi_aspect_ranking` of each judgment, those ordering nothing left out."""
    rankings = (to_multi_aspect_ranking(r, aspects) for r in judgments)
    return [r for r in rankings if r is not None]
