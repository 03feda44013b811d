"""Agreement on the feedback forms (issue 15), overall and per labeler: pure functions, no DB.

A *unit* is one thing several labelers judged: a pairwise task (its verdict), or one completion
of a rating task (its Likert point, good/bad, or one aspect's value). `units` map a unit key to
{user id -> that labeler's value}. Two kinds of measure:

- categorical (pairwise verdicts, good/bad): Fleiss' kappa over all units (labelers per unit may
  differ); per labeler, Cohen's kappa of "this labeler" against "another labeler", one pair per
  other labeler on each shared unit.
- scale (Likert points, a Likert aspect; a ranked aspect's levels, ordinal only): Krippendorff's
  alpha, ordinal and interval, over all units; per labeler, alpha over the same kind of pairs
  (each (their value, another's value) is one unit of two values).

Both also give the plain share of labeler pairs that gave the same answer, as the ranking
figures do, because kappa and alpha alone hide how often people simply agree.

Pairwise verdicts are categories in completion terms, never sides: each labeler saw A and B in
their own shuffled order, so "A better" from two labelers may mean opposite completions. The
categories are "first" / "second" (the completion at task position 0 / 1 is better), "tie" and
"both_bad".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from app.admin.agreement_stats import Metric, cohen_kappa, fleiss_kappa, krippendorff_alpha

Units = Mapping[Any, Mapping[int, Any]]
"""unit key -> {user id -> value}: a category (kappa) or a number (alpha)."""

PAIRWISE_CATEGORIES = ("first", "second", "tie", "both_bad")


def pairwise_category(groups: Sequence[Sequence[int]], *, none_acceptable: bool, first_id: int) -> str:
    """A stored pairwise judgment (A better -> [[a], [b]]; tie -> [[a, b]]; both bad -> [[a, b]]
    with none_acceptable) as a category in completion terms; `first_id` is the completion at the
    task's position 0."""
    if len(groups) == 1:
        return "both_bad" if none_acceptable else "tie"
    return "first" if groups[0][0] == first_id else "second"


@dataclass
class LabelerAgreement:
    """One labeler against every other labeler on the units they share."""

    units: int = 0
    """Units this labeler judged together with at least one other labeler."""
    comparisons: int = 0
    """(this labeler, another labeler, unit) triples compared."""
    agreeing: int = 0
    kappa: float | None = None
    """Cohen's kappa, this labeler vs the others (categorical measures)."""
    alpha_ordinal: float | None = None
    alpha_interval: float | None = None

    @property
    def agreement_pct(self) -> float | None:
        return 100.0 * self.agreeing / self.comparisons if self.comparisons else None


@dataclass
class FormAgreement:
    """One measure on the admin page: a form's judgments, or one aspect's."""

    key: str
    """"pairwise", "good_bad", "likert", "overall_ranking" or "aspect:<name>"."""
    label: str
    categorical: bool
    """True: kappa (categories); False: alpha (a scale)."""
    interval: bool = False
    """The values have equal steps (Likert points), so interval alpha is measured too."""
    units: int = 0
    """Units judged by two or more labelers (the only ones agreement can use)."""
    judgments: int = 0
    """Values in those units."""
    comparisons: int = 0
    """Pairs of labelers on one unit."""
    agreeing: int = 0
    kappa: float | None = None
    """Fleiss' kappa (categorical measures)."""
    alpha_ordinal: float | None = None
    alpha_interval: float | None = None
    """None for ranked aspects, whose levels are ranks, not distances."""
    per_labeler: dict[int, LabelerAgreement] = field(default_factory=dict)

    @property
    def agreement_pct(self) -> float | None:
        """Share of labeler pairs on a unit that gave exactly the same answer."""
        return 100.0 * self.agreeing / self.comparisons if self.comparisons else None


def categorical_agreement(key: str, label: str, units: Units) -> FormAgreement:
    """Fleiss' kappa overall, Cohen's kappa per labeler against the others."""
    result = _counted(key, label, units, categorical=True)
    shared = _shared(units)
    result.kappa = fleiss_kappa([list(by_user.values()) for by_user in shared.values()])
    for user, mine in _pairs_per_labeler(shared).items():
        result.per_labeler[user].kappa = cohen_kappa(mine)
    return result


def scale_agreement(key: str, label: str, units: Units, *, interval: bool = True) -> FormAgreement:
    """Krippendorff's alpha (ordinal; interval too when the scale's steps are equal) overall and
    per labeler against the others."""
    result = _counted(key, label, units, categorical=False)
    result.interval = interval
    shared = _shared(units)
    values = [list(by_user.values()) for by_user in shared.values()]
    result.alpha_ordinal = krippendorff_alpha(values, Metric.ordinal)
    result.alpha_interval = krippendorff_alpha(values, Metric.interval) if interval else None
    for user, mine in _pairs_per_labeler(shared).items():
        pair_units = [list(pair) for pair in mine]
        entry = result.per_labeler[user]
        entry.alpha_ordinal = krippendorff_alpha(pair_units, Metric.ordinal)
        entry.alpha_interval = krippendorff_alpha(pair_units, Metric.interval) if interval else None
    return result


def _shared(units: Units) -> dict[Any, Mapping[int, Any]]:
    return {key: by_user for key, by_user in units.items() if len(by_user) >= 2}


def _counted(key: str, label: str, units: Units, *, categorical: bool) -> FormAgreement:
    """Units, judgments and exact-match counts, overall and per labeler."""
    result = FormAgreement(key=key, label=label, categorical=categorical)
    for by_user in _shared(units).values():
        result.units += 1
        result.judgments += len(by_user)
        for user in by_user:
            result.per_labeler.setdefault(user, LabelerAgreement()).units += 1
        for (user_a, value_a), (user_b, value_b) in combinations(sorted(by_user.items()), 2):
            same = value_a == value_b
            result.comparisons += 1
            result.agreeing += same
            for user in (user_a, user_b):
                result.per_labeler[user].comparisons += 1
                result.per_labeler[user].agreeing += same
    return result


def _pairs_per_labeler(shared: Units) -> dict[int, list[tuple[Any, Any]]]:
    """user -> [(their value, another labeler's value)] over every shared unit and other labeler."""
    pairs: dict[int, list[tuple[Any, Any]]] = {}
    for by_user in shared.values():
        for user, mine in by_user.items():
            pairs.setdefault(user, []).extend((mine, theirs) for other, theirs in by_user.items() if other != user)
    return pairs
