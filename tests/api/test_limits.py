"""Bodies over the configured limits get 413 naming the setting, and store nothing."""

import json

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.main import create_app
from app.models import Prompt
from tests.factories import make_project

NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def small_limits_client(settings):
    app = create_app(settings.model_copy(update={"max_body_bytes": 2_000, "max_upload_bytes": 5_000}))
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


def prompt_count(db):
    db.rollback()
    return db.scalar(select(func.count()).select_from(Prompt))


def jsonl(n: int) -> bytes:
    return b"".join(json.dumps({"external_id": f"id-{i}", "text": "x" * 40}).encode() + b"\n" for i in range(n))


def chunks(data: bytes, size: int = 1000):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_json_batch_over_the_body_limit(small_limits_client, db, upload_auth):
    project = make_project(db)
    url = f"/api/v1/projects/{project.id}/prompts"
    body = {"prompts": [{"external_id": f"id-{i}", "text": "x" * 40} for i in range(50)]}
    response = small_limits_client.post(url, headers=upload_auth, json=body)
    assert response.status_code == 413 and "RANKLAB_MAX_BODY_BYTES" in response.json()["detail"]
    # the same body streamed without Content-Length is counted as it arrives
    encoded = json.dumps(body).encode()
    response = small_limits_client.post(
        url, headers={**upload_auth, "Content-Type": "application/json"}, content=chunks(encoded)
    )
    assert response.status_code == 413
    assert prompt_count(db) == 0
    small = {"prompts": body["prompts"][:5]}
    assert small_limits_client.post(url, headers=upload_auth, json=small).status_code == 200


def test_jsonl_over_the_upload_limit_with_and_without_content_length(small_limits_client, db, upload_auth):
    project = make_project(db)
    url = f"/api/v1/projects/{project.id}/prompts/jsonl"
    data = jsonl(200)  # ~14 kB, over the 5 kB upload limit
    assert "content-length" not in httpx.Request("POST", "http://x", content=chunks(data)).headers

    response = small_limits_client.post(url, headers={**upload_auth, **NDJSON}, content=data)
    assert response.status_code == 413 and "RANKLAB_MAX_UPLOAD_BYTES" in response.json()["detail"]
    response = small_limits_client.post(url, headers={**upload_auth, **NDJSON}, content=chunks(data))
    assert response.status_code == 413 and "RANKLAB_MAX_UPLOAD_BYTES" in response.json()["detail"]
    response = small_limits_client.post(url, headers=upload_auth, files={"file": ("big.jsonl", data)})
    assert response.status_code == 413
    assert prompt_count(db) == 0

    response = small_limits_client.post(url, headers={**upload_auth, **NDJSON}, content=chunks(jsonl(20)))
    assert response.status_code == 200 and response.json()["created"] == 20


def test_a_line_longer_than_the_body_limit_is_reported_not_read(small_limits_client, db, upload_auth):
    project = make_project(db)
    long_line = json.dumps({"external_id": "long", "text": "y" * 3_000}).encode()
    data = jsonl(2) + long_line + b"\n" + json.dumps({"external_id": "after", "text": "z"}).encode()
    response = small_limits_client.post(
        f"/api/v1/projects/{project.id}/prompts/jsonl", headers={**upload_auth, **NDJSON}, content=data
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["created"] == 3 and report["rejected"] == 1
    assert report["errors"][0]["line"] == 3 and "limit is 2000" in report["errors"][0]["reason"]
