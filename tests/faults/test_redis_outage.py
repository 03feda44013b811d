"""Redis (the Celery broker) stopped while labelers label, then started again (issue #5).

A private redis-server the test stops, a real Celery worker on it, the web app in-process on
the shared PostgreSQL (Redis is the broker of the Postgres set-up). Guarantees: labeling needs
no broker and goes on untouched; launching a round — API or admin form — is refused with a 503
that names the queue, carries Retry-After, and stores nothing; once Redis is back, a launch is
accepted at once and the same worker, which reconnected by itself, takes the round to labeling.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from app.models import Completion, ModelVersion, Prompt, RankingTask, RoundEvent, RoundPrompt, TrainingRound
from app.rounds.service import QUEUE_RETRY_AFTER_SECONDS
from app.settings import Settings
from tests.admin.helpers import admin_client, fresh
from tests.factories import make_project, make_task, make_token, make_user
from tests.faults.servers import RedisServer, require_redis_server
from tests.loop.helpers import Api, WorkerProcess, label_everything, wait_for
from tests.loop.test_loop import tiny_config
from tests.rounds.test_launch_page import defaults

# Redis is the broker of the PostgreSQL set-up (SQLite's is kombu's SQL transport): one backend.
pytestmark = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
QUEUE_DOWN = "queue: task queue unreachable — is Redis running?"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from worker.ml.tiny import save_tiny_model

    path = tmp_path_factory.mktemp("tiny-policy")
    save_tiny_model(path)
    return path


@pytest.fixture
def redis_server(tmp_path):
    require_redis_server()
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(db_url, tmp_path, redis_server) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        secret_key="test-secret",
        embedded_worker=False,
        broker_url=redis_server.url(),
        round_stale_seconds=3,
        round_sweep_seconds=1,
        _env_file=None,
    )


@pytest.fixture
def worker(settings, tmp_path):
    process = WorkerProcess(settings, log_path=tmp_path / "worker.log")
    process.start()
    yield process
    process.discard()


def counts(db) -> dict[str, int]:
    """Everything a launch would create."""
    fresh(db)
    return {
        table.__name__: db.scalar(select(func.count()).select_from(table))
        for table in (TrainingRound, RoundPrompt, RoundEvent, ModelVersion, RankingTask, Completion)
    }


def test_redis_down_labeling_goes_on_launch_is_refused_cleanly_then_work_proceeds(
    app, db, client, settings, redis_server, worker, tiny_model_dir
):
    project = make_project(db, k_min=4, k_max=4, overlap=2)
    labelers = [make_user(db, projects=[project]) for _ in range(2)]
    uploaded = [make_task(db, project) for _ in range(3)]
    db.add_all(
        Prompt(project_id=project.id, external_id=f"q{i}", text=f"tell a story about the cat {i}") for i in range(4)
    )
    db.commit()
    token = make_token(db, "admin")
    api = Api(client, token)
    _admin, csrf = admin_client(client, db)
    wait_for(lambda: "ready." in worker.output(), timeout=120, what="the worker to start", worker=worker)

    redis_server.stop()
    stopped = time.monotonic()

    # (a) The labeling loop (next task + submit over HTTP) does not touch the broker.
    submitted = label_everything(app, db, labelers, project.id)
    assert submitted == len(uploaded) * project.overlap

    # (b) Launching is refused, naming the queue, with a retry hint; nothing is half-created.
    before = counts(db)
    config = tiny_config(tiny_model_dir)
    sent = time.monotonic()
    response = client.post(
        f"/api/v1/projects/{project.id}/rounds", json=config, headers={"Authorization": f"Bearer {token}"}
    )
    api_refusal_seconds = time.monotonic() - sent
    assert response.status_code == 503 and response.json()["detail"].startswith(QUEUE_DOWN), response.text
    assert response.headers["retry-after"] == str(QUEUE_RETRY_AFTER_SECONDS)
    form = defaults() | {"model": str(tiny_model_dir), "csrf_token": csrf}
    page = client.post(f"/admin/projects/{project.id}/rounds", data=form)
    assert page.status_code == 503 and page.headers["retry-after"] == str(QUEUE_RETRY_AFTER_SECONDS)
    assert 'class="error banner" role="alert">Not launched: task queue unreachable — is Redis running?' in page.text
    assert counts(db) == before
    assert before["TrainingRound"] == 0 and before["Completion"] == len(uploaded) * 4
    down_seconds = time.monotonic() - stopped

    # (c) Redis is back: the first launch is accepted, and the worker (reconnected by itself)
    # takes the round through generation to labeling.
    redis_server.start()
    started = time.monotonic()
    round0 = api.post(f"/api/v1/projects/{project.id}/rounds", config, expect=201)
    launch_seconds = time.monotonic() - started
    moved = wait_for(
        lambda: api.round(round0["id"])["status"] != "pending",
        timeout=300,
        what="the worker to pick up the round",
        worker=worker,
    )
    picked_up_seconds = time.monotonic() - started
    labeling = api.wait_status(round0["id"], "labeling", timeout=300, worker=worker)
    log = worker.log_path.read_text(errors="replace")
    assert "Connection to broker lost" in log and log.count("Connected to redis://") == 2, worker.output()
    assert moved and labeling["labeling"]["tasks"] == 4
    fresh(db)
    assert db.scalar(select(func.count()).select_from(RankingTask).where(RankingTask.round_id == round0["id"])) == 4

    print(
        "\nredis outage:",
        {
            "labeling rankings while down": submitted,
            "API launch refused after (s)": round(api_refusal_seconds, 3),
            "redis down for (s)": round(down_seconds, 1),
            "launch accepted after start (s)": round(launch_seconds, 3),
            "worker picked the round up after start (s)": round(picked_up_seconds, 1),
            "client errors besides the two intended 503s": 0,
        },
    )
