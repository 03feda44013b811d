"""Per-project numbers for the admin pages: who labeled how much, how fast, and how consistently."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.admin.agreement import AgreementReport, agreement_report
from app.models import Assignment, AssignmentState, ProjectMember, Ranking, RankingTask, User


@dataclass
class LabelerStats:
    user: User
    is_member: bool
    rankings: int = 0
    skips: int = 0
    median_seconds: float | None = None
    """Median time per ranking, over rankings that reported their time."""
    last_ranking_at: datetime | None = None


def labeler_stats(db: Session, *, project_id: int) -> list[LabelerStats]:
    """Members and anyone who ranked in the project (e.g. an admin, or a removed member)."""
    times: dict[int, list[int]] = defaultdict(list)
    counts: dict[int, int] = defaultdict(int)
    last: dict[int, datetime] = {}
    # Two narrow columns per ranking: the median needs every value, and SQLite has no percentile.
    for user_id, spent_ms, created_at in db.execute(
        select(Ranking.user_id, Ranking.time_spent_ms, Ranking.created_at).where(Ranking.project_id == project_id)
    ):
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
    user_ids = member_ids | counts.keys() | skips.keys()
    users = list(db.scalars(select(User).where(User.id.in_(user_ids)).order_by(User.email))) if user_ids else []
    return [
        LabelerStats(
            user=user,
            is_member=user.id in member_ids,
            rankings=counts.get(user.id, 0),
            skips=skips.get(user.id, 0),
            median_seconds=statistics.median(times[user.id]) / 1000 if times.get(user.id) else None,
            last_ranking_at=last.get(user.id),
        )
        for user in users
    ]


def project_agreement(db: Session, *, project_id: int) -> AgreementReport:
    """Agreement over the project's tasks that have two or more rankings."""
    overlapped = select(RankingTask.id).where(RankingTask.project_id == project_id, RankingTask.rankings_count >= 2)
    by_task: dict[int, dict[int, list[list[int]]]] = defaultdict(dict)
    for task_id, user_id, groups in db.execute(
        select(Ranking.task_id, Ranking.user_id, Ranking.groups).where(Ranking.task_id.in_(overlapped))
    ):
        by_task[task_id][user_id] = groups
    return agreement_report(by_task)


def user_emails(db: Session, *, user_ids) -> dict[int, str]:
    ids = list(user_ids)
    if not ids:
        return {}
    return dict(db.execute(select(User.id, User.email).where(User.id.in_(ids))).all())
