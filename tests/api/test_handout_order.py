"""The handout order setting (issue 16 §2) over the API and on the admin settings page: the four
orders, a bad value refused naming the field with nothing changed, and the project page's card."""

from __future__ import annotations

from app.models import Project
from tests.admin.helpers import admin_client, fresh
from tests.factories import csrf_of, make_project


def test_the_order_is_set_at_creation_and_changed_over_the_api(client, db, admin_auth):
    created = client.post("/api/v1/projects", json={"name": "active", "handout_order": "margin"}, headers=admin_auth)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["handout_order"] == "margin"
    assert (body["priorities_refreshed_at"], body["priority_model_id"], body["priority_stats"]) == (None, None, {})
    assert client.post("/api/v1/projects", json={"name": "plain"}, headers=admin_auth).json()["handout_order"] == (
        "default"
    )
    path = f"/api/v1/projects/{body['id']}"
    for order in ("uncertainty", "information"):
        changed = client.patch(path, json={"handout_order": order}, headers=admin_auth)
        assert changed.status_code == 200 and changed.json()["handout_order"] == order


def test_a_bad_order_is_refused_naming_the_field_and_nothing_changes(client, db, admin_auth):
    project = make_project(db, handout_order="uncertainty")
    path = f"/api/v1/projects/{project.id}"
    for bad in ("random", None, 3):
        response = client.patch(path, json={"handout_order": bad, "overlap": 3}, headers=admin_auth)
        assert response.status_code == 422, (bad, response.text)
        assert "handout_order" in response.text, (bad, response.text)
    created = client.post("/api/v1/projects", json={"name": "x", "handout_order": "Random"}, headers=admin_auth)
    assert created.status_code == 422 and "handout_order" in created.text
    fresh(db)
    stored = db.get(Project, project.id)
    assert (stored.handout_order, stored.overlap) == ("uncertainty", 1)


def test_the_settings_page_sets_the_order_and_the_project_page_shows_it(client, db):
    project = make_project(db, name="ordered", k_min=4, k_max=6)
    admin_client(client, db)
    form = client.get(f"/admin/projects/{project.id}/settings").text
    assert 'name="handout_order"' in form and '<option value="default" selected>' in form
    fields = {
        "name": "ordered",
        "k_min": "4",
        "k_max": "6",
        "overlap": "1",
        "lease_minutes": "30",
        "flags": "unsafe",
        "csrf_token": csrf_of(client, db),
    }
    refused = client.post(f"/admin/projects/{project.id}/settings", data={**fields, "handout_order": "loudest"})
    assert refused.status_code == 422 and 'id="handout_order-error"' in refused.text and "loudest" in refused.text
    settings = f"/admin/projects/{project.id}/settings"
    saved = client.post(settings, data={**fields, "handout_order": "information"}, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    fresh(db)
    assert db.get(Project, project.id).handout_order == "information"
    page = client.get(f"/admin/projects/{project.id}").text
    assert 'data-handout-order="information"' in page and "most informative first" in page
    assert "No priorities yet" in page
    refused = client.post(f"/admin/projects/{project.id}/priorities/refresh", data={"csrf_token": csrf_of(client, db)})
    assert refused.status_code == 409 and "no reward model yet" in refused.text
