"""The sweep: re-enqueue steps whose worker died, and auto-start rounds whose labeling is done.

A running step touches heartbeat_at every few seconds; a finished step clears it. So a running
status with an old heartbeat means its worker was killed (SIGKILL, OOM, power): the message it
held is gone or stuck (kombu's SQL transport never redelivers it; Redis only after its visibility
timeout), and the step is enqueued again. At a worker's start-up, running rounds with no
heartbeat at all are enqueued again too (their message may have been lost with the broker or
never sent); a duplicate delivery is a no-op because every step checks status and claim first.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update

from app.models import TrainingRound, utcnow
from app.rounds import lifecycle
from app.rounds.lifecycle import RUNNING
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
    return {"requeued": requeued, "auto_started": started}


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
                if result["requeued"] or result["auto_started"]:
                    log.info("round sweep: %s", result)
                startup = False
            except Exception:
                log.exception("round sweep failed")
            if self.stopping.wait(settings().round_sweep_seconds):
                return
