"""Load benchmark for the labeling loop: N concurrent labelers (distinct users) doing
next-task + submit through the same htmx endpoints the browser uses, against a real uvicorn.

It sets up its own project, tasks and users, starts `ranklab serve` (unless --url is given),
runs for --seconds, then checks the database: every accepted submission stored, no task ranked
more often than its overlap, no task handed to more labelers than its overlap at once, no
duplicate rankings from the client retries it sends on purpose (--retry-fraction).

Client and server share the machine, so it also reports the CPU time per loop of the server's
processes, of this client and of the Postgres backends serving the run. The default client
(bench/rawhttp.py) costs a fraction of httpx's CPU; `--client httpx` is there to compare.

    .venv/bin/python bench/labeling_load.py --db postgres --labelers 32 --seconds 30
    .venv/bin/python bench/labeling_load.py --db sqlite --labelers 8 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import rawhttp  # noqa: E402
from cpu_meter import CpuMeter  # noqa: E402
from handout_order import ORDERS, apply_order  # noqa: E402
from labeling_setup import PASSWORD, database_url, free_port, prepare_database, start_server, verify  # noqa: E402

ASSIGNMENT_RE = re.compile(r'data-assignment-id="(\d+)"')
COMPLETION_RE = re.compile(r'data-completion-id="(\d+)"')
CSRF_RE = re.compile(r'"X-CSRF-Token": "([^"]+)"')


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    loops: int = 0
    errors: Counter = field(default_factory=Counter)
    accepted: set[tuple[int, int]] = field(default_factory=set)  # (user index, assignment id)
    retries_sent: int = 0
    trace: list | None = field(default_factory=lambda: [] if os.environ.get("BENCH_TRACE") else None)
    """(sent at, latency, labeler) of every first submit, when BENCH_TRACE names a file to write."""
    process_of_labeler: dict[int, int] = field(default_factory=dict)
    submits_by_labeler: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))


async def timed(stats: Stats, name: str, coro):
    start = time.perf_counter()
    try:
        return await coro
    finally:
        stats.latencies[name].append(time.perf_counter() - start)


class HttpxConnection:
    """httpx behind the same small interface as rawhttp.Connection (for --client httpx)."""

    def __init__(self, base_url: str) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.client = httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> rawhttp.Response:
        return self._wrap(await self.client.get(path, headers=headers))

    async def post_form(self, path: str, form: dict, headers: dict[str, str] | None = None) -> rawhttp.Response:
        return self._wrap(await self.client.post(path, data=form, headers=headers))

    async def close(self) -> None:
        await self.client.aclose()

    @staticmethod
    def _wrap(response: httpx.Response) -> rawhttp.Response:
        return rawhttp.Response(
            response.status_code, [(k.lower(), v) for k, v in response.headers.items()], response.content
        )


async def login(client, index: int, project_id: int) -> dict[str, str]:
    response = await client.post_form("/login", {"email": f"labeler{index}@bench.local", "password": PASSWORD})
    if response.status != 303:
        raise SystemExit(f"login of labeler{index} failed: {response.status}")
    page = await client.get(f"/projects/{project_id}/label")
    return {"HX-Request": "true", "X-CSRF-Token": CSRF_RE.search(page.text).group(1)}


def parse_task(text: str) -> tuple[int, list[int]] | None:
    """The assignment and completion ids of the task fragment in a page or htmx response."""
    match = ASSIGNMENT_RE.search(text)
    if match is None:
        return None
    return int(match.group(1)), [int(c) for c in COMPLETION_RE.findall(text)]


async def labeler(
    index: int,
    client,
    headers: dict[str, str],
    project_id: int,
    stop_at: float,
    stats: Stats,
    retry_fraction: float,
    max_loops: int,
    flow: str,
) -> None:
    """One labeler. flow="browser": what ranking.js and htmx do — the submit's answer carries the
    next task, which is ranked next (one request per ranking). flow="two-calls": a GET of the task
    before every submit, as a client that ignores the submit's answer would do."""
    rng = random.Random(index)
    task = None
    while time.time() < stop_at and stats.loops < max_loops:
        if task is None or flow == "two-calls":
            response = await timed(stats, "next", client.get(f"/projects/{project_id}/label", headers))
            if response.status != 200:
                stats.errors[f"next {response.status}"] += 1
                continue
            task = parse_task(response.text)
            if task is None:
                stats.errors["queue empty"] += 1
                await asyncio.sleep(0.5)
                continue
        assignment, ids = task
        ids = list(ids)
        rng.shuffle(ids)
        groups = [[ids[0], ids[1]]] + [[c] for c in ids[2:]]  # one tie per ranking
        form = {
            "ranking": json.dumps(groups),
            "time_spent_ms": str(rng.randint(2000, 60000)),
            "flag": [f"{ids[-1]}:off_topic"],
        }
        url = f"/projects/{project_id}/label/{assignment}"
        sent_at = time.perf_counter()
        response = await timed(stats, "submit", client.post_form(url, form, headers))
        latency = stats.latencies["submit"][-1]
        stats.submits_by_labeler[index].append(latency)
        if stats.trace is not None:
            stats.trace.append((sent_at, latency, index))
        if rng.random() < retry_fraction:  # a client retry / double click: must not duplicate
            stats.retries_sent += 1
            retry = await timed(stats, "submit", client.post_form(url, form, headers))
            if retry.status != 200:
                stats.errors[f"retry {retry.status}"] += 1
        if response.status == 200 and "Saved." in response.text:
            stats.accepted.add((index, assignment))
            stats.loops += 1
            task = parse_task(response.text)  # the next task, already leased to this labeler
        else:
            stats.errors[f"submit {response.status}"] += 1
            task = None


