"""Small helpers shared by the labeling tests (service calls with the defaults tests want)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.labeling import service, submission
from app.labeling.schemas import RankingIn, SubmissionIn
from app.labeling.task_types import PAIRWISE_EVAL
from app.models import Assignment, PairwiseComparison, Project, Ranking, RankingTask, User


def next_view(db: Session, user: User, project: Project, **kw) -> service.TaskView | None:
    """Asks for the labeler's task and commits, as a request would."""
    view = service.current_task(db, user=user, project=project, sweep_every=kw.pop("sweep_every", 3600), **kw)
    db.commit()
    return view


def strict_order(view: service.TaskView) -> list[list[int]]:
    return [[c.id] for c in view.completions]


def submit(db: Session, user: User, project: Project, view: service.TaskView, groups=None, **fields):
    """Submits `groups` (default: the completions as shown), or for a pairwise evaluation without
    `groups` a verdict (`verdict=`, default "A"), as its page does."""
    now = fields.pop("now", None)
    data: RankingIn | SubmissionIn
    if groups is None and view.kind == PAIRWISE_EVAL:
        data = SubmissionIn(verdict=fields.pop("verdict", "A"), **fields)
    else:
        data = RankingIn(ranking=groups if groups is not None else strict_order(view), **fields)
    result = submission.submit_ranking(
        db, user=user, project=project, assignment_id=view.assignment_id, data=data, sweep_every=3600, now=now
    )
    db.commit()
    return result


def fresh(db: Session) -> None:
    """Ends the test session's transaction: a SQLite (WAL) reader keeps seeing the database as of its
    BEGIN, so without this a test could read stale rows and miss what the app wrote. Also forgets
    loaded rows (rollback without a transaction expires nothing)."""
    db.rollback()
    db.expire_all()


def snapshot(db: Session) -> dict:
    """Everything a submit may change, to show that a rejected one changed nothing."""
    fresh(db)
    return {
        "rankings": db.scalar(select(func.count()).select_from(Ranking)),
        "pairs": db.scalar(select(func.count()).select_from(PairwiseComparison)),
        "assignments": sorted(db.execute(select(Assignment.id, Assignment.state, Assignment.lease_expires_at)).all()),
        "tasks": sorted(
            db.execute(
                select(RankingTask.id, RankingTask.slots_taken, RankingTask.rankings_count, RankingTask.status)
            ).all()
        ),
    }


def make_labelers(db: Session, project: Project, n: int) -> list[User]:
    """n labelers in the project, sharing one password hash (hashing 32 passwords would take seconds)."""
    from app.auth.security import hash_password
    from app.models import ProjectMember, Role
    from tests.factories import PASSWORD, _seq

    password_hash = hash_password(PASSWORD)
    users = [
        User(email=f"labeler{next(_seq)}@example.com", password_hash=password_hash, role=Role.labeler) for _ in range(n)
    ]
    db.add_all(users)
    db.flush()
    db.add_all(ProjectMember(project_id=project.id, user_id=u.id) for u in users)
    db.commit()
    return users
