"""Fixtures for the AI judges: a tiny judge model folder, a unit of work on the test's database
(the judge run's task body runs in-process on it), and a ranking project with tasks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app.db import start_write_transaction
from tests.judges.test_judge_ml import JUDGE_WORDS
from tests.openai_server import openai_server  # noqa: F401  (fixture)


@pytest.fixture(scope="session")
def tiny_judge_dir(tmp_path_factory) -> Path:
    from worker.ml.tiny import save_tiny_model

    path = tmp_path_factory.mktemp("tiny-judge")
    save_tiny_model(path, words=JUDGE_WORDS)
    return path


@pytest.fixture
def unit(app):
    """What worker.loop.runtime.db_session is to the worker, on this test's database."""

    @contextmanager
    def session() -> Iterator[Session]:
        with app.state.write_sessionmaker() as db:
            start_write_transaction(db)
            yield db
            db.commit()

    return session
