"""SQLite specifics of the handout: the write lock is really taken at BEGIN (IMMEDIATE), even when
the request already read something, and a refresh of a held task needs no write lock at all."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import select

from app.labeling import handout, service
from app.models import User
from tests.factories import make_project, make_task, make_user
from tests.labeling.helpers import next_view

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _sqlite_path(db) -> str:
    return db.get_bind().url.database


def _write_lock_is_free(path: str) -> bool:
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        other.close()


def test_the_write_lock_is_taken_at_begin_even_after_a_read(db):
    user = make_user(db)
    db.scalar(select(User.id).where(User.id == user.id))  # like the login lookup: a DEFERRED read transaction
    assert db.in_transaction() and _write_lock_is_free(_sqlite_path(db))

    handout.start_write_transaction(db)
    assert not _write_lock_is_free(_sqlite_path(db))  # nobody else can write until we commit
    handout.start_write_transaction(db)  # a second call keeps the same transaction
    db.rollback()
    assert _write_lock_is_free(_sqlite_path(db))


def test_refreshing_a_held_task_does_not_wait_for_the_write_lock(db):
    project = make_project(db, overlap=1)
    make_task(db, project)
    alice = make_user(db, projects=[project])
    held = next_view(db, alice, project)

    writer = sqlite3.connect(_sqlite_path(db), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # someone else is writing for a long time
    result = {}

    def refresh():
        result["view"] = service.current_task(db, user=alice, project=project, sweep_every=3600)
        db.commit()

    try:
        thread = threading.Thread(target=refresh)
        thread.start()
        thread.join(timeout=5)
        assert not thread.is_alive(), "the refresh waited for the write lock"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert result["view"].assignment_id == held.assignment_id
