"""Demonstration tasks end to end through HTTP, on SQLite and Postgres: creating them (REST), the
labeler writing one (page form and JSON API), the 422s naming the field, the edit distance from
the draft, and the review flow (accept / edit / reject; nobody reviews their own demonstration).

The handout guarantees (overlap, leases, never twice, idempotent and late submits) are the
parametrized tests of tests/labeling, which run for these kinds too (tests/labeling/conftest.py)."""

from __future__ import annotations

import random
import re

import pytest
from sqlalchemy import select

from app.demonstrations.edit_distance import levenshtein
from app.models import Assignment, Demonstration, ModelVersion, RankingTask
from tests.factories import csrf_of, login, make_project, make_task, make_token, make_user
from tests.labeling.helpers import fresh, make_demonstration_task, snapshot

HX = {"HX-Request": "true"}
DRAFT = "Paris is the capital of France."


def _api(client, db, project, path, body):
    fresh(db)  # the client may have logged in after this session's last read
    return client.post(
        f"/api/v1/labeling/projects/{project.id}{path}", json=body, headers={"X-CSRF-Token": csrf_of(client, db)}
    )


def _next(client, project) -> dict:
    answer = client.get(f"/api/v1/labeling/projects/{project.id}/next")
    assert answer.status_code == 200, answer.text
    return answer.json()["task"]


def _write(client, db, project, task, body):
    return _api(client, db, project, f"/assignments/{task['assignment_id']}/ranking", body)


# ---- creating tasks (REST) ------------------------------------------------------------------------


def test_tasks_are_created_by_rest_with_drafts_once_per_prompt_and_refused_by_field(client, db):
    project, other = make_project(db), make_project(db)
    first, second = make_task(db, project), make_task(db, project)  # their prompts and completions
    version = ModelVersion(project_id=project.id, kind="policy", name="draft-model", base_model="tiny")
    foreign = ModelVersion(project_id=other.id, kind="policy", name="elsewhere", base_model="tiny")
    db.add_all([version, foreign])
    db.flush()
    first.items[0].completion.model_version_id = version.id
    db.commit()
    token = make_token(db, "upload")
    url = f"/api/v1/projects/{project.id}/demonstration-tasks"
    auth = {"Authorization": f"Bearer {token}"}

    body = {"prompt_ids": [first.prompt_id, second.prompt_id], "draft_version_id": version.id}
    made = client.post(url, json=body, headers=auth)
    assert made.status_code == 200, made.text
    out = made.json()
    assert (out["created"], out["with_draft"], out["no_draft"], out["already_queued"]) == (2, 1, [second.prompt_id], [])
    tasks = [db.get(RankingTask, i) for i in out["task_ids"]]
    assert [t.kind for t in tasks] == ["demonstration", "demonstration"]
    assert tasks[0].completion_ids == [first.items[0].completion_id] and tasks[1].completion_ids == []

    again = client.post(url, json=body, headers=auth).json()
    assert (again["created"], again["already_queued"]) == (0, [first.prompt_id, second.prompt_id])

    for bad, field in (
        ({"prompt_ids": []}, "prompt_ids"),
        ({"prompt_ids": [999999]}, "prompt_ids"),
        ({"prompt_ids": [first.prompt_id], "draft_version_id": foreign.id}, "draft_version_id"),
        ({"prompt_ids": [first.prompt_id], "response": "x"}, "response"),
    ):
        refused = client.post(url, json=bad, headers=auth)
        assert refused.status_code == 422 and field in refused.text, (bad, refused.text)
    assert client.post(url, json=body).status_code == 401


# ---- writing one --------------------------------------------------------------------------------


def test_a_labeler_writes_a_demonstration_from_the_draft_and_its_edit_distance_is_stored(client, db):
    project = make_project(db)
    task = make_demonstration_task(db, project, draft=DRAFT)
    labeler = make_user(db, projects=[project])
    login(client, labeler)

    page = client.get(f"/projects/{project.id}/label")
    assert page.status_code == 200
    assert "Continue the conversation as the assistant" in page.text  # a chat prompt
    assert "Question" in page.text and "Which part?" in page.text  # its turns are shown
    assert "Start from the model draft" in page.text and DRAFT in page.text
    assignment_id = int(re.search(r'data-assignment-id="(\d+)"', page.text).group(1))

    edited = "Paris is the capital of France.\n\nIt has been since 508."
    form = {"csrf_token": csrf_of(client, db), "response": edited.replace("\n", "\r\n"), "from_draft": "1"}
    form["time_spent_ms"] = "42000"
    sent = client.post(f"/projects/{project.id}/label/{assignment_id}", data=form, headers=HX)
    assert sent.status_code == 200 and "Saved." in sent.text, sent.text
    assert "<strong>1</strong> done by you" in sent.text  # a demonstration counts as done
    fresh(db)
    demo = db.scalars(select(Demonstration)).one()
    assert (demo.task_id, demo.user_id, demo.status, demo.source) == (task.id, labeler.id, "accepted", "labeler")
    assert demo.response == edited  # CRLF from the browser stored as LF
    assert demo.draft_completion_id == task.completion_ids[0]
    assert demo.edit_distance == levenshtein(DRAFT, edited) == len(edited) - len(DRAFT)
    assert demo.time_spent_ms == 42000 and demo.response_html.startswith("<p>Paris")
    assert db.get(RankingTask, task.id).status == "complete"


