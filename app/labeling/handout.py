"""Handing out ranking tasks so that no slot is ever given twice, under any concurrency.

Invariant: `ranking_tasks.slots_taken` = live leases + submitted rankings of the task, and it only
changes while the task row is locked (Postgres) or under SQLite's single write lock. A labeler
gets a task only if `slots_taken < overlap` and they never had an assignment for it (the unique
(task_id, user_id) on assignments is the backstop).

Locking order, everywhere: labeler lock (Postgres advisory lock per project+labeler) → the
labeler's own assignment rows → task rows. The sweep never waits for a lock at all (SKIP LOCKED on
both tables), so it cannot take part in a deadlock.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from datetime import datetime, timedelta
from functools import partial
from typing import NamedTuple, cast
from weakref import WeakKeyDictionary

from sqlalchemy import CursorResult, and_, bindparam, exists, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from app.db import is_sqlite, start_write_transaction  # noqa: F401 (re-exported for submission.py)
from app.labeling.content import TaskContent, load_task_content
from app.labeling.lease_postgres import claim_and_lease
from app.models import Assignment, AssignmentState, HandoutOrder, RankingTask, TaskStatus, utcnow

SWEEP_BATCH = 500

# When each engine (one per process and database; or the Connection a session is bound to, as in
# tests) last swept: the sweep is throttled per process.
_last_sweep: WeakKeyDictionary[Engine | Connection, float] = WeakKeyDictionary()

_assignments = Assignment.__table__
_tasks = RankingTask.__table__

# The hot-path statements are built once, with bind parameters: building a statement and its
# cache key on every call costs SQLAlchemy several times the CPU of running it.
_LEASED_BY = and_(
    _assignments.c.user_id == bindparam("user_id"),
    _assignments.c.project_id == bindparam("project_id"),
    _assignments.c.state == AssignmentState.leased,
)
_LOCK_LABELER = select(func.pg_advisory_xact_lock(bindparam("project_id"), bindparam("user_id")))
_LEASE_COLUMNS = (
    _assignments.c.id,
    _assignments.c.task_id,
    _assignments.c.lease_expires_at,
    _assignments.c.display_order,
)
_LIVE_LEASE = (
    select(*_LEASE_COLUMNS)
    .where(_LEASED_BY, _assignments.c.lease_expires_at > bindparam("now"))
    .order_by(_assignments.c.id)
    .limit(1)
)
_HELD_LEASE = select(*_LEASE_COLUMNS).where(_LEASED_BY).order_by(_assignments.c.id).limit(1)
_RENEW_LEASE = (
    update(_assignments)
    .where(_assignments.c.id == bindparam("assignment_id"), _assignments.c.state == AssignmentState.leased)
    .values(lease_expires_at=bindparam("expires"))
)
_INSERT_LEASE = insert(_assignments).returning(_assignments.c.id)


def _claim_statement(*, wait: bool, prioritized: bool = False):
    """Picks the oldest open task with a free slot this labeler never had, locks it and takes the
    slot, in one statement (the row stays locked until commit). Other labelers' picks are skipped;
    when waiting, Postgres re-checks a row after its lock holder commits and moves on to the next
    row if it no longer qualifies.

    `prioritized` (the project's handout_order is active): the highest handout_priority first,
    unscored tasks last, then the oldest; the same row rules, so every guarantee holds. Used on
    SQLite only (Postgres: lease_postgres.py), where DESC already puts NULLs last and matches
    ix_ranking_tasks_priority as it stands."""
    candidate = _tasks.alias("candidate")
    # (bind names differ from ranking_tasks' columns: SQLAlchemy reserves those in an UPDATE)
    already_had = exists().where(
        _assignments.c.task_id == candidate.c.id, _assignments.c.user_id == bindparam("labeler")
    )
    pick = (
        select(candidate.c.id)
        .where(
            candidate.c.project_id == bindparam("project"),
            candidate.c.status == TaskStatus.open,
            candidate.c.slots_taken < bindparam("overlap"),
            ~already_had,
        )
        .order_by(*((candidate.c.handout_priority.desc(),) if prioritized else ()), candidate.c.id)
        .limit(1)
        .with_for_update(skip_locked=not wait)
    )
    return (
        update(_tasks)
        .where(_tasks.c.id == pick.scalar_subquery())
        .values(slots_taken=_tasks.c.slots_taken + 1)
        .returning(_tasks.c.id)
    )


_CLAIM = {
    (wait, prioritized): _claim_statement(wait=wait, prioritized=prioritized)
    for wait in (False, True)
    for prioritized in (False, True)
}


class Lease(NamedTuple):
    """A labeler's live assignment, with what rendering it needs."""

    assignment_id: int
    task_id: int
    lease_expires_at: datetime
    display_order: list[int]
    content: TaskContent | None = None
    """The task's prompt and completions when the handout had to load them anyway (a new lease)."""
    counts: tuple[int, int, bool] | None = None
    """(done, waiting, window_full) read with a new lease on Postgres: the tasks the labeler answered
    in the project; the task just leased plus the open ones they never had among the PROGRESS_CAP oldest
    open tasks; whether that window was full."""


PROGRESS_CAP = 200
"""Progress counts stop here ("200+ left"), so they stay cheap on every render."""


def lock_labeler(db: Session, *, project_id: int, user_id: int) -> None:
    """Serialises one labeler's own requests in one project (two tabs, double clicks) so they hold
    at most one live lease there. Postgres only: SQLite's write lock already serialises everything."""
    if not is_sqlite(db):
        db.execute(_LOCK_LABELER, {"project_id": project_id, "user_id": user_id})


def lease_next_task(
    db: Session,
    *,
    user_id: int,
    project_id: int,
    overlap: int,
    lease_minutes: int,
    sweep_every: float,
    now: datetime | None = None,
    after_submit: bool = False,
    check_held: bool = True,
    check_live: bool = True,
    order: str = HandoutOrder.default,
) -> Lease | None:
    """The assignment the labeler should work on now, or None when nothing is left.

    A labeler who holds a lease in the project gets that same task back (refreshing burns nothing).

    `after_submit=True` when submit or skip hands out the next task in its own transaction: the
    write transaction and labeler lock are already taken, and as that transaction holds row locks
    it must never wait for another task's lock (that could close a cycle), so rows other labelers
    are picking right now are only skipped. A plain request instead waits for them when nothing
    else is free, so the last slots are never reported empty just because someone was mid-pick.

    `order`: the project's handout_order; any but "default" picks by handout_priority first."""
    now = now or utcnow()
    if not after_submit:
        # Fast path for refreshes and polls: a live lease is only read, with no lock taken (on
        # SQLite this keeps the many page loads out of the single write lock). `check_live=False`:
        # the caller just read that there is none.
        live = _live_lease(db, user_id=user_id, project_id=project_id, now=now) if check_live else None
        if live is not None:
            return live
        start_write_transaction(db)
        lock_labeler(db, project_id=project_id, user_id=user_id)
    if _sweep_due(db, sweep_every):
        sweep(db, now=now)

    if check_held:
        held = _held_lease(db, user_id=user_id, project_id=project_id, now=now, lease_minutes=lease_minutes)
        if held is not None:
            return held
    claim = partial(
        _claim_task,
        db,
        user_id=user_id,
        project_id=project_id,
        overlap=overlap,
        lease_minutes=lease_minutes,
        now=now,
        prioritized=order != HandoutOrder.default,
    )
    claimed = claim(wait=False)
    if claimed is None:
        sweep(db, now=now)
        claimed = claim(wait=not after_submit)
    return claimed


def _live_lease(db: Session, *, user_id: int, project_id: int, now: datetime) -> Lease | None:
    row = db.execute(_LIVE_LEASE, {"user_id": user_id, "project_id": project_id, "now": now}).first()
    return None if row is None else Lease(*row)


def _held_lease(db: Session, *, user_id: int, project_id: int, now: datetime, lease_minutes: int) -> Lease | None:
    """The labeler's lease in the project, renewed if it ran out but was not swept yet."""
    row = db.execute(_HELD_LEASE, {"user_id": user_id, "project_id": project_id}).first()
    if row is None:
        return None
    lease = Lease(*row)
    if lease.lease_expires_at > now:
        return lease
    # Expired but not yet swept: the slot is still counted for this labeler, so renew it. The
    # state condition loses cleanly against a sweep that got there first.
    expires = now + timedelta(minutes=lease_minutes)
    renewed = cast(CursorResult, db.execute(_RENEW_LEASE, {"assignment_id": lease.assignment_id, "expires": expires}))
    return lease._replace(lease_expires_at=expires) if renewed.rowcount else None


def _claim_task(
    db: Session,
    *,
    user_id: int,
    project_id: int,
    overlap: int,
    lease_minutes: int,
    now: datetime,
    wait: bool,
    prioritized: bool,
) -> Lease | None:
    if not is_sqlite(db):  # one round trip instead of four (see lease_postgres.py)
        new = claim_and_lease(
            db,
            user_id=user_id,
            project_id=project_id,
            overlap=overlap,
            lease_minutes=lease_minutes,
            now=now,
            wait=wait,
            cap=PROGRESS_CAP,
            prioritized=prioritized,
        )
        return (
            None
            if new is None
            else Lease(
                new.assignment_id,
                new.task_id,
                new.lease_expires_at,
                new.display_order,
                new.content,
                (new.done, new.waiting, new.window_full),
            )
        )
    task_id = db.scalar(_CLAIM[wait, prioritized], {"labeler": user_id, "project": project_id, "overlap": overlap})
    if task_id is None:
        return None
    content = load_task_content(db, task_id=task_id)  # its completion ids are shuffled, and it is shown next
    order = display_order(list(content.completions), task_id=task_id, user_id=user_id)
    expires = now + timedelta(minutes=lease_minutes)
    assignment_id = db.scalar(
        _INSERT_LEASE,
        {
            "task_id": task_id,
            "user_id": user_id,
            "project_id": project_id,
            "state": AssignmentState.leased,
            "display_order": order,
            "leased_at": now,
            "lease_expires_at": expires,
        },
    )
    return Lease(assignment_id, task_id, expires, order, content)


def display_order(completion_ids: list[int], *, task_id: int, user_id: int) -> list[int]:
    """Shuffled against position bias; seeded by (task, labeler) so a refresh shows the same order.
    Sorted by md5("task:labeler:completion"), the key lease_postgres.py computes in SQL."""

    def key(completion_id: int) -> tuple[str, int]:
        return hashlib.md5(f"{task_id}:{user_id}:{completion_id}".encode()).hexdigest(), completion_id

    return sorted(completion_ids, key=key)


def _sweep_due(db: Session, every: float) -> bool:
    engine = db.get_bind()
    now = time.monotonic()
    if now - _last_sweep.get(engine, float("-inf")) < every:
        return False
    _last_sweep[engine] = now
    return True


def sweep(db: Session, *, now: datetime | None = None) -> int:
    """Expires leases past their time and frees their slots; returns how many.

    SQLite: runs in the caller's transaction, which already holds the write lock (a second
    connection would only wait for it). Postgres: its own short transaction, so the freed slots are
    visible to everyone at once and its locks are not held while the caller renders a page."""
    now = now or utcnow()
    if is_sqlite(db):
        return expire_leases(db, now=now)
    with Session(bind=db.get_bind()) as own:
        freed = expire_leases(own, now=now)
        own.commit()
    return freed


def expire_leases(db: Session, *, now: datetime) -> int:
    """One batch of expired leases: assignment → expired, the task's slot freed."""
    rows = db.execute(
        select(_assignments.c.id, _assignments.c.task_id)
        .where(_assignments.c.state == AssignmentState.leased, _assignments.c.lease_expires_at < now)
        .order_by(_assignments.c.id)
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return 0
    # A task locked by a handout or submit right now is left for the next sweep.
    locked_tasks = set(
        db.scalars(
            select(_tasks.c.id)
            .where(_tasks.c.id.in_(sorted({r.task_id for r in rows})))
            .order_by(_tasks.c.id)
            .with_for_update(skip_locked=True)
        )
    )
    expiring = [r for r in rows if r.task_id in locked_tasks]
    if not expiring:
        return 0
    db.execute(
        update(_assignments)
        .where(_assignments.c.id.in_([r.id for r in expiring]))
        .values(state=AssignmentState.expired, finished_at=now)
    )
    freed_per_task: dict[int, int] = defaultdict(int)
    for row in expiring:
        freed_per_task[row.task_id] += 1
    tasks_by_count: dict[int, list[int]] = defaultdict(list)
    for task_id, count in freed_per_task.items():
        tasks_by_count[count].append(task_id)
    for count, task_ids in sorted(tasks_by_count.items()):
        db.execute(update(_tasks).where(_tasks.c.id.in_(task_ids)).values(slots_taken=_tasks.c.slots_taken - count))
    return len(expiring)
