"""Labelers as asyncio httpx clients against a real server: log in, then next task → submit in a
loop, recording every answer (when it was sent, how long it took, status, Retry-After)."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import httpx

from tests.factories import PASSWORD

CSRF_RE = re.compile(r'"X-CSRF-Token": "([^"]+)"')
CLIENT_TIMEOUT_SECONDS = 20.0
"""The bound on any one request: a request still unanswered after this counts as a hang."""


@dataclass(frozen=True)
class Answer:
    labeler: int
    kind: str  # "next" or "submit"
    sent: float  # time.monotonic()
    seconds: float
    status: int | None  # None: no HTTP answer at all (transport error or timeout)
    retry_after: str | None = None
    detail: str = ""


@dataclass
class Labeler:
    index: int
    email: str
    client: httpx.AsyncClient
    csrf: str = ""
    answers: list[Answer] = field(default_factory=list)
    accepted: list[tuple[int, int]] = field(default_factory=list)
    """(assignment id, ranking id) of every submission answered 200."""

    async def login(self) -> None:
        response = await self.client.post("/login", data={"email": self.email, "password": PASSWORD})
        assert response.status_code == 303, response.text
        self.csrf = CSRF_RE.search((await self.client.get("/")).text).group(1)

    async def _call(self, kind: str, method: str, url: str, **kw) -> httpx.Response | None:
        sent = time.monotonic()
        try:
            response = await self.client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.answers.append(
                Answer(self.index, kind, sent, time.monotonic() - sent, None, detail=f"{type(exc).__name__}: {exc}")
            )
            return None
        detail = ""
        if response.status_code >= 400:  # a 500 from the server's last-resort handler is plain text
            is_json = response.headers.get("content-type", "").startswith("application/json")
            detail = response.json().get("detail", "") if is_json else response.text[:200]
        self.answers.append(
            Answer(
                self.index,
                kind,
                sent,
                time.monotonic() - sent,
                response.status_code,
                response.headers.get("retry-after"),
                str(detail),
            )
        )
        return response

    async def run(self, project_id: int, stop: asyncio.Event, pause: float = 0.05) -> None:
        """Labels until `stop`; after an error it asks for its task again (the same one while it holds
        it) and resubmits, which submission's idempotency makes safe."""
        base = f"/api/v1/labeling/projects/{project_id}"
        while not stop.is_set():
            response = await self._call("next", "GET", f"{base}/next")
            task = response.json()["task"] if response is not None and response.status_code == 200 else None
            if task is not None:
                ranking = [[c["id"]] for c in task["completions"]]
                response = await self._call(
                    "submit",
                    "POST",
                    f"{base}/assignments/{task['assignment_id']}/ranking",
                    json={"ranking": ranking},
                    headers={"X-CSRF-Token": self.csrf},
                )
                if response is not None and response.status_code == 200:
                    self.accepted.append((task["assignment_id"], response.json()["ranking_id"]))
            await asyncio.sleep(pause)

    def since(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.sent >= moment]
