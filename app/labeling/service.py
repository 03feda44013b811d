"""Labeling: which projects a labeler sees, the task they work on, submitting and skipping.

Handing out tasks (the concurrency-sensitive part) lives in handout.py. Every function here runs
in the caller's transaction and never commits it (start_write_transaction may first commit a
read-only SQLite transaction; see there)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, exists, func, insert, select, update
from sqlalchemy.orm import Session

from app.labeling import handout
from app.labeling.errors import LEASE_LOST_MESSAGE, Conflict, InvalidSubmission, NotAMember, NotFound
from app.labeling.partition import InvalidRanking, pairs_from_groups, validate_partition
from app.labeling.schemas import RankingIn
from app.models import (Assignment, AssignmentState, Completion, PairwiseComparison, Project, ProjectMember, Prompt,
                        Ranking, RankingTask, TaskStatus, User, utcnow)
from app.rounds import service as rounds_service

_assignments = Assignment.__table__
_tasks = RankingTask.__table__
_rankings = Ranking.__table__

REMAINING_CAP = 200


@dataclass(frozen=True)
class CompletionView:
    id: int
    text: str
    letter: str
    """A stable name for the card ("Completion C") that follows it when it moves."""


@dataclass(frozen=True)
class TaskView:
    assignment_id: int
    task_id: int
    project_id: int
    lease_expires_at: datetime
    prompt_text: str | None
    prompt_messages: list[dict[str, Any]] | None
    completions: list[CompletionView]
    """In this labeler's display order."""


@dataclass(frozen=True)
class Progress:
    done: int
    """Rankings this labeler submitted in the project."""
    remaining: int
    """The task this labeler holds now, plus open tasks with a free slot they have not had yet."""
    capped: bool = False
    """`remaining` is a lower bound (see REMAINING_CAP)."""


@dataclass(frozen=True)
class SubmitResult:
    ranking_id: int
    late: bool
    duplicate: bool


# ---- projects ---------------------------------------------------------------------------------

def get_project_for_labeler(db: Session, *, user: User, project_id: int) -> Project:
    """The project, if this user may label it (members; admins may label every project)."""
    row = db.execute(
        select(Project, exists().where(ProjectMember.project_id == Project.id, ProjectMember.user_id == user.id))
        .where(Project.id == project_id)
    ).first()
    if row is None:
        raise NotFound(f"Project {project_id} does not exist.")
    project, is_member = row
    if not (is_member or user.is_admin):
        raise NotAMember(f"You are not a member of the project '{project.name}'; ask an admin to add you.")
    return project


def list_projects_for(db: Session, *, user: User) -> list[tuple[Project, Progress]]:
    """The user's projects (every project for admins) with their progress, in four queries."""
    query = select(Project).order_by(Project.name)
    if not user.is_admin:
        query = query.join(ProjectMember, ProjectMember.project_id == Project.id).where(ProjectMember.user_id == user.id)
    projects = list(db.scalars(query))
    if not projects:
        return []
    ids = [p.id for p in projects]
    done = dict(db.execute(
        select(Ranking.project_id, func.count()).where(Ranking.user_id == user.id, Ranking.project_id.in_(ids))
        .group_by(Ranking.project_id)).all())
    remaining = dict(db.execute(
        select(RankingTask.project_id, func.count())
        .join(Project, Project.id == RankingTask.project_id)
        .where(RankingTask.project_id.in_(ids), RankingTask.status == TaskStatus.open,
               RankingTask.slots_taken < Project.overlap, ~_had_task(user.id))
        .group_by(RankingTask.project_id)).all())
    holding = dict(db.execute(
        select(Assignment.project_id, func.count())
        .where(Assignment.user_id == user.id, Assignment.state == AssignmentState.leased, Assignment.project_id.in_(ids))
        .group_by(Assignment.project_id)).all())
    return [(p, Progress(done=done.get(p.id, 0), remaining=remaining.get(p.id, 0) + holding.get(p.id, 0)))
            for p in projects]


def progress(db: Session, *, user_id: int, project: Project, holding_task: bool) -> Progress:
    """One statement; the count of what is left stops at REMAINING_CAP (shown as "200+") so that it
    stays cheap on every task render, however large the project."""
    done = (select(func.count()).select_from(Ranking)
            .where(Ranking.user_id == user_id, Ranking.project_id == project.id).scalar_subquery())
    waiting = (select(RankingTask.id)
               .where(RankingTask.project_id == project.id, RankingTask.status == TaskStatus.open,
                      RankingTask.slots_taken < project.overlap, ~_had_task(user_id))
               .limit(REMAINING_CAP).subquery())
    row = db.execute(select(done, select(func.count()).select_from(waiting).scalar_subquery())).one()
    return Progress(done=row[0], remaining=row[1] + int(holding_task), capped=row[1] >= REMAINING_CAP)


