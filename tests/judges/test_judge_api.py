"""The judge's API (admin tokens) and admin page: set up, refused settings, launching a run,
progress, agreement; the page's form and its "Judge open tasks" button."""

from __future__ import annotations

import pytest

from app.models.judges import JudgeRun
from tests.admin.helpers import admin_client, fresh
from tests.factories import make_project, make_task, make_token
from worker.ml.judge import DEFAULT_TEMPLATE
from worker.ml.judge_forms import GOOD_BAD_TEMPLATE, LIKERT_TEMPLATE, MULTI_ASPECT_TEMPLATE


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_set_up_a_judge_launch_a_run_and_read_its_progress(db, client):
    token = make_token(db, "admin")
    project = make_project(db)
    make_task(db, project)
    base = f"/api/v1/projects/{project.id}"
    assert client.get(f"{base}/judge", headers=_auth(token)).status_code == 404
    assert client.post(f"{base}/judge/runs", headers=_auth(token)).status_code == 404  # no judge yet

    body = {"name": "critic", "kind": "endpoint", "endpoint_url": "http://127.0.0.1:9/v1", "endpoint_model": "m"}
    made = client.put(f"{base}/judge", json={**body, "api_key_env": "RANKLAB_JUDGE_KEY"}, headers=_auth(token))
    assert made.status_code == 200, made.text
    judge = made.json()
    assert (judge["version"], judge["labeler_name"], judge["mode"], judge["show_suggestion"]) == (
        1,
        "critic v1 (AI)",
        "compare",
        False,
    )
    assert judge["prompt_template"] == DEFAULT_TEMPLATE and judge["orders"] == 2
    assert client.get(f"{base}/judge", headers=_auth(token)).json() == judge

    launched = client.post(f"{base}/judge/runs", headers=_auth(token))
    assert launched.status_code == 201, launched.text
    run = launched.json()
    assert run["status"] == "pending"
    assert client.post(f"{base}/judge/runs", headers=_auth(token)).status_code == 409  # one at a time
    assert client.get(f"/api/v1/judge-runs/{run['id']}", headers=_auth(token)).json()["id"] == run["id"]
    assert [r["id"] for r in client.get(f"{base}/judge/runs", headers=_auth(token)).json()] == [run["id"]]
    agreement = client.get(f"{base}/judge/agreement", headers=_auth(token)).json()
    assert agreement == {
        "measure": "pairwise order",
        "human_pct": None,
        "human_comparisons": 0,
        "judge_pct": None,
        "judge_comparisons": 0,
        "judge_tasks": 0,
        "statistic_name": "",
        "human_statistic": None,
        "judge_statistic": None,
        "instructgpt_pct": 72.6,
    }
    assert client.get("/api/v1/judge-runs/999999", headers=_auth(token)).status_code == 404
    assert client.get(f"{base}/judge", headers=_auth(make_token(db, "export"))).status_code == 403


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"api_key_env": "RANKLAB_SECRET_KEY"}, "api_key_env", "RANKLAB_JUDGE_"),  # no other secret may leave
        ({"api_key_env": "sk-live-123"}, "api_key_env", "never in this form"),
        ({"prompt_template": "Rank these: {completions}"}, "prompt_template", "{prompt}"),
        ({"prompt_template": "{prompt} {completions} {answer}"}, "prompt_template", "placeholder"),
        ({"kind": "endpoint", "endpoint_url": "vllm:8000"}, "endpoint_url", "base URL"),
        ({"kind": "endpoint", "endpoint_url": "http://x/v1"}, "endpoint_model", "name the model"),
    ],
)
def test_settings_that_cannot_work_are_refused_by_name(db, client, change, field, words):
    token = make_token(db, "admin")
    project = make_project(db)
    refused = client.put(f"/api/v1/projects/{project.id}/judge", json=change, headers=_auth(token))
    assert refused.status_code == 422 and field in refused.text and words in refused.text, refused.text


