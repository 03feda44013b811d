"""Admin project pages: dashboard, create/settings with inline errors, uploads, members."""

import json

from sqlalchemy import select

from app.models import Project, ProjectMember, Prompt, RankingTask, Role
from tests.admin.helpers import admin_client, fresh
from tests.factories import csrf_of, login, make_project, make_task, make_user

VALID = {
    "name": "Support answers",
    "description": "Helpdesk",
    "guidelines": "# Rank\nBest first.",
    "k_min": "4",
    "k_max": "6",
    "overlap": "2",
    "lease_minutes": "20",
    "flags": "unsafe, rude, unsafe",
}


def test_admin_pages_refuse_others(client, other_client, db):
    project = make_project(db)
    for path in (
        "/admin",
        "/admin/projects/new",
        f"/admin/projects/{project.id}",
        f"/admin/projects/{project.id}/settings",
    ):
        response = other_client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=/admin")
    login(client, make_user(db, projects=[project]))
    csrf = csrf_of(client, db)
    assert client.get("/admin").status_code == 403
    assert client.post("/admin/projects", data={**VALID, "csrf_token": csrf}).status_code == 403
    assert (
        client.post(f"/admin/projects/{project.id}/members", data={"user_id": "1", "csrf_token": csrf}).status_code
        == 403
    )


def test_create_project_then_it_is_on_the_dashboard(client, db):
    admin_client(client, db)
    response = client.post("/admin/projects", data={**VALID, "csrf_token": csrf_of(client, db)}, follow_redirects=False)
    assert response.status_code == 303
    fresh(db)
    project = db.scalar(select(Project).where(Project.name == "Support answers"))
    assert (project.k_min, project.k_max, project.overlap, project.lease_minutes) == (4, 6, 2, 20)
    assert project.flags == ["unsafe", "rude"] and project.guidelines == "# Rank\nBest first."
    assert response.headers["location"] == f"/admin/projects/{project.id}"
    dashboard = client.get("/admin").text
    assert "Support answers" in dashboard and f"/admin/projects/{project.id}" in dashboard
    page = client.get(f"/admin/projects/{project.id}").text
    assert "K 4–6 completions per task · overlap 2" in page


def test_create_project_errors_are_shown_inline_and_nothing_is_stored(client, db):
    admin_client(client, db)
    csrf = csrf_of(client, db)
    cases = [
        ({"k_min": "3"}, "k_min", "is 3; allowed range is 4–9"),
        ({"k_max": "10"}, "k_max", "is 10; allowed range is 4–9"),
        ({"k_min": "7", "k_max": "5"}, "k_min", "k_min must be ≤ k_max"),
        ({"overlap": "two"}, "overlap", "enter a whole number (got &#39;two&#39;)"),
        ({"name": "   "}, "name", "must be a non-empty string"),
        ({"lease_minutes": "0"}, "lease_minutes", "allowed range is 1–"),
        ({"guidelines": "Rank\x00 them"}, "guidelines", "contains a NUL character"),  # Postgres cannot store it
    ]
    for change, field, message in cases:
        response = client.post("/admin/projects", data={**VALID, **change, "csrf_token": csrf})
        assert response.status_code == 422, change
        assert f'id="{field}-error"' in response.text and message in response.text, (change, response.text)
        assert 'aria-invalid="true"' in response.text and "Nothing was saved" in response.text
        typed = next(iter(change.values()))
        if typed.strip() and "\x00" not in typed:
            assert f'value="{typed}"' in response.text  # what was typed is kept for fixing
    make_project(db, name="Taken")
    response = client.post("/admin/projects", data={**VALID, "name": "Taken", "csrf_token": csrf})
    assert response.status_code == 422 and "already exists" in response.text
    fresh(db)
    assert db.scalars(select(Project.name)).all() == ["Taken"]


def test_create_project_needs_csrf(client, db):
    admin_client(client, db)
    assert client.post("/admin/projects", data=VALID).status_code == 403
    assert client.post("/admin/projects", data={**VALID, "csrf_token": "nope"}).status_code == 403
    fresh(db)
    assert db.scalar(select(Project)) is None


