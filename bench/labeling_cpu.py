"""CPU cost of one labeling loop (a ranking stored + the next task handed out), measured in-process.

Wall-clock throughput on a shared 2-core machine swings with whatever else runs; CPU time per
loop does not. This drives the real app (middleware, dependencies, endpoints, templates, the
real database) through its ASGI interface, one request at a time, and reports per loop:

  * web CPU: this process's CPU time (all threads, so the threadpool the sync endpoints run in
    is counted); no HTTP parsing or client is in it (bench/labeling_load.py covers those);
  * Postgres CPU: the utime+stime of this benchmark's backend processes (/proc; local server only);
  * SQL statements per request.

    .venv/bin/python bench/labeling_cpu.py --db postgres --loops 2000
    .venv/bin/python bench/labeling_cpu.py --db sqlite --loops 2000 --profile /tmp/loop.pstats
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy import event, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cpu_meter import proc_cpu_seconds  # noqa: E402
from labeling_setup import prepare_database  # noqa: E402

from app.auth import service as auth_service  # noqa: E402
from app.db import make_engine  # noqa: E402
from app.deps import SESSION_COOKIE  # noqa: E402
from app.main import create_app  # noqa: E402
from app.models import User, WebSession  # noqa: E402
from app.settings import Settings  # noqa: E402

ASSIGNMENT_RE = re.compile(rb'data-assignment-id="(\d+)"')
COMPLETION_RE = re.compile(rb'data-completion-id="(\d+)"')


def postgres_url(name: str) -> str:
    admin_url = os.environ.get("RANKLAB_BENCH_POSTGRES_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    engine = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


class AsgiCaller:
    """The least a client can do: one ASGI call with a fixed scope, the body collected."""

    def __init__(self, app) -> None:
        self.app = app

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            + [(b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False
        status, chunks = 0, []

        async def receive():
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


def postgres_backends_cpu(engine, database: str) -> float:
    """CPU seconds of the Postgres backends connected to `database` (this benchmark's only)."""
    with engine.connect() as conn:
        pids = conn.scalars(text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database}).all()
    return sum(proc_cpu_seconds(pid) for pid in pids)


def parse_task(body: bytes) -> tuple[int, list[int]] | None:
    match = ASSIGNMENT_RE.search(body)
    if match is None:
        return None
    return int(match.group(1)), [int(c) for c in COMPLETION_RE.findall(body)]