def test_rating_form_projects_get_their_forms_template(db, client):
    token = make_token(db, "admin")
    likert = make_project(db, k_min=1, k_max=3, feedback_form="likert", form_settings={"likert_points": 5})
    made = client.put(
        f"/api/v1/projects/{likert.id}/judge",
        json={"kind": "endpoint", "endpoint_url": "http://x/v1", "endpoint_model": "m"},
        headers=_auth(token),
    )
    assert made.status_code == 200 and made.json()["prompt_template"] == LIKERT_TEMPLATE, made.text
    no_points = client.put(
        f"/api/v1/projects/{likert.id}/judge", json={"prompt_template": "{prompt} {completion}"}, headers=_auth(token)
    )
    assert no_points.status_code == 422 and "prompt_template" in no_points.text and "{points}" in no_points.text
    good_bad = make_project(db, k_min=1, k_max=3, feedback_form="good_bad")
    made = client.put(f"/api/v1/projects/{good_bad.id}/judge", json={}, headers=_auth(token))
    assert made.status_code == 200 and made.json()["prompt_template"] == GOOD_BAD_TEMPLATE, made.text
    aspects = {"aspects": [{"name": "helpfulness", "scale": "likert"}], "likert_points": 5}
    multi = make_project(db, k_min=1, k_max=3, feedback_form="multi_aspect", form_settings=aspects)
    made = client.put(f"/api/v1/projects/{multi.id}/judge", json={}, headers=_auth(token))
    assert made.status_code == 200 and made.json()["prompt_template"] == MULTI_ASPECT_TEMPLATE, made.text
    admin_client(client, db)
    shown = client.get(f"/admin/projects/{likert.id}/judge")
    assert shown.status_code == 200 and "Prompt template ({prompt}, {completion}, {points}, {labels})" in shown.text
    assert "Agreement (Likert points)" in shown.text and "Krippendorff" in shown.text


def test_the_admin_page_saves_the_judge_and_launches_a_run(db, client):
    _, csrf = admin_client(client, db)
    project = make_project(db)
    shown = client.get(f"/admin/projects/{project.id}/judge")
    assert shown.status_code == 200
    assert "72.6%" in shown.text and "Judge open tasks" not in shown.text  # no judge yet: no button
    assert 'name="api_key_env"' in shown.text and "never the key" in shown.text

    form = {
        "csrf_token": csrf,
        "name": "local judge",
        "kind": "local",
        "model_path": "",
        "endpoint_url": "",
        "endpoint_model": "",
        "api_key_env": "",
        "orders": "2",
        "mode": "slot",
        "max_attempts": "3",
        "requests_per_minute": "30",
        "prompt_template": "{prompt} {completions} {oops}",
    }
    refused = client.post(f"/admin/projects/{project.id}/judge", data=form)
    assert refused.status_code == 422 and "Not saved" in refused.text and "placeholder" in refused.text
    form["prompt_template"] = DEFAULT_TEMPLATE
    saved = client.post(f"/admin/projects/{project.id}/judge", data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    page = client.get(saved.headers["location"]).text
    assert "local judge v1 (AI)" in page and "Judge open tasks" in page and "never displaces" not in page
    assert "the judge takes a free overlap slot, never a human’s" in page

    launched = client.post(
        f"/admin/projects/{project.id}/judge/runs", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert launched.status_code == 303
    fresh(db)
    run = db.query(JudgeRun).one()
    page = client.get(launched.headers["location"]).text
    assert run.status == "pending" and f'data-run="{run.id}"' in page and 'hx-trigger="every 2s"' in page
    polled = client.get(launched.headers["location"], headers={"HX-Request": "true"})
    assert polled.text.lstrip().startswith('<section class="card" aria-labelledby="runs-h" id="judge-runs"')
    assert f'data-run="{run.id}"' in polled.text and "Settings" not in polled.text  # the runs table only
    run.status = "done"
    db.commit()
    assert "every 2s" not in client.get(launched.headers["location"]).text  # polling stops with the run


def test_the_project_page_links_to_its_judge(db, client):
    from tests.admin.helpers import admin_client
    from tests.factories import make_project

    admin_client(client, db)
    project = make_project(db)
    page = client.get(f"/admin/projects/{project.id}").text
    assert f'href="/admin/projects/{project.id}/judge">AI judge</a>' in page
    assert client.get(f"/admin/projects/{project.id}/judge").status_code == 200
