"""Two clients upload the same file at the same moment: each demonstration and prompt is stored
once, and both requests succeed (neither gets a 500 from a unique constraint).

On PostgreSQL the second INSERT ... ON CONFLICT DO NOTHING waits for the first transaction and
then counts the rows as already present; on SQLite the write lock taken at BEGIN serialises the
two requests. Both backends."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.models import Demonstration, Prompt
from tests.demonstrations.data_helpers import bearer, upload
from tests.factories import make_project

ROWS = 3000  # three batches, so the two requests can interleave between batches


def test_the_same_file_uploaded_twice_at_once_is_stored_once(app, db):
    project = make_project(db)
    auth = bearer(db, "upload")
    rows = [
        {"id": f"d{i}" if i % 2 else None, "prompt": f"Prompt {i % 1000}", "completion": f"Answer {i}"}
        for i in range(ROWS)
    ]
    rows = [{k: v for k, v in row.items() if v is not None} for row in rows]
    start = threading.Barrier(2)
    answers: list = [None, None]

    def send(slot: int) -> None:
        with TestClient(app) as client:
            start.wait()
            answers[slot] = upload(client, project.id, auth, *rows)

    threads = [threading.Thread(target=send, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    reports = [a.json() for a in answers]
    assert sum(r["created"] for r in reports) == ROWS
    assert sum(r["already_present"] for r in reports) == ROWS
    assert sum(r["prompts_created"] for r in reports) == 1000
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Demonstration)) == ROWS
    assert db.scalar(select(func.count()).select_from(Prompt)) == 1000
