"""Small helpers shared by the labeling tests (service calls with the defaults tests want)."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.labeling import service
from app.labeling.schemas import RankingIn
from app.models import Assignment, PairwiseComparison, Project, Ranking, RankingTask, User


def next_view(db: Session, user: User, project: Project, **kw) -> service.TaskView | None:
    """Asks for the labeler's task and commits, as a request would."""
    view = service.current_task(db, user=user, project=project, sweep_every=kw.pop("sweep_every", 3600), **kw)
    db.commit()
    return view


def strict_order(view: service.TaskView) -> list[list[int]]:
    return [[c.id] for c in view.completions]


def submit(db: Session, user: User, project: Project, view: service.TaskView, groups=None, **fields):
    data = RankingIn(ranking=groups if groups is not None else strict_order(view), **fields)
    result = service.submit_ranking(db, user=user, project=project, assignment_id=view.assignment_id, data=data,
                                    sweep_every=fields.pop("sweep_every", 3600))
    db.commit()
    return result


def snapshot(db: Session) -> dict:
    """Everything a submit may change, to show that a rejected one changed nothing."""
    db.expire_all()
    return {
        "rankings": db.scalar(select(func.count()).select_from(Ranking)),
        "pairs": db.scalar(select(func.count()).select_from(PairwiseComparison)),
        "assignments": sorted(db.execute(select(Assignment.id, Assignment.state, Assignment.lease_expires_at)).all()),
        "tasks": sorted(db.execute(select(RankingTask.id, RankingTask.slots_taken, RankingTask.rankings_count,
                                          RankingTask.status)).all()),
    }
