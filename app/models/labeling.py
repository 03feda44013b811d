"""Ranking tasks, who holds them (assignments), and what labelers submitted."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, desc
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.models._types import JSONType, UTCDateTime, utcnow


class TaskStatus(StrEnum):
    open = "open"
    """Still wants rankings."""
    complete = "complete"
    """Has `overlap` submitted rankings."""
    retired = "retired"
    """Withdrawn by an admin; kept for history."""


class RankingTask(Base):
    """One prompt with 4–9 completions to rank, or (kind pairwise_eval) two to compare blind."""

    __tablename__ = "ranking_tasks"
    __table_args__ = (
        Index("ix_ranking_tasks_handout", "project_id", "status", "id"),
        # The handout in a project ordered by priority (app/labeling/handout.py): highest first,
        # unscored (NULL) last, then oldest. Postgres sorts NULLs first in DESC unless told;
        # SQLite sorts them last already and takes no NULLS clause in an index (migration 0010).
        Index("ix_ranking_tasks_priority", "project_id", "status", desc("handout_priority").nulls_last(), "id").ddl_if(
            dialect="postgresql"
        ),
        Index("ix_ranking_tasks_priority", "project_id", "status", desc("handout_priority"), "id").ddl_if(
            dialect="sqlite"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("training_rounds.id", ondelete="SET NULL"), index=True)
    """The training round whose policy produced these completions (None: uploaded)."""
    kind: Mapped[str] = mapped_column(String(24), default="ranking", server_default="ranking")
    """The task type (app/labeling/task_types.py): "ranking", "pairwise_eval" (evaluations),
    "demonstration", "demonstration_review", or a project's feedback form (models.FeedbackForm):
    "pairwise", "likert", "multi_aspect", "good_bad"."""
    evaluation_id: Mapped[int | None] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"), index=True)
    """The evaluation this task belongs to (pairwise_eval tasks only)."""
    demonstration_id: Mapped[int | None] = mapped_column(
        ForeignKey("demonstrations.id", ondelete="CASCADE", use_alter=True), index=True
    )
    """The demonstration under review (demonstration_review tasks only). use_alter: demonstrations
    also point at ranking_tasks, so neither table is wholly first; app/backup restores this column
    in a second pass."""
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.open)
    slots_taken: Mapped[int] = mapped_column(Integer, default=0)
    """Live leases + submitted rankings; the handout compares it with the project's overlap.
    Only changed while the task row is locked (Postgres) or under SQLite's write lock."""
    rankings_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    handout_priority: Mapped[float | None] = mapped_column(Float)
    """How much a human answer would teach the reward model (worker/loop/active_order.py), higher
    first when the project's handout_order is not "default"; None: not scored (handed out after
    the scored tasks). Written by the refresh after each reward-model training."""

    items: Mapped[list[TaskCompletion]] = relationship(order_by="TaskCompletion.position", lazy="selectin")
    prompt = relationship("Prompt", lazy="joined")

    @property
    def completion_ids(self) -> list[int]:
        return [item.completion_id for item in self.items]


class TaskCompletion(Base):
    __tablename__ = "task_completions"

    task_id: Mapped[int] = mapped_column(ForeignKey("ranking_tasks.id", ondelete="CASCADE"), primary_key=True)
    completion_id: Mapped[int] = mapped_column(ForeignKey("completions.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)

    completion = relationship("Completion", lazy="joined")


class AssignmentState(StrEnum):
    leased = "leased"
    submitted = "submitted"
    expired = "expired"
    skipped = "skipped"
    barred = "barred"
    """Never handed to this labeler and holds no slot: they wrote the demonstration the task
    reviews (app/demonstrations/service.py). The row alone keeps the handout from offering it,
    as for any task a labeler once had."""


class Assignment(Base):
    """A labeler's hold on a task. One row per (task, labeler) ever: a labeler never gets a task twice."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("task_id", "user_id"),
        Index("ix_assignments_user_state", "user_id", "state"),
        Index("ix_assignments_state_expiry", "state", "lease_expires_at"),
        Index("ix_assignments_user_project_state", "user_id", "project_id", "state"),  # "done" count (0006)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("ranking_tasks.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), default=AssignmentState.leased)
    display_order: Mapped[list[int]] = mapped_column(JSONType, default=list)
    """Completion ids in the shuffled order this labeler was shown."""
    leased_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    skip_reason: Mapped[str | None] = mapped_column(Text)

    task: Mapped[RankingTask] = relationship(lazy="joined")


class Ranking(Base):
    """One labeler's ranking of one task: ordered groups of completion ids, best first.

    A group with several ids is a tie. `none_acceptable` records that every completion was bad
    (the order still says which is least bad)."""

    __tablename__ = "rankings"
    __table_args__ = (
        UniqueConstraint("task_id", "user_id"),
        Index("ix_rankings_user_project", "user_id", "project_id"),
    )  # labeler progress (0003)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("ranking_tasks.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    assignment_id: Mapped[int | None] = mapped_column(ForeignKey("assignments.id", ondelete="SET NULL"))
    groups: Mapped[list[list[int]]] = mapped_column(JSONType)
    flags: Mapped[dict[str, list[str]]] = mapped_column(JSONType, default=dict)
    """completion id (as str) -> flag names."""
    none_acceptable: Mapped[bool] = mapped_column(Boolean, default=False)
    display_order: Mapped[list[int]] = mapped_column(JSONType, default=list)
    """Completion ids in the shuffled order this labeler was shown (for a pairwise task: A, B)."""
    time_spent_ms: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    """Submitted after the lease expired (accepted because a slot was still free)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    critiques: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict, server_default="{}")
    """completion id (as str) -> the labeler's optional free-text critique of it (issue 15)."""

    pairs: Mapped[list[PairwiseComparison]] = relationship(back_populates="ranking", cascade="all, delete-orphan")


class PairwiseComparison(Base):
    """chosen ranked strictly above rejected in one ranking (ties give no row)."""

    __tablename__ = "pairwise_comparisons"

    id: Mapped[int] = mapped_column(primary_key=True)
    ranking_id: Mapped[int] = mapped_column(ForeignKey("rankings.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("ranking_tasks.id", ondelete="CASCADE"), index=True)
    chosen_id: Mapped[int] = mapped_column(ForeignKey("completions.id", ondelete="CASCADE"))
    rejected_id: Mapped[int] = mapped_column(ForeignKey("completions.id", ondelete="CASCADE"))
    margin: Mapped[int] = mapped_column(Integer, default=1)
    """How many rank groups apart the two were."""

    ranking: Mapped[Ranking] = relationship(back_populates="pairs")
