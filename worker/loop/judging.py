"""A judge run (Celery task JUDGE_RUN): the project's AI judge ranks its tasks, each task stored
in a transaction of its own through app/judges/store.py.

A run's life: claim (conditional UPDATE: pending, or running with a stale heartbeat → running) →
the task list (ranking tasks the judge version has not judged: open ones in slot mode; open and
complete ones in compare mode, since agreement needs the tasks humans finished) → per task: every
presentation order answered (worker/ml/judge.py), combined, stored, progress and heartbeat
written → done. An endpoint that stays down after its retries fails the run with a message that
says so; the task it was on stores nothing, the tasks before it stay judged, and a new run picks
up where it stopped. Neither prompts, completions nor answers are logged; the API key is read from
the worker's environment and never stored or logged.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session, object_session

from app.judges.store import STORED, already_judged, record_verdict
from app.models import Project, Prompt, RankingTask, TaskStatus, utcnow
from app.models.judges import Judge, JudgeMode, JudgeRun, JudgeRunStatus
from worker.loop import runtime
from worker.loop.judge_deciders import make_judge
from worker.loop.judge_endpoint import EndpointDown, EndpointJudge  # noqa: F401  (EndpointDown: callers catch it here)

log = logging.getLogger(__name__)
SessionFactory = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True)
class JudgeSettings:
    """The judge's row, read inside a session and used after it closed."""

    judge_id: int
    user_id: int
    kind: str
    model_path: str
    endpoint_url: str
    endpoint_model: str
    api_key_env: str
    template: str
    orders: int
    mode: str
    max_attempts: int
    requests_per_minute: float
    form: str = "ranking"
    """The project's feedback form: a ranking form, or a rating form of judge_forms.RATING_FORMS."""
    form_settings: dict[str, Any] = field(default_factory=dict)


def run(run_id: int, *, session: SessionFactory | None = None, backoff_seconds: float = 1.0) -> dict[str, Any]:
    """The task body. `session`: a unit of work (commit on success); the worker's by default."""
    unit = session or runtime.db_session
    token = uuid.uuid4().hex
    if not _claim(unit, run_id, token):
        return {"run_id": run_id, "skipped": "not pending (or running elsewhere with a fresh heartbeat)"}
    try:
        return _judge_all(unit, run_id, token, backoff_seconds)
    except Exception as exc:  # mark the run failed with the reason, then re-raise (never swallowed)
        with unit() as db:
            db.execute(
                update(JudgeRun)
                .where(JudgeRun.id == run_id, JudgeRun.claim_token == token)
                .values(
                    status=JudgeRunStatus.failed,
                    error_message=f"{type(exc).__name__}: {exc}"[:4000],
                    finished_at=utcnow(),
                )
            )
        log.warning("judge run %s failed: %s", run_id, type(exc).__name__)
        raise


def _claim(unit: SessionFactory, run_id: int, token: str) -> bool:
    cutoff = utcnow() - timedelta(seconds=runtime.settings().round_stale_seconds)
    with unit() as db:
        result = db.execute(
            update(JudgeRun)
            .where(
                JudgeRun.id == run_id,
                or_(
                    JudgeRun.status == JudgeRunStatus.pending,
                    (JudgeRun.status == JudgeRunStatus.running) & (JudgeRun.heartbeat_at < cutoff),
                ),
            )
            .values(status=JudgeRunStatus.running, claim_token=token, heartbeat_at=utcnow(), started_at=utcnow())
        )
        return cast(CursorResult, result).rowcount == 1


def _judge_all(unit: SessionFactory, run_id: int, token: str, backoff_seconds: float) -> dict[str, Any]:
    # 1. What to judge and how (read once; models load and calls run outside any transaction).
    with unit() as db:
        judge_row = db.get_one(Judge, db.get_one(JudgeRun, run_id).judge_id)
        cfg = settings_of(judge_row)
        task_ids = _task_ids(db, cfg)
    return judge_tasks(unit, run_id, token, cfg, task_ids, backoff_seconds)


