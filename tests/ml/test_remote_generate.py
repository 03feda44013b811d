"""The "openai" generation backend against a real OpenAI-compatible server (tests/openai_server.py):
K samples per prompt, the API key, the concurrency limit, retries, and clear failures."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import httpx
import pytest

from tests.openai_server import TEST_API_KEY, OpenAIServer
from worker.ml.cli import main
from worker.ml.config import GenerationConfig
from worker.ml.generate import generate
from worker.ml.remote_generate import RemoteGenerationError, _split, generate_remote
from worker.ml.tiny import save_tiny_model

KEY_ENV = "RANKLAB_TEST_GENERATION_KEY"
PROMPTS = [
    "tell a story about a cat",
    [{"role": "system", "content": "be good"}, {"role": "user", "content": "write a poem"}],
    "why is the sun red ?",
]


@pytest.fixture
def server(monkeypatch):
    """The test server with an API key, and that key in the environment variable the config names."""
    monkeypatch.setenv(KEY_ENV, TEST_API_KEY)
    with OpenAIServer(api_key=TEST_API_KEY) as running:
        yield running


def remote(server: OpenAIServer, **overrides) -> GenerationConfig:
    values = dict(
        backend="openai",
        base_url=server.url,
        remote_model=server.model_name,
        api_key_env=KEY_ENV,
        k=4,
        max_new_tokens=6,
        retry_backoff_s=0.01,
        max_retries=2,
        timeout_s=10,
    )
    return GenerationConfig(**{**values, **overrides})


def chat_requests(server: OpenAIServer) -> list:
    return [r for r in server.requests if r.path == "/v1/chat/completions"]


def test_k_completions_per_prompt_with_n_and_the_key_sent(server):
    progress: list[tuple[int, int, str]] = []
    results = generate("", PROMPTS, remote(server), lambda *a: progress.append(a))
    assert [len(samples) for samples in results] == [4, 4, 4]
    for samples in results:
        assert len({c.text for c in samples}) > 1  # sampled, not four copies
        for c in samples:
            assert c.model_version == "tiny-chat" and c.finish_reason in ("eos", "length")
            # "length" means exactly max_new_tokens; the others share the rest of the server's sum
            assert 0 <= c.token_count <= 6 and (c.finish_reason == "length") <= (c.token_count == 6)
    sent = chat_requests(server)
    assert len(sent) == 3  # one request per prompt, n=K
    assert {r.authorization for r in sent} == {f"Bearer {TEST_API_KEY}"}
    assert sorted(r.body["messages"][-1]["content"] for r in sent) == sorted(
        ["tell a story about a cat", "write a poem", "why is the sun red ?"]
    )
    body = sent[0].body
    assert (body["n"], body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (4, 0.7, 1.0, 6, 0)
    assert progress[-1] == (3, 3, "generate") and [p[0] for p in progress] == sorted(p[0] for p in progress)


def test_same_seed_same_samples_and_k_requests_without_n(server):
    first = generate_remote(PROMPTS[:1], remote(server, k=3, use_n=False))
    again = generate_remote(PROMPTS[:1], remote(server, k=3, use_n=False))
    assert [c.text for c in first[0]] == [c.text for c in again[0]]
    sent = chat_requests(server)[:3]
    assert [(r.body["n"], r.body["seed"]) for r in sent] == [(1, 0), (1, 1), (1, 2)]  # seeds differ per request
    # one choice per answer: the server's usage is that completion's exact count
    assert all(c.token_count >= 1 for c in first[0])


def test_a_server_that_ignores_n_is_asked_again_for_the_rest(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "")
    with OpenAIServer(max_n=1) as server:  # no key: none is sent
        (samples,) = generate_remote(PROMPTS[:1], remote(server, k=3))
        assert len(samples) == 3
        assert [r.body["n"] for r in chat_requests(server)] == [3, 2, 1]
        assert {r.authorization for r in server.requests} == {None}


def test_concurrency_limit_holds(server):
    server.fail_next(stall=0.15, times=6)  # slow answers, so requests overlap
    results = generate_remote(PROMPTS * 2, remote(server, k=2, concurrency=2))
    assert [len(r) for r in results] == [2] * 6
    assert server.max_in_flight == 2


def test_retries_a_429_honouring_retry_after_then_succeeds(server, caplog):
    server.fail_next(429, retry_after=0.05, times=2)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="worker.ml.remote_generate"):
        (samples,) = generate_remote(PROMPTS[:1], remote(server, retry_backoff_s=30))
    assert len(samples) == 4
    assert time.monotonic() - start < 10  # waited Retry-After's 0.05 s, not the 30 s backoff
    assert len(chat_requests(server)) == 3
    assert "HTTP 429" in caplog.text and "retry 2 of 2" in caplog.text
    # neither the key nor any prompt text reaches the log
    assert TEST_API_KEY not in caplog.text and "cat" not in caplog.text


def test_retries_5xx_dropped_connections_and_timeouts(server):
    server.fail_next(502)
    server.fail_next(drop=True)
    server.fail_next(stall=1.0)
    (samples,) = generate_remote(PROMPTS[:1], remote(server, timeout_s=0.3, max_retries=3))
    assert len(samples) == 4
    assert len(chat_requests(server)) == 4


def test_endpoint_down_is_a_clear_error_and_nothing_is_returned(server):
    url = server.url
    server.stop()
    with pytest.raises(RemoteGenerationError) as failure:
        generate_remote(PROMPTS, remote(server))
    message = str(failure.value)
    assert url in message and "failed 3 time(s) in a row" in message and "ConnectError" in message


def test_a_server_stuck_on_503_fails_the_whole_batch(server):
    server.fail_next(503, times=100)
    with pytest.raises(RemoteGenerationError, match=r"HTTP 503 \(planned failure 503\)"):
        generate_remote(PROMPTS * 3, remote(server, concurrency=2))
    # the first prompt to give up stops the others: no request storm after the failure
    assert len(chat_requests(server)) <= 2 * 3 + 2


def test_a_wrong_key_fails_at_once_naming_the_variable_not_the_key(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-secret")
    with pytest.raises(RemoteGenerationError) as failure:
        generate_remote(PROMPTS[:1], remote(server))
    message = str(failure.value)
    assert "HTTP 401" in message and KEY_ENV in message and "sk-wrong-secret" not in message
    assert len(chat_requests(server)) == 1  # not retried


def test_an_unknown_model_fails_at_once(server):
    with pytest.raises(RemoteGenerationError, match="HTTP 404.*remote_model"):
        generate_remote(PROMPTS[:1], remote(server, remote_model="no-such-model"))


def test_a_cancel_from_the_progress_callback_stops_the_batch(server):
    class Cancelled(Exception):
        pass

    def cancel(done, total, stage):
        raise Cancelled

    server.fail_next(stall=0.1, times=9)
    with pytest.raises(Cancelled):
        generate_remote(PROMPTS * 3, remote(server, k=1, concurrency=1), cancel)
    assert len(chat_requests(server)) < 9  # queued prompts were dropped


def test_config_checks_and_no_secret_in_the_config():
    with pytest.raises(ValueError, match="base_url"):
        GenerationConfig(backend="openai", remote_model="m")
    with pytest.raises(ValueError, match="remote_model"):
        GenerationConfig(backend="openai", base_url="http://h:8000/v1")
    with pytest.raises(ValueError, match="must not carry credentials"):
        GenerationConfig(backend="openai", base_url="https://user:sk-1@h/v1", remote_model="m")
    with pytest.raises(ValueError, match="concurrency"):
        GenerationConfig(concurrency=0)
    saved = GenerationConfig(backend="openai", base_url="http://h:8000/v1", remote_model="m").to_dict()
    assert saved["api_key_env"] == "RANKLAB_GENERATION_API_KEY" and "api_key" not in saved


def test_usage_split_sums_to_the_servers_total():
    assert _split(10, [5]) == [10]
    assert _split(10, [1, 1, 2]) == [3, 2, 5]  # 2.5, 2.5, 5: one of the halves rounds up
    assert sum(_split(7, [3, 0, 4])) == 7 and _split(4, [0, 0]) == [2, 2]


def test_python_m_worker_ml_generate_against_the_endpoint(server, tmp_path, capsys):
    """The real command line in a subprocess, the key passed only through the environment; then
    the same flags with the server down exit 1 with a message naming it."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    out = tmp_path / "out.jsonl"
    flags = ["generate", "--backend", "openai", "--base-url", server.url, "--remote-model", server.model_name]
    flags += ["--api-key-env", KEY_ENV, "-k", "2", "--max-new-tokens", "4", "--prompts", str(prompts)]
    done = subprocess.run(
        [sys.executable, "-m", "worker.ml", *flags, "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt_id"] for r in rows] == ["p0", "p1", "p2"]
    assert all(len(r["completions"]) == 2 and r["details"][0]["model_version"] == "tiny-chat" for r in rows)
    assert {r.authorization for r in chat_requests(server)} == {f"Bearer {TEST_API_KEY}"}
    assert TEST_API_KEY not in done.stdout + done.stderr
    server.stop()
    assert main([*flags, "--max-retries", "0", "--out", str(tmp_path / "x.jsonl")]) == 1
    assert f"the generation endpoint {server.url}" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()  # nothing written for a failed batch


