"""The sweep: re-enqueue steps and training jobs whose worker died, and auto-start rounds whose
labeling is done.

A running step touches heartbeat_at every few seconds; a finished step clears it. So a running
status with an old heartbeat means its worker was killed (SIGKILL, OOM, power): the message it
held is gone or stuck (kombu's SQL transport never redelivers it; Redis only after its visibility
timeout), and the step is enqueued again. At a worker's start-up, running rounds with no
heartbeat at all are enqueued again too (their message may have been lost with the broker or
never sent); a duplicate delivery is a no-op because every step checks status and claim first.
Training jobs (app/models/jobs.py, e.g. SFT) follow the same rule: running with a stale heartbeat,
or at start-up pending/running with none, is enqueued again. So do a project's AI judge runs
(app/models/judges.py JudgeRun; a round's own judge run is the round step's, recovered with it).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update

from app.models import TrainingRound, utcnow
from app.models.jobs import TrainingJob
from app.models.judges import JudgeRun, JudgeRunStatus
from app.rounds import lifecycle
from app.rounds.lifecycle import RUNNING
from app.rounds.queue import enqueue_on_commit
from app.sft import jobs
from worker.celery_app import GENERATE, JUDGE_RUN, queue_for
from worker.loop.runtime import db_session, settings

log = logging.getLogger(__name__)


def sweep(*, startup: bool = False) -> dict[str, Any]:
    cutoff = utcnow() - timedelta(seconds=settings().round_stale_seconds)
    dead = TrainingRound.heartbeat_at < cutoff
    requeued: list[int] = []
    with db_session() as db:
        stale = or_(dead, TrainingRound.heartbeat_at.is_(None)) if startup else dead
        for training_round in db.scalars(select(TrainingRound).where(TrainingRound.status.in_(RUNNING), stale)).all():
            # Clear the dead claim so the new delivery can take the step, and the heartbeat so the
            # next sweep waits for that delivery instead of enqueueing it again.
            db.execute(
                update(TrainingRound)
                .where(TrainingRound.id == training_round.id)
                .values(claim_token=None, heartbeat_at=None)
            )
            lifecycle.log_event(
                db,
                round_id=training_round.id,
                stage=training_round.status,
                message=f"{training_round.status}: no live worker (heartbeat stopped); enqueued again",
            )
            lifecycle.enqueue_step(db, training_round=training_round)
            requeued.append(training_round.id)
        started = lifecycle.auto_start_ready(db)
        requeued_jobs = _sweep_jobs(db, cutoff=cutoff, startup=startup)
        requeued_judge_runs = _sweep_judge_runs(db, cutoff=cutoff, startup=startup)
    return {
        "requeued": requeued,
        "auto_started": started,
        "requeued_jobs": requeued_jobs,
        "requeued_judge_runs": requeued_judge_runs,
    }


def _sweep_jobs(db, *, cutoff, startup: bool) -> list[int]:
    """Jobs whose worker died: running with a stale heartbeat; at start-up also pending or running
    ones with none (their message may be lost). The claim is cleared so the new delivery takes it."""
    dead = (TrainingJob.status == jobs.J.running) & (TrainingJob.heartbeat_at < cutoff)
    if startup:
        dead = dead | (TrainingJob.status.in_((jobs.J.pending, jobs.J.running)) & TrainingJob.heartbeat_at.is_(None))
    found: list[int] = []
    for job in db.scalars(select(TrainingJob).where(dead)).all():
        # Conditional on the row still looking dead: a delivery may have claimed it since the
        # SELECT, and clearing its fresh claim would let a third run start beside it.
        result = db.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job.id, dead)
            .values(claim_token=None, heartbeat_at=None)
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult, result).rowcount != 1:
            continue
        jobs.log_event(db, job_id=job.id, message=f"{job.status}: no live worker (heartbeat stopped); enqueued again")
        jobs.enqueue(db, job=job)
        found.append(job.id)
    return found


def _sweep_judge_runs(db, *, cutoff, startup: bool) -> list[int]:
    """A project's judge runs whose worker died, as _sweep_jobs: running with a stale heartbeat;
    at start-up also pending or running with none. The run goes back to pending with no claim, so
    the new delivery claims it (judging.run takes pending runs) and skips the tasks it judged; the
    dead worker, if it was only slow, finds its claim gone at its next task and stops there."""
    live = (JudgeRunStatus.pending, JudgeRunStatus.running)
    dead = (JudgeRun.status == JudgeRunStatus.running) & (JudgeRun.heartbeat_at < cutoff)
    if startup:
        dead = dead | (JudgeRun.status.in_(live) & JudgeRun.heartbeat_at.is_(None))
    dead = dead & JudgeRun.round_id.is_(None)  # an AI-labelled round's run: its round step owns it
    found: list[int] = []
    for run_id in db.scalars(select(JudgeRun.id).where(dead)).all():
        # Conditional on the row still looking dead (a delivery may have claimed it since).
        result = db.execute(
            update(JudgeRun)
            .where(JudgeRun.id == run_id, dead)
            .values(status=JudgeRunStatus.pending, claim_token=None, heartbeat_at=None)
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult, result).rowcount != 1:
            continue
        enqueue_on_commit(db, JUDGE_RUN, run_id, queue=queue_for(GENERATE, settings()))
        found.append(run_id)
    return found


class SweepThread(threading.Thread):
    """Runs `sweep` at a worker's start-up and then every Settings.round_sweep_seconds."""

    def __init__(self) -> None:
        super().__init__(name="ranklab-round-sweep", daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        startup = True
        while True:
            try:
                result = sweep(startup=startup)
                if any(result.values()):
                    log.info("round sweep: %s", result)
                startup = False
            except Exception:
                log.exception("round sweep failed")
            if self.stopping.wait(settings().round_sweep_seconds):
                return
