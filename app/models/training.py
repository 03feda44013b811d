"""Training rounds (the InstructGPT loop) and the model versions they use and produce."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models._types import JSONType, UTCDateTime, utcnow


class RoundStatus(StrEnum):
    pending = "pending"
    generating = "generating"
    labeling = "labeling"
    judging = "judging"
    """An AI-labelled round (labeling.source "judge"): the project's judge ranks the round's tasks."""
    training_reward = "training_reward"
    training_policy = "training_policy"
    evaluating = "evaluating"
    generating_next = "generating_next"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


class TrainingRound(Base):
    __tablename__ = "training_rounds"
    __table_args__ = (UniqueConstraint("project_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(24), default=RoundStatus.pending)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    """Everything the admin chose (model, K, RM and PPO settings), saved with the run."""
    policy_in_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    """The policy whose completions this round labels."""
    reward_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    policy_out_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    current_step: Mapped[str] = mapped_column(String(64), default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    """0..1 within the current step."""
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_step: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Touched every few seconds by the worker running a step; a stale heartbeat on a running
    status means the worker died and the step is re-enqueued (worker/loop/recovery.py)."""
    claim_token: Mapped[str | None] = mapped_column(String(64))
    """Which task run holds the current training step, so a duplicate delivery does not train twice."""


class RoundPrompt(Base):
    """A prompt a round generates completions for, in the generation job (batch) that does it."""

    __tablename__ = "round_prompts"
    __table_args__ = (Index("ix_round_prompts_round_batch", "round_id", "batch"),)

    round_id: Mapped[int] = mapped_column(ForeignKey("training_rounds.id", ondelete="CASCADE"), primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True, index=True)
    batch: Mapped[int] = mapped_column(Integer)
    generated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Set in the same transaction that stores the prompt's completions (so a re-run skips it)."""


class RoundEvent(Base):
    """Log lines and per-step metric points of a round (what the round page charts and tails)."""

    __tablename__ = "round_events"
    __table_args__ = (Index("ix_round_events_round_kind", "round_id", "kind", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("training_rounds.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    """log or metric."""
    stage: Mapped[str] = mapped_column(String(64), default="")
    step: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelKind(StrEnum):
    base = "base"
    sft = "sft"
    reward = "reward"
    policy = "policy"


class ModelVersion(Base):
    __tablename__ = "model_versions"
    # One reward model and one policy per round: a step delivered twice cannot register twice.
    __table_args__ = (UniqueConstraint("round_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    base_model: Mapped[str] = mapped_column(String(500))
    """Hub id or folder of the backbone."""
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    """Lineage: the policy this one was trained from."""
    round_id: Mapped[int | None] = mapped_column(Integer, index=True)
    """The round that produced it. No FK: training_rounds already points here (policy_in/out,
    reward_model), and a second FK direction would make the two tables mutually dependent."""
    artifact_path: Mapped[str | None] = mapped_column(String(1000))
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    job_id: Mapped[int | None] = mapped_column(Integer, index=True, unique=True)
    """The training job (app/models/jobs.py) that produced it; unique, so a job delivered twice
    registers one version. No FK, for the reason round_id has none (training_jobs points here)."""
