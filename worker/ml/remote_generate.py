"""K completions per prompt from a served model, over OpenAI's chat-completions API.

Teams that serve their own policy (vLLM, TGI, SGLang, Ollama, a provider) point a round at it by
URL instead of loading weights on the worker. Each prompt becomes one request with n=K (or K
requests of n=1), at most `cfg.concurrency` in flight. A 429, a 5xx, a timeout or a dropped
connection is retried with exponential backoff, honouring the server's Retry-After; anything else
(a bad key, an unknown model, a prompt too long) fails at once. The result is all prompts' samples
or an exception naming the endpoint: nothing is returned half done, so the caller stores a batch
only when it is complete.

Privacy: the API key is read from the environment variable named by `cfg.api_key_env` (never from
a config, card or database) and is never logged; logs carry counts and statuses, never prompt or
completion text.
"""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx

from worker.ml.config import GenerationConfig
from worker.ml.data import Prompt, as_messages
from worker.ml.generate import Completion
from worker.ml.models import Progress

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
"""Statuses worth another try: rate limits, overload, gateways, transient server errors."""
MAX_WAIT_S = 120.0
"""Longest wait before one retry, even when Retry-After asks for more (a round should fail with
a message rather than sleep for an hour)."""


class RemoteGenerationError(RuntimeError):
    """The endpoint refused a request or stayed unreachable; the message names it and says why."""


def generate_remote(
    prompts: Sequence[Prompt],
    cfg: GenerationConfig,
    on_progress: Progress | None = None,
    *,
    model_version: str = "",
) -> list[list[Completion]]:
    """K completions for each prompt, in prompt order, from the server at `cfg.base_url`."""
    if not prompts:
        return []
    # 1. The key comes from the environment only; the config holds the variable's name.
    key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    version = model_version or cfg.remote_model
    stop = threading.Event()  # set on the first failure (or a cancel): other requests stop retrying
    client = httpx.Client(
        base_url=cfg.base_url.rstrip("/") + "/",
        headers=headers,
        timeout=cfg.timeout_s,
        limits=httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency),
    )
    # 2. One job per prompt; the pool's size is the concurrency limit (a job's requests are serial).
    pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="remote-generate")
    try:
        futures: dict[Future, int] = {
            pool.submit(_samples_for, client, prompt, cfg, version, stop): i for i, prompt in enumerate(prompts)
        }
        results: list[list[Completion] | None] = [None] * len(prompts)
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                results[futures[future]] = future.result()  # re-raises the first failure
            if on_progress is not None:  # from this thread only: a progress callback may cancel
                on_progress(sum(r is not None for r in results), len(prompts), "generate")
        return [r for r in results if r is not None]
    finally:
        # 3. On any exit: stop retries elsewhere, drop queued prompts, close the connections.
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        client.close()


def _samples_for(
    client: httpx.Client, prompt: Prompt, cfg: GenerationConfig, version: str, stop: threading.Event
) -> list[Completion]:
    """K samples of one prompt: n=K at once, topped up when the server returns fewer."""
    samples: list[Completion] = []
    while len(samples) < cfg.k:
        missing = cfg.k - len(samples)
        body: dict[str, Any] = {
            "model": cfg.remote_model,
            "messages": as_messages(prompt),
            "n": missing if cfg.use_n else 1,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_new_tokens,
        }
        if cfg.seed is not None:  # a different seed per request of the same prompt, or they repeat
            body["seed"] = cfg.seed + len(samples)
        got = _completions(_post(client, body, cfg, stop), version, cfg.max_new_tokens)
        if not got:
            raise RemoteGenerationError(f"{cfg.base_url} answered without any choices; is it an OpenAI-compatible API?")
        samples.extend(got[:missing])
    return samples


