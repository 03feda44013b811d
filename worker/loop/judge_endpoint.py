"""An OpenAI-compatible /chat/completions endpoint as a judge: retries with doubling backoff, a
rate limit, a clear failure when it stays down (worker/loop/judging.py). Never logs what it sends
or what comes back; the API key only travels in the Authorization header."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx


class EndpointDown(RuntimeError):
    """The judge endpoint did not answer within max_attempts (or refused the request)."""


@dataclass
class EndpointJudge:
    """An OpenAI-compatible /chat/completions endpoint, called with retries and a rate limit."""

    url: str
    model: str
    api_key: str | None
    max_attempts: int = 4
    requests_per_minute: float = 60.0
    backoff_seconds: float = 1.0
    """First wait after a failed call; doubles per try (a 429's Retry-After wins when given)."""
    timeout_seconds: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    calls: int = 0
    retries: int = 0
    _last_call: float = float("-inf")

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.Client(timeout=self.timeout_seconds, headers=headers)

    def close(self) -> None:
        self._client.close()

    def ask(self, rendered: str) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": rendered}],
            "temperature": 0,
            "max_tokens": 64,
        }
        endpoint = self.url.rstrip("/") + "/chat/completions"
        problem = ""
        for attempt in range(self.max_attempts):
            if attempt:
                self.retries += 1
            self._wait_for_rate_limit()
            self.calls += 1
            wait = self.backoff_seconds * 2**attempt
            try:
                response = self._client.post(endpoint, json=body)
            except httpx.HTTPError as exc:  # refused, reset, timed out
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return str(response.json()["choices"][0]["message"]["content"] or "")
                problem = f"HTTP {response.status_code}"
                if response.status_code == 429:
                    wait = max(wait, float(response.headers.get("retry-after") or 0))
                elif response.status_code < 500:  # 401, 404...: asking again will not help
                    raise EndpointDown(
                        f"judge endpoint {endpoint} refused the request ({problem}: {response.text[:200]}); "
                        "check the model name and the API key variable"
                    )
            if attempt + 1 < self.max_attempts:
                self.sleep(wait)
        raise EndpointDown(f"judge endpoint {endpoint} did not answer after {self.max_attempts} tries ({problem})")

    def _wait_for_rate_limit(self) -> None:
        gap = 60.0 / self.requests_per_minute - (time.monotonic() - self._last_call)
        if gap > 0:
            self.sleep(gap)
        self._last_call = time.monotonic()
