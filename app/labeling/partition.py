"""Pure functions on rankings: validating a ranking against its task, and the pairs it implies.

A ranking is a list of groups, best first; completions inside one group are tied."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations


class InvalidRanking(ValueError):
    """The message names what is wrong in words a labeler or API client can act on."""


def validate_partition(groups: Sequence[Sequence[int]], completion_ids: Sequence[int]) -> list[list[int]]:
    """Checks that `groups` uses every completion of the task exactly once; returns it normalised."""
    if not isinstance(groups, (list, tuple)) or not groups:
        raise InvalidRanking("ranking: must be a non-empty list of groups of completion ids, best first")
    seen: set[int] = set()
    wanted = set(completion_ids)
    normalised: list[list[int]] = []
    for index, group in enumerate(groups):
        if not isinstance(group, (list, tuple)) or not group:
            raise InvalidRanking(f"ranking[{index}]: each group must be a non-empty list of completion ids")
        for cid in group:
            if isinstance(cid, bool) or not isinstance(cid, int):
                raise InvalidRanking(f"ranking[{index}]: {cid!r} is not a completion id (integer)")
            if cid not in wanted:
                raise InvalidRanking(f"ranking[{index}]: completion {cid} is not part of this task")
            if cid in seen:
                raise InvalidRanking(f"ranking[{index}]: completion {cid} appears more than once")
            seen.add(cid)
        normalised.append(list(group))
    missing = sorted(wanted - seen)
    if missing:
        raise InvalidRanking(f"ranking: completions {missing} are missing; rank every completion of the task")
    return normalised


def pairs_from_groups(groups: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """(chosen, rejected, margin) for every pair in different groups; ties give no pair.

    margin = how many groups apart the two are (1 for neighbours)."""
    pairs = []
    for hi, better in enumerate(groups):
        for lo in range(hi + 1, len(groups)):
            for chosen in better:
                for rejected in groups[lo]:
                    pairs.append((chosen, rejected, lo - hi))
    return pairs


def rank_positions(groups: Sequence[Sequence[int]]) -> dict[int, float]:
    """Completion id -> rank (1 = best), ties sharing the mean of the ranks they span."""
    positions: dict[int, float] = {}
    start = 1
    for group in groups:
        mean_rank = start + (len(group) - 1) / 2
        for cid in group:
            positions[cid] = mean_rank
        start += len(group)
    return positions


def kendall_tau_b(a: dict[int, float], b: dict[int, float]) -> float | None:
    """Tau-b between two rankings of the same items (ties allowed); None when undefined."""
    concordant = discordant = tied_a = tied_b = 0
    for x, y in combinations(sorted(a), 2):
        da, db = a[x] - a[y], b[x] - b[y]
        if da == 0:
            tied_a += 1
        if db == 0:
            tied_b += 1
        if da and db:
            if (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    total = len(a) * (len(a) - 1) // 2
    denominator = math.sqrt((total - tied_a) * (total - tied_b))
    if denominator == 0:
        return None
    return (concordant - discordant) / denominator
