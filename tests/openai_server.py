"""A real OpenAI-compatible HTTP server for tests: a tiny model's chat completions over HTTP.

Code that talks to a served model (the remote generation backend, an endpoint judge) is tested
against this server instead of a mock: real HTTP through uvicorn on a free port, OpenAI's
request and response shapes, and a real (tiny, random-weight) causal LM sampling the answers.

    with OpenAIServer(api_key="sk-test") as server:
        server.url            # "http://127.0.0.1:PORT/v1", what a client's base_url is
        server.fail_next(429, retry_after=0.05)  # the next request gets a 429 with Retry-After
        server.requests       # every request seen: path, JSON body, Authorization header

Routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions. Honoured: model (must be
the served name, else 404), messages / prompt, temperature (0 = greedy), top_p, max_tokens (or
max_completion_tokens), n, seed, stop. Choices end with finish_reason "stop" (EOS or a stop
string) or "length"; usage counts tokens with the model's tokenizer (EOS included, as vLLM does).

`reply` replaces the model's text by a function of (messages, sample index), so a test can serve
parseable answers (a judge's verdict) while keeping the HTTP, auth and failure behaviour real.
`max_n=1` plays a server that ignores n. Failures are planned per request: an HTTP status (with
Retry-After and OpenAI's error body), a dropped connection (headers sent, body cut), or a stall
longer than the client's timeout.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import pytest
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from transformers import GenerationConfig as HFGenerationConfig

from worker.ml.data import as_messages
from worker.ml.formatting import prompt_text
from worker.ml.models import load_causal_lm, load_tokenizer
from worker.ml.sampling import sample, sampling_config
from worker.ml.tiny import tiny_causal_lm

TEST_API_KEY = "sk-test"

Reply = Callable[[list[dict[str, str]], int], str]


@dataclass
class Fault:
    status: int = 500
    """HTTP status answered (ignored when `drop` or `stall` is set)."""
    retry_after: float | None = None
    """Seconds sent in a Retry-After header."""
    drop: bool = False
    """Send the response headers, then close the connection mid-body."""
    stall: float = 0.0
    """Seconds to wait before answering normally (longer than the client's timeout = a timeout)."""


@dataclass
class SeenRequest:
    path: str
    body: dict[str, Any]
    authorization: str | None


@dataclass
class _State:
    faults: list[Fault] = field(default_factory=list)
    requests: list[SeenRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class OpenAIServer:
    """Serves `model` (a loaded causal LM, a model folder, or None for a fresh tiny Llama) under
    `model_name`; with `api_key`, requests must carry `Authorization: Bearer <api_key>`."""

    def __init__(
        self,
        model: torch.nn.Module | str | None = None,
        tokenizer=None,
        *,
        model_name: str = "tiny-chat",
        api_key: str | None = None,
        reply: Reply | None = None,
        max_n: int | None = None,
    ) -> None:
        if model is None:
            model, tokenizer = tiny_causal_lm(seed=0)
        elif isinstance(model, str):
            tokenizer = tokenizer or load_tokenizer(model)
            model = load_causal_lm(model, device="cpu")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.model_name, self.api_key, self.reply = model_name, api_key, reply
        self.max_n = max_n  # answer at most this many choices whatever n asks (servers that ignore n)
        self.state = _State()
        self._generate_lock = threading.Lock()  # one model, one global RNG: generate one at a time
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- controls ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[SeenRequest]:
        return self.state.requests

    @property
    def max_in_flight(self) -> int:
        """The most requests the server was handling at once (a client's concurrency limit)."""
        return self.state.max_in_flight

    def fail_next(
        self,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: float | None = None,
        drop: bool = False,
        stall: float = 0,
    ) -> None:
        """The next `times` requests fail this way (queued after failures already planned)."""
        with self.state.lock:
            self.state.faults.extend(Fault(status, retry_after, drop, stall) for _ in range(times))

    def reset(self) -> None:
        with self.state.lock:
            self.state.faults.clear()
            self.state.requests.clear()
            self.state.max_in_flight = 0

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> OpenAIServer:
        self.port = free_port()
        config = uvicorn.Config(
            _FaultInjector(build_app(self), self.state), host="127.0.0.1", port=self.port, log_level="critical"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="openai-test-server")
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the OpenAI-compatible test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving; the port then refuses connections (an endpoint that is down)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- generation ----------------------------------------------------------------------------

    def complete(self, messages: list[dict[str, str]] | None, prompt: str | None, body: dict) -> dict:
        """OpenAI's choices and usage for one request (chat when `messages` is given)."""
        n = min(int(body.get("n") or 1), self.max_n or 128)
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        temperature = float(body.get("temperature", 1.0))
        top_p = float(body.get("top_p", 1.0))
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        text = prompt_text(self.tokenizer, messages) if messages is not None else str(prompt)
        prompt_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        samples: list[tuple[list[int], str]] = []
        if self.reply is not None:
            for i in range(n):
                answer = self.reply(messages or [{"role": "user", "content": str(prompt)}], i)
                samples.append((self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos], answer))
        else:
            for row in self._sample(prompt_ids, n, max_tokens, temperature, top_p, body.get("seed")):
                samples.append((row, ""))
        choices, completion_tokens = [], 0
        for index, (tokens, scripted) in enumerate(samples):
            end = tokens.index(eos) if eos in tokens else None
            content = tokens if end is None else tokens[:end]
            answer = scripted or self.tokenizer.decode(content, skip_special_tokens=True)
            reason = "length" if end is None else "stop"
            cut = min((answer.find(s) for s in stops if s and s in answer), default=-1)
            if cut >= 0:
                answer, reason = answer[:cut], "stop"
            completion_tokens += len(content) + (end is not None)
            choices.append({"index": index, "finish_reason": reason, "text": answer})
        usage = {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": completion_tokens,
            "total_tokens": len(prompt_ids) + completion_tokens,
        }
        return {"choices": choices, "usage": usage}

    @torch.no_grad()
    def _sample(
        self, prompt_ids: list[int], n: int, max_tokens: int, temperature: float, top_p: float, seed: int | None
    ) -> list[list[int]]:
        tok = self.tokenizer
        input_ids = torch.tensor([prompt_ids])
        greedy = temperature <= 0
        if greedy:  # identical rows: decode once, repeat
            config = HFGenerationConfig(
                do_sample=False, max_new_tokens=max_tokens, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
            )
        else:
            config = sampling_config(
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_tokens,
                stop_ids=[tok.eos_token_id],
                pad_id=tok.pad_token_id,
                num_return_sequences=n,
            )
        with self._generate_lock, torch.random.fork_rng():
            if seed is not None:
                torch.manual_seed(int(seed))
            output = sample(self.model, input_ids, torch.ones_like(input_ids), config)
        rows = output[:, input_ids.shape[1] :].tolist()
        rows = rows * n if greedy else rows
        # HF pads finished rows after their EOS; keep up to and including the EOS
        return [row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row for row in rows]


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A fresh server on a tiny random Llama, API key "sk-test" (import this fixture into a test
    module, or write your own around `with OpenAIServer(...) as server`)."""
    with OpenAIServer(api_key=TEST_API_KEY) as server:
        yield server


def build_app(server: OpenAIServer) -> FastAPI:
    app = FastAPI()

    def check(request: Request, body: dict) -> JSONResponse | None:
        if server.api_key is not None and request.headers.get("authorization") != f"Bearer {server.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if body.get("model") != server.model_name:
            return _error(
                404, f"The model `{body.get('model')}` does not exist.", "invalid_request_error", "model_not_found"
            )
        return None

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": server.model_name, "object": "model", "owned_by": "ranklab-tests"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        refused = check(request, body)
        if refused is not None:
            return refused
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return _error(400, "'messages' must be a non-empty list", "invalid_request_error", None)
        messages = as_messages(body["messages"])
        result = await _in_thread(server.complete, messages, None, body)
        choices = [
            {
                "index": c["index"],
                "message": {"role": "assistant", "content": c["text"]},
                "finish_reason": c["finish_reason"],
                "logprobs": None,
            }
            for c in result["choices"]
        ]
        return _envelope("chat.completion", server.model_name, choices, result["usage"])

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        refused = check(request, body)
        if refused is not None:
            return refused
        result = await _in_thread(server.complete, None, str(body.get("prompt", "")), body)
        choices = [
            {"index": c["index"], "text": c["text"], "finish_reason": c["finish_reason"], "logprobs": None}
            for c in result["choices"]
        ]
        return _envelope("text_completion", server.model_name, choices, result["usage"])

    return app


class _FaultInjector:
    """ASGI wrapper: records each request, counts requests in flight, and plays planned faults."""

    def __init__(self, app, state: _State) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks = []
        while True:  # read the body here so it can be recorded, then replay it to the app
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self.state.lock:
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            self.state.requests.append(SeenRequest(scope["path"], body, headers.get("authorization")))
            fault = self.state.faults.pop(0) if self.state.faults else None
            self.state.in_flight += 1
            self.state.max_in_flight = max(self.state.max_in_flight, self.state.in_flight)
        try:
            await self._answer(fault, raw, scope, send)
        finally:
            with self.state.lock:
                self.state.in_flight -= 1

    async def _answer(self, fault: Fault | None, raw: bytes, scope, send) -> None:
        if fault is not None and fault.stall:
            await asyncio.sleep(fault.stall)
        elif fault is not None and fault.drop:
            headers = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b'{"id": "cut', "more_body": True})
            return  # uvicorn closes a connection whose response was never completed
        elif fault is not None:
            kind = "rate_limit_error" if fault.status == 429 else "server_error"
            response = _error(fault.status, f"planned failure {fault.status}", kind, None)
            if fault.retry_after is not None:
                response.headers["retry-after"] = f"{fault.retry_after:g}"
            return await response(scope, _replay(b""), send)
        await self.app(scope, _replay(raw), send)


def _replay(raw: bytes):
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    return receive


async def _in_thread(fn, *args):
    return await anyio.to_thread.run_sync(fn, *args)


def _envelope(kind: str, model: str, choices: list[dict], usage: dict) -> dict:
    prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex[:12]}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def _error(status: int, message: str, kind: str, code: str | None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