def _completions(response: dict, version: str, max_tokens: int) -> list[Completion]:
    """OpenAI's choices as our Completions. finish_reason "length" stays; any other end (stop,
    eos_token, content_filter) is "eos". Token counts come from the server's usage, which gives
    only the sum over choices: a "length" choice has exactly max_tokens, the rest of the sum is
    split over the others in proportion to their text lengths (exact when one is left)."""
    choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
    texts = [((c.get("message") or {}).get("content") or c.get("text") or "") for c in choices]
    total = (response.get("usage") or {}).get("completion_tokens")
    counts = [max_tokens if c.get("finish_reason") == "length" else 0 for c in choices]
    ended = [i for i, c in enumerate(choices) if c.get("finish_reason") != "length"]
    if isinstance(total, int) and ended:
        left = max(0, total - sum(counts))
        for i, part in zip(ended, _split(left, [len(texts[i]) for i in ended]), strict=True):
            counts[i] = part
    return [
        Completion(
            text=text,
            token_count=count,
            finish_reason="length" if choice.get("finish_reason") == "length" else "eos",
            model_version=version,
        )
        for choice, text, count in zip(choices, texts, counts, strict=True)
    ]


def _split(total: int, weights: list[int]) -> list[int]:
    """`total` in whole parts proportional to `weights` (largest remainder), summing to `total`."""
    if len(weights) <= 1:
        return [total] * len(weights)
    if not any(weights):  # all choices empty: equal parts
        weights = [1] * len(weights)
    shares = [total * w / sum(weights) for w in weights]
    parts = [int(s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: shares[i] - parts[i], reverse=True)
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _post(client: httpx.Client, body: dict, cfg: GenerationConfig, stop: threading.Event) -> dict:
    """POST chat/completions; retry transient failures; raise RemoteGenerationError otherwise."""
    attempts = cfg.max_retries + 1
    problem = ""
    for attempt in range(attempts):
        if stop.is_set():
            raise RemoteGenerationError(f"{cfg.base_url}: stopped (another request failed or the job was cancelled)")
        wait_s: float | None = None
        try:
            response = client.post("chat/completions", json=body)
        except httpx.TransportError as exc:  # refused, timed out, connection dropped mid-answer
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError:
                    problem = "HTTP 200 with a body that is not JSON"
            elif response.status_code in RETRYABLE_STATUSES:
                problem = f"HTTP {response.status_code}{_detail(response)}"
                wait_s = _retry_after(response)
            else:
                raise RemoteGenerationError(_refusal(cfg, response))
        if attempt + 1 == attempts:
            break
        delay = min(MAX_WAIT_S, wait_s if wait_s is not None else cfg.retry_backoff_s * 2**attempt)
        log.warning(
            "remote generation: %s from %s; retry %d of %d in %.1f s",
            problem,
            cfg.base_url,
            attempt + 1,
            cfg.max_retries,
            delay,
        )
        if stop.wait(delay):
            raise RemoteGenerationError(f"{cfg.base_url}: stopped (another request failed or the job was cancelled)")
    raise RemoteGenerationError(
        f"the generation endpoint {cfg.base_url} (model {cfg.remote_model!r}) failed {attempts} time(s) in a row, "
        f"last with {problem}. Check that the server is up and reachable from the worker, then retry the round."
    )


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date (RFC 9110)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _detail(response: httpx.Response) -> str:
    """The server's own error message (OpenAI's {"error": {"message"}}), shortened."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    message = error.get("message") if isinstance(error, dict) else error
    return f" ({str(message)[:200]})" if message else ""


def _refusal(cfg: GenerationConfig, response: httpx.Response) -> str:
    """A non-retryable answer, with what to do about it."""
    status = response.status_code
    hint = {
        401: f"check the API key in the environment variable {cfg.api_key_env} on the worker",
        403: f"check the API key in the environment variable {cfg.api_key_env} and its permissions",
        404: f"check base_url (up to /v1) and remote_model; GET {cfg.base_url.rstrip('/')}/models lists the names",
    }.get(status, "check the generation settings (max_new_tokens, top_p, the prompt length the model accepts)")
    return f"the generation endpoint {cfg.base_url} refused the request: HTTP {status}{_detail(response)}; {hint}"
