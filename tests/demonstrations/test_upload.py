"""POST /api/v1/projects/{id}/demonstrations: TRL's forms, idempotency by id, all-or-nothing
refusals that name the line and field. Both backends (the `client` fixture)."""

from __future__ import annotations

from sqlalchemy import func, select

from app.labeling.task_types import DEMONSTRATION_REVIEW
from app.models import Demonstration, Prompt, RankingTask
from tests.demonstrations.data_helpers import NDJSON, bearer, export_rows, jsonl, upload
from tests.factories import make_project, make_user
from tests.labeling.helpers import next_view, submit


def _count(db, model) -> int:
    db.rollback()  # a fresh snapshot after the request's commit
    return db.scalar(select(func.count()).select_from(model))


def test_every_trl_form_is_stored_with_its_prompt(client, db):
    """messages (with a system turn and two user turns), conversational prompt/completion and
    standard strings: each line becomes a prompt and the assistant's answer, source upload."""
    upload_auth = bearer(db, "upload")
    project = make_project(db)
    response = upload(
        client,
        project.id,
        upload_auth,
        {
            "id": "m1",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Name a prime."},
                {"role": "assistant", "content": "**7**"},
            ],
        },
        {
            "id": "c1",
            "prompt": [{"role": "user", "content": "2+2?"}],
            "completion": [{"role": "assistant", "content": "4"}],
        },
        {"id": "s1", "prompt": "Capital of France?", "completion": "Paris."},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 3, "already_present": 0, "prompts_created": 3, "pending_review": 0}

    db.rollback()
    rows = {d.external_id: d for d in db.scalars(select(Demonstration))}
    assert rows["m1"].response == "**7**"
    assert "<strong>7</strong>" in rows["m1"].response_html
    assert rows["m1"].prompt.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Name a prime."},
    ]
    # One user turn is a text prompt: the same row a plain prompt upload of that text makes.
    assert (rows["c1"].prompt.text, rows["c1"].prompt.messages) == ("2+2?", None)
    assert rows["s1"].prompt.text == "Capital of France?"
    assert {(d.source, d.status, d.user_id, d.task_id) for d in rows.values()} == {("upload", "accepted", None, None)}


