"""Projects, their members, prompts and completions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql import false

from app.db import Base
from app.models._types import JSONType, UTCDateTime, utcnow

DEFAULT_FLAGS = ["unsafe", "factually_wrong", "off_topic"]


class FeedbackForm(StrEnum):
    """How a project's labelers judge completions (issue 15); its tasks are of that kind
    (ranking_tasks.kind, app/labeling/task_types.py). Chosen at creation."""

    ranking = "ranking"
    """Order 4–9 completions, ties allowed."""
    pairwise = "pairwise"
    """A/B with tie and both bad; sides shuffled per labeler. Stored as a Ranking."""
    likert = "likert"
    """Each completion rated 1..N (form_settings: likert_points, likert_labels)."""
    multi_aspect = "multi_aspect"
    """Each completion rated (or the completions ranked) on each admin-defined aspect."""
    good_bad = "good_bad"
    """Each completion judged good or bad (KTO's unpaired data)."""


class HandoutOrder(StrEnum):
    """Which open task a labeler gets next (app/labeling/handout.py); a project setting."""

    default = "default"
    """The oldest open task first (by id): the order of upload or generation."""
    uncertainty = "uncertainty"
    """Highest disagreement of an ensemble of score heads on the task's completions first."""
    margin = "margin"
    """Smallest reward margin between the task's completions first."""
    information = "information"
    """The task whose ranking is expected to teach the reward model most about the open tasks
    first: a Laplace posterior of a score head, batches chosen greedily (docs/active-learning.md)."""


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (
        # The form sets the range within 1–9 (app/projects/forms_config.py: ranking 4–9, pairwise 2).
        CheckConstraint("k_min >= 1 AND k_max <= 9 AND k_min <= k_max", name="k_range"),
        CheckConstraint("overlap >= 1", name="overlap_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    guidelines: Mapped[str] = mapped_column(Text, default="")
    """Markdown shown beside every task."""
    k_min: Mapped[int] = mapped_column(Integer, default=4)
    k_max: Mapped[int] = mapped_column(Integer, default=9)
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    """Independent rankings wanted per task."""
    lease_minutes: Mapped[int] = mapped_column(Integer, default=30)
    flags: Mapped[list[str]] = mapped_column(JSONType, default=lambda: list(DEFAULT_FLAGS))
    """Per-completion flags a labeler can set."""
    demonstration_review: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Demonstrations wait for a second labeler's review before they train (app/demonstrations)."""
    feedback_form: Mapped[str] = mapped_column(String(16), default=FeedbackForm.ranking, server_default="ranking")
    """A FeedbackForm: the kind of the project's ranking tasks. Fixed once the project has tasks."""
    form_settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, server_default="{}")
    """The form's options (app/projects/forms_config.py): likert_points, likert_labels; aspects
    [{name, label, scale}], overall_ranking. Empty for ranking and pairwise."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    handout_order: Mapped[str] = mapped_column(String(16), default=HandoutOrder.default, server_default="default")
    """A HandoutOrder. Any but "default" hands out open tasks by ranking_tasks.handout_priority."""
    priority_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL", use_alter=True)
    )
    """The reward model whose features scored the tasks at the last refresh. use_alter: model
    versions point at their project too (app/backup restores this column in a second pass)."""
    priority_method: Mapped[str | None] = mapped_column(String(16))
    """The HandoutOrder the last refresh computed (uncertainty, margin or information)."""
    priorities_refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    priority_stats: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, server_default="{}")
    """What the last refresh saw: {"tasks": scored, "rankings": fitted on, "heads": n, "seconds": s}."""


class ProjectMember(Base):
    """A labeler sees and labels only the projects they belong to (admins see all)."""

    __tablename__ = "project_members"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)


class PromptSplit(StrEnum):
    train = "train"
    validation = "validation"
    eval = "eval"
    """The project's fixed evaluation set: never generated for ranking, never trained on."""


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("project_id", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    text: Mapped[str | None] = mapped_column(Text)
    """A plain-text prompt; None when `messages` holds a chat."""
    messages: Mapped[list[dict[str, str]] | None] = mapped_column(JSONType)
    """Chat turns [{"role": "system"|"user"|"assistant", "content": str}]; the last is the user's."""
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    split: Mapped[str] = mapped_column(String(16), default=PromptSplit.train)
    """train, validation (held out of RM training, measures its accuracy) or eval (the fixed
    evaluation set: no round takes it; only evaluations and eval metrics use it)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    completions: Mapped[list[Completion]] = relationship(back_populates="prompt", order_by="Completion.id")


class CompletionSource(StrEnum):
    upload = "upload"
    model = "model"


class Completion(Base):
    __tablename__ = "completions"

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default=CompletionSource.upload)
    model_name: Mapped[str] = mapped_column(String(200), default="")
    """Free-form name of the model that wrote an uploaded completion."""
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), index=True
    )
    """Set when one of ranklab's own policies generated it (lineage)."""
    generation_params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    token_count: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    """eos or length, for generated completions."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    text_html: Mapped[str | None] = mapped_column(Text)
    """`text` rendered when stored (app/markdown.py), shown as is if html_renderer is current."""
    html_renderer: Mapped[int | None] = mapped_column(SmallInteger)
    """app.markdown.RENDERER_VERSION that made text_html."""

    prompt: Mapped[Prompt] = relationship(back_populates="completions")
