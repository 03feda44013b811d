"""AI judges (issue 16): one per project, its runs over the project's open tasks, and what each
run did with each task. The judgments themselves are Rankings by the judge's AI labeler account."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models._types import UTCDateTime, utcnow

AI_ROLE = "ai"
"""users.role of an AI labeler account: it cannot log in (no usable password, inactive) and is
never handed a task; its rankings are written by a judge run."""


class JudgeKind(StrEnum):
    local = "local"
    """A transformers model folder on the worker answering the ranking prompt (worker/ml/judge.py
    LocalJudge.rank: constrained to the numbers, in each presentation order)."""
    local_pointwise = "local_pointwise"
    """The same model asked "is this answer correct and helpful?" about each completion alone,
    ranked by log p(Yes) - log p(No) (LocalJudge.scores): no position bias, no template."""
    endpoint = "endpoint"
    """An OpenAI-compatible /chat/completions endpoint (vLLM, TGI, Ollama, any provider)."""


class JudgeMode(StrEnum):
    compare = "compare"
    """Only compared with humans: never takes one of a task's overlap slots (the default)."""
    slot = "slot"
    """Counts as one of the task's overlap slots, when one is free (RLAIF); never displaces a human."""


class JudgeRunStatus(StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class Judge(Base):
    __tablename__ = "judges"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer, default=1)
    """Bumped whenever what judges changes (model, endpoint, template, orders): each version has
    its own AI labeler account, so older judgments keep the name of the judge that made them."""
    kind: Mapped[str] = mapped_column(String(16), default=JudgeKind.local_pointwise)
    model_path: Mapped[str] = mapped_column(Text, default="")
    """local: the model folder on the worker ('' = the bundled base model)."""
    endpoint_url: Mapped[str] = mapped_column(Text, default="")
    """endpoint: the base URL, e.g. http://vllm:8000/v1 (/chat/completions is appended)."""
    endpoint_model: Mapped[str] = mapped_column(String(200), default="")
    api_key_env: Mapped[str] = mapped_column(String(100), default="")
    """Name of the worker's environment variable holding the API key ('' = none). The key itself
    is never stored or shown; the name must start RANKLAB_JUDGE_ or be OPENAI_API_KEY, so an
    admin cannot send another secret of the server to an endpoint of their choosing."""
    prompt_template: Mapped[str] = mapped_column(Text)
    orders: Mapped[int] = mapped_column(Integer, default=2)
    """Presentation orders per task (the given one, its reverse, rotations), combined by mean place."""
    mode: Mapped[str] = mapped_column(String(16), default=JudgeMode.compare)
    show_suggestion: Mapped[bool] = mapped_column(Boolean, default=False)
    """Human labelers see the judge's answer (order or ratings) as a suggestion (off by default)."""
    max_attempts: Mapped[int] = mapped_column(Integer, default=4)
    """Endpoint calls per request before the run fails (backoff doubles from 1 s); also the tries
    for an answer that does not parse before the task is skipped."""
    requests_per_minute: Mapped[float] = mapped_column(Float, default=60.0)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    """The AI labeler account of the current version."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JudgeRun(Base):
    """One run of a judge over the project's open tasks (a Celery task on the worker)."""

    __tablename__ = "judge_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    judge_id: Mapped[int] = mapped_column(ForeignKey("judges.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    """The AI labeler account (judge version) this run writes as."""
    round_id: Mapped[int | None] = mapped_column(ForeignKey("training_rounds.id", ondelete="SET NULL"), index=True)
    """Set for the run of an AI-labelled round's judging step (worker/loop/round_judging.py): the
    round's own step claims, beats and retries it, so the judge-run sweep leaves it alone."""
    status: Mapped[str] = mapped_column(String(16), default=JudgeRunStatus.pending)
    task_ids: Mapped[int] = mapped_column(Integer, default=0)
    """How many tasks the run covers (the open tasks when it started)."""
    judged: Mapped[int] = mapped_column(Integer, default=0)
    unparseable: Mapped[int] = mapped_column(Integer, default=0)
    """Tasks skipped because no answer parsed within max_attempts."""
    undecided: Mapped[int] = mapped_column(Integer, default=0)
    """Tasks whose orders cancelled into a full tie (pure position bias): nothing stored."""
    no_slot: Mapped[int] = mapped_column(Integer, default=0)
    """slot mode: tasks whose overlap humans already filled (the judge never displaces them)."""
    already: Mapped[int] = mapped_column(Integer, default=0)
    """Tasks this judge version had judged before (a rerun skips them)."""
    calls: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JudgeVerdict(Base):
    """What a judge version concluded about one task: the ranking it stored (if any), whether it
    took an overlap slot, and the raw order of each presentation (for position-bias analysis)."""

    __tablename__ = "judge_verdicts"
    __table_args__ = (UniqueConstraint("task_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("judge_runs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("ranking_tasks.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    ranking_id: Mapped[int | None] = mapped_column(ForeignKey("rankings.id", ondelete="CASCADE"), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    """stored, unparseable, undecided or no_slot."""
    counted: Mapped[bool] = mapped_column(Boolean, default=False)
    """The ranking took one of the task's overlap slots (slot mode); otherwise it is compare-only
    and must not train or count as a human's ranking."""
    orders: Mapped[str] = mapped_column(Text, default="")
    """Each presentation's answer as completion ids best first, ';'-separated (e.g. "3,1,2;2,1,3")."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
