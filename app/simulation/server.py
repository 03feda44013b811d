"""The simulation's plumbing: a fresh data dir with accounts and projects, `ranklab serve` as a
subprocess, and the admin's REST client (launch, start, wait, evaluate)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from app.settings import ROOT, Settings

POLL_SECONDS = 0.5
"""Status polls are cheap reads; a short interval keeps a tiny simulation from waiting on them."""
GUIDELINES = (
    "Prefer the answer that is right (sums, capitals, yes/no, three items, on-topic facts), mentions what "
    "the prompt asks about, finishes its sentence and neither repeats the prompt nor itself."
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup(
    settings: Settings, *, projects: list[str], k: int, overlap: int, labelers: int
) -> tuple[str, list[int], list[tuple[str, str]]]:
    """Database, admin token, one project per name and labeler accounts that are members of all
    of them (set-up only: labeling and everything after goes over HTTP)."""
    from sqlalchemy.orm import sessionmaker

    from app.admin.service import create_account
    from app.auth.service import create_api_token
    from app.bootstrap import bootstrap
    from app.db import make_engine
    from app.models import ProjectMember
    from app.projects.service import create_project

    bootstrap(settings, demo=False, out=lambda _line: None)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with sessionmaker(bind=engine)() as db, db.begin():
            _row, token = create_api_token(db, name="simulate", scopes=["admin"], created_by=None)
            users, accounts = [], []
            for i in range(labelers):
                user, password = create_account(db, email=f"sim-labeler-{i}@ranklab.local", role="labeler")
                users.append(user)
                accounts.append((user.email, password))
            project_ids = []
            for name in projects:
                project = create_project(
                    db, name=name, k_min=k, k_max=k, overlap=overlap, guidelines=GUIDELINES, lease_minutes=120
                )
                db.add_all(ProjectMember(project_id=project.id, user_id=user.id) for user in users)
                project_ids.append(project.id)
    finally:
        engine.dispose()
    return token, project_ids, accounts


class Server:
    """`ranklab serve` with its embedded worker, logging to <data_dir>/server.log."""

    def __init__(self, settings: Settings, torch_threads: int = 0):
        self.url = f"http://127.0.0.1:{settings.port}"
        env = {
            **os.environ,
            "RANKLAB_DATA_DIR": str(settings.data_dir),
            "RANKLAB_DATABASE_URL": "",
            "RANKLAB_BROKER_URL": "",
            "RANKLAB_RESULT_BACKEND": "",
            "RANKLAB_HOST": "127.0.0.1",
            "RANKLAB_PORT": str(settings.port),
            "RANKLAB_WEB_WORKERS": "1",
            "RANKLAB_EMBEDDED_WORKER": "true",
            "RANKLAB_ROUND_SWEEP_SECONDS": "10",
        }
        if torch_threads:
            env["OMP_NUM_THREADS"] = str(torch_threads)
        self.log_path = Path(settings.data_dir) / "server.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/login", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server did not answer within {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


UNAVAILABLE_RETRIES = 6
"""Resends of a request answered 503 (database unavailable) before the run gives up."""


class Admin:
    def __init__(self, url: str, token: str, out):
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        self.out = out

    def call(self, method: str, path: str, **kwargs) -> Any:
        response = self.http.request(method, path, **kwargs)
        for _retry in range(UNAVAILABLE_RETRIES):
            # 503: SQLite stayed locked past its busy timeout (the worker writing while the CPU is
            # busy); the request rolled back, so it is safe to send again as the header asks.
            if response.status_code != 503:
                break
            time.sleep(float(response.headers.get("Retry-After", "5")))
            response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text}")
        return response.json()

    def wait(self, round_id: int, wanted: tuple[str, ...], deadline: float) -> dict:
        last = ""
        while time.monotonic() < deadline:
            data = self.call("GET", f"/api/v1/rounds/{round_id}")
            if data["status"] in wanted:
                return data
            if data["status"] in ("failed", "cancelled"):
                raise RuntimeError(
                    f"round {data['number']} {data['status']} at {data['error_step']}: {data['error_message']}"
                )
            step = data["current_step"].split(":")[0]
            if step != last:
                self.out(f"    round {data['number']}: {step}")
                last = step
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"round {round_id} did not reach {'/'.join(wanted)} in time")

    def round_by_number(self, project_id: int, number: int) -> dict | None:
        return next(
            (r for r in self.call("GET", f"/api/v1/projects/{project_id}/rounds") if r["number"] == number), None
        )

    def wait_evaluation(self, evaluation_id: int, wanted: tuple[str, ...], deadline: float) -> dict:
        while time.monotonic() < deadline:
            data = self.call("GET", f"/api/v1/evaluations/{evaluation_id}")
            if data["status"] in wanted:
                return data
            if data["status"] in ("failed", "cancelled"):
                raise RuntimeError(f"evaluation {evaluation_id} {data['status']}: {data.get('error') or data}")
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"evaluation {evaluation_id} did not reach {'/'.join(wanted)} in time")


def eval_answers(
    settings: Settings, *, project_id: int, version_ids: list[int], seed: int
) -> dict[int, dict[str, str]]:
    """version id → eval prompt text → that version's eval answer (purpose "eval", this seed).

    The report's own look at the product's database, after the team has judged: which version
    wrote which answer is exactly what the judges must not see, and what the report needs to
    score each version by gold on the same prompts."""
    from sqlalchemy import select
    from sqlalchemy.orm import sessionmaker

    from app.db import make_engine
    from app.models import Completion, Prompt, PromptSplit

    engine = make_engine(settings.sqlalchemy_url)
    answers: dict[int, dict[str, str]] = {version: {} for version in version_ids}
    try:
        with sessionmaker(bind=engine)() as db:
            rows = db.execute(
                select(Prompt.text, Completion.model_version_id, Completion.text, Completion.generation_params)
                .join(Completion, Completion.prompt_id == Prompt.id)
                .where(
                    Prompt.project_id == project_id,
                    Prompt.split == PromptSplit.eval,
                    Completion.model_version_id.in_(version_ids),
                )
                .order_by(Completion.id)
            )
            for prompt, version, text, params in rows:
                if (params or {}).get("purpose") == "eval" and (params or {}).get("seed") == seed and prompt:
                    answers[version].setdefault(prompt, text)
    finally:
        engine.dispose()
    return answers
