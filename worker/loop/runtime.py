"""What every round step shares: sessions, claiming a step, the heartbeat, throttled progress
with cancellation, failure marking and fault injection (artifact folders: worker/loop/artifacts.py).

A step's life: claim (conditional UPDATE) → heartbeat thread while it works → results and the
next status written in one transaction at the end. Sessions are short: nothing holds a database
transaction open while a model trains.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, NamedTuple, Self, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from app.db import session_scope, start_write_transaction
from app.models import TrainingRound, utcnow
from app.rounds import lifecycle
from app.rounds.lifecycle import S
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5.0
"""At most this long between heartbeats (and at most a third of Settings.round_stale_seconds)."""
PROGRESS_SECONDS = 2.0
"""Progress rows are written at most this often (and on a change of stage)."""


class Cancelled(Exception):
    """The round left the step's status (cancelled by an admin, or another run finished it)."""


class FaultInjected(RuntimeError):
    """Raised on purpose (Settings.fault_inject) to exercise the failure and retry path."""


def settings() -> Settings:
    return get_settings()


@contextmanager
def db_session(*, read_only: bool = False) -> Iterator[Session]:
    """One short unit of work: commit on success (then queued tasks are sent), roll back on error.

    Nearly every unit reads a status and then writes. On SQLite (WAL) a transaction that began by
    reading cannot take the write lock once another connection has committed meanwhile — our own
    heartbeat thread does every second or so — and fails at once with "database is locked",
    whatever the busy timeout; under load that failed rounds mid-training. So a unit takes the write
    lock at BEGIN, unless it only reads (`read_only`). Postgres needs none of this."""
    with session_scope() as db:
        db.info["settings"] = settings()
        if not read_only:
            start_write_transaction(db)
        yield db


def inject_fault(step: str) -> None:
    if settings().fault_inject == step:
        raise FaultInjected(f"fault injected at {step} (RANKLAB_FAULT_INJECT={step})")


def stall_if_injected(step: str) -> None:
    """RANKLAB_FAULT_INJECT=<step>:stall stops the step here, mid-work, for good: its claim stays
    held and its heartbeat keeps beating, like a live worker deep in training. Tests SIGKILL such
    a worker and know where it died, instead of racing a kill against a fast toy step."""
    if settings().fault_inject == f"{step}:stall":
        log.warning("%s stalls here on purpose (RANKLAB_FAULT_INJECT=%s:stall)", step, step)
        threading.Event().wait()


# ---- claiming and heartbeats --------------------------------------------------------------------


def claim(db: Session, *, round_id: int, step: str, token: str) -> bool:
    """Take the step unless another live run holds it (its heartbeat is fresh)."""
    cutoff = utcnow() - timedelta(seconds=settings().round_stale_seconds)
    result = db.execute(
        update(TrainingRound)
        .where(
            TrainingRound.id == round_id,
            TrainingRound.status == step,
            or_(
                TrainingRound.claim_token.is_(None),
                TrainingRound.heartbeat_at.is_(None),
                TrainingRound.heartbeat_at < cutoff,
            ),
        )
        .values(claim_token=token, heartbeat_at=utcnow(), current_step=step, progress=0.0, eta_seconds=None)
    )
    # An UPDATE gives a CursorResult (Session.execute is typed with the wider Result).
    return cast(CursorResult, result).rowcount == 1


class BeatThread:
    """A thread calling `beat()` every few seconds while a `with` block runs: the heartbeat of a
    round step or a job, including the long stretches (loading, saving) where the ML code reports
    no progress. A missed beat is harmless; the next one tries again."""

    def __init__(self, name: str):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        every = min(HEARTBEAT_SECONDS, settings().round_stale_seconds / 3)
        while not self._stop.wait(every):
            try:
                self.beat()
            except Exception:
                log.warning("%s failed", self._thread.name, exc_info=True)

    def beat(self) -> None:
        raise NotImplementedError


class Heartbeat(BeatThread):
    """Touches a round's heartbeat_at while its step runs (only while it holds the claim and is in
    one of `statuses`, when given)."""

    def __init__(self, round_id: int, *, token: str | None = None, statuses: Sequence[str] = ()):
        self.round_id, self.token, self.statuses = round_id, token, tuple(statuses)
        super().__init__(f"heartbeat-round-{round_id}")

    def beat(self) -> None:
        query = update(TrainingRound).where(TrainingRound.id == self.round_id)
        if self.token is not None:
            query = query.where(TrainingRound.claim_token == self.token)
        if self.statuses:
            query = query.where(TrainingRound.status.in_(self.statuses))
        with db_session() as db:
            db.execute(query.values(heartbeat_at=utcnow()))


# ---- progress -----------------------------------------------------------------------------------


class _EtaAnchor(NamedTuple):
    """Where the ETA counts from: the time, done and total when the stage (or its total) began."""

    started: float
    done: int
    total: int


