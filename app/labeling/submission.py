"""Submitting an answer (a ranking, a demonstration, a review) and skipping a task; each hands out
the labeler's next task in the same transaction. Runs in the caller's transaction and never
commits it (see handout.start_write_transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import CursorResult, and_, bindparam, select, update
from sqlalchemy.orm import Session

from app.labeling import handout
from app.labeling.errors import LEASE_LOST_MESSAGE, Conflict, NotFound
from app.labeling.ranking_store import FINISH_ASSIGNMENT
from app.labeling.recorders import Accepted, Held
from app.labeling.service import TaskView, next_task_after
from app.labeling.task_types import Submission, task_type
from app.models import Assignment, AssignmentState, Project, Ranking, RankingTask, TaskStatus, User, utcnow

_assignments = Assignment.__table__
_tasks = RankingTask.__table__
_rankings = Ranking.__table__

# Built once (see handout.py for why).
_ASSIGNMENT_FOR_SUBMIT = (
    select(
        _assignments.c.id,
        _assignments.c.task_id,
        _assignments.c.project_id,
        _assignments.c.user_id,
        _assignments.c.state,
        _assignments.c.lease_expires_at,
        _assignments.c.display_order,
        _tasks.c.round_id,
        _tasks.c.kind,
        _tasks.c.prompt_id,
        _tasks.c.demonstration_id,
        _rankings.c.id.label("ranking_id"),
        _rankings.c.late,
    )
    .join(_tasks, _tasks.c.id == _assignments.c.task_id)
    .outerjoin(
        _rankings, and_(_rankings.c.task_id == _assignments.c.task_id, _rankings.c.user_id == _assignments.c.user_id)
    )
    .where(_assignments.c.id == bindparam("assignment_id"), _assignments.c.user_id == bindparam("user_id"))
    .with_for_update(of=_assignments)
)
_RECLAIM_SLOT = (
    update(_tasks)
    .where(
        _tasks.c.id == bindparam("task_id"),
        _tasks.c.status == TaskStatus.open,
        _tasks.c.slots_taken < bindparam("overlap"),
    )
    .values(slots_taken=_tasks.c.slots_taken + 1)
)
_FREE_SLOT = update(_tasks).where(_tasks.c.id == bindparam("task_id")).values(slots_taken=_tasks.c.slots_taken - 1)


@dataclass(frozen=True)
class SubmitResult:
    id: int
    """The stored answer's id: a ranking's or a demonstration's (`stores` says which)."""
    stores: str
    late: bool
    duplicate: bool

    @property
    def ranking_id(self) -> int | None:
        return self.id if self.stores == "ranking" else None


def submit_answer(
    db: Session,
    *,
    user: User,
    project: Project,
    assignment_id: int,
    data: Submission,
    sweep_every: float,
    now: datetime | None = None,
    labeler_locked: bool = False,
) -> tuple[SubmitResult, TaskView | None]:
    """Stores the labeler's answer, then hands out the next task (in the same transaction).

    `data` is the answer as the route received it; the task's type (its `kind`) checks and stores
    it through its recorder (app/labeling/recorders.py): ranking groups and their pairs, a
    demonstration, a review. What every kind shares is here:

    Idempotent: a retry of a stored answer returns it again (duplicate=True) with the same next task.
    A skipped task cannot be submitted (409). After the lease expired an answer is still accepted
    while the task has a free slot (late=True).
    `labeler_locked`: the project came from service.lock_project_for_labeler or hot_path.login_and_lock."""
    now = now or utcnow()
    user_id = user.id
    if not labeler_locked:
        _lock(db, project_id=project.id, user_id=user_id)
    row = _held(db, assignment_id=assignment_id, user_id=user_id, project_id=project.id)
    kind = task_type(row.kind)
    recorder = kind.recorder
    kind.refuse_foreign_fields(data)
    answer = recorder.check(data, row, project)  # before the retry check: malformed is a 422 either way
    if row.state == AssignmentState.submitted:
        stored = recorder.stored(db, row)
        if stored is None:  # the stored answer was deleted since (an admin withdrew it)
            raise Conflict("You already answered this task; reload the page for your next one.")
        result = SubmitResult(id=stored[0], stores=recorder.stores, late=stored[1], duplicate=True)
        return result, next_task_after(
            db, user_id=user_id, project=project, sweep_every=sweep_every, now=now, finished_lease=False
        )
    if row.state == AssignmentState.skipped:
        raise Conflict("You skipped this task, so it cannot be submitted any more.")

    late = row.lease_expires_at <= now  # a lease past its time but not yet swept still holds its slot
    if row.state == AssignmentState.expired:
        _reclaim_slot(db, task_id=row.task_id, overlap=project.overlap)
        late = True
    accepted = Accepted(held=row, user_id=user_id, project=project, now=now, late=late)
    result = SubmitResult(id=recorder.record(db, accepted, answer), stores=recorder.stores, late=late, duplicate=False)
    return result, next_task_after(
        db,
        user_id=user_id,
        project=project,
        sweep_every=sweep_every,
        now=now,
        finished_lease=row.state == AssignmentState.leased,
    )


