"""Inter-labeler agreement on overlapped tasks: pure functions on rankings (no DB).

A ranking is a list of groups of completion ids, best first; ids inside one group are tied.
Two measures compare two labelers' rankings of the same task:

- pairwise agreement: of all unordered pairs of completions, the share on which both labelers
  give the same verdict (a above b, b above a, or tied).
- Kendall's tau-b: rank correlation corrected for ties, in [-1, 1]. Undefined (None) when one
  labeler tied every completion, because there is no order to correlate with.

Blind evaluation judgments (pairwise_eval tasks, app/labeling/task_types.py) are stored as
rankings of two completions too, but they are measured apart (`verdict_agreement`): a verdict is
one of four outcomes (this completion wins, that one wins, tie, both bad), so two labelers agree
when they give the same outcome, ties included. Sides are shuffled per labeler, so outcomes are
compared by completion, never by "A"/"B". Mixing them into the ranking measures would let a
project with many quick two-way verdicts look more (or less) consistent than its rankings are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from app.labeling.partition import kendall_tau_b, rank_positions

Groups = Sequence[Sequence[int]]


@dataclass(frozen=True)
class PairComparison:
    """Two rankings of one task compared."""

    pairs: int
    """Completion pairs both labelers ranked."""
    agreeing: int
    """Of those, pairs with the same verdict."""
    tau_b: float | None


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def compare_rankings(a: Groups, b: Groups) -> PairComparison:
    """Compares two rankings over the completions both contain."""
    rank_a, rank_b = rank_positions(a), rank_positions(b)
    shared = sorted(rank_a.keys() & rank_b.keys())
    agreeing = pairs = 0
    for x, y in combinations(shared, 2):
        pairs += 1
        # Lower rank = better; the sign says which of the two each labeler preferred (0 = tie).
        agreeing += _sign(rank_a[y] - rank_a[x]) == _sign(rank_b[y] - rank_b[x])
    tau = kendall_tau_b({c: rank_a[c] for c in shared}, {c: rank_b[c] for c in shared})
    return PairComparison(pairs=pairs, agreeing=agreeing, tau_b=tau)


@dataclass
class AgreementSummary:
    """Agreement aggregated over many comparisons (each a pair of labelers on one shared task)."""

    comparisons: int = 0
    tasks: set[int] = field(default_factory=set)
    pairs: int = 0
    agreeing: int = 0
    tau_values: list[float] = field(default_factory=list)

    def add(self, task_id: int, result: PairComparison) -> None:
        self.comparisons += 1
        self.tasks.add(task_id)
        self.pairs += result.pairs
        self.agreeing += result.agreeing
        if result.tau_b is not None:
            self.tau_values.append(result.tau_b)

    @property
    def agreement_pct(self) -> float | None:
        """Pooled over all compared completion pairs."""
        return 100.0 * self.agreeing / self.pairs if self.pairs else None

    @property
    def mean_tau_b(self) -> float | None:
        """Mean of per-comparison tau-b (comparisons where tau-b is undefined are left out)."""
        return sum(self.tau_values) / len(self.tau_values) if self.tau_values else None


@dataclass
class VerdictSummary:
    """Verdict agreement aggregated over comparisons (a pair of labelers on one evaluation task)."""

    comparisons: int = 0
    agreeing: int = 0
    tasks: set[int] = field(default_factory=set)

    def add(self, task_id: int, same: bool) -> None:
        self.comparisons += 1
        self.agreeing += same
        self.tasks.add(task_id)

    @property
    def agreement_pct(self) -> float | None:
        """Share of labeler pairs that gave the same verdict."""
        return 100.0 * self.agreeing / self.comparisons if self.comparisons else None


@dataclass
class VerdictAgreement:
    overall: VerdictSummary = field(default_factory=VerdictSummary)
    per_labeler: dict[int, VerdictSummary] = field(default_factory=dict)
    """user id -> that labeler compared with every other labeler on the evaluation tasks they share."""


@dataclass
class AgreementReport:
    overall: AgreementSummary
    """Ranking tasks only."""
    per_labeler: dict[int, AgreementSummary]
    """user id -> that labeler compared with every other labeler on the tasks they share."""
    evaluation: VerdictAgreement = field(default_factory=VerdictAgreement)
    """Blind evaluation tasks, measured apart (see the module's docstring)."""


def agreement_report(rankings_by_task: Mapping[int, Mapping[int, Groups]]) -> AgreementReport:
    """`rankings_by_task`: task id -> {user id -> groups}. Tasks with one ranking are ignored.

    Every pair of labelers on a task is one comparison; it counts once in the overall summary
    and once for each of the two labelers."""
    overall = AgreementSummary()
    per_labeler: dict[int, AgreementSummary] = defaultdict(AgreementSummary)
    for task_id, by_user in rankings_by_task.items():
        for (user_a, groups_a), (user_b, groups_b) in combinations(sorted(by_user.items()), 2):
            result = compare_rankings(groups_a, groups_b)
            overall.add(task_id, result)
            per_labeler[user_a].add(task_id, result)
            per_labeler[user_b].add(task_id, result)
    return AgreementReport(overall=overall, per_labeler=dict(per_labeler))


Outcome = int | str
"""A judgment of two completions: the winner's completion id, "tie" or "both_bad"."""


def verdict_outcome(groups: Groups, *, none_acceptable: bool) -> Outcome:
    """The outcome a stored two-completion judgment records (task_types' verdict → groups mapping
    undone, without the labeler's sides): the winner's id, or "tie" / "both_bad" for one group."""
    if len(groups) == 1:
        return "both_bad" if none_acceptable else "tie"
    return groups[0][0]


def verdict_agreement(outcomes_by_task: Mapping[int, Mapping[int, Outcome]]) -> VerdictAgreement:
    """`outcomes_by_task`: task id -> {user id -> outcome}. Tasks with one judgment are ignored.

    Every pair of labelers on a task is one comparison, agreeing when both gave the same outcome
    (ties and both-bad included); it counts once overall and once for each of the two labelers."""
    report = VerdictAgreement()
    for task_id, by_user in outcomes_by_task.items():
        for (user_a, outcome_a), (user_b, outcome_b) in combinations(sorted(by_user.items()), 2):
            same = outcome_a == outcome_b
            report.overall.add(task_id, same)
            for user in (user_a, user_b):
                report.per_labeler.setdefault(user, VerdictSummary()).add(task_id, same)
    return report
