"""Fixtures for the evaluation tests: the suite's `db`, bound to the app's settings so a task
enqueued by a service goes to this test's broker (a SQLite file in its data dir)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker


@pytest.fixture
def db(app, settings) -> Iterator[Session]:
    session = sessionmaker(bind=app.state.engine, expire_on_commit=False, info={"settings": settings})()
    yield session
    session.close()