async def run_loops(
    caller: AsgiCaller,
    sessions: list[tuple[str, str]],
    project_id: int,
    loops: int,
    statements: Counter,
    current: list[str],
    flow: str,
    pending: dict[int, tuple],
) -> None:
    """flow="browser": a labeler ranks the task their last submit answered with (what the page
    does); flow="two-calls": a GET of the task before every submit. `pending` keeps each labeler's
    next task between calls."""
    rng = random.Random(0)
    for i in range(loops):
        who = i % len(sessions)
        cookie, csrf = sessions[who]
        headers = {
            "host": "127.0.0.1",
            "cookie": f"{SESSION_COOKIE}={cookie}",
            "hx-request": "true",
            "x-csrf-token": csrf,
        }
        task = pending.pop(who, None) if flow == "browser" else None
        if task is None:
            current[0] = "next"
            status, body = await caller.request("GET", f"/projects/{project_id}/label", headers)
            if status != 200:
                raise SystemExit(f"next-task answered {status}: {body[:300]!r}")
            task = parse_task(body)
            if task is None:
                raise SystemExit("queue empty: create more tasks (--tasks)")
        assignment, ids = task
        ids = list(ids)
        rng.shuffle(ids)
        groups = [[ids[0], ids[1]]] + [[c] for c in ids[2:]]
        form = urlencode(
            {
                "ranking": json.dumps(groups),
                "time_spent_ms": str(rng.randint(2000, 60000)),
                "flag": f"{ids[-1]}:off_topic",
            }
        ).encode()
        current[0] = "submit"
        status, body = await caller.request(
            "POST",
            f"/projects/{project_id}/label/{assignment}",
            {**headers, "content-type": "application/x-www-form-urlencoded"},
            form,
        )
        if status != 200 or b"Saved." not in body:
            raise SystemExit(f"submit answered {status}: {body[:300]!r}")
        next_task = parse_task(body)
        if next_task is not None:
            pending[who] = next_task
        current[0] = "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--loops", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--labelers", type=int, default=32)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database", default="ranklab_cpu", help="Postgres database to (re)create")
    parser.add_argument(
        "--flow",
        choices=["browser", "two-calls"],
        default="browser",
        help="browser: rank the task the submit answered with; two-calls: GET before every submit",
    )
    parser.add_argument("--profile", help="write a yappi profile (pstats format, all threads) here")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ranklab-cpu-"))
    database = args.database
    url = postgres_url(database) if args.db == "postgres" else f"sqlite:///{workdir / 'cpu.sqlite'}"
    tasks = (args.loops + args.warmup) // args.overlap + 2 * args.labelers + 100
    project_id = prepare_database(url, labelers=args.labelers, tasks=tasks, k=args.k, overlap=args.overlap)

    settings = Settings(data_dir=workdir, database_url=url, secret_key="bench", embedded_worker=False, _env_file=None)
    app = create_app(settings)
    with app.state.sessionmaker() as db:
        sessions = []
        for user in db.scalars(select(User).order_by(User.id)):
            token = auth_service.start_session(db, user=user, hours=1)
            csrf = db.scalar(select(WebSession.csrf_token).order_by(WebSession.id.desc()).limit(1))
            sessions.append((token, csrf))
        db.commit()

    statements: Counter = Counter()
    current = ["other"]

    @event.listens_for(app.state.engine, "before_cursor_execute")
    def _count(*_args):
        statements[current[0]] += 1

    caller = AsgiCaller(app)
    pending: dict[int, tuple] = {}
    loop = asyncio.new_event_loop()
    loop.run_until_complete(
        run_loops(caller, sessions, project_id, args.warmup, Counter(), current, args.flow, pending)
    )
    statements.clear()
    if args.profile:
        import yappi

        yappi.set_clock_type("cpu")
        yappi.start()
    # The machine is shared: CPU time per loop is inflated by whatever else runs (caches, SMT
    # siblings), so the loops run in rounds and the best and median rounds are reported.
    per_round = args.loops // args.rounds
    web, pg, walls = [], [], []
    for _ in range(args.rounds):
        pg0 = postgres_backends_cpu(app.state.engine, database) if args.db == "postgres" else 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        loop.run_until_complete(
            run_loops(caller, sessions, project_id, per_round, statements, current, args.flow, pending)
        )
        web.append((time.process_time() - cpu0) / per_round)
        walls.append((time.perf_counter() - wall0) / per_round)
        if args.db == "postgres":
            pg.append((postgres_backends_cpu(app.state.engine, database) - pg0) / per_round)
    if args.profile:
        yappi.stop()
        yappi.get_func_stats().save(args.profile, type="pstat")
    app.state.engine.dispose()

    n = per_round * args.rounds

    def ms(values: list[float]) -> str:
        return (
            f"{min(values) * 1000:6.2f} ms/loop best, {statistics.median(values) * 1000:6.2f} median"
            if values
            else "   n/a"
        )

    print(
        f"labeling loop CPU, {args.db}, {n} loops over {args.labelers} labelers (K={args.k}), one at a time, "
        f"{args.rounds} rounds, {args.flow} flow"
    )
    print(f"  web process CPU   {ms(web)}   (wall {statistics.median(walls) * 1000:.2f} ms/loop median)")
    print(f"  Postgres CPU      {ms(pg)}")
    print(f"  SQL statements    next {statements['next'] / n:.1f}, submit {statements['submit'] / n:.1f} per loop")
    print(f"  load average      {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
