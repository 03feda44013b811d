"""A request a service refuses, naming the field to change; routes turn it into an HTTP answer.

Each domain subclasses `Refusal` once (RoundError, EvaluationError) and adds its 404/409/503
kinds, so its routes catch one type and every domain answers the same way."""

from __future__ import annotations

from fastapi import HTTPException

QUEUE_RETRY_AFTER_SECONDS = 10
"""Retry-After on a 503 for an unreachable broker (a Redis restart takes seconds)."""


class Refusal(Exception):
    """`field` names what to change; `status_code` is the HTTP answer (422 unless a subclass says)."""

    status_code = 422

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def retry_headers(exc: Refusal) -> dict[str, str]:
    """Retry-After for a queue that is down (it comes back by itself); nothing for the other refusals."""
    return {"Retry-After": str(QUEUE_RETRY_AFTER_SECONDS)} if exc.status_code == 503 else {}


def http_error(exc: Refusal) -> HTTPException:
    return HTTPException(exc.status_code, str(exc), headers=retry_headers(exc) or None)
