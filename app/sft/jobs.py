"""The training-job state machine, shared by the web process and the worker (no torch here).

    pending → running → done;  pending/running → cancelled;  running → failed;  failed/cancelled → (retry) pending

Each change is one conditional UPDATE (`WHERE status IN (...)`), as for rounds
(app/rounds/lifecycle.py), so two requests or two deliveries of one task cannot both move a job.
Work is enqueued on the session and sent after its commit (app/rounds/queue.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session

from app.models import utcnow
from app.models.jobs import JOB_TERMINAL, JobEvent, JobKind, JobStatus, TrainingJob
from app.rounds.queue import enqueue_on_commit, settings_of
from worker.celery_app import TRAIN, TRAIN_SFT, queue_for

J = JobStatus
JOB_TASKS: dict[str, str] = {JobKind.sft: TRAIN_SFT}
"""Job kind -> the Celery task that runs it (on the training queue: one at a time per GPU)."""


def transition(db: Session, *, job_id: int, source: Sequence[str], target: str, **values: Any) -> bool:
    """Move the job to `target` if it is in one of `source`; False when another actor won."""
    values.setdefault("current_step", target)
    values.setdefault("eta_seconds", None)
    values.setdefault("claim_token", None)
    values.setdefault("heartbeat_at", None)
    if target in JOB_TERMINAL:
        values.setdefault("finished_at", utcnow())
    result = db.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status.in_(source))
        .values(status=target, **values)
        .execution_options(synchronize_session=False)
    )
    moved = cast(CursorResult, result).rowcount == 1
    if moved:
        row = db.identity_map.get(db.identity_key(TrainingJob, job_id))  # keep a loaded row truthful
        if row is not None:
            db.expire(row)
    return moved


def log_event(
    db: Session, *, job_id: int, message: str = "", kind: str = "log", step: int | None = None, data: dict | None = None
) -> None:
    db.add(JobEvent(job_id=job_id, kind=kind, step=step, data=data or {}, message=message))


def enqueue(db: Session, *, job: TrainingJob) -> None:
    """Send the job's task after this session commits (a duplicate delivery is a no-op: the
    task claims the job first)."""
    enqueue_on_commit(db, JOB_TASKS[job.kind], job.id, queue=queue_for(TRAIN, settings_of(db)))