def test_settings_update_and_refusal(client, db):
    admin_client(client, db)
    csrf = csrf_of(client, db)
    project = make_project(db, name="Old", overlap=1)
    form = client.get(f"/admin/projects/{project.id}/settings").text
    assert 'value="Old"' in form and "unsafe, factually_wrong, off_topic" in form
    response = client.post(
        f"/admin/projects/{project.id}/settings",
        data={**VALID, "name": "New", "overlap": "3", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert response.status_code == 303
    fresh(db)
    assert (db.get(Project, project.id).name, db.get(Project, project.id).overlap) == ("New", 3)
    response = client.post(f"/admin/projects/{project.id}/settings", data={**VALID, "k_max": "12", "csrf_token": csrf})
    assert response.status_code == 422 and "is 12; allowed range is 4–9" in response.text
    fresh(db)
    assert db.get(Project, project.id).k_max == 6
    assert client.get("/admin/projects/999999/settings").status_code == 404


def test_guidelines_preview_escapes_html(client, db):
    admin_client(client, db)
    response = client.post(
        "/admin/markdown-preview",
        data={"guidelines": "**Bold** <script>alert(1)</script> [x](javascript:alert(1))"},
        headers={"X-CSRF-Token": csrf_of(client, db), "HX-Request": "true"},
    )
    assert response.status_code == 200
    assert "<strong>Bold</strong>" in response.text
    assert "<script>" not in response.text and "&lt;script&gt;" in response.text
    assert 'href="javascript:' not in response.text
    assert client.post("/admin/markdown-preview", data={"guidelines": "x"}).status_code == 403


def _jsonl(*records) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records).encode()


def test_upload_prompts_shows_counts_and_rejected_lines(client, db):
    admin_client(client, db)
    csrf = csrf_of(client, db)
    project = make_project(db)
    body = _jsonl(
        {"external_id": "a", "text": "First"},
        {"external_id": "b", "text": "Second"},
        "{not json",
        {"external_id": "c"},
        {"external_id": "a", "text": "First again"},
    )
    response = client.post(
        f"/admin/projects/{project.id}/upload",
        data={"kind": "prompts", "csrf_token": csrf},
        files={"file": ("prompts.jsonl", body, "application/x-ndjson")},
    )
    assert response.status_code == 200
    result = response.text.split('id="upload-result"')[1].split("</section>")[0]
    assert "<strong>2</strong> created" in result
    assert "<strong>1</strong> already present" in result
    assert "<strong>2</strong> rejected" in result
    assert '<td class="num">3</td>' in result and '<td class="num">4</td>' in result
    fresh(db)
    assert sorted(db.scalars(select(Prompt.external_id).where(Prompt.project_id == project.id))) == ["a", "b"]
    # The same file again: everything is already there.
    response = client.post(
        f"/admin/projects/{project.id}/upload",
        data={"kind": "prompts", "csrf_token": csrf},
        files={"file": ("prompts.jsonl", body, "application/x-ndjson")},
    )
    assert "<strong>0</strong> created" in response.text and "<strong>3</strong> already present" in response.text


def test_upload_completions_creates_tasks(client, db):
    admin_client(client, db)
    csrf = csrf_of(client, db)
    project = make_project(db, k_min=4, k_max=5)
    four = [{"text": f"answer {i}"} for i in range(4)]
    body = _jsonl(
        {"external_id": "q1", "text": "Question one", "completions": four},
        {"external_id": "q2", "text": "Question two", "completions": four[:3]},
        {"external_id": "missing", "completions": four},
    )
    response = client.post(
        f"/admin/projects/{project.id}/upload",
        data={"kind": "completions", "csrf_token": csrf},
        files={"file": ("c.jsonl", body, "application/x-ndjson")},
    )
    assert response.status_code == 200
    assert "<strong>1</strong> tasks created" in response.text and "<strong>2</strong> rejected" in response.text
    assert "takes 4–5 completions per prompt" in response.text and "no prompt &#39;missing&#39;" in response.text
    fresh(db)
    assert db.scalar(select(RankingTask).where(RankingTask.project_id == project.id)) is not None


def test_upload_refusals(client, db):
    admin_client(client, db)
    csrf = csrf_of(client, db)
    project = make_project(db)
    response = client.post(f"/admin/projects/{project.id}/upload", data={"kind": "prompts", "csrf_token": csrf})
    assert response.status_code == 422 and "choose a .jsonl file" in response.text
    response = client.post(
        f"/admin/projects/{project.id}/upload",
        data={"kind": "rankings", "csrf_token": csrf},
        files={"file": ("x.jsonl", b"{}", "application/x-ndjson")},
    )
    assert response.status_code == 422 and "choose prompts or completions" in response.text
    response = client.post(
        f"/admin/projects/{project.id}/upload",
        data={"kind": "prompts"},
        files={"file": ("x.jsonl", _jsonl({"external_id": "z", "text": "t"}), "text/plain")},
    )
    assert response.status_code == 403
    fresh(db)
    assert db.scalar(select(Prompt)) is None


def test_members_can_be_added_and_removed(client, db):
    admin_client(client, db)
    csrf = csrf_of(client, db)
    project = make_project(db)
    labeler = make_user(db, role=Role.labeler)
    page = client.get(f"/admin/projects/{project.id}").text
    assert f'<option value="{labeler.id}">{labeler.email}</option>' in page
    response = client.post(
        f"/admin/projects/{project.id}/members",
        data={"user_id": str(labeler.id), "csrf_token": csrf},
        follow_redirects=False,
    )
    assert response.status_code == 303
    fresh(db)
    assert db.get(ProjectMember, (project.id, labeler.id)) is not None
    assert project.name in client.get("/admin/users").text  # the users page lists memberships
    response = client.post(f"/admin/projects/{project.id}/members", data={"user_id": "424242", "csrf_token": csrf})
    assert response.status_code == 422 and "no user with id 424242" in response.text
    response = client.post(
        f"/admin/projects/{project.id}/members/{labeler.id}/remove", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert response.status_code == 303
    fresh(db)
    assert db.get(ProjectMember, (project.id, labeler.id)) is None


def test_progress_counts_tasks_and_coverage(client, db):
    admin_client(client, db)
    project = make_project(db, overlap=2)
    for _ in range(3):
        make_task(db, project)
    page = client.get("/admin").text
    row = page.split(project.name)[1].split("</tr>")[0]
    assert '<td class="num">3</td>' in row and "0%" in row


def test_membership_decides_what_a_labeler_sees(client, other_client, db):
    admin_client(client, db)
    csrf = csrf_of(client, db)
    project = make_project(db, name="Members only")
    make_task(db, project)
    labeler = make_user(db)
    login(other_client, labeler)
    assert "Members only" not in other_client.get("/").text
    assert other_client.get(f"/projects/{project.id}/label").status_code == 403
    client.post(f"/admin/projects/{project.id}/members", data={"user_id": str(labeler.id), "csrf_token": csrf})
    assert "Members only" in other_client.get("/").text
    assert other_client.get(f"/projects/{project.id}/label").status_code == 200
    client.post(f"/admin/projects/{project.id}/members/{labeler.id}/remove", data={"csrf_token": csrf})
    assert "Members only" not in other_client.get("/").text
    assert other_client.get(f"/projects/{project.id}/label").status_code == 403