def judge_tasks(
    unit: SessionFactory,
    run_id: int,
    token: str,
    cfg: JudgeSettings,
    task_ids: list[int],
    backoff_seconds: float = 1.0,
    on_task: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Judges `task_ids` as the claimed run `run_id` (claim_token `token`) and marks it done.
    Also the body of an AI-labelled round (worker/loop/round_judging.py), which passes the
    round's tasks, slot mode, and `on_task(done, total)` for the round's progress bar."""
    with unit() as db:
        db.execute(update(JudgeRun).where(JudgeRun.id == run_id).values(task_ids=len(task_ids)))
    counts = {"judged": 0, "unparseable": 0, "undecided": 0, "no_slot": 0, "already": 0}
    # 2. The judge: a local model (constrained scoring) or the endpoint (free text, parsed).
    decide, close, client = make_judge(cfg, backoff_seconds)
    try:
        for done, task_id in enumerate(task_ids):
            if on_task is not None:
                on_task(done, len(task_ids))
            # 3. Every presentation order answered before anything is stored for the task.
            with unit() as db:
                if already_judged(db, task_id=task_id, user_id=cfg.user_id):
                    counts["already"] += 1
                    continue
                prompt, ids, texts = _task_content(db, task_id)
            decision = decide(prompt, texts)
            # 4. One transaction per task: verdict (+ ranking or ratings) and progress together.
            with unit() as db:
                stored = record_verdict(
                    db,
                    run_id=run_id,
                    user_id=cfg.user_id,
                    task_id=task_id,
                    mode=cfg.mode,
                    outcome=decision.outcome,
                    shown=[ids[i] for i in decision.shown],
                    **decision.stored_as(ids),
                )
                counts["judged" if stored == STORED else stored] += 1
                _progress(db, run_id, token, counts, client)
    finally:
        close()
    # 5. Done.
    with unit() as db:
        _progress(db, run_id, token, counts, client, status=JudgeRunStatus.done)
    return {"run_id": run_id, "tasks": len(task_ids), **counts}


def settings_of(judge: Judge) -> JudgeSettings:
    """The judge's settings and its project's form (read through the judge row's session)."""
    if judge.user_id is None:
        raise RuntimeError("the judge has no AI labeler account; save the judge again")
    db = object_session(judge)
    assert db is not None, "settings_of reads the project through the judge's session"
    form, form_settings = db.execute(
        select(Project.feedback_form, Project.form_settings).where(Project.id == judge.project_id)
    ).one()
    return JudgeSettings(
        judge.id,
        judge.user_id,
        judge.kind,
        judge.model_path,
        judge.endpoint_url,
        judge.endpoint_model,
        judge.api_key_env,
        judge.prompt_template,
        judge.orders,
        judge.mode,
        judge.max_attempts,
        judge.requests_per_minute,
        form,
        dict(form_settings or {}),
    )


def _task_ids(db: Session, cfg: JudgeSettings) -> list[int]:
    project_id, form = db.execute(
        select(Project.id, Project.feedback_form)
        .join(Judge, Judge.project_id == Project.id)
        .where(Judge.id == cfg.judge_id)
    ).one()
    statuses = [TaskStatus.open] if cfg.mode == JudgeMode.slot else [TaskStatus.open, TaskStatus.complete]
    return list(
        db.scalars(
            select(RankingTask.id)
            .where(
                RankingTask.project_id == project_id,
                RankingTask.kind == form,  # ranking, or pairwise (a ranking of two)
                RankingTask.status.in_(statuses),
            )
            .order_by(RankingTask.id)
        )
    )


def _task_content(db: Session, task_id: int) -> tuple[str, list[int], list[str]]:
    task = db.get_one(RankingTask, task_id)
    prompt = db.get_one(Prompt, task.prompt_id)
    if prompt.text is not None:
        text = prompt.text
    else:
        text = "\n\n".join(f"{turn['role']}: {turn['content']}" for turn in prompt.messages or [])
    return text, [item.completion_id for item in task.items], [item.completion.text for item in task.items]


def _progress(
    db: Session,
    run_id: int,
    token: str,
    counts: dict[str, int],
    client: EndpointJudge | None,
    status: str | None = None,
) -> None:
    values: dict[str, Any] = {**counts, "heartbeat_at": utcnow()}
    if client is not None:
        values.update(calls=client.calls, retries=client.retries)
    if status is not None:
        values.update(status=status, finished_at=utcnow(), claim_token=None)
    result = db.execute(update(JudgeRun).where(JudgeRun.id == run_id, JudgeRun.claim_token == token).values(**values))
    if cast(CursorResult, result).rowcount != 1:
        raise runtime.Cancelled(f"judge run {run_id} is no longer this worker's; it stops here")
