"""A project's feedback form (issue 15): chosen at creation through the REST API and the admin
form, checked with errors naming the field, fixed once the project has tasks, and the kind of the
tasks its uploads create. SQLite and Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Project, RankingTask
from app.projects import service
from tests.factories import csrf_of, login, make_project, make_task, make_token, make_user
from tests.labeling.helpers import fresh


def _auth(db, *scopes):
    return {"Authorization": f"Bearer {make_token(db, *scopes)}"}


def test_a_likert_project_is_created_with_its_settings_and_the_forms_k_range(client, db):
    headers = _auth(db, "upload")
    body = {"name": "ratings", "feedback_form": "likert", "form_settings": {"likert_points": 5}}
    created = client.post("/api/v1/projects", headers=headers, json=body)
    assert created.status_code == 201, created.text
    out = created.json()
    assert out["feedback_form"] == "likert" and (out["k_min"], out["k_max"]) == (1, 4)
    assert out["form_settings"] == {"likert_points": 5, "likert_labels": []}
    pairwise = client.post("/api/v1/projects", headers=headers, json={"name": "ab", "feedback_form": "pairwise"})
    assert (pairwise.json()["k_min"], pairwise.json()["k_max"]) == (2, 2)
    ranking = client.post("/api/v1/projects", headers=headers, json={"name": "plain"}).json()
    assert ranking["feedback_form"] == "ranking" and (ranking["k_min"], ranking["k_max"]) == (4, 9)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"feedback_form": "pairwise", "k_min": 2, "k_max": 3}, "k_max: is 3; allowed range is 2–2 for the pairwise"),
        ({"k_min": 3}, "k_min: is 3; allowed range is 4–9 for the ranking form"),
        ({"feedback_form": "likert", "form_settings": {"likert_points": 12}}, "form_settings.likert_points: is 12"),
        ({"feedback_form": "likert", "form_settings": {"likert_labels": ["a", "b"]}}, "has 2 labels for 7 points"),
        ({"feedback_form": "likert", "form_settings": {"aspects": []}}, "form_settings.aspects: the likert form takes"),
        ({"feedback_form": "ranking", "form_settings": {"likert_points": 5}}, "the ranking form takes no settings"),
        (
            {"feedback_form": "multi_aspect", "form_settings": {"aspects": [{"name": "Help!", "scale": "likert"}]}},
            "form_settings.aspects[0].name: is 'Help!'",
        ),
        (
            {"feedback_form": "multi_aspect", "form_settings": {"aspects": [{"name": "a", "scale": "stars"}]}},
            "form_settings.aspects[0].scale: is 'stars'; choose likert or ranking",
        ),
        (
            {"feedback_form": "multi_aspect", "form_settings": {"aspects": [{"name": "a"}, {"name": "a"}]}},
            "form_settings.aspects[1].name: 'a' is given twice",
        ),
    ],
)  # fmt: skip
def test_bad_form_settings_are_refused_naming_the_field(client, db, body, problem):
    answer = client.post("/api/v1/projects", headers=_auth(db, "upload"), json={"name": "x", **body})
    assert answer.status_code == 422 and problem in answer.json()["detail"], answer.text
    assert db.scalar(select(Project.id)) is None


def test_an_unknown_form_is_refused_by_the_schema_naming_it(client, db):
    answer = client.post("/api/v1/projects", headers=_auth(db, "upload"), json={"name": "x", "feedback_form": "stars"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "feedback_form"]


def test_the_form_changes_only_while_the_project_has_no_tasks(client, db):
    project = make_project(db)
    url = f"/api/v1/projects/{project.id}"
    headers = _auth(db, "admin")
    body = {"feedback_form": "good_bad", "k_min": 1, "k_max": 3}
    changed = client.patch(url, headers=headers, json=body)
    assert changed.status_code == 200 and changed.json()["feedback_form"] == "good_bad", changed.text
    make_task(db, project, k=3)
    refused = client.patch(url, headers=headers, json={"feedback_form": "likert"})
    assert refused.status_code == 422 and refused.json()["detail"].startswith("feedback_form: cannot change once")
    same = client.patch(url, headers=headers, json={"feedback_form": "good_bad", "overlap": 3})
    assert same.status_code == 200 and same.json()["overlap"] == 3  # sending the same form is no change


def test_uploaded_completions_become_tasks_of_the_projects_form(client, db):
    project = service.create_project(db, name="ab test", feedback_form="pairwise")
    db.commit()
    headers = _auth(db, "upload")
    client.post(
        f"/api/v1/projects/{project.id}/prompts",
        headers=headers,
        json={"prompts": [{"external_id": "q1", "text": "Hi?"}]},
    )
    url = f"/api/v1/projects/{project.id}/prompts/q1/completions"
    three = client.post(url, headers=headers, json={"completions": [{"text": t} for t in ("a", "b", "c")]})
    assert three.status_code == 422 and "takes 2–2 completions" in three.text
    two = client.post(url, headers=headers, json={"completions": [{"text": t} for t in ("a", "b")]})
    assert two.status_code in (200, 201), two.text
    assert db.scalars(select(RankingTask.kind)).all() == ["pairwise"]


def test_the_admin_form_creates_a_multi_aspect_project_and_shows_errors_by_field(client, db):
    admin = make_user(db, role="admin")
    login(client, admin)
    assert 'name="feedback_form"' in client.get("/admin/projects/new").text
    form = {
        "csrf_token": csrf_of(client, db),
        "name": "aspects",
        "k_min": "",
        "k_max": "",
        "overlap": "1",
        "lease_minutes": "30",
        "feedback_form": "multi_aspect",
        "likert_points": "5",
        "aspects": "helpfulness | Helpful | likert\r\nsafety | Safe & sound | ranking\r\n",
        "overall_ranking": "on",
    }
    bad = client.post("/admin/projects", data={**form, "aspects": "Bad Name | x"})
    assert bad.status_code == 422 and "aspects[0].name: is &#39;Bad Name&#39;" in bad.text
    created = client.post("/admin/projects", data=form, follow_redirects=False)
    assert created.status_code == 303, created.text
    fresh(db)
    project = db.scalars(select(Project).where(Project.name == "aspects")).one()
    assert (project.feedback_form, project.k_min, project.k_max) == ("multi_aspect", 2, 4)
    assert project.form_settings == {
        "likert_points": 5,
        "likert_labels": [],
        "aspects": [
            {"name": "helpfulness", "label": "Helpful", "scale": "likert"},
            {"name": "safety", "label": "Safe & sound", "scale": "ranking"},
        ],
        "overall_ranking": True,
    }
    assert "Multi aspect form" in client.get(f"/admin/projects/{project.id}").text


def test_progress_counts_rating_answers_like_rankings(client, db):
    from tests.labeling.helpers import make_form_task, next_view, submit

    project = make_project(db, overlap=2)
    make_form_task(db, project, "likert")
    alice = make_user(db, projects=[project])
    submit(db, alice, project, next_view(db, alice, project))
    progress = client.get(f"/api/v1/projects/{project.id}/progress", headers=_auth(db, "export")).json()
    assert (progress["rankings"], progress["coverage"], progress["tasks_by_rankings"]) == (1, 0.5, {"1": 1})