def test_writing_from_scratch_stores_no_draft_and_bad_input_is_a_422_naming_the_field(client, db):
    project = make_project(db, overlap=1)
    make_demonstration_task(db, project, draft=None)
    ranking_task = make_task(db, project)
    labeler = make_user(db, projects=[project])
    login(client, labeler)
    task = _next(client, project)
    assert task["kind"] == "demonstration" and task["completions"] == []

    before = snapshot(db)
    for body, field in (
        ({"response": "   \n "}, "response: empty"),
        ({}, "response: empty"),
        ({"response": "x", "from_draft": True}, "from_draft: this task has no model draft"),
        ({"ranking": [[1]]}, "ranking: a demonstration task takes no `ranking`"),
        ({"verdict": "A"}, "verdict: a demonstration task takes no `verdict`"),
        ({"response": "x" * 30_001}, "response"),
        ({"response": "x", "decision": "accept"}, "decision: a demonstration task takes no `decision`"),
    ):
        refused = _write(client, db, project, task, body)
        assert refused.status_code == 422 and field in refused.text, (body, refused.text)
    assert snapshot(db) == before

    written = _write(client, db, project, task, {"response": "From **scratch**."})
    assert written.status_code == 200, written.text
    out = written.json()
    assert out["ranking_id"] is None and out["demonstration_id"] and out["next"]["kind"] == "ranking"
    fresh(db)
    demo = db.get(Demonstration, out["demonstration_id"])
    assert (demo.draft_completion_id, demo.edit_distance) == (None, None)

    # The ranking task refuses a response, naming it.
    refused = _write(client, db, project, out["next"], {"response": "an essay"})
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("response: a ranking task takes no `response`")
    assert db.get(RankingTask, ranking_task.id).rankings_count == 0


def test_edit_distance_matches_the_textbook_table():
    def table(a: str, b: str) -> int:
        previous = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            row = [i]
            for j, y in enumerate(b, 1):
                row.append(min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (x != y)))
            previous = row
        return previous[-1]

    rng = random.Random(13)
    for _ in range(500):
        a = "".join(rng.choice("ab c\né") for _ in range(rng.randint(0, 70)))
        b = "".join(rng.choice("ab c\né") for _ in range(rng.randint(0, 70)))
        assert levenshtein(a, b) == table(a, b), (a, b)
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3 and levenshtein("same", "same") == 0


# ---- review ---------------------------------------------------------------------------------------


def _written_for_review(client, db, other_client):
    """Project with review on; `author` writes one demonstration through the API."""
    project = make_project(db, overlap=1, demonstration_review=True)
    make_demonstration_task(db, project, draft=None)
    author, reviewer = make_user(db, projects=[project]), make_user(db, projects=[project])
    login(client, author)
    task = _next(client, project)
    written = _write(client, db, project, task, {"response": "Ideal <script>alert(1)</script> answer"})
    assert written.status_code == 200, written.text
    assert written.json()["next"] is None  # the review task just opened is never the author's
    login(other_client, reviewer)
    return project, author, reviewer, written.json()["demonstration_id"]


def test_a_pending_demonstration_is_reviewed_by_someone_else_never_its_author(client, other_client, db):
    project, author, reviewer, demo_id = _written_for_review(client, db, other_client)
    fresh(db)
    demo = db.get(Demonstration, demo_id)
    assert demo.status == "pending_review"
    review_task = db.scalars(select(RankingTask).where(RankingTask.demonstration_id == demo_id)).one()
    barred = db.scalars(select(Assignment).where(Assignment.task_id == review_task.id)).one()
    assert (barred.user_id, barred.state) == (author.id, "barred") and review_task.slots_taken == 0

    assert _next(client, project) is None  # the author, asking again
    refused = _write(client, db, project, {"assignment_id": barred.id}, {"decision": "accept"})
    assert refused.status_code == 404  # nor can the author answer it through the barred row

    task = _next(other_client, project)
    assert task["kind"] == "demonstration_review" and task["demonstration"]["id"] == demo_id
    page = other_client.get(f"/projects/{project.id}/label")
    assert "The demonstration to review" in page.text
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text

    for body, field in (
        ({}, "decision: missing"),
        ({"decision": "reject"}, "comment: say why"),
        ({"decision": "edit"}, "reviewed_response: empty"),
        ({"decision": "accept", "reviewed_response": "x"}, "reviewed_response: only with decision"),
        ({"decision": "maybe"}, "decision"),
        ({"response": "mine"}, "response: a demonstration review task takes no `response`"),
    ):
        answer = _write(other_client, db, project, task, body)
        assert answer.status_code == 422 and field in answer.text, (body, answer.text)


