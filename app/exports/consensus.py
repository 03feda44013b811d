"""Combining several labelers' rankings of one task into one, and measuring how much they agree.

Pure functions on rankings given as groups of completion ids, best first (a group is a tie).

Method: each labeler's ranking gives every completion a rank (1 = best; tied completions
share the mean of the ranks they span, so a ranking's ranks always sum to n(n+1)/2). The
consensus orders completions by their mean rank over labelers, which is the Borda count;
completions with equal mean rank are tied in the consensus.

Agreement, both None with fewer than two rankings:
- Kendall's W (coefficient of concordance, with the correction for ties): 1 when all labelers
  agree, 0 when their rankings cancel out.
- mean Kendall tau-b over pairs of labelers: +1 identical orders, -1 reversed; pairs for which
  tau-b is undefined (one labeler tied everything) are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from app.labeling.partition import kendall_tau_b, rank_positions

Groups = Sequence[Sequence[int]]
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Consensus:
    groups: list[list[int]]
    """The consensus ranking: groups of completion ids, best first."""
    mean_rank: dict[int, float]
    """Completion id -> mean rank over labelers (1 = best)."""
    n_rankings: int
    kendall_w: float | None
    mean_kendall_tau_b: float | None


def consensus(rankings: Sequence[Groups]) -> Consensus:
    """Every ranking must order the same completions (as stored rankings of one task do)."""
    if not rankings:
        raise ValueError("consensus needs at least one ranking")
    positions = [rank_positions(groups) for groups in rankings]
    items = sorted(positions[0])
    for index, ranks in enumerate(positions[1:], 1):
        if sorted(ranks) != items:
            raise ValueError(f"ranking {index} orders other completions than ranking 0")
    mean_rank = {item: sum(ranks[item] for ranks in positions) / len(positions) for item in items}
    pairs = [kendall_tau_b(a, b) for a, b in combinations(positions, 2)]
    defined = [tau for tau in pairs if tau is not None]
    return Consensus(
        groups=groups_by_score(mean_rank),
        mean_rank=mean_rank,
        n_rankings=len(rankings),
        kendall_w=kendall_w(positions) if len(positions) >= 2 else None,
        mean_kendall_tau_b=sum(defined) / len(defined) if defined else None,
    )


def groups_by_score(score: dict[int, float]) -> list[list[int]]:
    """Ids ordered by ascending score; equal scores form one group (ids sorted inside it)."""
    groups: list[list[int]] = []
    last: float | None = None
    for item in sorted(score, key=lambda i: (score[i], i)):
        if last is not None and abs(score[item] - last) <= TIE_TOLERANCE:
            groups[-1].append(item)
        else:
            groups.append([item])
        last = score[item]
    return groups


def kendall_w(positions: Sequence[dict[int, float]]) -> float | None:
    """W = 12·S / (m²(n³−n) − m·ΣT), S = Σ (R_i − m(n+1)/2)², T = Σ (t³−t) over each labeler's ties.
    None when undefined (fewer than 2 items, or every labeler tied everything)."""
    m, items = len(positions), list(positions[0])
    n = len(items)
    if m < 2 or n < 2:
        return None
    rank_sums = [sum(ranks[item] for ranks in positions) for item in items]
    mean_sum = m * (n + 1) / 2
    s = sum((total - mean_sum) ** 2 for total in rank_sums)
    ties = sum(_tie_term(ranks) for ranks in positions)
    denominator = m * m * (n**3 - n) - m * ties
    if denominator <= 0:
        return None
    return 12 * s / denominator


def _tie_term(ranks: dict[int, float]) -> int:
    sizes: dict[float, int] = {}
    for rank in ranks.values():
        sizes[rank] = sizes.get(rank, 0) + 1
    return sum(t**3 - t for t in sizes.values())
