"""An evaluation's progress and results, read from its tasks and rankings (stats.py does the maths).

A judgment is an ordinary Ranking of a pairwise_eval task's two completions: [[x], [y]] means x's
version won; [[x, y]] is a tie, or "both bad" when none_acceptable is set. The leaderboard and the
round series use every evaluation of the project, so each judgment counts wherever it applies.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.evaluation import stats
from app.evaluation.service import TASK_KIND, evaluable_versions
from app.models import (
    Completion,
    Evaluation,
    ModelKind,
    ModelVersion,
    Project,
    Ranking,
    RankingTask,
    TaskCompletion,
    TaskStatus,
    TrainingRound,
    User,
)


def judgments(db: Session, *, project_id: int, evaluation_id: int | None = None) -> list[stats.Judgment]:
    """Every judgment of the project's evaluation tasks (or of one evaluation), oldest first;
    `labeler` is the user id. The versions come from the completions' model_version_id."""
    query = (
        select(Ranking.task_id, Ranking.user_id, Ranking.groups, Ranking.none_acceptable)
        .join(RankingTask, RankingTask.id == Ranking.task_id)
        .where(RankingTask.project_id == project_id, RankingTask.kind == TASK_KIND)
        .order_by(Ranking.id)
    )
    if evaluation_id is not None:
        query = query.where(RankingTask.evaluation_id == evaluation_id)
    rows = db.execute(query).all()
    version_of = _versions_of_tasks(db, task_ids={row.task_id for row in rows})
    found = []
    for task_id, user_id, groups, none_acceptable in rows:
        sides = version_of.get(task_id, {})
        if len(sides) != 2 or None in sides.values():
            continue  # not a two-version task (or a version was deleted): nothing to attribute
        (first, a), (_second, b) = sorted(sides.items())
        assert a is not None and b is not None
        found.append(stats.Judgment(a=a, b=b, outcome=_outcome(groups, none_acceptable, first), labeler=user_id))
    return found


def _versions_of_tasks(db: Session, *, task_ids: set[int]) -> dict[int, dict[int, int | None]]:
    """task id -> {completion id: its model version id}."""
    found: dict[int, dict[int, int | None]] = defaultdict(dict)
    if not task_ids:
        return found
    rows = db.execute(
        select(TaskCompletion.task_id, Completion.id, Completion.model_version_id)
        .join(Completion, Completion.id == TaskCompletion.completion_id)
        .where(TaskCompletion.task_id.in_(task_ids))
    )
    for task_id, completion_id, version_id in rows:
        found[task_id][completion_id] = version_id
    return found


def _outcome(groups: list[list[int]], none_acceptable: bool, first: int) -> stats.Outcome:
    """The verdict for the side whose completion id is `first` (the smaller id) as "a"."""
    if len(groups) == 1:
        return "both_bad" if none_acceptable else "tie"
    return "a" if groups[0][0] == first else "b"


def progress(db: Session, *, evaluation: Evaluation) -> dict[str, Any]:
    """Tasks made, complete, judgments so far and judgments wanted (live tasks × overlap)."""
    overlap = db.scalar(select(Project.overlap).where(Project.id == evaluation.project_id)) or 1
    by_status = dict(
        db.execute(
            select(RankingTask.status, func.count())
            .where(RankingTask.evaluation_id == evaluation.id)
            .group_by(RankingTask.status)
        ).all()
    )
    done = db.scalar(
        select(func.count())
        .select_from(Ranking)
        .join(RankingTask, RankingTask.id == Ranking.task_id)
        .where(RankingTask.evaluation_id == evaluation.id)
    )
    tasks = sum(by_status.values())
    live = by_status.get(TaskStatus.open, 0) + by_status.get(TaskStatus.complete, 0)
    expected = len(evaluation.config.get("prompt_ids", [])) * len(evaluation.comparisons)
    wanted = live * overlap
    return {
        "tasks": tasks,
        "tasks_expected": expected,
        "tasks_complete": by_status.get(TaskStatus.complete, 0),
        "judgments": done or 0,
        "wanted": wanted,
        "share": round(min(done or 0, wanted) / wanted, 4) if wanted else 0.0,
        "generation": evaluation.progress,
    }