def _held(db: Session, *, assignment_id: int, user_id: int, project_id: int) -> Held:
    """The labeler's assignment, locked; a task they were barred from (their own demonstration's
    review) is not theirs to answer or skip."""
    row = db.execute(_ASSIGNMENT_FOR_SUBMIT, {"assignment_id": assignment_id, "user_id": user_id}).first()
    if row is None or row.project_id != project_id or row.state == AssignmentState.barred:
        raise NotFound(f"You hold no task {assignment_id} in this project; reload the page to get your current task.")
    return cast(Held, row)


def _reclaim_slot(db: Session, *, task_id: int, overlap: int) -> None:
    """A swept lease gave its slot back; take one again if the task still has one free."""
    if cast(CursorResult, db.execute(_RECLAIM_SLOT, {"task_id": task_id, "overlap": overlap})).rowcount:
        return
    status = db.scalar(select(_tasks.c.status).where(_tasks.c.id == task_id))
    if status == TaskStatus.retired:
        raise Conflict("An admin withdrew this task while your lease had expired; your ranking was not needed.")
    if status == TaskStatus.open:
        raise Conflict(
            "Your lease on this task expired and other labelers took all its slots; "
            "your ranking was not needed. Carry on with the next task."
        )
    raise Conflict(LEASE_LOST_MESSAGE)


def _lock(db: Session, *, project_id: int, user_id: int) -> None:
    handout.start_write_transaction(db)
    handout.lock_labeler(db, project_id=project_id, user_id=user_id)


def skip_task(
    db: Session,
    *,
    user: User,
    project: Project,
    assignment_id: int,
    reason: str,
    sweep_every: float,
    now: datetime | None = None,
    labeler_locked: bool = False,
) -> TaskView | None:
    """Gives the task up with a reason: its slot goes back, this labeler never sees it again.
    Returns the next task. Skipping twice is harmless. `labeler_locked`: as for submit_answer."""
    now = now or utcnow()
    user_id = user.id
    if not labeler_locked:
        _lock(db, project_id=project.id, user_id=user_id)
    row = _held(db, assignment_id=assignment_id, user_id=user_id, project_id=project.id)
    if row.state == AssignmentState.submitted:
        raise Conflict("You already submitted an answer for this task; it cannot be skipped.")
    if row.state != AssignmentState.skipped:
        db.execute(
            FINISH_ASSIGNMENT,
            {"assignment_id": row.id, "new_state": AssignmentState.skipped, "now": now, "reason": reason},
        )
        if row.state == AssignmentState.leased:  # an expired lease already gave its slot back
            db.execute(_FREE_SLOT, {"task_id": row.task_id})
    return next_task_after(
        db,
        user_id=user_id,
        project=project,
        sweep_every=sweep_every,
        now=now,
        finished_lease=row.state == AssignmentState.leased,
    )
