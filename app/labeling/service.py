"""Labeling: which projects a labeler sees, their progress, and the task they work on.

Handing out tasks (the concurrency-sensitive part) lives in handout.py, submitting and skipping in
submission.py. Every function here runs in the caller's transaction and never commits it
(handout.start_write_transaction may first commit a read-only SQLite transaction; see there)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy import ColumnClause, and_, bindparam, exists, func, literal_column, select
from sqlalchemy.orm import Session

from app.db import is_sqlite
from app.labeling import handout
from app.labeling.content import load_task_content
from app.labeling.errors import NotAMember, NotFound
from app.labeling.task_types import TaskType, task_type
from app.models import (
    Assignment,
    AssignmentState,
    Project,
    ProjectMember,
    RankingTask,
    TaskStatus,
    User,
    utcnow,
)

_assignments = Assignment.__table__
_tasks = RankingTask.__table__
_OPEN: ColumnClause[str] = literal_column(f"'{TaskStatus.open.value}'")
_SUBMITTED: ColumnClause[str] = literal_column(f"'{AssignmentState.submitted.value}'")

REMAINING_CAP = handout.PROGRESS_CAP


def _had_task(user_id):
    return exists().where(Assignment.task_id == RankingTask.id, Assignment.user_id == user_id)


def _progress_columns(overlap):
    """The tasks this labeler answered in the project (rankings, verdicts, demonstrations, reviews:
    their submitted assignments, index-only on ix_assignments_user_project_state); how many of the
    REMAINING_CAP oldest open tasks with
    a free slot they never had; and whether that window was full (so more may be left). Core
    columns, not the ORM classes': the ORM execution path costs more than the statement here.

    The shape is for Postgres' generic plans (see lease_postgres.py, where the same counts are
    written in SQL): the window is a plain ordered LIMIT on ix_ranking_tasks_handout ('open' a
    literal, BETWEEN so no other index serves the order), and only its rows are probed for the
    labeler's lease."""
    answered = _assignments.alias("answered")  # not the page state's own join on assignments
    done = (
        select(func.count())
        .select_from(answered)
        .where(
            answered.c.user_id == bindparam("user_id"),
            answered.c.project_id == bindparam("project_id"),
            answered.c.state == _SUBMITTED,
        )
        .scalar_subquery()
    )

    def oldest_open():
        return (
            select(_tasks.c.id)
            .where(
                _tasks.c.project_id == bindparam("project_id"),
                _tasks.c.status.between(_OPEN, _OPEN),
                _tasks.c.slots_taken < overlap,
            )
            .order_by(_tasks.c.status, _tasks.c.id)
            .limit(REMAINING_CAP)
            .subquery("oldest")
        )

    window = oldest_open()
    never_had = ~exists().where(_assignments.c.task_id == window.c.id, _assignments.c.user_id == bindparam("user_id"))
    waiting = select(func.count()).select_from(window).where(never_had).scalar_subquery()
    window_full = select(func.count() >= REMAINING_CAP).select_from(oldest_open()).scalar_subquery()
    return done, waiting, window_full


# Built once (see handout.py for why).
_IS_MEMBER = exists().where(ProjectMember.project_id == Project.id, ProjectMember.user_id == bindparam("user_id"))
_PROJECT_FOR_USER = select(Project, _IS_MEMBER).where(Project.id == bindparam("project_id"))
# The same, taking the labeler's lock (handout.lock_labeler) in that round trip (Postgres).
_PROJECT_FOR_USER_LOCKED = select(
    Project, _IS_MEMBER, func.pg_advisory_xact_lock(bindparam("project_id"), bindparam("user_id"))
).where(Project.id == bindparam("project_id"))
_PROGRESS = select(*_progress_columns(bindparam("overlap")))
# The ranking page on every refresh, poll and load after a submit: project, membership, the
# labeler's live lease (if any) and their progress in one statement.
_PAGE_STATE = (
    select(
        Project,
        _IS_MEMBER,
        _assignments.c.id,
        _assignments.c.task_id,
        _assignments.c.lease_expires_at,
        _assignments.c.display_order,
        *_progress_columns(
            select(Project.__table__.c.overlap)
            .where(Project.__table__.c.id == bindparam("project_id"))
            .scalar_subquery()
        ),
    )
    .outerjoin(
        _assignments,
        and_(
            _assignments.c.project_id == Project.id,
            _assignments.c.user_id == bindparam("user_id"),
            _assignments.c.state == AssignmentState.leased,
            _assignments.c.lease_expires_at > bindparam("now"),
        ),
    )
    .where(Project.id == bindparam("project_id"))
    .order_by(_assignments.c.id)
    .limit(1)
)


