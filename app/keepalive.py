"""Closes a keep-alive connection after a number of requests, as nginx's `keepalive_requests` does.

uvicorn's worker processes share one listening socket, and the kernel hands each new connection
to whichever process accepts first. A connection then stays with that process for as long as the
client keeps it open, so a set of busy, long-lived connections can end up 8 on one worker and 24
on the other (seen in the labeling benchmark), and every request on the crowded worker waits
about twice as long. Closing a connection now and then lets it land again, so no client stays on
a crowded worker for long: in the benchmark the workers' median latencies came within 1–3 ms of
each other, against 40–50 ms apart without (docs/labeling-performance.md).
The client notices nothing but a new TCP connection: the response says `Connection: close`,
as HTTP/1.1 allows.
"""
from __future__ import annotations

from collections import OrderedDict

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLOSE = (b"connection", b"close")


class KeepAliveLimit:
    """Answers every `max_requests`-th request of a connection with `Connection: close`.

    A connection is known by its client address and port (ASGI has no connection id); the counts
    of at most `remember` connections are kept, least recently used dropped first."""

    def __init__(self, app: ASGIApp, *, max_requests: int, remember: int = 4096) -> None:
        self.app, self.max_requests, self.remember = app, max_requests, remember
        self.served: OrderedDict[tuple, int] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            await self.app(scope, receive, send)
            return
        key = tuple(client)
        count = self.served.pop(key, 0) + 1
        if count < self.max_requests:
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