async def run_team(
    base: str,
    project_id: int,
    labelers: int,
    seconds: float,
    stats: Stats,
    retry_fraction: float,
    max_loops: int,
    client_kind: str,
    meter: CpuMeter,
    flow: str,
) -> float:
    """Logs everyone in first (argon2 is slow on purpose), then runs the timed phase."""
    clients = [rawhttp.Connection(base) if client_kind == "raw" else HttpxConnection(base) for _ in range(labelers)]
    try:
        # One after another: concurrent logins on SQLite can fail with "database is locked" (the
        # login reads, then writes, in a deferred transaction), and they are not what is measured.
        headers = [await login(c, i, project_id) for i, c in enumerate(clients)]
        meter.read()
        started = time.time()
        await asyncio.gather(
            *(
                labeler(i, c, h, project_id, started + seconds, stats, retry_fraction, max_loops, flow)
                for i, (c, h) in enumerate(zip(clients, headers, strict=True))
            )
        )
        elapsed = time.time() - started
        meter.read()
        stats.process_of_labeler = server_process_of(clients, int(base.rsplit(":", 1)[1]))
        return elapsed
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def server_process_of(clients: list, server_port: int) -> dict[int, int]:
    """Labeler index -> pid of the server process holding its keep-alive connection (from `ss`).
    uvicorn's workers share one listening socket, so how the connections spread is up to the kernel."""
    ports = {c.local_port: i for i, c in enumerate(clients) if getattr(c, "local_port", None)}
    try:
        lines = subprocess.run(
            ["ss", "-tnpH", "state", "established"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {}
    found = {}
    for line in lines:
        parts = line.split()
        pid = re.search(r"pid=(\d+)", line)
        if len(parts) >= 4 and pid and parts[2].endswith(f":{server_port}"):
            peer_port = int(parts[3].rsplit(":", 1)[1])
            if peer_port in ports:
                found[ports[peer_port]] = int(pid.group(1))
    return found


def print_spread(stats: Stats) -> None:
    """Connections, loops and submit latency per server process: an uneven spread shows in the tail."""
    by_process: dict[int, list[int]] = defaultdict(list)
    for labeler, pid in stats.process_of_labeler.items():
        by_process[pid].append(labeler)
    for pid, labelers in sorted(by_process.items()):
        values = [v for i in labelers for v in stats.submits_by_labeler[i]]
        print(
            f"  server pid {pid:<8} {len(labelers):3d} connections, {len(values):6d} submits, "
            f"p50 / p99 {percentile(values, 0.5) * 1000:6.1f} / {percentile(values, 0.99) * 1000:6.1f} ms"
        )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--labelers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-loops", type=int, default=1_000_000, help="stop after this many loops in all")
    parser.add_argument("--tasks", type=int, default=0, help="tasks to create (default: enough for the run)")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument(
        "--completion-chars",
        type=int,
        default=0,
        help="markdown completions of about this many characters (default: one short line)",
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--retry-fraction", type=float, default=0.05, help="share of submits sent twice on purpose")
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="raw: bench/rawhttp.py (light); httpx: to compare what the client costs",
    )
    parser.add_argument(
        "--flow",
        choices=["browser", "two-calls"],
        default="browser",
        help="browser: rank the task the submit answered with (what the page does); "
        "two-calls: GET the task before every submit",
    )
    parser.add_argument(
        "--order", choices=ORDERS, default="default", help="uncertainty: by random priorities (handout_order.py)"
    )
    parser.add_argument("--url", help="use a running server instead (its DB must be --db-url)")
    parser.add_argument("--db-url", help="database of the running server given by --url")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ranklab-load-"))
    url = args.db_url or database_url(args.db, workdir)
    tasks = args.tasks or max(2000, int(args.seconds * 400 / args.overlap))
    print(f"setting up {tasks} tasks (K={args.k}, overlap={args.overlap}) and {args.labelers} labelers on {args.db}…")
    project_id = prepare_database(
        url, labelers=args.labelers, tasks=tasks, k=args.k, overlap=args.overlap, completion_chars=args.completion_chars
    )
    if args.order != "default":
        print(f"handout order {args.order}: {apply_order(url, project_id, args.order)} of {tasks} tasks scored")
    server = None
    if args.url:
        base = args.url
    else:
        port = free_port()
        server = start_server(url, port, args.workers, workdir)
        base = f"http://127.0.0.1:{port}"
    stats = Stats()
    meter = CpuMeter(server_pid=server.pid if server is not None else None, db_url=url)
    try:
        elapsed = asyncio.run(
            run_team(
                base,
                project_id,
                args.labelers,
                args.seconds,
                stats,
                args.retry_fraction,
                args.max_loops,
                args.client,
                meter,
                args.flow,
            )
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    checks = verify(url, stats.accepted, args.overlap)
    server_errors = sum(n for key, n in stats.errors.items() if key.split()[-1].startswith("5"))
    server_ms, client_ms, postgres_ms = meter.per_loop_ms(stats.loops)
    print(
        f"\nranklab labeling load — {args.labelers} labelers, {args.db}, {args.workers} uvicorn workers, "
        f"{args.client} client, {args.flow} flow, {args.order} order, {elapsed:.1f} s, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        f"  loops/s             {stats.loops / elapsed:8.1f}   "
        f"({stats.loops} loops = rankings stored, each with the next task handed out)"
    )
    for name in ("next", "submit"):
        values = stats.latencies[name]
        print(
            f"  {name:<7} p50 / p99    {percentile(values, 0.5) * 1000:6.1f} / "
            f"{percentile(values, 0.99) * 1000:6.1f} ms"
            f"   (mean {statistics.fmean(values) * 1000 if values else float('nan'):.1f} ms, n={len(values)})"
        )
    print(f"  CPU per loop        server {server_ms:.2f} ms, Postgres {postgres_ms:.2f} ms, client {client_ms:.2f} ms")
    print_spread(stats)
    if stats.trace is not None:
        Path(os.environ["BENCH_TRACE"]).write_text(json.dumps(stats.trace))
    print(f"  errors              {dict(stats.errors) or 0}   (server errors: {server_errors})")
    print(f"  retries sent        {stats.retries_sent}")
    for key, value in checks.items():
        print(f"  {key:<19} {value}")
    print(
        "\nFor reference (docs/measured-facts.md, same machine): Label Studio 1.23.2 at 32 labelers, "
        "production layout on PostgreSQL: 19.3–20.2 loops/s, no duplicate handouts (compare with "
        "--flow two-calls --client httpx); default install (dev server + SQLite): 1.7–2.0 loops/s, "
        "15–18% duplicate handouts."
    )
    ok = (
        checks["lost"] == 0
        and checks["tasks_over_overlap"] == 0
        and checks["duplicate_rankings"] == 0
        and checks["duplicate_handouts"] == 0
        and server_errors == 0
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
