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
import os
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import httpx
from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from app.judges.store import STORED, UNDECIDED, UNPARSEABLE, already_judged, record_verdict
from app.models import Project, Prompt, RankingTask, TaskStatus, utcnow
from app.models.judges import Judge, JudgeKind, JudgeMode, JudgeRun, JudgeRunStatus
from app.rounds.lifecycle import BUNDLED_MODEL
from worker.loop import runtime
from worker.ml import judge as judge_ml

log = logging.getLogger(__name__)
SessionFactory = Callable[[], AbstractContextManager[Session]]


class EndpointDown(RuntimeError):
    """The judge endpoint did not answer within max_attempts (or refused the request)."""


@dataclass
class EndpointJudge:
    """An OpenAI-compatible /chat/completions endpoint, called with retries and a rate limit."""

    url: str
    model: str
    api_key: str | None
    max_attempts: int = 4
    requests_per_minute: float = 60.0
    backoff_seconds: float = 1.0
    """First wait after a failed call; doubles per try (a 429's Retry-After wins when given)."""
    timeout_seconds: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    calls: int = 0
    retries: int = 0
    _last_call: float = float("-inf")

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.Client(timeout=self.timeout_seconds, headers=headers)

    def close(self) -> None:
        self._client.close()

    def ask(self, rendered: str) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": rendered}],
            "temperature": 0,
            "max_tokens": 64,
        }
        endpoint = self.url.rstrip("/") + "/chat/completions"
        problem = ""
        for attempt in range(self.max_attempts):
            if attempt:
                self.retries += 1
            self._wait_for_rate_limit()
            self.calls += 1
            wait = self.backoff_seconds * 2**attempt
            try:
                response = self._client.post(endpoint, json=body)
            except httpx.HTTPError as exc:  # refused, reset, timed out
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return str(response.json()["choices"][0]["message"]["content"] or "")
                problem = f"HTTP {response.status_code}"
                if response.status_code == 429:
                    wait = max(wait, float(response.headers.get("retry-after") or 0))
                elif response.status_code < 500:  # 401, 404...: asking again will not help
                    raise EndpointDown(
                        f"judge endpoint {endpoint} refused the request ({problem}: {response.text[:200]}); "
                        "check the model name and the API key variable"
                    )
            if attempt + 1 < self.max_attempts:
                self.sleep(wait)
        raise EndpointDown(f"judge endpoint {endpoint} did not answer after {self.max_attempts} tries ({problem})")

    def _wait_for_rate_limit(self) -> None:
        gap = 60.0 / self.requests_per_minute - (time.monotonic() - self._last_call)
        if gap > 0:
            self.sleep(gap)
        self._last_call = time.monotonic()


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
    decide, close, client = _make_judge(cfg, backoff_seconds)
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
            outcome, groups, shown, answers = decide(prompt, texts)
            # 4. One transaction per task: verdict (+ ranking) and progress together.
            with unit() as db:
                stored = record_verdict(
                    db,
                    run_id=run_id,
                    user_id=cfg.user_id,
                    task_id=task_id,
                    mode=cfg.mode,
                    groups=None if groups is None else [[ids[i] for i in group] for group in groups],
                    outcome=outcome,
                    shown=[ids[i] for i in shown],
                    orders=_orders_text(answers, ids),
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
    if judge.user_id is None:
        raise RuntimeError("the judge has no AI labeler account; save the judge again")
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


Decision = tuple[str, list[list[int]] | None, list[int], list[list[int]]]
"""(outcome, groups of task indices or None, the first order shown, each order's answer as task
indices best first): what a judge concluded about one task."""
Decide = Callable[[str, list[str]], Decision]


def _by_orders(ask: Callable[[str, int], list[int] | None], cfg: JudgeSettings) -> Decide:
    """The ranking prompt in each presentation order, the answers combined by mean place."""

    def decide(prompt: str, texts: list[str]) -> Decision:
        k = len(texts)
        answers: list[list[int]] = []
        shown_orders = judge_ml.presentation_orders(k, cfg.orders)
        for shown in shown_orders:
            rendered = judge_ml.render_prompt(cfg.template, prompt=prompt, completions=[texts[i] for i in shown])
            answer = ask(rendered, k)
            if answer is None:  # nothing of the task is stored, not even the orders that parsed
                return UNPARSEABLE, None, shown_orders[0], answers
            answers.append(judge_ml.to_task_order(answer, shown))
        groups = judge_ml.combine_orders(answers, k)
        return (UNDECIDED if len(groups) == 1 else STORED), groups, shown_orders[0], answers

    return decide


def _pointwise(local: judge_ml.LocalJudge) -> Decide:
    """Each completion scored alone (LocalJudge.scores): order-free, one pass per completion."""

    def decide(prompt: str, texts: list[str]) -> Decision:
        groups = judge_ml.groups_by_score(local.scores(prompt, texts))
        given = list(range(len(texts)))
        return (UNDECIDED if len(groups) == 1 else STORED), groups, given, [[i for g in groups for i in g]]

    return decide


def _orders_text(answers: list[list[int]], ids: list[int]) -> str:
    return ";".join(",".join(str(ids[i]) for i in answer) for answer in answers)


def _make_judge(cfg: JudgeSettings, backoff_seconds: float) -> tuple[Decide, Callable[[], None], EndpointJudge | None]:
    """(decide(prompt, texts), close(), the endpoint client if any)."""
    if cfg.kind == JudgeKind.endpoint:
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        client = EndpointJudge(
            url=cfg.endpoint_url,
            model=cfg.endpoint_model,
            api_key=key,
            max_attempts=cfg.max_attempts,
            requests_per_minute=cfg.requests_per_minute,
            backoff_seconds=backoff_seconds,
        )

        def ask_endpoint(rendered: str, k: int) -> list[int] | None:
            # An answer that does not parse is asked for again (the endpoint may sample), then skipped.
            for _ in range(cfg.max_attempts):
                order = judge_ml.parse_ranking(client.ask(rendered), k)
                if order is not None:
                    return order
            return None

        return _by_orders(ask_endpoint, cfg), client.close, client
    from worker.loop.configs import base_model_path

    local = judge_ml.LocalJudge.load(base_model_path(cfg.model_path or BUNDLED_MODEL))
    decide = _pointwise(local) if cfg.kind == JudgeKind.local_pointwise else _by_orders(local.rank, cfg)
    return decide, lambda: None, None


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
