"""A real Celery worker as a subprocess, polling helpers, and labeling over the HTTP API."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.settings import ROOT, Settings
from tests.factories import csrf_of, login
from worker.celery_app import solo_worker_command

# A tiny model computes nothing a second thread would speed up, and on a shared 2-core machine
# OpenMP spin-waiting makes it much slower (tests/ml/conftest.py).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


class WorkerProcess:
    """`celery -A worker.celery_app worker --pool=solo` on the test's database, data dir and broker."""

    def __init__(self, settings: Settings, *, log_path: Path, env: dict[str, str] | None = None):
        self.settings, self.log_path = settings, log_path
        self.env = {
            **os.environ,
            **ONE_THREAD,
            "RANKLAB_DATABASE_URL": settings.sqlalchemy_url,
            "RANKLAB_DATA_DIR": str(settings.data_dir),
            "RANKLAB_BROKER_URL": settings.broker_url,
            "RANKLAB_RESULT_BACKEND": settings.result_backend,
            "RANKLAB_ROUND_STALE_SECONDS": str(settings.round_stale_seconds),
            "RANKLAB_ROUND_SWEEP_SECONDS": str(settings.round_sweep_seconds),
            "RANKLAB_FAULT_INJECT": "",
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = solo_worker_command("--without-heartbeat", "-n", f"test-{uuid.uuid4().hex[:8]}@%h")
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no chance to requeue or clean up."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.log.close()

    def discard(self) -> None:
        """At a test's end nothing it left in the broker matters (each test has its own): SIGKILL
        at once, instead of stop()'s warm shutdown, which cost every worker test 2 s of waiting."""
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # warm shutdown: the current task finishes or is left for the sweep
        try:
            self.process.wait(timeout=2)  # an idle worker's warm shutdown still takes ~7 s; not worth waiting for
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def wait_for(
    condition: Callable[[], Any], *, timeout: float, what: str, worker: WorkerProcess | None = None, every: float = 0.25
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    tail = f"\n--- worker log ---\n{worker.output()}" if worker is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{tail}")


class Api:
    """The admin's view: /api/v1 with an admin-scoped token."""

    def __init__(self, client: TestClient, token: str):
        self.client, self.headers = client, {"Authorization": f"Bearer {token}"}

    def post(self, path: str, json: Any = None, expect: int = 200) -> dict:
        response = self.client.post(path, json=json, headers=self.headers)
        assert response.status_code == expect, response.text
        return response.json()

    def get(self, path: str) -> Any:
        response = self.client.get(path, headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    def round(self, round_id: int, events_after: int | None = None) -> dict:
        suffix = "" if events_after is None else f"?events_after={events_after}"
        return self.get(f"/api/v1/rounds/{round_id}{suffix}")

    def rounds(self, project_id: int) -> list[dict]:
        return self.get(f"/api/v1/projects/{project_id}/rounds")

    def wait_status(
        self, round_id: int, status: str | tuple[str, ...], *, timeout: float = 240, worker: WorkerProcess | None = None
    ) -> dict:
        wanted = (status,) if isinstance(status, str) else status

        def reached():
            data = self.round(round_id)
            if data["status"] == "failed" and "failed" not in wanted:
                raise AssertionError(
                    f"round {round_id} failed at {data['error_step']}: {data['error_message']}"
                    + (f"\n--- worker log ---\n{worker.output()}" if worker else "")
                )
            return data if data["status"] in wanted else None

        return wait_for(reached, timeout=timeout, what=f"round {round_id} to be {'/'.join(wanted)}", worker=worker)


def prefer_longer(completions: list[dict]) -> list[list[int]]:
    """A fixed preference the reward model can learn: longer completions first, ties by id."""
    ordered = sorted(completions, key=lambda c: (-len(c["text"]), c["id"]))
    return [[c["id"]] for c in ordered]


def judgment(task: dict, rank: Callable[[list[dict]], list[list[int]]]) -> dict:
    """A ranking task is ranked by `rank`; a blind pairwise evaluation (a round's human evaluation,
    its completions without ids) gets a verdict for the longer answer, A on a tie; a good/bad task
    calls the better half of `rank`'s order good; Likert and multi-aspect tasks rate in that order."""
    if task["kind"] in ("pairwise_eval", "pairwise"):
        a, b = task["completions"]
        return {"verdict": "B" if len(b["text"]) > len(a["text"]) else "A"}
    if task["kind"] == "ranking":
        return {"ranking": rank(task["completions"])}
    order = [cid for group in rank(task["completions"]) for cid in group]
    if task["kind"] == "good_bad":  # the better half is good: a label KTO can learn
        good = set(order[: max(1, len(order) // 2)])
        return {"ratings": [{"completion_id": cid, "value": "good" if cid in good else "bad"} for cid in order]}
    form = task["form"]
    # Likert: the best gets the top point, each next one point less (never below 1).
    points = {cid: max(1, form["likert_points"] - i) for i, cid in enumerate(order)}
    if task["kind"] == "likert":
        return {"ratings": [{"completion_id": cid, "value": value} for cid, value in points.items()]}
    answer: dict = {"ratings": [], "aspect_rankings": {}}  # multi_aspect: every aspect agrees with `rank`
    for aspect in form["aspects"]:
        if aspect["scale"] == "likert":
            answer["ratings"] += [
                {"completion_id": cid, "aspect": aspect["name"], "value": value} for cid, value in points.items()
            ]
        else:
            answer["aspect_rankings"][aspect["name"]] = [[cid] for cid in order]
    if form["overall_ranking"]:
        answer["ranking"] = [[cid] for cid in order]
    return answer


def label_everything(
    app, db, labelers, project_id: int, rank: Callable[[list[dict]], list[list[int]]] = prefer_longer
) -> int:
    """Each labeler, logged in with their own cookie jar, ranks every task they are handed
    through the labeling JSON API. Returns the number of rankings submitted."""
    submitted = 0
    for labeler in labelers:
        with TestClient(app) as client:
            login(client, labeler)
            db.rollback()  # end the test session's read transaction, so it sees the new web session
            headers = {"X-CSRF-Token": csrf_of(client, db)}
            task = client.get(f"/api/v1/labeling/projects/{project_id}/next").json()["task"]
            while task is not None:
                response = client.post(
                    f"/api/v1/labeling/projects/{project_id}/assignments/{task['assignment_id']}/ranking",
                    json=judgment(task, rank),
                    headers=headers,
                )
                assert response.status_code == 200, response.text
                submitted += 1
                task = response.json()["next"]
    return submitted
