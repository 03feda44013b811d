"""The admin pages: launching from the model versions page (presets and picks), the evaluation
page's progress, win rates with the tie rule, leaderboard and round chart, close from the page,
and the eval set on the project page."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.models import Evaluation, Prompt, RankingTask
from tests.admin.helpers import admin_client, fresh
from tests.evaluation.helpers import add_prompts, judge, opened, setup
from tests.factories import login, make_project, make_user
from tests.rounds.helpers import make_version


def test_launch_a_preset_from_the_model_versions_page(client, db):
    s = setup(db)
    _admin, csrf = admin_client(client, db)
    page = client.get(f"/admin/projects/{s.project.id}/models").text
    assert 'id="evaluate"' in page and 'name="against" value="previous"' in page
    answer = client.post(
        f"/admin/projects/{s.project.id}/evaluations",
        data={"csrf_token": csrf, "version_id": str(s.policy.id), "against": ["previous", "base"], "prompts": "2"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    fresh(db)
    evaluation = db.scalar(select(Evaluation).where(Evaluation.project_id == s.project.id))
    assert answer.headers["location"] == f"/admin/evaluations/{evaluation.id}"
    assert evaluation.comparisons == [[s.policy.id, s.base.id]] and evaluation.config["prompts"] == 2
    shown = client.get(answer.headers["location"]).text
    assert 'data-status="generating"' in shown and 'hx-trigger="every 3s"' in shown

    version_page = client.get(f"/admin/models/{s.policy.id}").text
    assert f'name="version_id" value="{s.policy.id}"' in version_page


def test_picking_versions_and_refusals_on_the_page(client, db):
    s = setup(db)
    sft = make_version(db, s.project, kind="sft")
    _admin, csrf = admin_client(client, db)
    url = f"/admin/projects/{s.project.id}/evaluations"
    one = client.post(url, data={"csrf_token": csrf, "version_ids": [str(s.policy.id)]})
    assert one.status_code == 422 and "version_ids: choose at least two different model versions" in one.text
    bad = client.post(url, data={"csrf_token": csrf, "version_ids": [str(s.policy.id), "x"]})
    assert bad.status_code == 422 and "version_ids: must be a whole number" in bad.text
    ids = [str(v.id) for v in (s.policy, s.base, sft)]
    picked = client.post(url, data={"csrf_token": csrf, "version_ids": ids}, follow_redirects=False)
    assert picked.status_code == 303
    fresh(db)
    assert len(db.scalar(select(Evaluation).where(Evaluation.project_id == s.project.id)).comparisons) == 3
    assert client.post(url, data={"version_ids": ids[:2]}).status_code == 403  # no CSRF token


def test_the_evaluation_page_shows_progress_rates_leaderboard_and_chart(client, db):
    """One labeler judges 2 of 3 tasks: the policy wins one, one tie. Ties split: (1 + ½)/2 = 75%."""
    s = setup(db, prompts=3)
    evaluation = opened(db, s)
    tasks = list(
        db.scalars(select(RankingTask).where(RankingTask.evaluation_id == evaluation.id).order_by(RankingTask.id))
    )
    judge(db, tasks[0], s.labelers[0], "win", winner_version=s.policy.id, comment="<b>shorter</b> & right")
    judge(db, tasks[1], s.labelers[0], "tie")
    admin_client(client, db)
    html = client.get(f"/admin/evaluations/{evaluation.id}").text
    assert 'data-status="labeling"' in html and re.search(r"data-judgments>\s*2 / 3 judgments", html)
    row = re.search(rf'<tr data-pair="{s.policy.id}-{s.base.id}">(.*?)</tr>', html, re.S).group(1)
    assert "1 / 0 / 1 / 0" in row and re.search(r"data-split><strong>75.0%</strong>", row)
    assert re.search(r"data-excluded><strong>100.0%</strong>", row)
    assert "half a win" in html and s.labelers[0].email in html
    assert f'<tr data-version="{s.policy.id}">' in html and "(anchor)" in html
    assert "chart-errorbar" in html  # round 0's policy against the base it started from
    reasons = re.search(r'<ul class="reasons">(.*?)</ul>', html, re.S).group(1)
    assert f"#{s.policy.id} policy" in reasons and "&lt;b&gt;shorter&lt;/b&gt; &amp; right" in reasons
    assert "Win rate of each round’s policy vs its previous policy: 1 round, latest 75%" in html

    polled = client.get(f"/admin/evaluations/{evaluation.id}", headers={"HX-Request": "true"}).text
    assert polled.lstrip().startswith('<div id="evaluation-live"')
    listing = client.get(f"/admin/projects/{s.project.id}/evaluations").text
    assert f'href="/admin/evaluations/{evaluation.id}"' in listing and "chart-errorbar" in listing


def test_close_from_the_page_stops_polling_and_a_second_close_is_refused(client, db):
    s = setup(db, prompts=1)
    evaluation = opened(db, s)
    _admin, csrf = admin_client(client, db)
    url = f"/admin/evaluations/{evaluation.id}/close"
    closed = client.post(url, data={"csrf_token": csrf}, headers={"HX-Request": "true"})
    assert closed.status_code == 200 and 'data-status="done"' in closed.text and "every 3s" not in closed.text
    again = client.post(url, data={"csrf_token": csrf}, headers={"HX-Request": "true"})
    assert again.status_code == 409 and "cannot be closed" in again.text


def test_the_project_page_shows_the_eval_set_and_holds_out_prompts(client, db):
    project = make_project(db)
    add_prompts(db, project, 5, split="train", prefix="t")
    add_prompts(db, project, 2, split="eval")
    _admin, csrf = admin_client(client, db)
    page = client.get(f"/admin/projects/{project.id}").text
    assert re.search(r"data-eval-size>2<", page) and f'action="/admin/projects/{project.id}/eval-set"' in page
    held = client.post(
        f"/admin/projects/{project.id}/eval-set", data={"csrf_token": csrf, "count": "3"}, follow_redirects=False
    )
    assert held.status_code == 303
    assert re.search(r"data-eval-size>5<", client.get(f"/admin/projects/{project.id}").text)
    refused = client.post(f"/admin/projects/{project.id}/eval-set", data={"csrf_token": csrf, "count": "9"})
    assert refused.status_code == 422 and "count: only 2 prompts are unused" in refused.text
    fresh(db)
    assert db.query(Prompt).filter(Prompt.project_id == project.id, Prompt.split == "eval").count() == 5


def test_labelers_cannot_open_evaluation_pages(client, db):
    s = setup(db, prompts=1)
    evaluation = opened(db, s)
    login(client, make_user(db, projects=[s.project]))
    assert client.get(f"/admin/evaluations/{evaluation.id}", follow_redirects=False).status_code in (303, 403)
