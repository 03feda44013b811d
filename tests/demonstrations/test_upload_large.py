"""A 20k-line (~50 MB) demonstrations upload through a real HTTP server is streamed, and a bad
last line refuses all of it.

As tests/api/test_large_upload.py does for prompts: the body is sent chunked from a generator,
and the process's peak resident memory (Linux VmHWM, reset first) shows whether the server held
the file. Run on SQLite only: the backend does not change how the body is read, and the
statements are covered on both backends by test_upload.py."""

from __future__ import annotations

import json
import time

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from app.models import Demonstration, Prompt
from tests.api.test_large_upload import _memory_kb, _reset_peak_rss, served_app  # noqa: F401
from tests.factories import make_project, make_token

LINES = 20_000
ANSWER = "A careful answer, in markdown with **bold** and a list:\n\n- one\n- two\n\n" + "lorem ipsum " * 190


def _body(sent: list[int], *, broken_last: bool):
    """Messages lines in chunks of 500; all prompts distinct, every fifth line with an id."""
    for start in range(0, LINES, 500):
        chunk = []
        for i in range(start, start + 500):
            if broken_last and i == LINES - 1:
                chunk.append(b'{"prompt": "last", "completion": 7}')
                continue
            row: dict = {
                "messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": ANSWER}]
            }
            if i % 5 == 0:
                row["id"] = f"demo-{i}"
            chunk.append(json.dumps(row).encode())
        data = b"\n".join(chunk) + b"\n"
        sent[0] += len(data)
        yield data


def test_20k_line_upload_is_streamed_and_a_bad_last_line_stores_nothing(served_app):  # noqa: F811
    app, base_url = served_app
    db = sessionmaker(bind=app.state.engine)()
    project = make_project(db)
    headers = {"Authorization": f"Bearer {make_token(db, 'upload')}", "Content-Type": "application/x-ndjson"}
    url = f"/api/v1/projects/{project.id}/demonstrations"

    with httpx.Client(base_url=base_url, timeout=600) as http:
        refused = http.post(url, headers=headers, content=_body([0], broken_last=True))
        sent = [0]
        _reset_peak_rss()
        before_kb = _memory_kb("VmRSS")
        started = time.perf_counter()
        stored = http.post(url, headers=headers, content=_body(sent, broken_last=False))
        growth = (_memory_kb("VmHWM") - before_kb) * 1024
    print(
        f"\n{LINES}-line demonstrations upload ({sent[0] / 1e6:.0f} MB): {time.perf_counter() - started:.1f} s, "
        f"peak resident memory +{growth / 1e6:.1f} MB"
    )

    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"] == [
        {"line": LINES, "reason": "completion: must be a string or a list of chat turns"}
    ]
    assert stored.status_code == 200, stored.text
    assert stored.json() == {"created": LINES, "already_present": 0, "prompts_created": LINES, "pending_review": 0}
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Demonstration)) == LINES
    assert db.scalar(select(func.count()).select_from(Prompt)) == LINES  # the refused upload left none behind
    assert sent[0] > 45_000_000
    assert growth < sent[0] / 4, f"peak memory grew {growth / 1e6:.1f} MB for a {sent[0] / 1e6:.1f} MB body"
    db.close()
