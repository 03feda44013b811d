"""Uploading demonstrations from the admin page: the same service as the API, its report on the
page, untrusted text escaped. Both backends."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from app.models import Demonstration
from tests.demonstrations.data_helpers import jsonl
from tests.factories import csrf_of, login, make_project, make_user


def _post(client, db, project, body: bytes | None, name: str = "d.jsonl"):
    files = {"file": (name, body, "application/octet-stream")} if body is not None else None
    return client.post(
        f"/admin/projects/{project.id}/demonstrations/upload", data={"csrf_token": csrf_of(client, db)}, files=files
    )


def _count(db) -> int:
    db.rollback()
    return db.scalar(select(func.count()).select_from(Demonstration))


def test_an_admin_uploads_a_file_and_sees_the_report_and_the_answers(client, db):
    project = make_project(db)
    login(client, make_user(db, role="admin"))
    body = jsonl(
        {"id": "d1", "prompt": "P", "completion": "Safe <script>alert(1)</script> **answer**"},
        {"id": "d2", "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
    )
    response = _post(client, db, project, body, name="<b>file</b>.jsonl")
    assert response.status_code == 200
    result = re.search(r'<section class="card" id="upload-result".*?</section>', response.text, re.S).group(0)
    assert re.search(r"<strong>2</strong> created", result)
    assert "&lt;b&gt;file&lt;/b&gt;.jsonl" in result
    assert "<script>alert" not in response.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert re.search(r"data-total>\s*2<", response.text)
    assert _count(db) == 2

    again = _post(client, db, project, body)
    assert re.search(r"<strong>2</strong> already present", again.text)
    assert _count(db) == 2


def test_a_refused_file_lists_its_lines_and_stores_nothing(client, db):
    project = make_project(db)
    login(client, make_user(db, role="admin"))
    response = _post(client, db, project, jsonl({"prompt": "P", "completion": "A"}, {"prompt": "P"}))
    assert response.status_code == 422
    assert "nothing was stored" in response.text
    assert re.search(r'<td class="num">2</td><td class="untrusted">completion: missing', response.text)
    assert _count(db) == 0

    missing = _post(client, db, project, None)
    assert missing.status_code == 422
    assert "file: choose a .jsonl file to upload" in missing.text


def test_a_labeler_cannot_upload_here(client, db):
    project = make_project(db)
    login(client, make_user(db, projects=[project]))
    assert _post(client, db, project, jsonl({"prompt": "P", "completion": "A"})).status_code == 403
    assert _count(db) == 0
