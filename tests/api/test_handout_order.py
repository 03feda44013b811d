"""The handout order setting (issue 16 §2) over the API and on the admin settings page: the four
orders, a bad value refused naming the field with nothing changed, the project page's card, and
the advice both pages give from the team's own pair agreement."""

from __future__ import annotations

from app.models import Project
from app.projects.handout_advice import CLEAR_GAIN_FROM, MIN_PAIRS, SMALL_GAIN_FROM, handout_advice
from tests.admin.helpers import admin_client, fresh
from tests.factories import csrf_of, make_project, make_ranking, make_task, make_user


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


def _team(db, *, agreeing: int, reversed_: int, handout_order: str):
    """A project whose two labelers rank `agreeing` K = 4 tasks alike and `reversed_` oppositely."""
    project = make_project(db, overlap=2, handout_order=handout_order)
    a, b = (make_user(db, email=f"{name}{project.id}@example.com", projects=[project]) for name in "ab")
    for n in range(agreeing + reversed_):
        task = make_task(db, project, k=4)
        best_first = [[cid] for cid in task.completion_ids]
        make_ranking(db, task, a, best_first)
        make_ranking(db, task, b, best_first if n < agreeing else best_first[::-1])
    return project


def test_the_advice_follows_the_measured_thresholds():
    assert handout_advice(None, 0).supported == () and "Too few" in handout_advice(None, 0).text
    assert handout_advice(95.0, MIN_PAIRS - 1).supported == ()
    assert handout_advice(72.6, MIN_PAIRS).supported == ("default",)
    assert handout_advice(SMALL_GAIN_FROM, 500).supported == ("default", "information")
    clear = handout_advice(CLEAR_GAIN_FROM, 500)
    assert clear.supported == ("information",) and "85.0% of 500 compared completion pairs" in clear.text


def test_the_project_and_settings_pages_advise_on_the_teams_own_agreement(client, db):
    precise = _team(db, agreeing=18, reversed_=2, handout_order="default")  # 108 of 120 pairs: 90%
    admin_client(client, db)
    page = client.get(f"/admin/projects/{precise.id}").text
    card = page.split('id="handout-order"')[1].split("</section>")[0]
    assert 'data-handout-advice="information"' in card and "90.0% of 120 compared completion pairs" in card
    assert "data-handout-advice-mismatch" in card and "The current order, default," in card
    settings = client.get(f"/admin/projects/{precise.id}/settings").text
    assert 'data-handout-advice="information"' in settings and "data-handout-advice-mismatch" in settings

    noisy = _team(db, agreeing=14, reversed_=6, handout_order="information")  # 84 of 120: 70%
    card = client.get(f"/admin/projects/{noisy.id}").text.split('id="handout-order"')[1].split("</section>")[0]
    assert 'data-handout-advice="default"' in card and "70.0% of 120" in card and "keep the default" in card
    assert "The current order, information," in card

    fresh_project = make_project(db, handout_order="information")
    card = client.get(f"/admin/projects/{fresh_project.id}").text.split('id="handout-order"')[1]
    assert 'data-handout-advice=""' in card and "Too few overlapped completion pairs" in card
    assert "data-handout-advice-mismatch" not in card.split("</section>")[0]
