"""Submitting a ranking and skipping a task; each hands out the labeler's next task in the same
transaction. Runs in the caller's transaction and never commits it (see handout.start_write_transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import CursorResult, and_, bindparam, select, update
from sqlalchemy.orm import Session

from app.labeling import handout
from app.labeling.errors import LEASE_LOST_MESSAGE, Conflict, InvalidSubmission, NotFound
from app.labeling.partition import InvalidRanking, validate_partition
from app.labeling.ranking_store import FINISH_ASSIGNMENT, store_ranking
from app.labeling.service import TaskView, next_task_after
from app.labeling.task_types import Submission, task_type
from app.models import Assignment, AssignmentState, Project, Ranking, RankingTask, TaskStatus, User, utcnow
from app.rounds import service as rounds_service

_assignments = Assignment.__table__
_tasks = RankingTask.__table__
_rankings = Ranking.__table__

# Built once (see handout.py for why).
_ASSIGNMENT_FOR_SUBMIT = (
    select(
        _assignments.c.id,
        _assignments.c.task_id,
        _assignments.c.project_id,
        _assignments.c.state,
        _assignments.c.lease_expires_at,
        _assignments.c.display_order,
        _tasks.c.round_id,
        _tasks.c.kind,
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
    ranking_id: int
    late: bool
    duplicate: bool


def submit_ranking(
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
    """Stores the ranking and its pairs, then hands out the next task (in the same transaction).

    `data` is the labeler's answer as the route received it; the task's type (its `kind`) turns it
    into ranking groups (a pairwise evaluation's verdict, say), refusing what that kind does not take.

    Idempotent: a retry of a stored ranking returns it again (duplicate=True) with the same next task.
    After the lease expired it is still accepted while the task has a free slot (late=True).
    `labeler_locked`: the project came from service.lock_project_for_labeler or hot_path.login_and_lock."""
    now = now or utcnow()
    user_id, project_id, overlap, flag_names = user.id, project.id, project.overlap, set(project.flags or [])
    if not labeler_locked:
        _lock(db, project_id=project_id, user_id=user_id)
    row = db.execute(_ASSIGNMENT_FOR_SUBMIT, {"assignment_id": assignment_id, "user_id": user_id}).first()
    if row is None or row.project_id != project_id:
        raise NotFound(f"You hold no task {assignment_id} in this project; reload the page to get your current task.")
    kind = task_type(row.kind)
    judged = kind.judgment(data, row.display_order)  # before the retry check: malformed is a 422 either way
    if row.ranking_id is not None:
        result = SubmitResult(ranking_id=row.ranking_id, late=row.late, duplicate=True)
        return result, next_task_after(
            db, user_id=user_id, project=project, sweep_every=sweep_every, now=now, finished_lease=False
        )
    if row.state == AssignmentState.skipped:
        raise Conflict("You skipped this task, so it cannot be submitted any more.")

    try:
        groups = validate_partition(judged.ranking, row.display_order)
    except InvalidRanking as exc:
        raise InvalidSubmission(str(exc)) from None
    if judged.flags and not kind.takes_flags:
        raise InvalidSubmission(f"flags: a {kind.name.lower()} task takes no flags; say why in the comment instead")
    flags = _checked_flags(judged.flags, completion_ids=set(row.display_order), allowed=flag_names)

    late = row.lease_expires_at <= now  # a lease past its time but not yet swept still holds its slot
    if row.state == AssignmentState.expired:
        _reclaim_slot(db, task_id=row.task_id, overlap=overlap)
        late = True

    ranking_id = store_ranking(
        db,
        overlap=overlap,
        now=now,
        ranking={
            "task_id": row.task_id,
            "user_id": user_id,
            "project_id": project_id,
            "assignment_id": row.id,
            "groups": groups,
            "flags": flags,
            "none_acceptable": judged.none_acceptable,
            "display_order": row.display_order,
            "time_spent_ms": judged.time_spent_ms,
            "comment": judged.comment.strip(),
            "late": late,
            "created_at": now,
        },
    )
    if row.round_id is not None:
        # A training round set to auto-start begins once its labeling threshold is reached. Only a
        # round's own tasks count towards it, so rankings of uploaded tasks need no look.
        rounds_service.on_rankings_added(db, project_id=project_id)
    result = SubmitResult(ranking_id=ranking_id, late=late, duplicate=False)
    return result, next_task_after(
        db,
        user_id=user_id,
        project=project,
        sweep_every=sweep_every,
        now=now,
        finished_lease=row.state == AssignmentState.leased,
    )


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


def _checked_flags(flags: dict[int, list[str]], *, completion_ids: set[int], allowed: set[str]) -> dict[str, list[str]]:
    checked: dict[str, list[str]] = {}
    for completion_id, names in flags.items():
        if completion_id not in completion_ids:
            raise InvalidSubmission(f"flags: completion {completion_id} is not part of this task")
        unknown = sorted(set(names) - allowed)
        if unknown:
            raise InvalidSubmission(
                f"flags[{completion_id}]: unknown flag {', '.join(map(repr, unknown))}; "
                f"this project's flags are {', '.join(sorted(allowed)) or 'none'}"
            )
        if names:
            checked[str(completion_id)] = sorted(set(names))
    return checked


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
    Returns the next task. Skipping twice is harmless. `labeler_locked`: as for submit_ranking."""
    now = now or utcnow()
    user_id = user.id
    if not labeler_locked:
        _lock(db, project_id=project.id, user_id=user_id)
    row = db.execute(_ASSIGNMENT_FOR_SUBMIT, {"assignment_id": assignment_id, "user_id": user_id}).first()
    if row is None or row.project_id != project.id:
        raise NotFound(f"You hold no task {assignment_id} in this project; reload the page to get your current task.")
    if row.state == AssignmentState.submitted:
        raise Conflict("You already submitted a ranking for this task; it cannot be skipped.")
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