def _had_task(user_id: int):
    return exists().where(Assignment.task_id == RankingTask.id, Assignment.user_id == user_id)


# ---- the task a labeler works on --------------------------------------------------------------

def current_task(db: Session, *, user: User, project: Project, sweep_every: float,
                 now: datetime | None = None) -> TaskView | None:
    """The labeler's leased task (the same one on every refresh), leasing a new one if needed."""
    assignment_id = handout.lease_next_task(
        db, user_id=user.id, project_id=project.id, overlap=project.overlap, lease_minutes=project.lease_minutes,
        sweep_every=sweep_every, now=now)
    return None if assignment_id is None else load_task_view(db, assignment_id=assignment_id)


def load_task_view(db: Session, *, assignment_id: int) -> TaskView:
    """Two queries: the assignment with its prompt, then the completions."""
    row = db.execute(
        select(_assignments.c.id, _assignments.c.task_id, _assignments.c.project_id, _assignments.c.lease_expires_at,
               _assignments.c.display_order, Prompt.text, Prompt.messages)
        .join(_tasks, _tasks.c.id == _assignments.c.task_id)
        .join(Prompt, Prompt.id == _tasks.c.prompt_id)
        .where(_assignments.c.id == assignment_id)
    ).one()
    texts = dict(db.execute(select(Completion.id, Completion.text).where(Completion.id.in_(row.display_order))).all())
    completions = [CompletionView(id=cid, text=texts[cid], letter=_letter(i)) for i, cid in enumerate(row.display_order)]
    return TaskView(assignment_id=row.id, task_id=row.task_id, project_id=row.project_id,
                    lease_expires_at=row.lease_expires_at, prompt_text=row.text, prompt_messages=row.messages,
                    completions=completions)


def _letter(index: int) -> str:
    return chr(ord("A") + index) if index < 26 else str(index + 1)


def _next_after(db: Session, *, user_id: int, project: Project, sweep_every: float, now: datetime,
                finished_lease: bool) -> TaskView | None:
    """The next task, in the submit/skip transaction. `finished_lease`: that transaction just ended
    the labeler's one lease in the project, so no held lease needs looking up."""
    assignment_id = handout.lease_next_task(
        db, user_id=user_id, project_id=project.id, overlap=project.overlap, lease_minutes=project.lease_minutes,
        sweep_every=sweep_every, now=now, after_submit=True, check_held=not finished_lease)
    return None if assignment_id is None else load_task_view(db, assignment_id=assignment_id)


# ---- submitting and skipping ------------------------------------------------------------------

def submit_ranking(db: Session, *, user: User, project: Project, assignment_id: int, data: RankingIn,
                   sweep_every: float, now: datetime | None = None) -> tuple[SubmitResult, TaskView | None]:
    """Stores the ranking and its pairs, then hands out the next task (in the same transaction).

    Idempotent: a retry of a stored ranking returns it again (duplicate=True) with the same next task.
    After the lease expired it is still accepted while the task has a free slot (late=True)."""
    now = now or utcnow()
    user_id, project_id, overlap, flag_names = user.id, project.id, project.overlap, set(project.flags or [])
    handout.start_write_transaction(db)
    handout.lock_labeler(db, project_id=project_id, user_id=user_id)
    row = db.execute(
        select(_assignments.c.id, _assignments.c.task_id, _assignments.c.project_id, _assignments.c.state,
               _assignments.c.lease_expires_at, _assignments.c.display_order,
               _rankings.c.id.label("ranking_id"), _rankings.c.late)
        .outerjoin(_rankings, and_(_rankings.c.task_id == _assignments.c.task_id,
                                   _rankings.c.user_id == _assignments.c.user_id))
        .where(_assignments.c.id == assignment_id, _assignments.c.user_id == user_id)
        .with_for_update(of=_assignments)
    ).first()
    if row is None or row.project_id != project_id:
        raise NotFound(f"You hold no task {assignment_id} in this project; reload the page to get your current task.")
    if row.ranking_id is not None:
        result = SubmitResult(ranking_id=row.ranking_id, late=row.late, duplicate=True)
        return result, _next_after(db, user_id=user_id, project=project, sweep_every=sweep_every, now=now,
                                   finished_lease=False)
    if row.state == AssignmentState.skipped:
        raise Conflict("You skipped this task, so it cannot be submitted any more.")

    try:
        groups = validate_partition(data.ranking, row.display_order)
    except InvalidRanking as exc:
        raise InvalidSubmission(str(exc)) from None
    flags = _checked_flags(data.flags, completion_ids=set(row.display_order), allowed=flag_names)

    late = row.lease_expires_at <= now  # a lease past its time but not yet swept still holds its slot
    if row.state == AssignmentState.expired:
        _reclaim_slot(db, task_id=row.task_id, overlap=overlap)
        late = True

    ranking_id = db.scalar(insert(_rankings).values(
        task_id=row.task_id, user_id=user_id, project_id=project_id, assignment_id=row.id, groups=groups,
        flags=flags, none_acceptable=data.none_acceptable, display_order=row.display_order,
        time_spent_ms=data.time_spent_ms, comment=data.comment.strip(), late=late, created_at=now,
    ).returning(_rankings.c.id))
    pairs = [{"ranking_id": ranking_id, "task_id": row.task_id, "chosen_id": chosen, "rejected_id": rejected,
              "margin": margin} for chosen, rejected, margin in pairs_from_groups(groups)]
    if pairs:
        db.execute(insert(PairwiseComparison.__table__), pairs)
    db.execute(update(_assignments).where(_assignments.c.id == row.id)
               .values(state=AssignmentState.submitted, finished_at=now))
    db.execute(update(_tasks).where(_tasks.c.id == row.task_id).values(
        rankings_count=_tasks.c.rankings_count + 1,
        status=case((and_(_tasks.c.status == TaskStatus.open, _tasks.c.rankings_count + 1 >= overlap),
                     TaskStatus.complete), else_=_tasks.c.status),
    ))
    # A training round set to auto-start begins once its labeling threshold is reached.
    rounds_service.on_rankings_added(db, project_id=project_id)
    result = SubmitResult(ranking_id=ranking_id, late=late, duplicate=False)
    return result, _next_after(db, user_id=user_id, project=project, sweep_every=sweep_every, now=now,
                               finished_lease=row.state == AssignmentState.leased)