def test_the_same_prompt_is_one_row_and_a_stored_prompt_is_reused(client, db):
    upload_auth = bearer(db, "upload")
    project = make_project(db)
    prompt_upload = client.post(
        f"/api/v1/projects/{project.id}/prompts", headers=upload_auth, json={"prompts": [{"text": "Tell a joke."}]}
    )
    assert prompt_upload.status_code == 200
    response = upload(
        client,
        project.id,
        upload_auth,
        {"prompt": "Tell a joke.", "completion": "Knock knock."},
        {"messages": [{"role": "user", "content": "Tell a joke."}, {"role": "assistant", "content": "Why not."}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["prompts_created"] == 0
    assert _count(db, Prompt) == 1
    assert _count(db, Demonstration) == 2


def test_re_uploading_a_file_stores_nothing_twice(client, db):
    """With ids and without (then the id is derived from the prompt and answer)."""
    upload_auth = bearer(db, "upload")
    project = make_project(db)
    rows = [
        {"id": "a", "prompt": "P1", "completion": "R1"},
        {"prompt": "P2", "completion": "R2"},
        {"id": "a", "prompt": "P1", "completion": "R1"},  # a repeat inside the file
    ]
    first = upload(client, project.id, upload_auth, *rows)
    assert first.json() == {"created": 2, "already_present": 1, "prompts_created": 2, "pending_review": 0}
    again = upload(client, project.id, upload_auth, *rows)
    assert again.status_code == 200
    assert again.json() == {"created": 0, "already_present": 3, "prompts_created": 0, "pending_review": 0}
    assert _count(db, Demonstration) == 2


def test_an_integer_id_is_kept_as_its_string(client, db):
    """Hub datasets often number their rows; the id is stored (and exported) as text."""
    upload_auth = bearer(db, "upload")
    project = make_project(db)
    assert upload(client, project.id, upload_auth, {"id": 17, "prompt": "P", "completion": "A"}).status_code == 200
    again = upload(client, project.id, upload_auth, {"id": "17", "prompt": "P", "completion": "A"})
    assert again.json()["already_present"] == 1
    db.rollback()
    assert db.scalars(select(Demonstration.external_id)).all() == ["17"]


def test_a_changed_answer_under_a_stored_id_is_a_409_naming_the_line(client, db):
    """An upload never changes a stored demonstration (it may have been reviewed or trained on);
    the whole file is refused and nothing of it is stored."""
    upload_auth = bearer(db, "upload")
    project = make_project(db)
    assert upload(client, project.id, upload_auth, {"id": "a", "prompt": "P", "completion": "old"}).status_code == 200
    response = upload(
        client,
        project.id,
        upload_auth,
        {"id": "b", "prompt": "Q", "completion": "new row"},
        {"id": "a", "prompt": "P", "completion": "new"},
    )
    assert response.status_code == 409, response.text
    body = response.json()
    assert (body["rejected"], body["conflicts"]) == (1, 1)
    assert body["errors"][0]["line"] == 2
    assert body["errors"][0]["reason"].startswith('id: "a" was already given, in an earlier upload')
    assert "line 2" in body["detail"]
    db.rollback()
    assert [d.response for d in db.scalars(select(Demonstration))] == ["old"]
    assert _count(db, Prompt) == 1  # Q's prompt was rolled back with the rest


def test_the_same_id_twice_in_a_file_with_different_answers_is_refused(client, db):
    upload_auth = bearer(db, "upload")
    project = make_project(db)
    response = upload(
        client,
        project.id,
        upload_auth,
        {"id": "x", "prompt": "P", "completion": "one"},
        {"id": "x", "prompt": "P", "completion": "two"},
    )
    assert response.status_code == 409
    assert response.json()["errors"][0]["line"] == 2
    assert "in line 1" in response.json()["errors"][0]["reason"]
    assert _count(db, Demonstration) == 0


def test_bad_lines_are_numbered_with_their_field_and_nothing_is_stored(client, db):
    upload_auth = bearer(db, "upload")
    project = make_project(db)
    lines = [
        {"prompt": "fine", "completion": "fine"},
        b"",  # blank: skipped but counted
        b'{"prompt": "P", "completion": ',
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hello?"}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "Beep"}]},
        {"prompt": "P"},
        {"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "user", "content": "A"}]},
        {"prompt": "P", "completion": "   "},
        {"prompt": "P", "completion": "A", "status": "maybe"},
        {"prompt": "P", "completion": "A", "source": "web"},
        {"messages": [{"role": "assistant", "content": "A"}, {"role": "assistant", "content": "B"}]},
        {"prompt": 3, "completion": "A"},
        [1, 2],
        {"prompt": "P", "completion": "A\u0000"},
    ]
    response = upload(client, project.id, upload_auth, *lines)
    assert response.status_code == 422, response.text
    reasons = {e["line"]: e["reason"] for e in response.json()["errors"]}
    assert sorted(reasons) == list(range(3, 15))
    assert reasons[3].startswith("invalid JSON")
    assert reasons[4] == "messages[1].role: the last turn must be the assistant's (the demonstration), not user"
    assert reasons[5].startswith("messages[1].role: Input should be 'system', 'user' or 'assistant'")
    assert reasons[6] == "completion: missing; send the assistant's answer"
    assert reasons[7].startswith("completion: must be one assistant turn")
    assert reasons[8] == "completion: is empty"
    assert reasons[9].startswith("status: Input should be 'accepted', 'pending_review' or 'rejected'")
    assert reasons[10].startswith("source: unknown field (allowed: id, messages, prompt, completion, status")
    assert reasons[11] == "messages[0].role: the last turn must be the user's, not assistant"
    assert reasons[12] == "prompt: must be a string or a list of chat turns"
    assert reasons[13] == "expected a JSON object, got an array"
    assert reasons[14].startswith("completion: contains a NUL character")  # PostgreSQL could not store it
    assert response.json()["detail"].startswith("12 line(s) refused; nothing was stored. line 3: invalid JSON")
    assert _count(db, Demonstration) == 0
    assert _count(db, Prompt) == 0


def test_a_reviewing_project_gets_pending_uploads_unless_the_line_says(client, db):
    upload_auth = bearer(db, "upload")
    project = make_project(db, demonstration_review=True)
    response = upload(
        client,
        project.id,
        upload_auth,
        {"prompt": "P", "completion": "A"},
        {"prompt": "P", "completion": "B", "status": "accepted"},
    )
    assert response.json() == {"created": 2, "already_present": 0, "prompts_created": 1, "pending_review": 1}
    db.rollback()
    assert sorted(d.status for d in db.scalars(select(Demonstration))) == ["accepted", "pending_review"]


def test_a_pending_upload_is_reviewed_like_a_written_one_then_exported(client, db):
    """The pending upload gets a review task: a member is handed it, accepts, and the export
    (accepted only) then holds both demonstrations."""
    project = make_project(db, demonstration_review=True)
    reviewer = make_user(db, projects=[project])
    upload(client, project.id, bearer(db, "upload"), {"id": "u1", "prompt": "P", "completion": "Waiting answer."})
    db.rollback()
    pending = db.scalar(select(Demonstration).where(Demonstration.external_id == "u1"))
    assert db.scalar(select(RankingTask.kind).where(RankingTask.demonstration_id == pending.id)) == DEMONSTRATION_REVIEW

    view = next_view(db, reviewer, project)
    assert (view.kind, view.task_id) == (DEMONSTRATION_REVIEW, db.scalar(select(RankingTask.id)))
    submit(db, reviewer, project, view)  # the review page's usual answer (accept or edit)
    db.rollback()
    reviewed = db.get(Demonstration, pending.id)
    assert (reviewed.status, reviewed.reviewer_id) == ("accepted", reviewer.id)
    rows = export_rows(client, project.id, bearer(db, "export"), format="prompt_completion", style="standard")
    assert rows == [{"id": "u1", "prompt": "P", "completion": reviewed.training_response}]


def test_an_answer_over_the_text_limit_is_refused_by_field(client, db, settings):
    upload_auth = bearer(db, "upload")
    project = make_project(db)
    long = "x" * (settings.max_text_chars + 1)
    response = upload(
        client,
        project.id,
        upload_auth,
        {"messages": [{"role": "user", "content": "P"}, {"role": "assistant", "content": long}]},
        {"prompt": long, "completion": "A"},
    )
    assert response.status_code == 422
    reasons = [e["reason"] for e in response.json()["errors"]]
    assert reasons[0].startswith(f"messages[1].content: is {len(long)} characters long; the limit is")
    assert reasons[1].startswith(f"prompt: is {len(long)} characters long")


def test_multipart_upload_and_wrong_content_type(client, db):
    upload_auth = bearer(db, "upload")
    project = make_project(db)
    url = f"/api/v1/projects/{project.id}/demonstrations"
    body = jsonl({"prompt": "P", "completion": "A"})
    response = client.post(url, headers=upload_auth, files={"file": ("d.jsonl", body, "application/octet-stream")})
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1
    assert client.post(url, headers={**upload_auth, "Content-Type": "text/csv"}, content=body).status_code == 415
    assert client.post(url, headers={**NDJSON}, content=body).status_code == 401


def test_a_demonstration_of_an_eval_set_prompt_is_refused(client, db):
    """Eval prompts never train (docs/evaluation.md); an SFT example of one would leak it."""
    upload_auth = bearer(db, "upload")
    project = make_project(db)
    stored = client.post(
        f"/api/v1/projects/{project.id}/prompts",
        headers=upload_auth,
        json={"prompts": [{"text": "Held out.", "split": "eval"}]},
    )
    assert stored.status_code == 200
    response = upload(client, project.id, upload_auth, {"prompt": "Held out.", "completion": "A"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["reason"].startswith("prompt: is in the project's eval set")