def test_the_server_speaks_openai(server):
    """The test server's own contract: shapes, seeds, greedy, stop strings, completions, auth."""
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TEST_API_KEY}"})
    ask = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    one = client.post("/chat/completions", json={**ask, "n": 2, "seed": 5}).json()
    two = client.post("/chat/completions", json={**ask, "n": 2, "seed": 5}).json()
    assert one["object"] == "chat.completion" and one["usage"]["total_tokens"] > one["usage"]["prompt_tokens"]
    assert [c["message"]["content"] for c in one["choices"]] == [c["message"]["content"] for c in two["choices"]]
    greedy = client.post("/chat/completions", json={**ask, "n": 3, "temperature": 0}).json()
    assert len({c["message"]["content"] for c in greedy["choices"]}) == 1
    text = one["choices"][0]["message"]["content"]
    word = text.split()[1] if len(text.split()) > 1 else text
    cut = client.post("/chat/completions", json={**ask, "n": 2, "seed": 5, "stop": [word]}).json()
    assert cut["choices"][0]["message"]["content"] == text[: text.find(word)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    legacy = client.post("/completions", json={"model": "tiny-chat", "prompt": "hello", "max_tokens": 3}).json()
    assert legacy["object"] == "text_completion" and isinstance(legacy["choices"][0]["text"], str)
    assert client.get("/models").json()["data"][0]["id"] == "tiny-chat"
    assert httpx.post(f"{server.url}/chat/completions", json=ask).status_code == 401


def test_the_server_serves_a_model_folder_and_scripted_replies(tmp_path):
    """A saved model folder loads as the served model; `reply` scripts the text (a judge's verdict)
    while usage, n, stop strings and finish reasons stay the server's."""
    save_tiny_model(tmp_path / "model")
    with OpenAIServer(str(tmp_path / "model"), model_name="judge", reply=lambda m, i: f"verdict {i} . done") as server:
        cfg = GenerationConfig(backend="openai", base_url=server.url, remote_model="judge", k=2, api_key_env="")
        (samples,) = generate_remote(["rank these"], cfg)
        assert [c.text for c in samples] == ["verdict 0 . done", "verdict 1 . done"]
        assert [c.finish_reason for c in samples] == ["eos", "eos"] and all(c.token_count > 0 for c in samples)
        ask = {"model": "judge", "messages": [{"role": "user", "content": "x"}], "stop": " ."}
        answer = httpx.post(f"{server.url}/chat/completions", json=ask).json()
        assert answer["choices"][0]["message"]["content"] == "verdict 0"