@dataclass(frozen=True)
class CompletionView:
    id: int
    text: str
    html: Markup
    """`text` as markdown rendered to HTML (raw HTML in it escaped; see app/markdown.py)."""
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
    progress: Progress | None = None
    """The labeler's progress, when the handout read it with a new lease (Postgres)."""
    kind: str = "ranking"
    """The task's kind; `task_type` holds what differs between kinds (app/labeling/task_types.py)."""
    extra: Any = None
    """What the kind shows besides prompt and completions (TaskType.load_extra): for a
    demonstration_review, the demonstration under review."""

    @property
    def task_type(self) -> TaskType:
        return task_type(self.kind)


@dataclass(frozen=True)
class Progress:
    done: int
    """Tasks this labeler answered in the project: rankings, verdicts, demonstrations, reviews."""
    remaining: int
    """The task this labeler holds now, plus open tasks with a free slot they have not had yet."""
    capped: bool = False
    """`remaining` is a lower bound: only the REMAINING_CAP oldest open tasks were looked at."""


# ---- projects ---------------------------------------------------------------------------------


def project_and_membership(db: Session, *, user_id: int, project_id: int) -> tuple[Project | None, bool]:
    """The project (None if there is none) and whether the user is a member, in one statement."""
    row = db.execute(_PROJECT_FOR_USER, {"user_id": user_id, "project_id": project_id}).first()
    return (None, False) if row is None else (row[0], bool(row[1]))


def get_project_for_labeler(db: Session, *, user: User, project_id: int) -> Project:
    """The project, if this user may label it (members; admins may label every project)."""
    project, is_member = project_and_membership(db, user_id=user.id, project_id=project_id)
    if project is None:
        raise NotFound(f"Project {project_id} does not exist.")
    check_access(project, is_member=is_member, user=user)
    return project


def lock_project_for_labeler(db: Session, *, user: User, project_id: int) -> Project:
    """get_project_for_labeler for a submit or skip: also starts the write transaction and takes
    the labeler's lock (see handout.lock_labeler), on Postgres in the same statement. Pass
    `labeler_locked=True` to the submission function that follows."""
    handout.start_write_transaction(db)
    if is_sqlite(db):  # the write lock just taken serialises everything already
        return get_project_for_labeler(db, user=user, project_id=project_id)
    row = db.execute(_PROJECT_FOR_USER_LOCKED, {"user_id": user.id, "project_id": project_id}).first()
    if row is None:
        raise NotFound(f"Project {project_id} does not exist.")
    project, is_member, _locked = row
    check_access(project, is_member=is_member, user=user)
    return project


def check_access(project: Project, *, is_member: bool, user: User) -> None:
    if not (is_member or user.is_admin):
        raise NotAMember(f"You are not a member of the project '{project.name}'; ask an admin to add you.")


def list_projects_for(db: Session, *, user: User) -> list[tuple[Project, Progress]]:
    """The user's projects (every project for admins) with their progress, in four queries."""
    query = select(Project).order_by(Project.name)
    if not user.is_admin:
        query = query.join(ProjectMember, ProjectMember.project_id == Project.id).where(
            ProjectMember.user_id == user.id
        )
    projects = list(db.scalars(query))
    if not projects:
        return []
    ids = [p.id for p in projects]
    done = dict(
        db.execute(
            select(Assignment.project_id, func.count())
            .where(
                Assignment.user_id == user.id,
                Assignment.project_id.in_(ids),
                Assignment.state == AssignmentState.submitted,
            )
            .group_by(Assignment.project_id)
        ).all()
    )
    remaining = dict(
        db.execute(
            select(RankingTask.project_id, func.count())
            .join(Project, Project.id == RankingTask.project_id)
            .where(
                RankingTask.project_id.in_(ids),
                RankingTask.status == TaskStatus.open,
                RankingTask.slots_taken < Project.overlap,
                ~_had_task(user.id),
            )
            .group_by(RankingTask.project_id)
        ).all()
    )
    holding = dict(
        db.execute(
            select(Assignment.project_id, func.count())
            .where(
                Assignment.user_id == user.id,
                Assignment.state == AssignmentState.leased,
                Assignment.project_id.in_(ids),
            )
            .group_by(Assignment.project_id)
        ).all()
    )
    return [
        (p, Progress(done=done.get(p.id, 0), remaining=remaining.get(p.id, 0) + holding.get(p.id, 0))) for p in projects
    ]


