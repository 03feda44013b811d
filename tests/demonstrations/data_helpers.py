"""Shared by the upload, export and stats tests (H2's files): API headers, sending a JSONL body,
and demonstrations written straight into the tables for the statistics."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy.orm import Session

from app.markdown import RENDERER_VERSION, html_columns
from app.models import Demonstration, Prompt, User, utcnow
from tests.factories import make_token

NDJSON = {"Content-Type": "application/x-ndjson"}


def bearer(db: Session, scope: str) -> dict[str, str]:
    """Headers with a new API token of `scope` (upload, export, admin)."""
    return {"Authorization": f"Bearer {make_token(db, scope)}"}


def jsonl(*rows: object) -> bytes:
    return b"".join((row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n" for row in rows)


def upload(client, project_id: int, auth: dict[str, str], *rows: object):
    return client.post(
        f"/api/v1/projects/{project_id}/demonstrations", headers={**auth, **NDJSON}, content=jsonl(*rows)
    )


def export_rows(client, project_id: int, auth: dict[str, str], **params) -> list[dict]:
    response = client.get(f"/api/v1/projects/{project_id}/demonstrations/export", headers=auth, params=params)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


_prompts = iter(range(1, 10**9))


def write_demonstration(
    db: Session,
    project_id: int,
    author: User | None,
    response: str,
    *,
    status: str = "accepted",
    reviewer: User | None = None,
    reviewed_response: str | None = None,
    time_spent_ms: int | None = None,
    prompt_text: str | None = None,
    minutes_ago: int = 0,
) -> Demonstration:
    """A demonstration row as a labeler's submit (author) or an upload (author None) leaves it."""
    prompt = Prompt(project_id=project_id, external_id=f"p-{next(_prompts)}", text=prompt_text or "Say something.")
    db.add(prompt)
    db.flush()
    demo = Demonstration(
        project_id=project_id,
        prompt_id=prompt.id,
        user_id=author.id if author else None,
        external_id=None if author else f"up-{prompt.id}",
        response=response,
        response_html=html_columns(response)["text_html"],
        time_spent_ms=time_spent_ms,
        status=status,
        reviewer_id=reviewer.id if reviewer else None,
        reviewed_at=utcnow() if reviewer else None,
        reviewed_response=reviewed_response,
        source="labeler" if author else "upload",
        meta={"html_renderer": RENDERER_VERSION},
        created_at=utcnow() - timedelta(minutes=minutes_ago),
    )
    db.add(demo)
    db.commit()
    return demo
