"""What a training job's worker run shares (the round steps' runtime.py, for training_jobs):
claiming, the heartbeat, throttled progress with cancellation, loss points, failure marking.

A run's life: claim (conditional UPDATE: pending, or running with a dead claim → running) →
heartbeat thread while it works → the result, lineage and `done` in one final transaction.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update

from app.models import utcnow
from app.models.jobs import TrainingJob
from app.sft import jobs
from app.sft.jobs import J
from worker.loop.runtime import (
    PROGRESS_SECONDS,
    BeatThread,
    Cancelled,
    db_session,
    inject_fault,
    settings,
    stall_if_injected,
)

log = logging.getLogger(__name__)
RUNNABLE = (J.pending, J.running)
STALL_STEP = "sft"
"""RANKLAB_FAULT_INJECT=sft:stall stops a job mid-training (runtime.stall_if_injected); =sft fails it."""


def claim(job_id: int, token: str) -> bool:
    """Take the job unless another live run holds it (running with a fresh heartbeat)."""
    cutoff = utcnow() - timedelta(seconds=settings().round_stale_seconds)
    with db_session() as db:
        result = db.execute(
            update(TrainingJob)
            .where(
                TrainingJob.id == job_id,
                TrainingJob.status.in_(RUNNABLE),
                or_(
                    TrainingJob.claim_token.is_(None),
                    TrainingJob.heartbeat_at.is_(None),
                    TrainingJob.heartbeat_at < cutoff,
                ),
            )
            .values(
                status=J.running,
                claim_token=token,
                heartbeat_at=utcnow(),
                started_at=utcnow(),
                current_step="starting",
                progress=0.0,
                eta_seconds=None,
            )
        )
        won = cast(CursorResult, result).rowcount == 1
        if won:
            jobs.log_event(db, job_id=job_id, message=f"started (run {token[:8]})")
    return won


class JobHeartbeat(BeatThread):
    """Touches a job's heartbeat_at while it runs and holds the claim."""

    def __init__(self, job_id: int, token: str):
        self.job_id, self.token = job_id, token
        super().__init__(f"heartbeat-job-{job_id}")

    def beat(self) -> None:
        with db_session() as db:
            db.execute(
                update(TrainingJob)
                .where(TrainingJob.id == self.job_id, TrainingJob.claim_token == self.token)
                .values(heartbeat_at=utcnow())
            )


LOSS_KEYS = ("loss", "eval_loss", "learning_rate", "epoch")
"""Numbers of a training step's statistics kept as a metric point (the job page charts them)."""


class JobReporter:
    """worker.ml's two callbacks for a job: `reporter(done, total, stage)` (on_progress, as the
    round stages use) and `reporter.point(step, stats)` (on_step: the loss of each optimizer step,
    the held-out loss of each epoch).

    Progress and a log line are written at most every PROGRESS_SECONDS (or on a new stage); every
    loss point becomes a metric event (one per optimizer step: few at the sizes SFT runs here).
    Both raise Cancelled once the job is no longer running under this claim, so a cancel takes
    effect at the next report."""

    def __init__(self, job_id: int, token: str):
        self.job_id, self.token = job_id, token
        self._last_write = 0.0
        self._last_stage = ""
        # One ETA anchor (time, done, total) per stage: SFT alternates "train" and "evaluate" every
        # epoch, and one shared anchor, reset at each change, left no ETA when epochs are short.
        self._anchors: dict[str, tuple[float, int, int]] = {}

    def __call__(self, done: int, total: int, stage: str) -> None:
        now = time.monotonic()
        stage_key = stage.split()[0] if stage else ""
        changed = stage_key != self._last_stage
        anchor = self._anchors.get(stage_key)
        if anchor is None or total != anchor[2] or done < anchor[1]:
            self._anchors[stage_key] = (now, done, total)
        if not changed and now - self._last_write < PROGRESS_SECONDS:
            return
        self._last_write, self._last_stage = now, stage_key
        with db_session() as db:
            self._check(db)
            # The same conditions as the check, again in the UPDATE: a cancel that commits between
            # the two must not get a heartbeat written after it released the claim.
            db.execute(
                update(TrainingJob)
                .where(TrainingJob.id == self.job_id, TrainingJob.status == J.running)
                .where(TrainingJob.claim_token == self.token)
                .values(
                    progress=min(max(done / total if total else 0.0, 0.0), 1.0),
                    current_step=stage[:64],
                    eta_seconds=self._eta(stage_key, now, done, total),
                    heartbeat_at=utcnow(),
                )
            )
            jobs.log_event(db, job_id=self.job_id, step=done, message=f"{stage} ({done}/{total})")
        if 0 < done < total:
            stall_if_injected(STALL_STEP)

    def point(self, step: int, stats: dict[str, Any]) -> None:
        data = {key: float(stats[key]) for key in LOSS_KEYS if isinstance(stats.get(key), (int, float))}
        if not data:
            return
        with db_session() as db:
            self._check(db)
            jobs.log_event(db, job_id=self.job_id, kind="metric", step=int(step), data=data)

    def _check(self, db) -> None:
        status, token = db.execute(
            select(TrainingJob.status, TrainingJob.claim_token).where(TrainingJob.id == self.job_id)
        ).one()
        if status != J.running or token != self.token:
            raise Cancelled(f"job {self.job_id} is {status}; this run stops here")

    def _eta(self, stage_key: str, now: float, done: int, total: int) -> float | None:
        started, done0, _ = self._anchors[stage_key]
        if done <= done0 or total <= 0:
            return None
        return round((now - started) / (done - done0) * (total - done), 1)


def mark_failed(job_id: int, token: str, exc: BaseException) -> None:
    message = f"{type(exc).__name__}: {exc}"[:4000]
    detail = "".join(traceback.format_exception(exc))[-8000:]
    with db_session() as db:
        if jobs.transition(
            db,
            job_id=job_id,
            source=[J.running],
            target=J.failed,
            error_message=message,
            current_step="failed",
        ):
            jobs.log_event(db, job_id=job_id, message=f"failed: {message}", data={"traceback": detail})


def run_claimed(job_id: int, body: Callable[[str], dict[str, Any]], *, fault_step: str) -> dict[str, Any]:
    """Claim the job, run `body(token)` with a heartbeat, and turn the outcome into status: a
    Cancelled body ends quietly; any other error marks the job failed and re-raises."""
    token = uuid.uuid4().hex
    if not claim(job_id, token):
        with db_session(read_only=True) as db:
            status = db.scalar(select(TrainingJob.status).where(TrainingJob.id == job_id))
        return {"job_id": job_id, "skipped": f"job is {status} (or running elsewhere with a fresh heartbeat)"}
    try:
        inject_fault(fault_step)
        with JobHeartbeat(job_id, token):
            return body(token)
    except Cancelled as exc:
        with db_session() as db:
            jobs.log_event(db, job_id=job_id, message=f"stopped: {exc}")
            db.execute(
                update(TrainingJob)
                .where(TrainingJob.id == job_id, TrainingJob.claim_token == token)
                .values(claim_token=None, heartbeat_at=None)
            )
        return {"job_id": job_id, "stopped": str(exc)}
    except Exception as exc:  # not BaseException: a worker shutting down is not the job's failure
        mark_failed(job_id, token, exc)
        raise
