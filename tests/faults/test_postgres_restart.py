"""PostgreSQL restarted, then stopped for a few seconds, under labeling load (issue #5).

A real `ranklab serve` (uvicorn) on a private cluster; four labelers label in a loop over HTTP
while the test runs `pg_ctl restart -m fast`, then `pg_ctl stop -m fast` … `start`. Guarantees:
during an outage every request is answered 503 with Retry-After (JSON under /api, a page or an
htmx line otherwise) and none hangs or gets a 500; afterwards the same web process serves 200s
again; every submission answered 200 is in the database.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from app.db import make_engine
from app.models import Ranking
from app.settings import ROOT
from app.unavailable import MESSAGE, RETRY_AFTER_SECONDS
from tests.conftest import _migrate
from tests.factories import make_project, make_task, make_user
from tests.faults.labelers import CLIENT_TIMEOUT_SECONDS, Answer, Labeler
from tests.faults.servers import PostgresCluster, free_port, require_postgres_binaries
from tests.loop.helpers import wait_for

LABELERS = 4
TASKS = 400  # more than four labelers get through in the test, so none runs out of work


@pytest.fixture(scope="module")
def cluster():
    require_postgres_binaries()
    cluster = PostgresCluster()
    cluster.init()
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def database(cluster):
    url = cluster.create_database(f"faults_{uuid.uuid4().hex[:8]}")
    _migrate(url)
    engine = make_engine(url)
    db = sessionmaker(bind=engine, expire_on_commit=False)()
    # Every labeler ranks every task (overlap = LABELERS): no one waits for work.
    project = make_project(db, k_min=4, k_max=4, overlap=LABELERS)
    labelers = [make_user(db, projects=[project]) for _ in range(LABELERS)]
    for _ in range(TASKS):
        make_task(db, project)
    yield url, db, project, labelers
    db.close()
    engine.dispose()


@pytest.fixture
def server(database, tmp_path):
    """`python -m app.cli serve`, as in production (one uvicorn worker, no embedded Celery)."""
    url, *_ = database
    port = free_port()
    env = {
        **os.environ,
        "RANKLAB_DATABASE_URL": url,
        "RANKLAB_PORT": str(port),
        "RANKLAB_WEB_WORKERS": "1",
        "RANKLAB_EMBEDDED_WORKER": "false",
        "RANKLAB_DATA_DIR": str(tmp_path / "data"),
        "RANKLAB_SECRET_KEY": "faults",
        "RANKLAB_BROKER_URL": "",
    }
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def up() -> bool:
        assert process.poll() is None, log_path.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=60, what="ranklab serve to answer")
    yield process, f"http://127.0.0.1:{port}", log_path
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


async def _wait(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


def _ok_since(labelers: list[Labeler], moment: float) -> bool:
    return all(any(a.status == 200 for a in lab.since(moment)) for lab in labelers)


def _unavailable_since(labelers: list[Labeler], moment: float) -> bool:
    return all(any(a.status == 503 for a in lab.since(moment)) for lab in labelers)


async def _probe_pages(client: httpx.AsyncClient, project_id: int, csrf: str) -> dict[str, httpx.Response]:
    """What a browser gets while the database is down: the full ranking page, and the htmx submit."""
    return {
        "page": await client.get(f"/projects/{project_id}/label"),
        "htmx": await client.post(
            f"/projects/{project_id}/label/1",
            data={"ranking": "[]"},
            headers={"HX-Request": "true", "X-CSRF-Token": csrf},
        ),
    }


async def _scenario(cluster: PostgresCluster, base_url: str, project_id: int, emails: list[str]) -> dict:
    timeout = httpx.Timeout(CLIENT_TIMEOUT_SECONDS)
    clients = [httpx.AsyncClient(base_url=base_url, timeout=timeout) for _ in emails]
    labelers = [Labeler(i, email, client) for i, (email, client) in enumerate(zip(emails, clients, strict=True))]
    for labeler in labelers:  # one after another: logins hash passwords, which is slow on a busy machine
        await labeler.login()
    stop = asyncio.Event()
    running = [asyncio.create_task(lab.run(project_id, stop)) for lab in labelers]
    marks: dict[str, float] = {}
    try:
        marks["start"] = time.monotonic()
        await _wait(lambda: all(len(lab.accepted) >= 3 for lab in labelers), timeout=60, what="labeling to run")

        # 1. restart: the server ends every session, is down briefly, and comes back.
        marks["restart"] = time.monotonic()
        await asyncio.to_thread(cluster.restart)
        marks["restarted"] = time.monotonic()
        await _wait(lambda: _ok_since(labelers, marks["restarted"]), timeout=60, what="200s after the restart")
        marks["recovered_restart"] = time.monotonic()

        # 2. stop for a few seconds: every request in that window must get its 503.
        marks["stop"] = time.monotonic()
        await asyncio.to_thread(cluster.stop)
        marks["stopped"] = time.monotonic()
        await _wait(lambda: _unavailable_since(labelers, marks["stopped"]), timeout=60, what="503s while down")
        probes = await _probe_pages(clients[0], project_id, labelers[0].csrf)
        await asyncio.sleep(3)
        marks["start_again"] = time.monotonic()
        await asyncio.to_thread(cluster.start)
        marks["started"] = time.monotonic()
        await _wait(lambda: _ok_since(labelers, marks["started"]), timeout=60, what="200s after the start")
        marks["recovered"] = time.monotonic()
        await _wait(
            lambda: all(len(lab.since(marks["recovered"])) >= 4 for lab in labelers),
            timeout=60,
            what="labeling to go on",
        )
    finally:
        stop.set()
        await asyncio.gather(*running)
        for client in clients:
            await client.aclose()
    return {"labelers": labelers, "marks": marks, "probes": probes}


def _first(answers: list[Answer], status: int, after: float) -> float:
    """Seconds from `after` until the first answer with `status` arrived."""
    return min(a.sent + a.seconds for a in answers if a.status == status and a.sent >= after) - after


def test_postgres_restart_and_outage_give_503s_then_recover_in_the_same_process(cluster, database, server):
    url, db, project, users = database
    process, base_url, log_path = server
    pid = process.pid
    # In a thread of its own: a session-scoped Playwright browser (tests/browser) keeps an event
    # loop running on the main thread for the rest of the run, and asyncio.run refuses to nest.
    with ThreadPoolExecutor(max_workers=1) as thread:
        result = thread.submit(asyncio.run, _scenario(cluster, base_url, project.id, [u.email for u in users])).result()
    labelers, marks, probes = result["labelers"], result["marks"], result["probes"]
    answers = [a for lab in labelers for a in lab.answers]
    statuses = Counter(a.status for a in answers)
    server_log = log_path.read_text(errors="replace")

    # Never a hang, a dropped connection or a 500: 200 or a 503 that says to retry, nothing else.
    assert set(statuses) <= {200, 503}, (
        statuses,
        [a for a in answers if a.status not in (200, 503)][:5],
        server_log[-3000:],
    )
    unavailable = [a for a in answers if a.status == 503]
    assert unavailable, "the outage was never seen by a client"
    assert all(a.retry_after == str(RETRY_AFTER_SECONDS) and a.detail == MESSAGE for a in unavailable), unavailable[:3]
    assert max(a.seconds for a in unavailable) < CLIENT_TIMEOUT_SECONDS
    assert "Traceback" not in server_log and "Exception in ASGI application" not in server_log, server_log[-3000:]

    # Pages while down: a small page for a browser, one line for htmx to show by the submit button.
    page, htmx = probes["page"], probes["htmx"]
    assert page.status_code == 503 and page.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert page.headers["content-type"].startswith("text/html") and MESSAGE in page.text and "<html" in page.text
    assert f'href="/projects/{project.id}/label">reload</a>' in page.text
    assert htmx.status_code == 503 and htmx.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert htmx.text.startswith('<p class="error-message" role="alert">') and MESSAGE in htmx.text

    # The same web process, still running, serves 200s again.
    assert process.poll() is None and process.pid == pid
    after = [a for a in answers if a.sent >= marks["recovered"]]
    assert after and all(a.status == 200 for a in after), Counter(a.status for a in after)

    # Every submission that was answered 200 is stored, for that labeler and that assignment.
    db.rollback()
    accepted = {(lab.index, assignment, ranking) for lab in labelers for assignment, ranking in lab.accepted}
    by_user = {u.id: i for i, u in enumerate(users)}
    stored = {
        (by_user[user_id], assignment, ranking)
        for ranking, assignment, user_id in db.execute(select(Ranking.id, Ranking.assignment_id, Ranking.user_id))
    }
    assert accepted <= stored, sorted(accepted - stored)[:5]

    numbers = {
        "requests": len(answers),
        "statuses": dict(statuses),
        "restart: pg_ctl restart took": marks["restarted"] - marks["restart"],
        "restart: first 503 after pg_ctl restart began": _first(answers, 503, marks["restart"]),
        "restart: 503s": sum(1 for a in unavailable if marks["restart"] <= a.sent < marks["recovered_restart"]),
        "restart: every labeler served again after pg_ctl returned": marks["recovered_restart"] - marks["restarted"],
        "stop: first 503 after pg_ctl stop began": _first(answers, 503, marks["stop"]),
        "slowest 503 (all)": max(a.seconds for a in unavailable),
        "stop: 503s": sum(1 for a in unavailable if marks["stop"] <= a.sent < marks["recovered"]),
        "start: first 200 after pg_ctl start returned": _first(answers, 200, marks["started"]),
        "start: every labeler served again after pg_ctl returned": marks["recovered"] - marks["started"],
        "accepted submissions": len(accepted),
        "stored rankings": len(stored),
    }
    print("\npostgres restart under load:", {k: round(v, 3) if isinstance(v, float) else v for k, v in numbers.items()})
