"""The `ranklab` command line, run as a real subprocess against SQLite and PostgreSQL."""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.auth.security import token_digest
from app.db import make_engine
from app.demo import DEMO_PROMPTS, DEMONSTRATIONS_PROJECT_NAME, PROJECT_NAME
from app.models import ApiToken, Project, ProjectMember, Prompt, RankingTask, Role, User
from app.settings import ROOT
from app.web import render_markdown

PASSWORD_LINE = re.compile(r"^\s+password: (\S+)$", re.M)


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def cli_env(tmp_path, database_url: str = "", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANKLAB_")}
    env.update(
        RANKLAB_DATA_DIR=str(tmp_path / "data"),
        RANKLAB_DATABASE_URL=database_url,
        RANKLAB_SECRET_KEY="cli-test",
        **extra,
    )
    return env


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with Session(engine) as db:
            return {
                model.__name__: db.scalar(select(func.count()).select_from(model))
                for model in (User, Project, Prompt, RankingTask, ProjectMember)
            }
    finally:
        engine.dispose()


def check_bootstrap_twice(url: str, env: dict[str, str]) -> str:
    first = run_cli("bootstrap", env=env)
    assert first.returncode == 0, first.stderr
    passwords = PASSWORD_LINE.findall(first.stdout)
    assert len(passwords) == 2, first.stdout  # admin and demo labeler
    assert "admin@ranklab.local" in first.stdout and "labeler@ranklab.local" in first.stdout
    after_first = counts(url)

    second = run_cli("bootstrap", env=env)
    assert second.returncode == 0, second.stderr
    assert "password" not in second.stdout.lower()
    assert not any(p in second.stdout + second.stderr for p in passwords)
    assert "no account created" in second.stdout and "no demo project seeded" in second.stdout
    assert counts(url) == after_first

    engine = make_engine(url)
    try:
        with Session(engine) as db:
            admin = auth_service.authenticate(db, email="admin@ranklab.local", password=passwords[0], client="t")
            labeler = auth_service.authenticate(db, email="labeler@ranklab.local", password=passwords[1], client="t")
            assert admin is not None and admin.role == Role.admin
            assert labeler is not None and labeler.role == Role.labeler
            assert passwords[0] not in admin.password_hash
            check_demo(db, labeler)
    finally:
        engine.dispose()
    return first.stdout


def check_demo(db: Session, labeler: User) -> None:
    project = db.scalar(select(Project).where(Project.name == PROJECT_NAME))
    assert project is not None and project.overlap == 2
    assert db.get(ProjectMember, (project.id, labeler.id)) is not None
    tasks = db.scalars(select(RankingTask).where(RankingTask.project_id == project.id)).all()
    assert len(tasks) == len(DEMO_PROMPTS) >= 8
    assert all(4 <= len(task.items) <= 6 for task in tasks)
    texts = [item.completion.text for task in tasks for item in task.items]
    assert any("```python" in t for t in texts)
    payload = next(t for t in texts if "<script>" in t)
    rendered = render_markdown(payload)
    assert "<script" not in rendered and "onerror=" not in rendered.replace("onerror=&quot;", "")
    assert 'href="javascript:' not in rendered

    demonstrations = db.scalar(select(Project).where(Project.name == DEMONSTRATIONS_PROJECT_NAME))
    assert demonstrations is not None and db.get(ProjectMember, (demonstrations.id, labeler.id)) is not None
    queued = db.scalars(select(RankingTask).where(RankingTask.project_id == demonstrations.id)).all()
    assert len(queued) == 3 and {task.kind for task in queued} == {"demonstration"}
    assert any(task.prompt.messages for task in queued)  # one chat to continue as the assistant


def test_bootstrap_on_an_empty_sqlite_dir_migrates_and_is_idempotent(tmp_path):
    env = cli_env(tmp_path)
    out = check_bootstrap_twice(f"sqlite:///{tmp_path / 'data' / 'ranklab.sqlite'}", env)
    assert "migrated from empty to" in out


def test_bootstrap_on_a_migrated_database_twice(db_url, tmp_path):
    """SQLite copy of the migrated template, or the session's migrated PostgreSQL."""
    out = check_bootstrap_twice(db_url, cli_env(tmp_path, db_url))
    assert "up to date" in out


def test_bootstrap_keeps_existing_projects_and_admins(db_url, tmp_path, db):
    from tests.factories import make_project, make_user

    make_user(db, role=Role.admin, email="boss@example.com")
    make_project(db, name="Real work")
    result = run_cli("bootstrap", env=cli_env(tmp_path, db_url))
    assert result.returncode == 0, result.stderr
    assert "password" not in result.stdout.lower()
    db.rollback()
    assert db.scalars(select(Project.name)).all() == ["Real work"]
    assert db.scalars(select(User.email)).all() == ["boss@example.com"]


def test_create_user_and_token(db_url, tmp_path, db):
    from tests.factories import make_project

    make_project(db, name="Alpha")
    env = cli_env(tmp_path, db_url)
    result = run_cli("create-user", "Kim@Example.com", "--role", "labeler", "--project", "Alpha", env=env)
    assert result.returncode == 0, result.stderr
    (password,) = PASSWORD_LINE.findall(result.stdout)
    db.rollback()
    user = auth_service.authenticate(db, email="kim@example.com", password=password, client="t")
    assert user is not None and db.get(ProjectMember, (db.scalar(select(Project.id)), user.id)) is not None
    db.rollback()  # authenticate() wrote; release SQLite's write lock for the next commands

    again = run_cli("create-user", "kim@example.com", env=env)
    assert again.returncode == 2 and "already has an account" in again.stderr
    missing = run_cli("create-user", "lee@example.com", "--project", "Nope", env=env)
    assert missing.returncode == 2 and "no project named 'Nope'" in missing.stderr
    db.rollback()
    assert auth_service.get_user_by_email(db, email="lee@example.com") is None  # nothing half-created

    result = run_cli("create-token", "nightly export", "--scope", "export", "--scope", "upload", env=env)
    assert result.returncode == 0, result.stderr
    plaintext = re.search(r"^\s+(rl_\S+)$", result.stdout, re.M).group(1)
    db.rollback()
    row = db.scalar(select(ApiToken))
    assert row.token_hash == token_digest(plaintext) and row.scopes == ["export", "upload"]
    bad = run_cli("create-token", "x", "--scope", "delete", env=env)
    assert bad.returncode == 2 and "invalid choice: 'delete'" in bad.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_http_rotates_keepalive_connections_and_stops_on_sigterm(tmp_path):
    env = cli_env(tmp_path)
    assert run_cli("bootstrap", "--no-demo", env=env).returncode == 0
    port = _free_port()
    env.update(
        RANKLAB_PORT=str(port), RANKLAB_EMBEDDED_WORKER="false", RANKLAB_WEB_WORKERS="2", RANKLAB_KEEPALIVE_REQUESTS="3"
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as response:
                    status = response.status
                    body = response.read().decode()
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.3)
        assert status == 200 and "Log in" in body

        # One keep-alive connection: the third request's answer closes it (RANKLAB_KEEPALIVE_REQUESTS),
        # and the client carries on over a new one.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        answers = []
        for _ in range(4):
            connection.request("GET", "/login")
            response = connection.getresponse()
            response.read()
            answers.append((response.status, response.getheader("Connection"), connection.sock is None))
        connection.close()
        assert answers == [(200, None, False), (200, None, False), (200, "close", True), (200, None, False)]
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why it stopped.
    assert server.returncode in (0, -15), output
    assert output.count("Application shutdown complete") == 2  # both worker processes


def test_the_served_app_moves_its_start_up_objects_out_of_the_garbage_collectors_way(tmp_path):
    """create_served_app (what each `ranklab serve` worker runs) freezes what start-up made, so a full
    collection does not stall every request of the worker for ~0.2 s (docs/labeling-performance.md)."""
    script = (
        "import gc; from app.main import create_served_app; create_served_app(); "
        "print(gc.get_freeze_count(), sum(gc.get_count()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=cli_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    frozen, young = map(int, result.stdout.split())
    assert frozen > 50_000 and young < 100, result.stdout


def test_bootstrap_refuses_an_admin_email_that_a_labeler_has(db_url, tmp_path, db):
    from tests.factories import make_user

    make_user(db, role=Role.labeler, email="admin@ranklab.local")
    result = run_cli("bootstrap", env=cli_env(tmp_path, db_url))
    assert result.returncode == 2
    assert "admin@ranklab.local already has an account (setting RANKLAB_ADMIN_EMAIL)" in result.stderr
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Project)) == 0  # nothing half-done
