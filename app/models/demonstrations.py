"""Demonstrations: ideal assistant answers written by labelers (or uploaded), step 1 of the loop.

A labeler writes one on a "demonstration" task (app/labeling/task_types.py); when the project asks
for review, a second labeler accepts, edits or rejects it on a "demonstration_review" task
(ranking_tasks.demonstration_id points back here). Only accepted demonstrations train by default;
the text that trains is `training_response`: the reviewer's edit when there is one.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.models._types import JSONType, UTCDateTime, utcnow


class DemonstrationStatus(StrEnum):
    pending_review = "pending_review"
    """Waiting for a reviewer (projects with demonstration_review on)."""
    accepted = "accepted"
    """Trains. Set at once when the project does not review."""
    rejected = "rejected"


class DemonstrationSource(StrEnum):
    labeler = "labeler"
    upload = "upload"


class Demonstration(Base):
    __tablename__ = "demonstrations"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id"),
        UniqueConstraint("task_id", "user_id"),
        Index("ix_demonstrations_project_status", "project_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("ranking_tasks.id", ondelete="SET NULL"), index=True)
    """The demonstration task it was written on (None: uploaded)."""
    assignment_id: Mapped[int | None] = mapped_column(ForeignKey("assignments.id", ondelete="SET NULL"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    """The author (None: uploaded)."""
    external_id: Mapped[str | None] = mapped_column(String(200))
    """The uploader's id for the row: uploading the same file twice stores it once."""
    response: Mapped[str] = mapped_column(Text)
    """The assistant turn as written (markdown source)."""
    response_html: Mapped[str] = mapped_column(Text, default="")
    """`response` rendered and sanitised when stored (app/markdown.py), like completions.text_html."""
    draft_completion_id: Mapped[int | None] = mapped_column(ForeignKey("completions.id", ondelete="SET NULL"))
    """The model draft the labeler started from, if they did."""
    edit_distance: Mapped[int | None] = mapped_column(Integer)
    """Levenshtein distance in characters from the draft (None without a draft)."""
    time_spent_ms: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=DemonstrationStatus.accepted)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    review_comment: Mapped[str] = mapped_column(Text, default="")
    reviewed_response: Mapped[str | None] = mapped_column(Text)
    """A reviewer's edit; it replaces `response` for training."""
    source: Mapped[str] = mapped_column(String(16), default=DemonstrationSource.labeler)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    prompt = relationship("Prompt", lazy="joined")

    @property
    def training_response(self) -> str:
        return self.reviewed_response if self.reviewed_response is not None else self.response
