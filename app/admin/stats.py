"""Per-project numbers for the admin pages: who labeled how much, how fast, and how consistently."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, union_all
from sqlalchemy.orm import Session

from app.admin.agreement import AgreementReport, Outcome, agreement_report, verdict_agreement, verdict_outcome
from app.judges.data_filter import labelling_data
from app.labeling.task_types import PAIRWISE_EVAL
from app.models import (
    Assignment,
    AssignmentState,
    Feedback,
    FeedbackForm,
    ProjectMember,
    Ranking,
    RankingTask,
    User,
)


@dataclass
class LabelerStats:
    user: User
    is_member: bool
    rankings: int = 0
    """Rankings of ranking tasks."""
    judgments: int = 0
    """Verdicts on blind evaluation tasks (stored as rankings too, counted apart)."""
    skips: int = 0
    median_seconds: float | None = None
    """Median time per ranking, over rankings of ranking tasks that reported their time (a two-way
    verdict takes a fraction of a ranking's time, so it would pull the median down)."""
    last_ranking_at: datetime | None = None
    """The labeler's last ranking or judgment."""


def labeler_stats(db: Session, *, project_id: int) -> list[LabelerStats]:
    """Members and anyone who ranked in the project (e.g. an admin, or a removed member)."""
    times: dict[int, list[int]] = defaultdict(list)
    counts: dict[int, int] = defaultdict(int)
    judgments: dict[int, int] = defaultdict(int)
    last: dict[int, datetime] = {}
    # Narrow columns per answer: the median needs every value, and SQLite has no percentile. A
    # rating-form judgment (Likert, good/bad, multi-aspect) is a Feedback row, counted as an answer.
    answers = union_all(
        select(Ranking.user_id, Ranking.time_spent_ms, Ranking.created_at, RankingTask.kind)
        .join(RankingTask, RankingTask.id == Ranking.task_id)
        .where(Ranking.project_id == project_id, labelling_data()),
        select(Feedback.user_id, Feedback.time_spent_ms, Feedback.created_at, Feedback.form).where(
            Feedback.project_id == project_id, labelling_data(Feedback)
        ),
    )
    for user_id, spent_ms, created_at, kind in db.execute(answers):
        if kind == PAIRWISE_EVAL:
            judgments[user_id] += 1
        else:
            counts[user_id] += 1
            if spent_ms is not None:
                times[user_id].append(spent_ms)
        if user_id not in last or created_at > last[user_id]:
            last[user_id] = created_at
    skips = dict(
        db.execute(
            select(Assignment.user_id, func.count())
            .where(Assignment.project_id == project_id, Assignment.state == AssignmentState.skipped)
            .group_by(Assignment.user_id)
        ).all()
    )
    member_ids = set(db.scalars(select(ProjectMember.user_id).where(ProjectMember.project_id == project_id)))
    user_ids = member_ids | counts.keys() | judgments.keys() | skips.keys()
    users = list(db.scalars(select(User).where(User.id.in_(user_ids)).order_by(User.email))) if user_ids else []
    return [
        LabelerStats(
            user=user,
            is_member=user.id in member_ids,
            rankings=counts.get(user.id, 0),
            judgments=judgments.get(user.id, 0),
            skips=skips.get(user.id, 0),
            median_seconds=statistics.median(times[user.id]) / 1000 if times.get(user.id) else None,
            last_ranking_at=last.get(user.id),
        )
        for user in users
    ]


def project_agreement(db: Session, *, project_id: int) -> AgreementReport:
    """Agreement over the project's tasks that have two or more rankings: ranking tasks by the
    ranking measures, blind evaluation tasks by their verdicts (`report.evaluation`), apart.
    Feedback-form tasks (pairwise and the rating forms) are app/admin/form_stats.py's."""
    overlapped = select(RankingTask.id).where(RankingTask.project_id == project_id, RankingTask.rankings_count >= 2)
    by_task: dict[int, dict[int, list[list[int]]]] = defaultdict(dict)
    outcomes: dict[int, dict[int, Outcome]] = defaultdict(dict)
    for task_id, kind, user_id, groups, none_acceptable in db.execute(
        select(Ranking.task_id, RankingTask.kind, Ranking.user_id, Ranking.groups, Ranking.none_acceptable)
        .join(RankingTask, RankingTask.id == Ranking.task_id)
        .where(Ranking.task_id.in_(overlapped), labelling_data())
    ):
        if kind == PAIRWISE_EVAL:
            outcomes[task_id][user_id] = verdict_outcome(groups, none_acceptable=none_acceptable)
        elif kind == FeedbackForm.ranking:
            # Only K-way rankings: a pairwise form's two-completion verdicts are stored as rankings
            # too, but measured by kappa apart (app/admin/form_stats.py), like evaluation verdicts.
            by_task[task_id][user_id] = groups
    report = agreement_report(by_task)
    report.evaluation = verdict_agreement(outcomes)
    return report


def user_emails(db: Session, *, user_ids) -> dict[int, str]:
    ids = list(user_ids)
    if not ids:
        return {}
    return dict(db.execute(select(User.id, User.email).where(User.id.in_(ids))).all())
