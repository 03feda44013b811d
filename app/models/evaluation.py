"""Evaluations: blind pairwise comparisons of model versions on the project's eval prompts, and
the automatic metrics every version gets on the same prompts.

A human evaluation hands out ordinary ranking_tasks rows of kind "pairwise_eval" (two completions,
one per version), so it keeps every handout guarantee of ranking; a judgment is a Ranking of those
two: [[a], [b]] when a wins, [[a, b]] for a tie, none_acceptable for "both bad".
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models._types import JSONType, UTCDateTime, utcnow


class EvaluationStatus(StrEnum):
    generating = "generating"
    """The worker writes the versions' missing completions on the eval prompts."""
    labeling = "labeling"
    """Tasks are out; results grow as labelers judge."""
    done = "done"
    """Closed by an admin (or every task complete); results stay readable."""
    failed = "failed"
    cancelled = "cancelled"


class Evaluation(Base):
    """A blind human comparison of two or more model versions of one project."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("training_rounds.id", ondelete="SET NULL"), index=True)
    """The round that launched it automatically after training (None: launched by an admin)."""
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=EvaluationStatus.generating)
    version_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    """Every model version taking part."""
    comparisons: Mapped[list[list[int]]] = mapped_column(JSONType, default=list)
    """The version pairs [a, b] that get tasks (one task per eval prompt and pair)."""
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    """Prompt count, seed and sampling of the completions; what the admin chose."""
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CompletionScore(Base):
    """One reward model's score of one completion (eval completions are scored by every new RM)."""

    __tablename__ = "completion_scores"

    completion_id: Mapped[int] = mapped_column(ForeignKey("completions.id", ondelete="CASCADE"), primary_key=True)
    reward_model_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    score: Mapped[float] = mapped_column(Float)


class VersionEval(Base):
    """Automatic metrics of one model version on the eval prompts, as scored by one reward model."""

    __tablename__ = "version_evals"
    __table_args__ = (
        UniqueConstraint("version_id", "reward_model_id"),
        Index("ix_version_evals_project", "project_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    reward_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("training_rounds.id", ondelete="SET NULL"), index=True)
    """The round whose evaluating step computed these."""
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    """rm_score, mean_tokens, eos_share, kl_to_reference, distinct_1/2, lc_win_rate_vs_previous, …"""
    prompts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
