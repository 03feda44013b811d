"""Celery tasks: thin wrappers that take ids, load rows, call worker.ml, and write status."""
from __future__ import annotations

from worker.celery_app import PING, celery_app


@celery_app.task(name=PING)
def ping(value: str = "pong") -> str:
    """Health check: proves a worker is consuming the queue."""
    return value
