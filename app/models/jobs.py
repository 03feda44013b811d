"""Background training jobs outside rounds: a stage an admin runs on its own (SFT now, DPO later).

A job has the round's worker contract (claim_token, heartbeat_at, progress, events; see
worker/loop/runtime.py) without the round's state machine: pending → running → done, failed or
cancelled; a failed or cancelled job can be retried (→ pending). Its result is a ModelVersion
whose job_id points back here, and `job_demonstrations` records which demonstrations it
trained on (lineage that survives later edits of the filter that chose them).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models._types import JSONType, UTCDateTime, utcnow


class JobKind(StrEnum):
    sft = "sft"


class JobStatus(StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


JOB_ACTIVE = (JobStatus.pending, JobStatus.running)
JOB_TERMINAL = (JobStatus.done, JobStatus.failed, JobStatus.cancelled)


class TrainingJob(Base):
    __tablename__ = "training_jobs"
    __table_args__ = (Index("ix_training_jobs_project", "project_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.sft)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.pending, index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    """What the admin chose: hyper-parameters by the ML config's field names, and the selection
    of demonstrations (app/sft/schemas.py SFTRunIn as JSON)."""
    start_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    result_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    current_step: Mapped[str] = mapped_column(String(64), default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    error_message: Mapped[str | None] = mapped_column(Text)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Touched every few seconds by the running worker; stale while running = the worker died."""
    claim_token: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobEvent(Base):
    """Log lines and metric points (loss per step, eval loss per epoch) of a job, like RoundEvent."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_kind", "job_id", "kind", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    """log or metric."""
    step: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobDemonstration(Base):
    """A demonstration a job trained on (written with the result, in the job's final transaction)."""

    __tablename__ = "job_demonstrations"

    job_id: Mapped[int] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"), primary_key=True)
    demonstration_id: Mapped[int] = mapped_column(
        ForeignKey("demonstrations.id", ondelete="CASCADE"), primary_key=True, index=True
    )
