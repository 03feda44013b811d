"""SFT runs for admins: launch, status, cancel, retry (keyword-only; flush, never commit).

A run is a TrainingJob of kind "sft"; its task is sent by name after the request commits
(app/sft/jobs.py). The worker side is worker/loop/sft.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import ModelKind, ModelVersion, Project, User
from app.models.jobs import JOB_ACTIVE, JobDemonstration, JobEvent, JobKind, JobStatus, TrainingJob
from app.refusals import Refusal
from app.rounds import lifecycle as round_lifecycle
from app.rounds.lifecycle import BUNDLED_MODEL
from app.rounds.queue import QueueUnreachable, check_reachable, settings_of
from app.sft import jobs, selection
from app.sft.jobs import J
from app.sft.schemas import SFTRunIn

START_KINDS = (ModelKind.base, ModelKind.sft, ModelKind.policy)
"""Versions SFT can start from: anything that writes answers (not a reward model)."""


class JobError(Refusal):
    """A request the job cannot take; `field` names what to change."""


class JobNotFound(JobError):
    status_code = 404


class JobConflict(JobError):
    status_code = 409


class QueueDown(JobError):
    status_code = 503


def _ensure_queue(db: Session) -> None:
    try:
        check_reachable(settings_of(db))
    except QueueUnreachable as exc:
        raise QueueDown("queue", str(exc)) from None


def start_models(db: Session, *, project_id: int) -> list[ModelVersion]:
    """The project's versions an SFT run (or a round) may start from, newest first."""
    return list(
        db.scalars(
            select(ModelVersion)
            .where(ModelVersion.project_id == project_id, ModelVersion.kind.in_(START_KINDS))
            .order_by(ModelVersion.id.desc())
        )
    )


def start_model(db: Session, *, project: Project, version_id: int | None, field: str) -> ModelVersion:
    """The named version of this project (refused, naming `field`, when it is missing, another
    project's, or a reward model), or the project's bundled base (created on first use)."""
    if version_id is None:
        return round_lifecycle.base_version(db, project_id=project.id, base_model=BUNDLED_MODEL)
    version = db.get(ModelVersion, version_id)
    if version is None or version.project_id != project.id:
        raise JobError(field, f"no model version {version_id} in this project")
    if version.kind not in START_KINDS:
        raise JobError(field, f"model version {version_id} is a {version.kind} model; start from base, sft or policy")
    return version


def launch(db: Session, *, project: Project, run: SFTRunIn, user: User | None = None) -> TrainingJob:
    """A pending SFT job, enqueued on commit. Refused (nothing stored) when the filter selects no
    demonstration, the start model is not this project's, or the broker is down."""
    start = start_model(db, project=project, version_id=run.start_model_id, field="start_model_id")
    config = run.model_dump(mode="json")
    found = selection.count(db, project_id=project.id, selection=config["demonstrations"])
    if found == 0:
        raise JobError("demonstrations", "the filter selects no demonstration of this project; widen it or add some")
    _ensure_queue(db)
    job = TrainingJob(
        project_id=project.id,
        kind=JobKind.sft,
        status=J.pending,
        config=config,
        start_model_id=start.id,
        current_step=J.pending,
        progress=0.0,
        metrics={},
        created_by_id=user.id if user is not None else None,
    )
    db.add(job)
    db.flush()
    who = user.email if user is not None else "an API token"
    jobs.log_event(
        db, job_id=job.id, message=f"SFT launched by {who}: {found} demonstrations, from {start.kind} “{start.name}”"
    )
    jobs.enqueue(db, job=job)
    return job


def get_job(db: Session, *, job_id: int, project_id: int | None = None) -> TrainingJob:
    job = db.get(TrainingJob, job_id)
    if job is None or (project_id is not None and job.project_id != project_id):
        raise JobNotFound("job_id", f"no training job {job_id}" + (" in this project" if project_id else ""))
    return job


def list_jobs(db: Session, *, project: Project, kind: str = JobKind.sft) -> list[TrainingJob]:
    return list(
        db.scalars(
            select(TrainingJob)
            .where(TrainingJob.project_id == project.id, TrainingJob.kind == kind)
            .order_by(TrainingJob.id.desc())
        )
    )


def cancel(db: Session, *, job: TrainingJob) -> TrainingJob:
    """Stops the job: a running worker notices at its next progress report and ends there."""
    if job.status not in JOB_ACTIVE:
        raise JobConflict("status", f"job {job.id} is {job.status} and cannot be cancelled")
    previous = job.status
    if not jobs.transition(db, job_id=job.id, source=JOB_ACTIVE, target=J.cancelled):
        raise JobConflict("status", "the job changed meanwhile; reload it")
    jobs.log_event(db, job_id=job.id, message=f"cancelled while {previous}")
    db.refresh(job)
    return job


def retry(db: Session, *, job: TrainingJob) -> TrainingJob:
    """A failed or cancelled job runs again from the start (the artifact folder is rewritten);
    a pending or running one has its task enqueued again (harmless: the task claims first)."""
    if job.status == J.done:
        raise JobConflict("status", f"job {job.id} is done; launch a new run instead")
    _ensure_queue(db)
    previous = job.status
    if previous in (J.failed, J.cancelled):
        if not jobs.transition(
            db,
            job_id=job.id,
            source=[J.failed, J.cancelled],
            target=J.pending,
            error_message=None,
            finished_at=None,
            progress=0.0,
        ):
            raise JobConflict("status", "the job changed meanwhile; reload it")
        jobs.log_event(db, job_id=job.id, message=f"retry after {previous}")
    else:
        jobs.log_event(db, job_id=job.id, message="retry: task enqueued again")
    db.refresh(job)
    jobs.enqueue(db, job=job)
    return job


def job_events(
    db: Session, *, job_id: int, after_id: int = 0, kind: str | None = None, limit: int = 500
) -> list[JobEvent]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id)
    if kind is not None:
        stmt = stmt.where(JobEvent.kind == kind)
    return list(db.scalars(stmt.order_by(JobEvent.id).limit(limit)))


def job_status(db: Session, *, job_id: int, events_after: int | None = None, event_limit: int = 200) -> dict[str, Any]:
    """Everything the job page shows, as plain data (schemas.JobOut)."""
    job = get_job(db, job_id=job_id)
    data = {
        column: getattr(job, column)
        for column in (
            "id",
            "project_id",
            "kind",
            "status",
            "current_step",
            "progress",
            "eta_seconds",
            "error_message",
            "config",
            "start_model_id",
            "result_model_id",
            "metrics",
            "created_at",
            "started_at",
            "finished_at",
        )
    }
    if job.status == J.done and job.result_model_id is not None:
        data["demonstrations"] = db.scalar(
            select(func.count()).select_from(JobDemonstration).where(JobDemonstration.job_id == job.id)
        )
    else:
        data["demonstrations"] = selection.count(
            db, project_id=job.project_id, selection=job.config.get("demonstrations", {})
        )
    data["events"] = (
        [] if events_after is None else job_events(db, job_id=job_id, after_id=events_after, limit=event_limit)
    )
    return data


__all__ = ["JobStatus"]
