"""The feedback forms (issue 15) through HTTP: each kind's labeling page renders (untrusted text
escaped), a plain form post and an htmx post store the answer, and the JSON API hands out, takes
and refuses answers naming the field. SQLite and Postgres."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app.models import Feedback, FeedbackRating, Ranking
from tests.factories import csrf_of, login, make_project, make_user
from tests.labeling.helpers import fresh, make_form_task, snapshot

HX = {"HX-Request": "true"}
EVIL = "<script>window.__pwned=1</script>"


def _assignment_id(html: str) -> int:
    return int(re.search(r'data-assignment-id="(\d+)"', html).group(1))


def _labeler_on(client, db, kind: str, *, texts=None):
    project = make_project(db, overlap=1)
    task = make_form_task(db, project, kind)
    if texts:
        for item, text in zip(task.items, texts, strict=False):
            item.completion.text = text
            item.completion.text_html = None  # rendered again from the text when shown
        db.commit()
    login(client, make_user(db, projects=[project]))
    return project, task


@pytest.mark.parametrize(
    ("kind", "inputs", "words"),
    [
        ("likert", 'type="radio" name="rating-', ["Rate each completion from 1 (worst) to 5 (best)", "great"]),
        ("good_bad", 'value="good"', ["Is each completion good or bad?", "Bad"]),
        ("multi_aspect", 'name="place-', ["Helpful", "Honest &lt;b&gt;really&lt;/b&gt;", "Overall"]),
        ("pairwise", 'name="verdict"', ["Which response is better?", "Both bad"]),
    ],
)
def test_each_form_page_renders_its_controls_and_escapes_untrusted_text(client, db, kind, inputs, words):
    project, task = _labeler_on(client, db, kind, texts=[EVIL, "**bold** answer", "plain"])
    page = client.get(f"/projects/{project.id}/label")
    assert page.status_code == 200, page.text
    html = page.text
    assert inputs in html
    for word in words:
        assert word in html, word
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html and "<script>window" not in html
    assert "<strong>bold</strong>" in html and "<b>really</b>" not in html
    if kind == "pairwise":
        assert "data-completion-id" not in html  # blind: no id on the page
    else:
        assert html.count('name="critique-') == 3  # an optional critique per completion


def test_a_likert_answer_posted_as_a_plain_form_is_stored_and_redirects(client, db):
    project, task = _labeler_on(client, db, "likert")
    html = client.get(f"/projects/{project.id}/label").text
    ids = [int(i) for i in re.findall(r'name="rating-(\d+)" value="1"', html)]
    assert sorted(ids) == sorted(task.completion_ids)
    form = {"csrf_token": csrf_of(client, db), **{f"rating-{cid}": str(i + 1) for i, cid in enumerate(ids)}}
    form[f"critique-{ids[0]}"] = "Too <em>vague</em>."
    answer = client.post(f"/projects/{project.id}/label/{_assignment_id(html)}", data=form, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == f"/projects/{project.id}/label"
    fresh(db)
    feedback = db.scalars(select(Feedback)).one()
    rows = {r.completion_id: (r.value, r.critique) for r in db.scalars(select(FeedbackRating))}
    assert rows == {ids[0]: (1, "Too <em>vague</em>."), ids[1]: (2, None), ids[2]: (3, None)}
    assert feedback.form == "likert"
    assert "Queue empty" in client.get(f"/projects/{project.id}/label").text


def test_a_bad_htmx_post_says_what_is_wrong_and_stores_nothing(client, db):
    project, task = _labeler_on(client, db, "good_bad")
    html = client.get(f"/projects/{project.id}/label").text
    ids = [int(i) for i in re.findall(r'name="rating-(\d+)" value="good"', html)]
    before = snapshot(db)
    form = {"csrf_token": csrf_of(client, db), f"rating-{ids[0]}": "good", f"rating-{ids[1]}": "bad"}
    answer = client.post(f"/projects/{project.id}/label/{_assignment_id(html)}", data=form, headers=HX)
    assert answer.status_code == 422 and f"ratings: completion {ids[2]} has no rating" in answer.text
    assert snapshot(db) == before
    form[f"rating-{ids[2]}"] = "good"
    saved = client.post(f"/projects/{project.id}/label/{_assignment_id(html)}", data=form, headers=HX)
    assert saved.status_code == 200 and "Saved." in saved.text


def test_the_pairwise_form_takes_a_verdict_and_critiques_by_side(client, db):
    project, task = _labeler_on(client, db, "pairwise")
    html = client.get(f"/projects/{project.id}/label").text
    form = {
        "csrf_token": csrf_of(client, db),
        "verdict": "B",
        "critique-A": "misses the point",
        "comment": "B is right",
    }
    answer = client.post(f"/projects/{project.id}/label/{_assignment_id(html)}", data=form, headers=HX)
    assert answer.status_code == 200, answer.text
    fresh(db)
    ranking = db.scalars(select(Ranking)).one()
    a, b = ranking.display_order
    assert ranking.groups == [[b], [a]] and ranking.critiques == {str(a): "misses the point"}


def test_the_json_api_hands_out_a_rating_task_with_its_form_and_takes_ratings(client, db):
    project, task = _labeler_on(client, db, "multi_aspect")
    headers = {"X-CSRF-Token": csrf_of(client, db)}
    handed = client.get(f"/api/v1/labeling/projects/{project.id}/next").json()["task"]
    assert handed["kind"] == "multi_aspect" and handed["flags"] == []
    assert handed["form"] == {
        "likert_points": 5,
        "likert_labels": [],
        "aspects": [
            {"name": "helpfulness", "label": "Helpful", "scale": "likert"},
            {"name": "honesty", "label": "Honest <b>really</b>", "scale": "ranking"},
        ],
        "overall_ranking": True,
    }
    ids = [c["id"] for c in handed["completions"]]
    url = f"/api/v1/labeling/projects/{project.id}/assignments/{handed['assignment_id']}/ranking"
    body = {
        "ratings": [{"completion_id": cid, "aspect": "helpfulness", "value": 3} for cid in ids],
        "aspect_rankings": {"honesty": [ids]},
        "ranking": [[cid] for cid in ids],
        "critiques": {str(ids[1]): "hedges"},
        "time_spent_ms": 2500,
    }
    bad = client.post(url, headers=headers, json={**body, "aspect_rankings": {"speed": [ids]}})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("aspect_rankings.speed: not one of")
    typo = client.post(url, headers=headers, json={**body, "ratings": [{"completion_id": ids[0], "valu": 3}]})
    assert typo.status_code == 422 and {"body", "ratings", 0, "valu"} & set(typo.json()["detail"][0]["loc"])
    answer = client.post(url, headers=headers, json=body)
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["feedback_id"] and out["ranking_id"] is None and not out["duplicate"] and out["next"] is None
    retry = client.post(url, headers=headers, json=body).json()
    assert retry["duplicate"] and retry["feedback_id"] == out["feedback_id"]
    fresh(db)
    assert db.get(Feedback, out["feedback_id"]).time_spent_ms == 2500


def test_the_json_api_refuses_a_likert_value_out_of_range_naming_it(client, db):
    project, task = _labeler_on(client, db, "likert")
    handed = client.get(f"/api/v1/labeling/projects/{project.id}/next").json()["task"]
    assert handed["form"]["likert_labels"] == ["awful", "poor", "fair", "good", "great"]
    ids = [c["id"] for c in handed["completions"]]
    url = f"/api/v1/labeling/projects/{project.id}/assignments/{handed['assignment_id']}/ranking"
    ratings = [{"completion_id": cid, "value": v} for cid, v in zip(ids, (1, 5, 6), strict=True)]
    answer = client.post(url, headers={"X-CSRF-Token": csrf_of(client, db)}, json={"ratings": ratings})
    assert answer.status_code == 422 and answer.json()["detail"] == "ratings[2].value: must be 1–5, got 6"
    verdict = client.post(url, headers={"X-CSRF-Token": csrf_of(client, db)}, json={"verdict": "A"})
    assert verdict.status_code == 422 and verdict.json()["detail"].startswith("verdict: a rating task takes no")


def test_the_json_api_keeps_a_pairwise_task_blind_and_takes_side_critiques(client, db):
    project, task = _labeler_on(client, db, "pairwise")
    handed = client.get(f"/api/v1/labeling/projects/{project.id}/next").json()["task"]
    assert handed["kind"] == "pairwise" and [c["id"] for c in handed["completions"]] == [None, None]
    assert handed["form"] is None
    url = f"/api/v1/labeling/projects/{project.id}/assignments/{handed['assignment_id']}/ranking"
    body = {"verdict": "tie", "critiques": {"A": "fine", "B": "also fine"}}
    answer = client.post(url, headers={"X-CSRF-Token": csrf_of(client, db)}, json=body)
    assert answer.status_code == 200 and answer.json()["ranking_id"], answer.text
    fresh(db)
    ranking = db.get(Ranking, answer.json()["ranking_id"])
    a, b = ranking.display_order
    assert ranking.groups == [[a, b]] and ranking.critiques == {str(a): "fine", str(b): "also fine"}


@pytest.mark.parametrize("kind", ["likert", "good_bad", "multi_aspect"])
def test_each_rating_page_submits_as_rendered_without_javascript(client, db, kind):
    """What a browser without scripts sends: the first choice of every radio group on the page."""
    project, task = _labeler_on(client, db, kind)
    html = client.get(f"/projects/{project.id}/label").text
    choices: dict[str, str] = {}
    for name, value in re.findall(r'type="radio" name="([^"]+)" value="([^"]+)"', html):
        choices.setdefault(name, value)
    form = {"csrf_token": csrf_of(client, db), **choices, f"critique-{task.completion_ids[0]}": "ok"}
    answer = client.post(f"/projects/{project.id}/label/{_assignment_id(html)}", data=form, headers=HX)
    assert answer.status_code == 200 and "Saved." in answer.text, answer.text
    fresh(db)
    feedback = db.scalars(select(Feedback)).one()
    rows = db.scalars(select(FeedbackRating).where(FeedbackRating.feedback_id == feedback.id)).all()
    aspects = {"likert": 1, "good_bad": 1, "multi_aspect": 3}[kind]  # overall + helpfulness + honesty
    assert len(rows) == 3 * aspects and all(r.value is not None for r in rows)
    assert [r.critique for r in rows if r.critique] == ["ok"]
