"""Win rates with 95% intervals and a Bradley–Terry leaderboard, from pairwise judgments.

Plain Python (no database, no numpy): the service turns stored rankings into `Judgment`s, this
module does the arithmetic, and tests/evaluation/test_stats.py checks it against hand-computed
values.

The tie rule, stated once (the pages and docs/evaluation.md quote it):
- "both bad" is a tie (neither side was preferred); its share is also reported on its own.
- **split**: a tie counts half a win for each side, rate = (wins + ties/2) / judgments. Its
  interval is Wilson's score interval on an *effective* n: a half point varies less than a coin
  flip, so n_eff = n · p(1 − p) / s², s² being the variance of the per-judgment score (1, ½, 0).
  Without ties n_eff = n and this is plain Wilson.
- **excluded**: ties are left out, rate = wins / (wins + losses), with Wilson's interval.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Z95 = 1.959963984540054
"""The 97.5% quantile of the standard normal: two-sided 95% intervals."""
ELO_SCALE = 400 / math.log(10)
"""Elo points per unit of log-strength: Elo = 400 · log10(strength)."""
ELO_ANCHOR = 1000.0

Outcome = Literal["a", "b", "tie", "both_bad"]
TIE_RULE = (
    "Ties and “both bad” count as half a win for each side (split); the excluded rate leaves them out. "
    "Intervals are 95%: Wilson's score interval, on an effective sample size for the split rate "
    "(n · p(1 − p) / variance of the per-judgment score), on wins + losses for the excluded rate."
)


@dataclass(frozen=True)
class Judgment:
    """One labeler's verdict on one task comparing version `a` with version `b`."""

    a: int
    b: int
    outcome: Outcome
    labeler: Hashable = None

    def facing(self, a: int, b: int) -> Judgment:
        """The same verdict with `a` first (a judgment of (b, a) turned around)."""
        if (self.a, self.b) == (a, b):
            return self
        if (self.a, self.b) != (b, a):
            raise ValueError(f"judgment of {self.a} vs {self.b} is not one of {a} vs {b}")
        flipped: Outcome = {"a": "b", "b": "a"}.get(self.outcome, self.outcome)  # type: ignore[assignment]
        return Judgment(a, b, flipped, self.labeler)


@dataclass(frozen=True)
class Interval:
    rate: float | None
    low: float | None
    high: float | None


def wilson(successes: float, n: float, z: float = Z95) -> Interval:
    """Wilson's score interval for a proportion; `successes` may be fractional (effective counts)."""
    if n <= 0:
        return Interval(None, None, None)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class WinRate:
    """Version a against version b: counts, both tie rules with intervals, and shares."""

    a: int
    b: int
    wins: int
    losses: int
    ties: int
    """Ties proper, not counting "both bad"."""
    both_bad: int

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties + self.both_bad

    @property
    def split(self) -> Interval:
        n = self.n
        if n == 0:
            return Interval(None, None, None)
        half = self.ties + self.both_bad
        p = (self.wins + half / 2) / n
        variance = (self.wins + half / 4) / n - p * p  # of the per-judgment score 1, ½ or 0
        n_eff = n * p * (1 - p) / variance if variance > 1e-12 else n
        interval = wilson(p * n_eff, n_eff)
        return Interval(p, interval.low, interval.high)

    @property
    def excluded(self) -> Interval:
        return wilson(self.wins, self.wins + self.losses)

    @property
    def tie_share(self) -> float | None:
        return (self.ties + self.both_bad) / self.n if self.n else None

    @property
    def both_bad_share(self) -> float | None:
        return self.both_bad / self.n if self.n else None

    def as_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "n": self.n,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "both_bad": self.both_bad,
            "tie_share": self.tie_share,
            "both_bad_share": self.both_bad_share,
            "split": vars(self.split),
            "excluded": vars(self.excluded),
        }


def win_rate(judgments: Iterable[Judgment], a: int, b: int) -> WinRate:
    """a's win rate over b from the judgments of that pair (either orientation); others are ignored."""
    counts = {"a": 0, "b": 0, "tie": 0, "both_bad": 0}
    for judgment in judgments:
        if {judgment.a, judgment.b} == {a, b}:
            counts[judgment.facing(a, b).outcome] += 1
    return WinRate(a, b, wins=counts["a"], losses=counts["b"], ties=counts["tie"], both_bad=counts["both_bad"])


def per_labeler(judgments: Iterable[Judgment], a: int, b: int) -> dict[Hashable, WinRate]:
    """The same win rate, one per labeler who judged the pair."""
    by_labeler: dict[Hashable, list[Judgment]] = defaultdict(list)
    for judgment in judgments:
        if {judgment.a, judgment.b} == {a, b}:
            by_labeler[judgment.labeler].append(judgment)
    return {labeler: win_rate(rows, a, b) for labeler, rows in by_labeler.items()}


# ---- Bradley–Terry --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rating:
    version: int
    strength: float
    """Bradley–Terry strength, the anchor's being 1: P(i beats j) = s_i / (s_i + s_j)."""
    elo: float
    """1000 + 400 · log10(strength): 1000 is the anchor, +191 means winning 3 of 4 against it."""
    elo_low: float | None
    elo_high: float | None
    judgments: int
    wins: float
    """Wins with ties as halves."""


@dataclass
class Leaderboard:
    anchor: int
    ratings: list[Rating] = field(default_factory=list)
    """Best first."""
    prior: float = 0.0


