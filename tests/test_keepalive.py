"""Keep-alive connections spread over `ranklab serve`'s workers (app/keepalive.py): the shared
load folder, and the middleware answering `Connection: close` on the crowded worker."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.keepalive import KeepAliveLimit, WorkerLoad


def test_a_worker_with_more_than_its_share_sheds_one_connection_per_period(tmp_path):
    crowded, other = WorkerLoad(tmp_path, pid=1001), WorkerLoad(tmp_path, pid=1002)
    for i in range(20):
        crowded.seen(("a", i), 100.0)
    for i in range(10):
        other.seen(("b", i), 100.0)
    crowded.seen(("a", 0), 101.0)  # publishes 20, reads the other's first count
    other.seen(("b", 0), 101.0)  # publishes 10, reads 20
    assert (tmp_path / "1001").read_text() == "20" and (tmp_path / "1002").read_text() == "10"

    assert not other.should_shed(("b", 0), 101.0)  # 10 of 30: under its share
    assert crowded.should_shed(("a", 0), 101.0)
    assert not crowded.should_shed(("a", 1), 101.2)  # one per period, so counts can catch up
    crowded.seen(("a", 1), 101.6)  # 19 now against 10: still over ceil(29 / 2) + 1
    assert crowded.should_shed(("a", 1), 101.6)
    assert not WorkerLoad(tmp_path, pid=1003).should_shed(("c", 0), 101.6)  # knows no share yet


def test_the_crowded_worker_answers_connection_close_until_it_holds_its_share(tmp_path):
    (tmp_path / "2").write_text("0")  # an idle sibling worker
    load = WorkerLoad(tmp_path, pid=1, publish_every=0.05)
    app = KeepAliveLimit(
        Starlette(routes=[Route("/", lambda _request: PlainTextResponse("ok"))]), max_requests=0, load=load
    )

    async def one_round(ports: range) -> list[str | None]:
        answers = []
        for port in ports:
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", port))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                response = await client.get("/")
                assert response.text == "ok"
                answers.append(response.headers.get("connection"))
        return answers

    async def rounds() -> list[list[str | None]]:
        results = []
        for _ in range(3):
            (tmp_path / "2").write_text("0")  # keep the sibling's count fresh
            results.append(await one_round(range(5000, 5006)))
            await asyncio.sleep(0.06)
        return results

    # It holds all six busy connections against an idle sibling (share 3): each period it closes
    # one, and only one, so the counts the workers publish can catch up before the next.
    with ThreadPoolExecutor(max_workers=1) as thread:  # Playwright may hold this thread's event loop
        results = thread.submit(asyncio.run, rounds()).result()
    assert [answers.count("close") for answers in results] == [1, 1, 1]
    assert time.time() - (tmp_path / "1").stat().st_mtime < 5 and int((tmp_path / "1").read_text()) >= 5
