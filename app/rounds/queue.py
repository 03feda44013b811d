"""Enqueue Celery tasks by name, only after the database commit that made them meaningful.

`enqueue_on_commit(db, ...)` collects the message on the session; a session-wide `after_commit`
hook sends it, and a rollback drops it, so a failed request (or task) enqueues nothing and a
worker never picks up an id whose row is not committed yet. Importing worker.celery_app is fine
here: it pulls in Celery, never torch or worker.tasks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

_PENDING = "ranklab.pending_tasks"
_SETTINGS = "settings"
"""Session.info key: the Settings whose broker the session's tasks go to (app.main sets it on the
sessionmaker; the worker's sessionmaker too). Without it, get_settings() decides."""
BROKER_TIMEOUT_SECONDS = 3.0


class QueueUnreachable(Exception):
    """The broker did not answer; the request that needed it must fail as a whole."""


@dataclass(frozen=True)
class Message:
    name: str
    args: tuple
    queue: str


@lru_cache(maxsize=8)
def _celery(broker: str, backend: str, data_dir: str):
    from worker.celery_app import make_celery

    return make_celery(Settings(broker_url=broker, result_backend=backend, data_dir=data_dir, _env_file=None))


def celery_for(settings: Settings):
    """One Celery app per broker (tests run several settings in one process)."""
    from worker.celery_app import broker_url, result_backend

    return _celery(broker_url(settings), result_backend(settings), str(settings.data_dir))


def settings_of(db: Session) -> Settings:
    return db.info.get(_SETTINGS) or get_settings()


def enqueue_on_commit(db: Session, name: str, *args, queue: str) -> None:
    db.info.setdefault(_PENDING, []).append(Message(name, tuple(args), queue))


def pending(db: Session) -> list[Message]:
    """What this session will send when it commits (for tests and logging)."""
    return list(db.info.get(_PENDING, []))


def check_reachable(settings: Settings, timeout: float = BROKER_TIMEOUT_SECONDS) -> None:
    """Connect to the broker once, quickly; QueueUnreachable when it does not answer."""
    app = celery_for(settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
    except Exception as exc:  # kombu raises OperationalError, socket errors, timeouts...
        raise QueueUnreachable(f"task queue unreachable — is Redis running? ({type(exc).__name__}: {exc})") from exc


def send_now(settings: Settings, messages: list[Message]) -> None:
    app = celery_for(settings)
    for message in messages:
        app.send_task(message.name, args=list(message.args), queue=message.queue)


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    messages = session.info.pop(_PENDING, None)
    if not messages:
        return
    try:
        send_now(settings_of(session), messages)
    except Exception:
        # The data is committed; the round shows no progress and its heartbeat stays empty, so
        # a worker's start-up sweep or an admin's retry enqueues the step again (docs/loop.md).
        log.exception("could not enqueue %s after commit", [m.name for m in messages])


@event.listens_for(Session, "after_rollback")
def _drop_after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