class Reporter:
    """The `on_progress(done, total, stage)` callback handed to worker.ml.

    Writes progress, current step, ETA and a log event at most every PROGRESS_SECONDS (or when
    the stage changes), and raises Cancelled once the round has left the step's statuses, so a
    cancel takes effect at the next report."""

    def __init__(
        self,
        round_id: int,
        step: str,
        *,
        statuses: Sequence[str] | None = None,
        overall: Callable[[int, int], float] | None = None,
    ):
        self.round_id, self.step = round_id, step
        self.statuses = tuple(statuses or (step,))
        self.overall = overall or (lambda done, total: done / total if total else 0.0)
        self._last_write = 0.0
        self._last_stage = ""
        self._eta_anchor: _EtaAnchor | None = None

    def __call__(self, done: int, total: int, stage: str) -> None:
        now = time.monotonic()
        stage_key = stage.split()[0] if stage else ""
        changed = stage_key != self._last_stage
        if changed or self._eta_anchor is None or total != self._eta_anchor.total or done < self._eta_anchor.done:
            self._eta_anchor = _EtaAnchor(now, done, total)
        if not changed and now - self._last_write < PROGRESS_SECONDS:
            return
        self._last_write, self._last_stage = now, stage_key
        self.write(done, total, stage, self._eta(now, done, total))

    def _eta(self, now: float, done: int, total: int) -> float | None:
        if self._eta_anchor is None:
            return None
        started, done0, _ = self._eta_anchor
        if done <= done0 or total <= 0:
            return None
        return round((now - started) / (done - done0) * (total - done), 1)

    def write(self, done: int, total: int, stage: str, eta: float | None) -> None:
        with db_session() as db:
            status = db.scalar(select(TrainingRound.status).where(TrainingRound.id == self.round_id))
            if status not in self.statuses:
                raise Cancelled(f"round {self.round_id} is {status}; {self.step} stops here")
            # the status condition again in the UPDATE: a cancel committed since the check keeps
            # its cleared heartbeat
            db.execute(
                update(TrainingRound)
                .where(TrainingRound.id == self.round_id, TrainingRound.status.in_(self.statuses))
                .values(
                    progress=min(max(self.overall(done, total), 0.0), 1.0),
                    current_step=f"{self.step}: {stage}"[:64],
                    eta_seconds=eta,
                    heartbeat_at=utcnow(),
                )
            )
            lifecycle.log_event(
                db,
                round_id=self.round_id,
                stage=self.step,
                step=done,
                data={"done": done, "total": total, "stage": stage},
                message=f"{stage} ({done}/{total})",
            )
        if 0 < done < total:
            stall_if_injected(self.step)

    def check(self) -> None:
        """Raise Cancelled now if the round left the step (for code paths without progress)."""
        with db_session(read_only=True) as db:
            status = db.scalar(select(TrainingRound.status).where(TrainingRound.id == self.round_id))
        if status not in self.statuses:
            raise Cancelled(f"round {self.round_id} is {status}; {self.step} stops here")


# ---- running a step ------------------------------------------------------------------------------


def mark_failed(round_id: int, step: str, exc: BaseException, *, statuses: Sequence[str] | None = None) -> None:
    """failed, with the step and message the UI shows; the round N / N+1 pair fails together
    when round N+1's generation fails (round N is then in generating_next)."""
    message = f"{type(exc).__name__}: {exc}"[:4000]
    detail = "".join(traceback.format_exception(exc))[-8000:]
    with db_session() as db:
        moved = lifecycle.transition(
            db,
            round_id=round_id,
            source=statuses or (step,),
            target=S.failed,
            error_message=message,
            error_step=step,
            current_step=f"failed at {step}",
        )
        if not moved:
            return
        lifecycle.log_event(
            db, round_id=round_id, stage=step, message=f"failed at {step}: {message}", data={"traceback": detail}
        )
        training_round = db.get(TrainingRound, round_id)
        if step == S.generating and training_round is not None:
            prev = db.scalar(
                select(TrainingRound).where(
                    TrainingRound.project_id == training_round.project_id,
                    TrainingRound.number == training_round.number - 1,
                )
            )
            if prev is not None and lifecycle.transition(
                db,
                round_id=prev.id,
                source=[S.generating_next],
                target=S.failed,
                error_step=S.generating_next,
                current_step=f"failed at {S.generating_next}",
                error_message=f"generating round {training_round.number} failed: {message}"[:4000],
            ):
                lifecycle.log_event(
                    db,
                    round_id=prev.id,
                    stage=S.generating_next,
                    message=f"generating round {training_round.number} failed: {message}",
                )


def run_claimed_step(round_id: int, step: str, body: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """Claim `step` of the round, run `body(token)` with a heartbeat, and turn the outcome into
    status: a Cancelled body ends quietly; any other error marks the round failed and re-raises."""
    token = uuid.uuid4().hex
    with db_session() as db:
        status = db.scalar(select(TrainingRound.status).where(TrainingRound.id == round_id))
        if status != step:
            return {"round_id": round_id, "skipped": f"round is {status}, not {step}"}
        if not claim(db, round_id=round_id, step=step, token=token):
            return {"round_id": round_id, "skipped": f"{step} is running elsewhere (fresh heartbeat)"}
        lifecycle.log_event(db, round_id=round_id, stage=step, message=f"{step} started (run {token[:8]})")
    try:
        inject_fault(step)
        with Heartbeat(round_id, token=token):
            return body(token)
    except Cancelled as exc:
        with db_session() as db:
            lifecycle.log_event(db, round_id=round_id, stage=step, message=f"stopped: {exc}")
            db.execute(
                update(TrainingRound)
                .where(TrainingRound.id == round_id, TrainingRound.claim_token == token)
                .values(claim_token=None, heartbeat_at=None)
            )
        return {"round_id": round_id, "stopped": str(exc)}
    except Exception as exc:  # not BaseException: a worker shutting down is not the step's failure
        mark_failed(round_id, step, exc)
        raise