@pytest.mark.parametrize(
    ("body", "status", "training"),
    [
        ({"decision": "accept"}, "accepted", "Ideal <script>alert(1)</script> answer"),
        ({"decision": "edit", "reviewed_response": "Ideal answer."}, "accepted", "Ideal answer."),
        ({"decision": "reject", "comment": "Has a script tag."}, "rejected", None),
    ],
)
def test_accept_edit_and_reject(client, other_client, db, body, status, training):
    project, _author, reviewer, demo_id = _written_for_review(client, db, other_client)
    task = _next(other_client, project)
    answer = _write(other_client, db, project, task, body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["demonstration_id"] == demo_id and answer.json()["ranking_id"] is None
    retry = _write(other_client, db, project, task, {"decision": "reject", "comment": "changed my mind"})
    assert retry.json()["duplicate"] and retry.json()["demonstration_id"] == demo_id  # the first review stands
    fresh(db)
    demo = db.get(Demonstration, demo_id)
    assert (demo.status, demo.reviewer_id) == (status, reviewer.id)
    assert demo.review_comment == body.get("comment", "")
    assert demo.reviewed_response == body.get("reviewed_response")
    assert len(demo.meta["reviews"]) == 1
    if training is not None:
        assert demo.training_response == training


def test_the_review_page_form_accepts_an_edit(client, other_client, db):
    project, _author, _reviewer, demo_id = _written_for_review(client, db, other_client)
    page = other_client.get(f"/projects/{project.id}/label")
    assignment_id = int(re.search(r'data-assignment-id="(\d+)"', page.text).group(1))
    fresh(db)
    form = {"csrf_token": csrf_of(other_client, db), "decision": "edit", "reviewed_response": "Better.\r\n"}
    sent = other_client.post(f"/projects/{project.id}/label/{assignment_id}", data=form, headers=HX)
    assert sent.status_code == 200 and "Saved." in sent.text, sent.text
    fresh(db)
    assert db.get(Demonstration, demo_id).reviewed_response == "Better.\n"


# ---- untrusted text ---------------------------------------------------------------------------------


def test_the_preview_renders_markdown_inert_and_needs_the_csrf_token(client, db):
    project = make_project(db)
    login(client, make_user(db, projects=[project]))
    url = f"/projects/{project.id}/label/preview"
    text = '**bold** <script>alert(1)</script> <img src=x onerror="alert(2)"> [x](javascript:alert(3))'
    assert client.post(url, data={"response": text}).status_code == 403
    shown = client.post(url, data={"response": text, "csrf_token": csrf_of(client, db)}, headers=HX)
    assert shown.status_code == 200
    assert "<strong>bold</strong>" in shown.text
    assert "<script" not in shown.text and "<img" not in shown.text and 'href="javascript:' not in shown.text
    assert "&lt;script&gt;" in shown.text
    stranger = make_project(db)
    outside = {"response": "x", "csrf_token": csrf_of(client, db)}
    assert client.post(f"/projects/{stranger.id}/label/preview", data=outside).status_code == 403


# ---- the project setting and the admin button ------------------------------------------------------


def test_review_is_a_project_setting_and_the_project_page_queues_every_training_prompt(client, db):
    project = make_project(db)
    tasks = [make_task(db, project) for _ in range(2)]
    token = make_token(db, "admin")
    url = f"/api/v1/projects/{project.id}"
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get(url, headers=auth).json()["demonstration_review"] is False
    assert client.patch(url, json={"demonstration_review": "yes"}, headers=auth).status_code == 422
    changed = client.patch(url, json={"demonstration_review": True}, headers=auth)
    assert changed.status_code == 200 and changed.json()["demonstration_review"] is True

    admin = make_user(db, role="admin")
    login(client, admin)
    fresh(db)
    csrf = csrf_of(client, db)
    form = client.get(f"/admin/projects/{project.id}/settings").text
    assert 'name="demonstration_review" checked' in form
    settings = {"name": project.name, "k_min": "4", "k_max": "9", "overlap": "1", "lease_minutes": "30"}
    saved = client.post(f"/admin/projects/{project.id}/settings", data={**settings, "csrf_token": csrf})
    assert saved.status_code in (200, 303), saved.text
    fresh(db)
    assert db.get(type(project), project.id).demonstration_review is False  # unticked box: off

    assert "Queue demonstrations" in client.get(f"/admin/projects/{project.id}").text
    queued = client.post(f"/admin/projects/{project.id}/demonstration-tasks", data={"csrf_token": csrf})
    assert queued.status_code == 200  # followed the redirect back to the project page
    fresh(db)
    made = db.scalars(select(RankingTask).where(RankingTask.kind == "demonstration")).all()
    assert sorted(t.prompt_id for t in made) == sorted(t.prompt_id for t in tasks)
    client.post(f"/admin/projects/{project.id}/demonstration-tasks", data={"csrf_token": csrf})
    fresh(db)
    assert len(db.scalars(select(RankingTask).where(RankingTask.kind == "demonstration")).all()) == 2
