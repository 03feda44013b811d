"""SQLite in WAL mode: a transaction that began by reading cannot write once another connection has
committed meanwhile ("database is locked" at once, whatever the busy timeout). Requests that may
write therefore take the write lock at BEGIN, and the one write a read-only request makes (an API
token's last-used stamp) gives way instead of failing the request.

Found in CI: launching a round while the worker's heartbeat committed every second gave a 503."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import event, select, update

from app.models import ApiToken, Project, utcnow
from tests.factories import make_token

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _path(db) -> str:
    return db.get_bind().url.database


def _commit_elsewhere(path: str) -> None:
    """Another process's write (the worker's heartbeat, say), committed now."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("UPDATE api_tokens SET name = name || '.'")
    finally:
        other.close()


def test_a_post_that_reads_first_is_not_failed_by_a_writer_that_commits_meanwhile(app, db, client):
    token = make_token(db, "admin")
    writer = sqlite3.connect(_path(db), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a writer is busy when the request arrives
    writer.execute("UPDATE api_tokens SET name = name || '.'")
    result = {}

    def create_project():
        result["response"] = client.post(
            "/api/v1/projects",
            headers={"Authorization": f"Bearer {token}"},
            json={"name": "Made while another connection wrote", "k_min": 4, "k_max": 4},
        )

    thread = threading.Thread(target=create_project)
    thread.start()
    time.sleep(0.5)  # long enough for a DEFERRED request to have read its token and be waiting to write
    writer.execute("COMMIT")
    writer.close()
    thread.join(timeout=30)
    assert result["response"].status_code == 201, result["response"].text
    db.expire_all()
    assert db.scalar(select(Project.name)) == "Made while another connection wrote"


def test_a_get_whose_snapshot_went_stale_still_answers_and_the_stamp_waits_for_the_next_call(app, db, client):
    token = make_token(db, "export")
    row = db.scalar(select(ApiToken))
    long_ago = utcnow() - timedelta(hours=1)
    db.execute(update(ApiToken).values(last_used_at=long_ago))
    db.commit()
    path = _path(db)
    stamps_tried = []

    def last_used():
        db.rollback()  # a fresh snapshot, not this session's older one
        return db.scalar(select(ApiToken.last_used_at).where(ApiToken.id == row.id))

    # Just before the request stamps its token, another connection commits: the request's read
    # snapshot is now stale and SQLite refuses it the write lock.
    @event.listens_for(app.state.engine, "before_cursor_execute")
    def commit_elsewhere_first(_conn, _cursor, statement, *_args):
        if statement.startswith("UPDATE api_tokens SET last_used_at"):
            stamps_tried.append(statement)
            if len(stamps_tried) == 1:
                _commit_elsewhere(path)

    try:
        first = client.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"})
        assert first.status_code == 200, first.text
        assert len(stamps_tried) == 1
        assert last_used() == long_ago  # skipped, not a 503

        second = client.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"})
        assert second.status_code == 200 and len(stamps_tried) == 2
        assert last_used() > long_ago
    finally:
        event.remove(app.state.engine, "before_cursor_execute", commit_elsewhere_first)
