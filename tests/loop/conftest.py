"""Fixtures for the training-round loop: a tiny random-weight model on disk, settings whose
broker a real Celery worker subprocess shares (kombu's SQL transport on SQLite for the SQLite
database, Redis for Postgres), and a project with labelers and prompts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.models import Role
from app.settings import Settings
from tests import services
from tests.factories import make_project, make_token, make_user
from tests.loop.helpers import WorkerProcess

REDIS_TEST_DB = 13
"""A Redis database of its own, flushed per test, so other suites' queues are never touched —
unless RANKLAB_TEST_REDIS_URL names one (the database set aside for this test run)."""
PROMPT_WORDS = "write tell say answer a story poem question about the cat dog bird fish tree sun moon".split()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from worker.ml.tiny import save_tiny_model

    path = tmp_path_factory.mktemp("tiny-policy")
    save_tiny_model(path)
    return path


def _redis_url() -> str:
    url = services.redis_url()
    if url is None:
        services.missing("Redis")
    import redis

    if "RANKLAB_TEST_REDIS_URL" not in os.environ:
        base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
        url = services.worker_redis_db(f"{base}/{REDIS_TEST_DB}")
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def settings(db_url, tmp_path) -> Settings:
    """The app's settings; the worker gets the same through its environment (WorkerProcess)."""
    broker = "" if db_url.startswith("sqlite") else _redis_url()
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        secret_key="test-secret",
        embedded_worker=False,
        broker_url=broker,
        round_stale_seconds=3,
        round_sweep_seconds=1,
        _env_file=None,
    )


@pytest.fixture
def workers(settings, tmp_path) -> Iterator[list[WorkerProcess]]:
    """Started workers; every one left running is killed at the end."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.discard()


@pytest.fixture
def start_worker(settings, tmp_path, workers):
    def start(**env: str) -> WorkerProcess:
        worker = WorkerProcess(settings, log_path=tmp_path / f"worker-{len(workers)}.log", env=env)
        worker.start()
        workers.append(worker)
        return worker

    return start


@pytest.fixture
def admin_token(db) -> str:
    return make_token(db, "admin")


@pytest.fixture
def loop_project(db, client, admin_token):
    """A project (K=4, two rankings per task), two labelers, and 12 prompts uploaded over the API."""
    project = make_project(db, k_min=4, k_max=4, overlap=2)
    labelers = [make_user(db, role=Role.labeler, projects=[project]) for _ in range(2)]
    prompts = [
        {"external_id": f"p{i}", "text": " ".join(PROMPT_WORDS[(i * 3 + j) % len(PROMPT_WORDS)] for j in range(5))}
        for i in range(12)
    ]
    response = client.post(
        f"/api/v1/projects/{project.id}/prompts",
        json={"prompts": prompts},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert response.status_code == 200, response.text
    return project, labelers
