"""GET /api/v1/projects/{id}/demonstrations/export: the upload's forms back, the reviewer's edit
as the training text, filtered by status. Both backends."""

from __future__ import annotations

from app.demonstrations.upload_schema import DemonstrationLine
from tests.demonstrations.data_helpers import bearer, export_rows, upload, write_demonstration
from tests.factories import make_project, make_user

MESSAGES = [
    {
        "id": "m1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "7"},
        ],
    },
    {
        "id": "m2",
        "messages": [
            {"role": "user", "content": "Hi <script>alert(1)</script>"},
            {"role": "assistant", "content": "Hello \u2028 there, in *markdown*."},
        ],
    },
    {
        "id": "m3",
        "messages": [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2"},
        ],
    },
]
CONVERSATIONAL = [
    {
        "id": "c1",
        "prompt": [{"role": "user", "content": "2+2?"}],
        "completion": [{"role": "assistant", "content": "4"}],
    },
    {
        "id": "c2",
        "prompt": [{"role": "system", "content": "Terse."}, {"role": "user", "content": "3+3?"}],
        "completion": [{"role": "assistant", "content": "6"}],
    },
]
STANDARD = [
    {"id": "s1", "prompt": "Capital of France?", "completion": "Paris."},
    {"id": "s2", "prompt": "Capital of Peru?", "completion": "Lima."},
]


def test_upload_then_export_gives_the_same_lines_in_each_form(client, db):
    """Each form round-trips line for line: messages, conversational and standard prompt/completion."""
    upload_auth = bearer(db, "upload")
    export_auth = bearer(db, "export")
    for rows, params in [
        (MESSAGES, {"format": "messages"}),
        (CONVERSATIONAL, {"format": "prompt_completion"}),
        (STANDARD, {"format": "prompt_completion", "style": "standard"}),
    ]:
        project = make_project(db)
        assert upload(client, project.id, upload_auth, *rows).status_code == 200
        assert export_rows(client, project.id, export_auth, **params) == rows


def test_each_export_uploads_again_unchanged(client, db):
    """The exported rows are valid upload lines; re-sent to the same project they are all already present."""
    upload_auth = bearer(db, "upload")
    export_auth = bearer(db, "export")
    project = make_project(db)
    upload(client, project.id, upload_auth, *MESSAGES, *CONVERSATIONAL, *STANDARD)
    for params in [{"format": "messages"}, {"format": "prompt_completion"}]:
        rows = export_rows(client, project.id, export_auth, **params)
        assert len(rows) == 7
        for row in rows:
            DemonstrationLine.model_validate(row)
        again = upload(client, project.id, upload_auth, *rows)
        assert again.json() == {"created": 0, "already_present": 7, "prompts_created": 0, "pending_review": 0}


def test_every_row_of_an_export_has_the_same_keys_and_types(client, db):
    """datasets infers one schema per file: a text prompt becomes one user turn in the
    conversational forms, and a chat prompt is flattened in the standard one."""
    upload_auth = bearer(db, "upload")
    export_auth = bearer(db, "export")
    project = make_project(db)
    upload(client, project.id, upload_auth, *STANDARD, *MESSAGES)
    conversational = export_rows(client, project.id, export_auth, format="prompt_completion")
    assert {tuple(row) for row in conversational} == {("id", "prompt", "completion")}
    assert conversational[0]["prompt"] == [{"role": "user", "content": "Capital of France?"}]
    standard = export_rows(client, project.id, export_auth, format="prompt_completion", style="standard")
    assert all(isinstance(r["prompt"], str) and isinstance(r["completion"], str) for r in standard)
    assert standard[2]["prompt"] == "System: Be brief.\n\nUser: Name a prime."


def test_the_reviewers_edit_is_the_training_text_and_only_accepted_rows_by_default(client, db):
    export_auth = bearer(db, "export")
    project = make_project(db)
    author, reviewer = make_user(db), make_user(db)
    edited = write_demonstration(
        db, project.id, author, "Draft answr.", reviewer=reviewer, reviewed_response="Fixed answer."
    )
    write_demonstration(db, project.id, author, "Waiting.", status="pending_review")
    write_demonstration(db, project.id, author, "Bad.", status="rejected", reviewer=reviewer)

    accepted = export_rows(client, project.id, export_auth)
    assert accepted == [
        {
            "id": f"ranklab-demonstration-{edited.id}",
            "messages": [
                {"role": "user", "content": "Say something."},
                {"role": "assistant", "content": "Fixed answer."},
            ],
        }
    ]
    assert [r["messages"][1]["content"] for r in export_rows(client, project.id, export_auth, status="all")] == [
        "Fixed answer.",
        "Waiting.",
        "Bad.",
    ]
    rejected = export_rows(client, project.id, export_auth, status="rejected")
    assert [r["messages"][1]["content"] for r in rejected] == ["Bad."]


def test_export_refuses_a_standard_messages_file_and_unknown_options(client, db):
    export_auth = bearer(db, "export")
    project = make_project(db)
    url = f"/api/v1/projects/{project.id}/demonstrations/export"
    response = client.get(url, headers=export_auth, params={"format": "messages", "style": "standard"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("style: standard has no messages form")
    assert client.get(url, headers=export_auth, params={"status": "maybe"}).status_code == 422
    assert client.get(url, headers=export_auth, params={"format": "csv"}).status_code == 422
    assert client.get(url).status_code == 401
    assert (
        client.get(f"/api/v1/projects/{project.id + 1}/demonstrations/export", headers=export_auth).status_code == 404
    )


def test_an_empty_export_is_an_empty_file(client, db):
    export_auth = bearer(db, "export")
    project = make_project(db)
    response = client.get(f"/api/v1/projects/{project.id}/demonstrations/export", headers=export_auth)
    assert response.status_code == 200
    assert response.text == ""
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in response.headers["content-disposition"]