def bradley_terry(
    judgments: Sequence[Judgment],
    *,
    anchor: int | None = None,
    prior: float = 1.0,
    iterations: int = 10_000,
    tolerance: float = 1e-10,
) -> Leaderboard:
    """Fits strengths by Hunter's MM algorithm, ties counting half a win for each side.

    `prior` adds, for every version, that many virtual games tied against a reference of strength
    1, so a version that never won (or never lost) still gets a finite rating; 0 fits the plain
    maximum-likelihood model. Intervals: ±1.96 standard errors of log-strength relative to the
    anchor, from the inverse Fisher information (anchor's own interval is None). `anchor` is the
    version rated 1000 (default: the smallest id, usually the base)."""
    versions = sorted({v for j in judgments for v in (j.a, j.b)})
    if not versions:
        return Leaderboard(anchor=anchor if anchor is not None else 0, prior=prior)
    if anchor is None or anchor not in versions:
        anchor = versions[0]
    index = {v: i for i, v in enumerate(versions)}
    k = len(versions)
    wins = [[0.0] * k for _ in range(k)]  # wins[i][j]: i over j, ties as halves
    for judgment in judgments:
        i, j = index[judgment.a], index[judgment.b]
        if judgment.outcome == "a":
            wins[i][j] += 1
        elif judgment.outcome == "b":
            wins[j][i] += 1
        else:
            wins[i][j] += 0.5
            wins[j][i] += 0.5
    games = [[wins[i][j] + wins[j][i] for j in range(k)] for i in range(k)]
    strength = _mm_fit(wins, games, prior=prior, iterations=iterations, tolerance=tolerance)
    scale = strength[index[anchor]]
    strength = [s / scale for s in strength]
    errors = _log_strength_errors(strength, games, prior=prior, anchor=index[anchor])
    ratings = []
    for v in versions:
        i = index[v]
        theta = math.log(strength[i])
        error = errors[i]
        ratings.append(
            Rating(
                version=v,
                strength=strength[i],
                elo=ELO_ANCHOR + ELO_SCALE * theta,
                elo_low=None if error is None else ELO_ANCHOR + ELO_SCALE * (theta - Z95 * error),
                elo_high=None if error is None else ELO_ANCHOR + ELO_SCALE * (theta + Z95 * error),
                judgments=int(sum(games[i])),
                wins=sum(wins[i]),
            )
        )
    ratings.sort(key=lambda r: (-r.elo, r.version))
    return Leaderboard(anchor=anchor, ratings=ratings, prior=prior)


def _mm_fit(
    wins: list[list[float]], games: list[list[float]], *, prior: float, iterations: int, tolerance: float
) -> list[float]:
    """Hunter (2004): s_i ← W_i / Σ_j n_ij / (s_i + s_j), the prior's virtual games included."""
    k = len(wins)
    strength = [1.0] * k
    for _ in range(iterations):
        updated = []
        for i in range(k):
            won = sum(wins[i]) + prior / 2
            denominator = sum(games[i][j] / (strength[i] + strength[j]) for j in range(k) if j != i and games[i][j])
            denominator += prior / (strength[i] + 1.0)
            updated.append(won / denominator if denominator > 0 else strength[i])
        if any(s <= 0 or not math.isfinite(s) for s in updated):
            raise ValueError("Bradley–Terry: a version won no game (or lost none); fit with prior > 0")
        # Geometric mean 1 keeps the scale fixed without a prior (with one, it is fixed already).
        mean_log = sum(map(math.log, updated)) / k if prior == 0 else 0.0
        updated = [s / math.exp(mean_log) for s in updated]
        change = max(abs(math.log(u / s)) for u, s in zip(updated, strength, strict=True))
        strength = updated
        if change < tolerance:
            break
    return strength


def _log_strength_errors(
    strength: list[float], games: list[list[float]], *, prior: float, anchor: int
) -> list[float | None]:
    """Standard errors of log s_i − log s_anchor: the inverse of the Fisher information with the
    anchor's row and column removed (the model only fixes differences of log-strengths)."""
    k = len(strength)
    info = [[0.0] * k for _ in range(k)]
    for i in range(k):
        if prior:
            q = strength[i] / (strength[i] + 1.0)
            info[i][i] += prior * q * (1 - q)
        for j in range(k):
            if i != j and games[i][j]:
                q = strength[i] / (strength[i] + strength[j])
                weight = games[i][j] * q * (1 - q)
                info[i][i] += weight
                info[i][j] -= weight
    others = [i for i in range(k) if i != anchor]
    reduced = [[info[i][j] for j in others] for i in others]
    inverse = _invert(reduced)
    errors: list[float | None] = [None] * k
    if inverse is not None:
        for row, i in enumerate(others):
            variance = inverse[row][row]
            errors[i] = math.sqrt(variance) if variance > 0 else None
    return errors


def _invert(matrix: list[list[float]]) -> list[list[float]] | None:
    """Gauss–Jordan with partial pivoting; None for a singular matrix (a version with no games)."""
    n = len(matrix)
    augmented = [row[:] + [1.0 if i == j else 0.0 for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(augmented[r][col]))
        if abs(augmented[pivot][col]) < 1e-12:
            return None
        augmented[col], augmented[pivot] = augmented[pivot], augmented[col]
        lead = augmented[col][col]
        augmented[col] = [value / lead for value in augmented[col]]
        for row in range(n):
            if row != col and augmented[row][col]:
                factor = augmented[row][col]
                augmented[row] = [x - factor * y for x, y in zip(augmented[row], augmented[col], strict=True)]
    return [row[n:] for row in augmented]
