"""Keep-alive connections that move: spread evenly over `ranklab serve`'s worker processes.

uvicorn's worker processes share one listening socket, and the kernel hands each new connection
to whichever process accepts first. A connection then stays with that process for as long as the
client keeps it open, so a set of busy, long-lived connections can end up mostly on one worker,
and every request on the crowded worker waits longer (docs/labeling-performance.md, "A third
pass", steps 2 and 6). Two rules close connections so that they land again:

  * every `max_requests`-th request of a connection (nginx's `keepalive_requests`);
  * a worker holding more than its share of the busy connections closes one of them, at most one
    per `publish_every` seconds. Each worker writes its count to a file of its own in a folder
    the supervisor made (`ranklab serve` sets RANKLAB_WORKER_LOAD_DIR), and reads its siblings'.

The client notices nothing but a new TCP connection: the response says `Connection: close`,
as HTTP/1.1 allows (docs/labeling-performance.md).
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLOSE = (b"connection", b"close")
LOAD_DIR_ENV = "RANKLAB_WORKER_LOAD_DIR"


class WorkerLoad:
    """This worker's busy connections (a request within `window` seconds), published for its
    siblings, and whether it holds more than its share of all of them."""

    def __init__(
        self, folder: Path, *, pid: int | None = None, publish_every: float = 0.5, window: float = 2.0
    ) -> None:
        self.folder, self.pid = folder, pid or os.getpid()
        self.publish_every, self.window = publish_every, window
        self.last_seen: dict[tuple, float] = {}
        self.share = math.inf
        self.published_at = self.shed_at = -math.inf

    def seen(self, key: tuple, now: float) -> None:
        self.last_seen[key] = now
        if now - self.published_at >= self.publish_every:
            self._publish(now)

    def should_shed(self, key: tuple, now: float) -> bool:
        """True (at most once per publish_every) while this worker holds more than its share + 1."""
        if len(self.last_seen) <= self.share + 1 or now - self.shed_at < self.publish_every:
            return False
        self.shed_at = now
        self.last_seen.pop(key, None)
        return True

    def _publish(self, now: float) -> None:
        self.published_at = now
        self.last_seen = {k: t for k, t in self.last_seen.items() if now - t < self.window}
        mine = self.folder / str(self.pid)
        try:
            scratch = self.folder / f".{self.pid}"
            scratch.write_text(str(len(self.last_seen)))
            os.replace(scratch, mine)
            counts = [
                int(f.read_text() or 0)
                for f in self.folder.iterdir()
                if f.name.isdigit() and time.time() - f.stat().st_mtime < 4 * self.publish_every
            ]
        except (OSError, ValueError):  # a sibling mid-write or gone: try again next time
            return
        self.share = math.ceil(sum(counts) / max(len(counts), 1))


class KeepAliveLimit:
    """Adds `Connection: close` to a response when one of the module's rules says so.

    A connection is known by its client address and port (ASGI has no connection id); request
    counts of at most `remember` connections are kept, least recently used dropped first."""

    def __init__(
        self, app: ASGIApp, *, max_requests: int, load: WorkerLoad | None = None, remember: int = 4096
    ) -> None:
        self.app, self.max_requests, self.load, self.remember = app, max_requests, load, remember
        self.served: OrderedDict[tuple, int] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            await self.app(scope, receive, send)
            return
        key = tuple(client)
        count = self.served.pop(key, 0) + 1
        close = bool(self.max_requests) and count >= self.max_requests
        if self.load is not None:
            now = time.monotonic()
            self.load.seen(key, now)
            if close or self.load.should_shed(key, now):
                close = True
                self.load.last_seen.pop(key, None)  # this connection is leaving
        if not close:
            self.served[key] = count
            if len(self.served) > self.remember:
                self.served.popitem(last=False)
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), CLOSE]
            await send(message)

        await self.app(scope, receive, send_closing)


def worker_load() -> WorkerLoad | None:
    """This worker's WorkerLoad when `ranklab serve` runs several workers, else None."""
    folder = os.environ.get(LOAD_DIR_ENV)
    return WorkerLoad(Path(folder)) if folder and Path(folder).is_dir() else None
