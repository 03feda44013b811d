"""The labeling load benchmark's set-up and its check (bench/labeling_load.py runs the load):
a database (SQLite file or a `ranklab_bench` PostgreSQL database) filled with a project, its
labelers and tasks; `ranklab serve` on it; and after the run, what the database says: every
accepted submission stored, no task over its overlap, no duplicate handout or ranking.
Split from labeling_load.py; bench/labeling_cpu.py uses prepare_database too."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
from sqlalchemy import func, insert, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.auth.security import hash_password  # noqa: E402
from app.db import make_engine  # noqa: E402
from app.markdown import html_columns  # noqa: E402
from app.models import (  # noqa: E402
    Assignment,
    Completion,
    Project,
    ProjectMember,
    Prompt,
    Ranking,
    RankingTask,
    TaskCompletion,
    User,
    utcnow,
)

PASSWORD = "bench-password"
NOW = utcnow()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(kind: str, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'bench.sqlite'}"
    admin_url = os.environ.get("RANKLAB_BENCH_POSTGRES_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    engine = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = 'ranklab_bench'")):
            conn.execute(text("CREATE DATABASE ranklab_bench"))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/ranklab_bench"


def completion_text(prompt: int, j: int, chars: int) -> str:
    """A one-line answer, or (chars > 0) a markdown answer of about `chars` characters: a
    paragraph, a list and a code block, like a chat model's."""
    if chars <= 0:
        return f"Answer {j} to prompt {prompt}, **some** `markdown`."
    words = [f"word{(prompt * 7 + j * 13 + i) % 97}" for i in range(chars // 8)]
    third = max(len(words) // 3, 1)
    items = "\n".join(
        f"{n + 1}. **{words[third + n * 5]}** is {' '.join(words[third + n * 5 + 1 : third + n * 5 + 5])}"
        for n in range(4)
    )
    code = "\n".join(f"    total += {w}  # step {n}" for n, w in enumerate(words[2 * third : 2 * third + 5]))
    return (
        f"Answer {j} to prompt {prompt}: {' '.join(words[:third])}.\n\n{items}\n\n"
        f"```python\ntotal = 0\n{code}\n```\n\nIn short: {' '.join(words[-12:])}."
    )[: max(chars, 80)]


def prepare_database(url: str, *, labelers: int, tasks: int, k: int, overlap: int, completion_chars: int = 0) -> int:
    """Fresh schema via Alembic, then one project with `tasks` tasks and `labelers` members. The
    completions are stored as the upload API stores them, with their HTML (app/markdown.py)."""
    engine = make_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        check=True,
        env={**os.environ, "RANKLAB_DATABASE_URL": url},
    )
    password_hash = hash_password(PASSWORD)
    with engine.begin() as conn:
        project_id = conn.execute(
            insert(Project)
            .values(
                name="load test",
                description="",
                guidelines="Rank them.",
                k_min=4,
                k_max=9,
                overlap=overlap,
                lease_minutes=30,
                flags=["unsafe", "off_topic"],
                created_at=NOW,
            )
            .returning(Project.id)
        ).scalar_one()
        conn.execute(
            insert(User),
            [
                dict(
                    email=f"labeler{i}@bench.local",
                    display_name=f"labeler{i}",
                    password_hash=password_hash,
                    role="labeler",
                    is_active=True,
                    created_at=NOW,
                )
                for i in range(labelers)
            ],
        )
        user_ids = conn.scalars(select(User.id).order_by(User.id)).all()
        conn.execute(insert(ProjectMember), [dict(project_id=project_id, user_id=u) for u in user_ids])
        conn.execute(
            insert(Prompt),
            [
                dict(
                    project_id=project_id,
                    external_id=f"p{i}",
                    text=f"Prompt {i}: explain X.",
                    meta={},
                    split="train",
                    created_at=NOW,
                )
                for i in range(tasks)
            ],
        )
        prompt_ids = conn.scalars(select(Prompt.id).order_by(Prompt.id)).all()
        texts = [(p, completion_text(p, j, completion_chars)) for p in prompt_ids for j in range(k)]
        conn.execute(
            insert(Completion),
            [
                dict(
                    prompt_id=p,
                    text=t,
                    source="upload",
                    model_name="bench",
                    generation_params={},
                    created_at=NOW,
                    **html_columns(t),
                )
                for p, t in texts
            ],
        )
        conn.execute(
            insert(RankingTask),
            [
                dict(project_id=project_id, prompt_id=p, status="open", slots_taken=0, rankings_count=0, created_at=NOW)
                for p in prompt_ids
            ],
        )
        task_rows = conn.execute(select(RankingTask.id, RankingTask.prompt_id)).all()
        by_prompt = defaultdict(list)
        for cid, pid in conn.execute(select(Completion.id, Completion.prompt_id).order_by(Completion.id)):
            by_prompt[pid].append(cid)
        conn.execute(
            insert(TaskCompletion),
            [dict(task_id=t, completion_id=c, position=i) for t, p in task_rows for i, c in enumerate(by_prompt[p])],
        )
    # Planner statistics, as autovacuum keeps them on a database in use: without them Postgres
    # plans the handout's anti-join over freshly loaded tables far too slowly
    # (docs/labeling-performance.md, "How to reproduce", planner statistics).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return project_id


def start_server(url: str, port: int, workers: int, workdir: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "RANKLAB_DATABASE_URL": url,
        "RANKLAB_PORT": str(port),
        "RANKLAB_WEB_WORKERS": str(workers),
        "RANKLAB_EMBEDDED_WORKER": "false",
        "RANKLAB_DATA_DIR": str(workdir),
        "RANKLAB_SECRET_KEY": "bench",
    }
    log = open(workdir / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not start; see {workdir / 'server.log'}")


def verify(url: str, accepted: set[tuple[int, int]], overlap: int) -> dict[str, int]:
    """What the database holds after the run; `accepted`: (labeler, assignment id) the server accepted."""
    engine = make_engine(url)
    with engine.connect() as conn:
        rankings = conn.scalar(select(func.count()).select_from(Ranking))
        stored = set(
            conn.execute(select(Assignment.id).join(Ranking, Ranking.assignment_id == Assignment.id)).scalars()
        )
        over = conn.scalar(
            select(func.count()).select_from(
                select(Ranking.task_id).group_by(Ranking.task_id).having(func.count() > overlap).subquery()
            )
        )
        duplicate_rankings = conn.scalar(
            select(func.count()).select_from(
                select(Ranking.task_id, Ranking.user_id)
                .group_by(Ranking.task_id, Ranking.user_id)
                .having(func.count() > 1)
                .subquery()
            )
        )
        # A task held by more labelers than its overlap at one time = a duplicate handout.
        over_handed = conn.scalar(
            select(func.count()).select_from(
                select(Assignment.task_id)
                .where(Assignment.state.in_(["leased", "submitted"]))
                .group_by(Assignment.task_id)
                .having(func.count() > overlap)
                .subquery()
            )
        )
    engine.dispose()
    lost = sum(1 for _user, assignment in accepted if assignment not in stored)
    return {
        "rankings_in_db": rankings,
        "accepted": len(accepted),
        "lost": lost,
        "tasks_over_overlap": over,
        "duplicate_handouts": over_handed,
        "duplicate_rankings": duplicate_rankings,
    }
