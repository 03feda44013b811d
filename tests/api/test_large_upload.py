"""A 100k-line JSONL upload through a real HTTP server: it must be streamed, not buffered.

The body (~100 MB) is sent chunked (no Content-Length) from a generator, so the client never
holds it; the process's peak resident memory during the upload (Linux VmHWM, reset first)
then shows whether the server held it. Run once, on SQLite: the backend does not change how
the body is read, and the bulk insert itself is covered on both backends elsewhere."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from app.main import create_app
from app.models import Prompt
from app.settings import Settings
from tests.factories import make_project, make_token

LINES = 100_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served_app(sqlite_template, tmp_path):
    path = tmp_path / "ranklab.sqlite"
    shutil.copy(sqlite_template, path)
    app = create_app(
        Settings(
            data_dir=tmp_path / "data",
            database_url=f"sqlite:///{path}",
            secret_key="test",
            embedded_worker=False,
            _env_file=None,
        )
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield app, f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)
    app.state.engine.dispose()


def _memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM (the peak) to the current resident size."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as exc:
        pytest.fail(f"cannot measure peak memory here (needs Linux /proc/self/clear_refs): {exc}")


def _body(sent: list[int]):
    """~100 MB of JSONL in 1000-line chunks; every 10,000th line is broken on purpose."""
    for start in range(0, LINES, 1000):
        chunk = []
        for i in range(start, start + 1000):
            if i % 10_000 == 9_999:
                chunk.append(b'{"external_id": "broken", "text": ')
            else:
                chunk.append(
                    json.dumps(
                        {"external_id": f"id-{i}", "text": f"Prompt {i}: " + "lorem ipsum " * 80, "metadata": {"i": i}}
                    ).encode()
                )
        data = b"\n".join(chunk) + b"\n"
        sent[0] += len(data)
        yield data


def test_100k_line_upload_is_streamed(served_app):
    app, base_url = served_app
    db = sessionmaker(bind=app.state.engine)()
    project = make_project(db)
    headers = {"Authorization": f"Bearer {make_token(db, 'upload')}", "Content-Type": "application/x-ndjson"}

    sent = [0]
    _reset_peak_rss()
    before_kb = _memory_kb("VmRSS")
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=300) as http:
        response = http.post(f"/api/v1/projects/{project.id}/prompts/jsonl", headers=headers, content=_body(sent))
    growth = (_memory_kb("VmHWM") - before_kb) * 1024
    print(
        f"\n100k-line upload ({sent[0] / 1e6:.0f} MB): {time.perf_counter() - started:.1f} s, "
        f"peak resident memory +{growth / 1e6:.1f} MB"
    )

    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["created"], report["already_present"], report["rejected"]) == (LINES - 10, 0, 10)
    assert [e["line"] for e in report["errors"]] == [i + 1 for i in range(9_999, LINES, 10_000)]
    assert all(e["reason"].startswith("invalid JSON") for e in report["errors"])
    db.rollback()  # end the read snapshot taken before the upload
    assert db.scalar(select(func.count()).select_from(Prompt)) == LINES - 10
    # The peak (client and server in this one process) stays a small fraction of the body:
    # nothing held the whole file.
    assert sent[0] > 95_000_000
    assert growth < sent[0] / 4, f"peak memory grew {growth / 1e6:.1f} MB for a {sent[0] / 1e6:.1f} MB body"
    db.close()