def results(db: Session, *, evaluation: Evaluation) -> dict[str, Any]:
    """Per comparison: the win rate of a over b (both tie rules, 95% intervals), overall and per
    labeler; the project's leaderboard; the tie rule in words."""
    own = judgments(db, project_id=evaluation.project_id, evaluation_id=evaluation.id)
    emails = _emails(db, {j.labeler for j in own})
    comparisons = []
    for a, b in evaluation.comparisons:
        overall = stats.win_rate(own, a, b)
        labelers = stats.per_labeler(own, a, b)
        comparisons.append(
            {
                **overall.as_dict(),
                "per_labeler": [
                    {"labeler_id": labeler, "labeler": emails.get(labeler, "?"), **rate.as_dict()}
                    for labeler, rate in sorted(labelers.items(), key=lambda kv: emails.get(kv[0], ""))
                ],
            }
        )
    return {
        "tie_rule": stats.TIE_RULE,
        "judgments": len(own),
        "comparisons": comparisons,
        "leaderboard": leaderboard(db, project_id=evaluation.project_id),
    }


def reasons(db: Session, *, evaluation: Evaluation, limit: int = 20) -> list[dict[str, Any]]:
    """The newest judgments that came with a reason: who, which version won (or tie / both bad), why."""
    rows = db.execute(
        select(Ranking.task_id, Ranking.user_id, Ranking.groups, Ranking.none_acceptable, Ranking.comment)
        .join(RankingTask, RankingTask.id == Ranking.task_id)
        .where(RankingTask.evaluation_id == evaluation.id, Ranking.comment != "")
        .order_by(Ranking.id.desc())
        .limit(limit)
    ).all()
    version_of = _versions_of_tasks(db, task_ids={row.task_id for row in rows})
    emails = _emails(db, {row.user_id for row in rows})
    found = []
    for task_id, user_id, groups, none_acceptable, comment in rows:
        sides = version_of.get(task_id, {})
        if len(groups) == 1:
            verdict, winner = ("both bad" if none_acceptable else "tie"), None
        else:
            verdict, winner = "preferred", sides.get(groups[0][0])
        found.append({"labeler": emails.get(user_id, "?"), "verdict": verdict, "winner": winner, "comment": comment})
    return found


def _emails(db: Session, user_ids: set[Any]) -> dict[Any, str]:
    if not user_ids:
        return {}
    return dict(db.execute(select(User.id, User.email).where(User.id.in_(user_ids))).all())


def leaderboard(db: Session, *, project_id: int) -> dict[str, Any]:
    """Bradley–Terry over every version of the project with judgments, anchored (Elo 1000) at
    the oldest base version among them."""
    everything = judgments(db, project_id=project_id)
    versions = {v.id: v for v in evaluable_versions(db, project_id=project_id)}
    judged = sorted({v for j in everything for v in (j.a, j.b)})
    bases = [v for v in judged if v in versions and versions[v].kind == ModelKind.base]
    board = stats.bradley_terry(everything, anchor=bases[0] if bases else None)
    return {
        "anchor": board.anchor if judged else None,
        "prior_games": board.prior,
        "ratings": [
            {
                **vars(r),
                "name": versions[r.version].name if r.version in versions else "?",
                "kind": versions[r.version].kind if r.version in versions else "?",
            }
            for r in board.ratings
        ],
    }


def rounds_vs_previous(db: Session, *, project_id: int) -> list[dict[str, Any]]:
    """Per round with a new policy: its win rate against the policy it started from, from every
    judgment of that pair in the project (rounds without judgments are left out)."""
    rows = db.execute(
        select(TrainingRound.number, TrainingRound.policy_out_id, TrainingRound.policy_in_id)
        .where(
            TrainingRound.project_id == project_id,
            TrainingRound.policy_out_id.is_not(None),
            TrainingRound.policy_in_id.is_not(None),
        )
        .order_by(TrainingRound.number)
    ).all()
    everything = judgments(db, project_id=project_id)
    series = []
    for number, new, old in rows:
        if new is None or old is None:
            continue
        rate = stats.win_rate(everything, new, old)
        if rate.n:
            series.append({"round": number, **rate.as_dict()})
    return series


def version_names(db: Session, *, ids: list[int]) -> dict[int, ModelVersion]:
    if not ids:
        return {}
    return {v.id: v for v in db.scalars(select(ModelVersion).where(ModelVersion.id.in_(ids)))}
