"""Pooled PostgreSQL connections the server ended (restart, idle timeout, a killed backend).

A connection that sat idle is pinged before use and replaced if dead, so the request never sees
it. A connection in steady use is not pinged (a round trip per request was ~1 ms of CPU on the
labeling hot path): if the server ended it, that one statement fails as a disconnect, which the
web app answers with a 503 and SQLAlchemy follows by replacing every older pooled connection."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from app import db as app_db
from app.db import make_engine
from app.unavailable import is_unavailable
from tests import services


@pytest.fixture
def engine():
    url = services.postgres_url()
    if url is None:
        services.missing("PostgreSQL")
    engine = make_engine(url, ping="after_idle")  # as the web app's
    yield engine
    engine.dispose()


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(text("SELECT pg_backend_pid()"))


def _terminate(engine, pid: int) -> None:
    killer = make_engine(engine.url.render_as_string(hide_password=False), poolclass=NullPool)
    with killer.connect() as conn:
        assert conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    killer.dispose()
    time.sleep(0.2)  # the backend is gone once the signal is handled


def test_an_idle_connection_the_server_ended_is_replaced_before_use(engine, monkeypatch):
    monkeypatch.setattr(app_db, "PING_AFTER_IDLE_SECONDS", 0.5)
    pid = _backend_pid(engine)  # now idle in the pool
    _terminate(engine, pid)
    time.sleep(0.6)

    with engine.connect() as conn:  # pinged on checkout, found dead, replaced: no error here
        assert conn.scalar(text("SELECT pg_backend_pid()")) != pid


def test_a_busy_connection_is_not_pinged_and_a_dead_one_fails_once_as_unavailable(engine, monkeypatch):
    monkeypatch.setattr(app_db, "PING_AFTER_IDLE_SECONDS", 3600)
    pid = _backend_pid(engine)
    other_pid = None
    with engine.connect() as first, engine.connect() as second:  # two pooled connections
        other_pid = second.scalar(text("SELECT pg_backend_pid()"))
        assert pid in (first.scalar(text("SELECT pg_backend_pid()")), other_pid)
    _terminate(engine, pid)

    with pytest.raises(DBAPIError) as failed:  # not idle long enough to be pinged
        for _ in range(2):  # whichever of the two pooled connections comes first
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
    assert failed.value.connection_invalidated and is_unavailable(failed.value)  # → 503 + Retry-After

    with engine.connect() as conn:  # the disconnect invalidated the older connections as well
        assert conn.scalar(text("SELECT pg_backend_pid()")) not in (pid, other_pid)