def progress_with(db: Session, view: TaskView | None, *, user_id: int, project: Project) -> Progress:
    """The progress the handout read along with a new lease, else counted now."""
    if view is not None and view.progress is not None:
        return view.progress
    return progress(db, user_id=user_id, project=project, holding_task=view is not None)


def progress(db: Session, *, user_id: int, project: Project, holding_task: bool) -> Progress:
    """One statement, whatever the size of the project (what is left is counted up to REMAINING_CAP)."""
    done, waiting, window_full = db.execute(
        _PROGRESS, {"user_id": user_id, "project_id": project.id, "overlap": project.overlap}
    ).one()
    return Progress(done=done, remaining=waiting + int(holding_task), capped=window_full)


# ---- the task a labeler works on --------------------------------------------------------------


def current_task(
    db: Session, *, user: User, project: Project, sweep_every: float, now: datetime | None = None
) -> TaskView | None:
    """The labeler's leased task (the same one on every refresh), leasing a new one if needed."""
    lease = handout.lease_next_task(
        db,
        user_id=user.id,
        project_id=project.id,
        overlap=project.overlap,
        lease_minutes=project.lease_minutes,
        sweep_every=sweep_every,
        order=project.handout_order,
        now=now,
    )
    return None if lease is None else _task_view(db, lease, project_id=project.id)


@dataclass(frozen=True)
class TaskPage:
    project: Project
    view: TaskView | None
    progress: Progress


def open_task_page(
    db: Session, *, user: User, project_id: int, sweep_every: float, now: datetime | None = None
) -> TaskPage:
    """What the ranking page shows: the project (if this user may label it), the labeler's task
    (leasing one if needed) and their progress.

    Two statements while the labeler holds a live lease, which is nearly every time (refreshes,
    polls, the load after each submit): the page state, then the task's content."""
    now = now or utcnow()
    row = db.execute(_PAGE_STATE, {"user_id": user.id, "project_id": project_id, "now": now}).first()
    if row is None:
        raise NotFound(f"Project {project_id} does not exist.")
    project, is_member, assignment_id, task_id, lease_expires_at, order, done, waiting, window_full = row
    check_access(project, is_member=is_member, user=user)
    if assignment_id is not None:
        held = handout.Lease(assignment_id, task_id, lease_expires_at, order)
        return TaskPage(
            project=project,
            view=_task_view(db, held, project_id=project.id),
            progress=Progress(done=done, remaining=waiting + 1, capped=window_full),
        )
    lease = handout.lease_next_task(
        db,
        user_id=user.id,
        project_id=project.id,
        overlap=project.overlap,
        lease_minutes=project.lease_minutes,
        sweep_every=sweep_every,
        order=project.handout_order,
        now=now,
        check_live=False,
    )
    view = None if lease is None else _task_view(db, lease, project_id=project.id)
    return TaskPage(project=project, view=view, progress=progress_with(db, view, user_id=user.id, project=project))


def next_task_after(
    db: Session, *, user_id: int, project: Project, sweep_every: float, now: datetime, finished_lease: bool
) -> TaskView | None:
    """The next task, in the submit/skip transaction. `finished_lease`: that transaction just ended
    the labeler's one lease in the project, so no held lease needs looking up."""
    lease = handout.lease_next_task(
        db,
        user_id=user_id,
        project_id=project.id,
        overlap=project.overlap,
        lease_minutes=project.lease_minutes,
        sweep_every=sweep_every,
        order=project.handout_order,
        now=now,
        after_submit=True,
        check_held=not finished_lease,
    )
    return None if lease is None else _task_view(db, lease, project_id=project.id)


def _task_view(db: Session, lease: handout.Lease, *, project_id: int) -> TaskView:
    content = lease.content or load_task_content(db, task_id=lease.task_id)
    completions = [
        CompletionView(id=cid, text=content.completions[cid], html=content.completions_html[cid], letter=_letter(i))
        for i, cid in enumerate(lease.display_order)
    ]
    load_extra = task_type(content.kind).load_extra
    progress = None
    if lease.counts is not None:
        done, waiting, window_full = lease.counts
        progress = Progress(done=done, remaining=waiting, capped=window_full)
    return TaskView(
        assignment_id=lease.assignment_id,
        task_id=lease.task_id,
        project_id=project_id,
        lease_expires_at=lease.lease_expires_at,
        prompt_text=content.prompt_text,
        prompt_messages=content.prompt_messages,
        completions=completions,
        progress=progress,
        kind=content.kind,
        extra=None if load_extra is None else load_extra(db, content),
    )


def _letter(index: int) -> str:
    return chr(ord("A") + index) if index < 26 else str(index + 1)
