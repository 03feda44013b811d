"""Rating-form judgments (issue 15): a labeler's Likert, good/bad or multi-aspect answer to a task.

Ranking and pairwise forms store an ordinary Ranking (app/models/labeling.py); the rating forms
store one Feedback per submitted assignment and one FeedbackRating per (completion, aspect).
Readers: app/labeling/feedback_read.py turns them into scores, ranking groups and pairs.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.models._types import JSONType, UTCDateTime, utcnow

OVERALL = ""
"""FeedbackRating.aspect of a completion's own rating: its Likert point (likert), 1 good / 0 bad
(good_bad), or its level in the optional overall ranking (multi_aspect; None when the project
asks for none). This row also carries the completion's critique in every rating form."""


class Feedback(Base):
    """One labeler's answer to one task of a rating form ("likert", "good_bad", "multi_aspect")."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("task_id", "user_id"),
        Index("ix_feedback_project_id", "project_id", "id"),
        Index("ix_feedback_user_project", "user_id", "project_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("ranking_tasks.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    assignment_id: Mapped[int | None] = mapped_column(ForeignKey("assignments.id", ondelete="SET NULL"), unique=True)
    form: Mapped[str] = mapped_column(String(16))
    """The task's kind when answered: "likert", "good_bad" or "multi_aspect"."""
    settings: Mapped[dict] = mapped_column(JSONType, default=dict)
    """The project's form_settings when answered (points, labels, aspects and their scales), so a
    stored value keeps its meaning if an admin later changes the settings."""
    display_order: Mapped[list[int]] = mapped_column(JSONType, default=list)
    """Completion ids in the shuffled order this labeler was shown."""
    time_spent_ms: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    """Submitted after the lease expired (accepted because a slot was still free)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    ratings: Mapped[list[FeedbackRating]] = relationship(
        back_populates="feedback", cascade="all, delete-orphan", order_by="FeedbackRating.id"
    )


class FeedbackRating(Base):
    """One value given to one completion: its overall rating (aspect OVERALL) or one aspect's."""

    __tablename__ = "feedback_ratings"
    __table_args__ = (UniqueConstraint("feedback_id", "completion_id", "aspect"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    feedback_id: Mapped[int] = mapped_column(ForeignKey("feedback.id", ondelete="CASCADE"))
    completion_id: Mapped[int] = mapped_column(ForeignKey("completions.id", ondelete="CASCADE"), index=True)
    aspect: Mapped[str] = mapped_column(String(32), default=OVERALL)
    """OVERALL ("") or the name of one of the project's aspects (multi_aspect)."""
    value: Mapped[int | None] = mapped_column(Integer)
    """Likert: 1..points (higher is better). good_bad: 1 good, 0 bad. A ranked aspect or the
    overall ranking: the level, 0 = best, tied completions share a level. None: not rated (an
    OVERALL row that only carries a critique)."""
    critique: Mapped[str | None] = mapped_column(Text)
    """The labeler's free-text critique of the completion (OVERALL rows only; optional)."""

    feedback: Mapped[Feedback] = relationship(back_populates="ratings")