def _reclaim_slot(db: Session, *, task_id: int, overlap: int) -> None:
    """A swept lease gave its slot back; take one again if the task still has one free."""
    taken = db.execute(
        update(_tasks).where(_tasks.c.id == task_id, _tasks.c.status == TaskStatus.open,
                             _tasks.c.slots_taken < overlap)
        .values(slots_taken=_tasks.c.slots_taken + 1)
    ).rowcount
    if taken:
        return
    status = db.scalar(select(_tasks.c.status).where(_tasks.c.id == task_id))
    if status == TaskStatus.retired:
        raise Conflict("An admin withdrew this task while your lease had expired; your ranking was not needed.")
    if status == TaskStatus.open:
        raise Conflict("Your lease on this task expired and other labelers took all its slots; "
                       "your ranking was not needed. Carry on with the next task.")
    raise Conflict(LEASE_LOST_MESSAGE)


def _checked_flags(flags: dict[int, list[str]], *, completion_ids: set[int], allowed: set[str]) -> dict[str, list[str]]:
    checked: dict[str, list[str]] = {}
    for completion_id, names in flags.items():
        if completion_id not in completion_ids:
            raise InvalidSubmission(f"flags: completion {completion_id} is not part of this task")
        unknown = sorted(set(names) - allowed)
        if unknown:
            raise InvalidSubmission(f"flags[{completion_id}]: unknown flag {', '.join(map(repr, unknown))}; "
                                    f"this project's flags are {', '.join(sorted(allowed)) or 'none'}")
        if names:
            checked[str(completion_id)] = sorted(set(names))
    return checked


def skip_task(db: Session, *, user: User, project: Project, assignment_id: int, reason: str,
              sweep_every: float, now: datetime | None = None) -> TaskView | None:
    """Gives the task up with a reason: its slot goes back, this labeler never sees it again.
    Returns the next task. Skipping twice is harmless."""
    now = now or utcnow()
    user_id = user.id
    handout.start_write_transaction(db)
    handout.lock_labeler(db, project_id=project.id, user_id=user_id)
    row = db.execute(
        select(_assignments.c.id, _assignments.c.task_id, _assignments.c.project_id, _assignments.c.state)
        .where(_assignments.c.id == assignment_id, _assignments.c.user_id == user_id)
        .with_for_update()
    ).first()
    if row is None or row.project_id != project.id:
        raise NotFound(f"You hold no task {assignment_id} in this project; reload the page to get your current task.")
    if row.state == AssignmentState.submitted:
        raise Conflict("You already submitted a ranking for this task; it cannot be skipped.")
    if row.state != AssignmentState.skipped:
        db.execute(update(_assignments).where(_assignments.c.id == row.id)
                   .values(state=AssignmentState.skipped, skip_reason=reason, finished_at=now))
        if row.state == AssignmentState.leased:  # an expired lease already gave its slot back
            db.execute(update(_tasks).where(_tasks.c.id == row.task_id)
                       .values(slots_taken=_tasks.c.slots_taken - 1))
    return _next_after(db, user_id=user_id, project=project, sweep_every=sweep_every, now=now,
                       finished_lease=row.state == AssignmentState.leased)
