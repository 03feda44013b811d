"""Blind evaluation tasks through HTTP (TestClient): the page shows two responses as A and B and
nothing of the versions behind them; the form and the JSON API take verdicts. SQLite and Postgres."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from app.models import Completion, Evaluation, ModelVersion, Ranking, RankingTask
from tests.factories import csrf_of, login, make_eval_task, make_project, make_task, make_user
from tests.labeling.helpers import fresh, snapshot

HX = {"HX-Request": "true"}


def _assignment_id(html: str) -> int:
    return int(re.search(r'data-pairwise-form data-assignment-id="(\d+)"', html).group(1))


def _secrets(db, task: RankingTask) -> list[str]:
    """Whatever would tell a labeler which version wrote which response."""
    evaluation = db.get(Evaluation, task.evaluation_id)
    versions = db.scalars(select(ModelVersion).where(ModelVersion.id.in_(evaluation.version_ids))).all()
    return [v.name for v in versions] + [evaluation.name, "secret-policy", "evaluation", "model_version"]


def _numbers(value, key: str = "") -> set[str]:
    """The keys under which a JSON value holds numbers, at any depth."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return set()
    if isinstance(value, int | float):
        return {key}
    items = value.items() if isinstance(value, dict) else ((key, v) for v in value)
    return set().union(*(_numbers(v, k) for k, v in items))


def _assert_blind(db, task: RankingTask, text: str, handed: dict) -> None:
    """A handed-out evaluation task as JSON: no completion id, no version id or name, no evaluation."""
    assert [set(c) for c in handed["completions"]] == [{"id", "label", "text"}] * 2
    assert [c["id"] for c in handed["completions"]] == [None, None]
    # The only numbers in it are the assignment's, the task's and the project's ids (a task id is
    # one per prompt and comparison, its two completions in a random order: it tells no side).
    assert _numbers(handed) == {"assignment_id", "task_id", "project_id"}
    for secret in _secrets(db, task):
        assert secret.lower() not in text.lower(), secret
    assert "evaluation_id" not in text and "model_version" not in text


def test_the_evaluation_page_shows_a_and_b_and_nothing_of_the_versions(client, db):
    project = make_project(db, overlap=1, flags=["unsafe"])
    task = make_eval_task(db, project, texts=("<script>window.__pwned=1</script>", "**bold** answer"))
    login(client, make_user(db, projects=[project]))

    page = client.get(f"/projects/{project.id}/label")
    assert page.status_code == 200
    html = page.text
    assert "Response A" in html and "Response B" in html and "Which response is better?" in html
    for label in ("A is better", "B is better", "Tie", "Both bad", "Reason"):
        assert label in html
    assert html.count('type="radio" name="verdict"') == 4 and 'name="ranking"' not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html and "<script>window" not in html
    assert "<strong>bold</strong>" in html
    assert 'name="flag"' not in html  # evaluations take no flags
    assert "/static/js/pairwise.js" in html and "/static/css/pairwise.css" in html
    assert "<kbd>X</kbd>" in html.split('id="shortcut-keys"')[1]  # the panel shows this kind's keys
    lowered = html.lower()
    for secret in _secrets(db, task):
        assert secret.lower() not in lowered, secret
    # No completion or evaluation id either (an id hints at which version was generated first): the
    # only attributes holding a bare number are the assignment's and the form's sizes.
    assert "data-completion-id" not in html and "evaluation_id" not in html
    numeric = {name for name, _ in re.findall(r'([\w-]+)="(-?\d+)"', html)}
    assert numeric <= {"data-assignment-id", "rows", "maxlength", "tabindex"}, numeric


def test_a_verdict_through_the_form_is_stored_and_the_next_task_swapped_in(client, db):
    project = make_project(db, overlap=1)
    make_eval_task(db, project)
    make_task(db, project)
    user = make_user(db, projects=[project])
    login(client, user)
    html = client.get(f"/projects/{project.id}/label").text
    assignment_id = _assignment_id(html)
    url = f"/projects/{project.id}/label/{assignment_id}"
    headers = {**HX, "X-CSRF-Token": csrf_of(client, db)}

    before = snapshot(db)
    bad = client.post(url, headers=headers, data={"verdict": "left"})
    assert bad.status_code == 422 and "verdict: Input should be" in bad.text
    missing = client.post(url, headers=headers, data={"comment": "hm"})
    assert missing.status_code == 422 and "verdict: missing" in missing.text
    assert snapshot(db) == before

    response = client.post(
        url, headers=headers, data={"verdict": "both_bad", "comment": "both off topic", "time_spent_ms": "4100"}
    )
    assert response.status_code == 200 and "Saved." in response.text and "<html" not in response.text
    assert "data-ranking-form" in response.text  # the next task is a ranking task ...
    keys = response.text.split('id="shortcut-keys" hx-swap-oob="true"')[1]
    assert "Shift</kbd>+<kbd>↑</kbd>" in keys and "<kbd>X</kbd>" not in keys  # ... and the panel follows it
    fresh(db)
    ranking = db.scalar(select(Ranking).where(Ranking.user_id == user.id))
    assert ranking.groups == [ranking.display_order] and ranking.none_acceptable
    assert ranking.comment == "both off topic" and ranking.time_spent_ms == 4100

    retry = client.post(url, headers=headers, data={"verdict": "A"})  # a retry: the stored judgment stands
    assert retry.status_code == 200
    fresh(db)
    assert db.scalar(select(func.count()).select_from(Ranking)) == 1


def test_the_json_api_hands_out_evaluation_tasks_and_takes_verdicts(client, db):
    project = make_project(db, overlap=1, flags=["unsafe"])
    task = make_eval_task(db, project, texts=("left or right", "right or left"))
    make_task(db, project)
    user = make_user(db, projects=[project])
    login(client, user)
    headers = {"X-CSRF-Token": csrf_of(client, db)}

    answer = client.get(f"/api/v1/labeling/projects/{project.id}/next")
    handed = answer.json()["task"]
    assert handed["kind"] == "pairwise_eval" and handed["flags"] == [] and handed["task_id"] == task.id
    assert [c["label"] for c in handed["completions"]] == ["A", "B"]
    assert sorted(c["text"] for c in handed["completions"]) == ["left or right", "right or left"]
    _assert_blind(db, task, answer.text, handed)

    url = f"/api/v1/labeling/projects/{project.id}/assignments/{handed['assignment_id']}/ranking"
    bad = client.post(url, json={"verdict": "C"}, headers=headers)
    assert bad.status_code == 422 and "verdict" in bad.json()["message"]
    both = client.post(url, json={"verdict": "A", "ranking": [[1]]}, headers=headers)
    assert both.status_code == 422 and both.json()["detail"].startswith("ranking: a blind comparison takes no ranking")
    ids = [[cid] for cid in task.completion_ids]  # guessed or leaked ids are refused all the same
    ranked = client.post(url, json={"ranking": ids}, headers=headers)
    assert ranked.status_code == 422 and "send a `verdict`" in ranked.json()["detail"]

    body = {"verdict": "B", "comment": "A ignores the question", "time_spent_ms": 2500}
    first = client.post(url, json=body, headers=headers)
    assert first.status_code == 200, first.text
    again = client.post(url, json=body, headers=headers).json()
    assert again["duplicate"] and again["ranking_id"] == first.json()["ranking_id"]
    nxt = first.json()["next"]
    assert nxt["kind"] == "ranking" and nxt["flags"] == ["unsafe"]
    assert [c["label"] for c in nxt["completions"]] == list("ABCDEFGHI")[: len(nxt["completions"])]
    assert all(isinstance(c["id"], int) for c in nxt["completions"])  # a ranking task needs its ids
    fresh(db)
    ranking = db.get(Ranking, first.json()["ranking_id"])
    a, b = ranking.display_order  # A was shown first
    assert [db.get(Completion, a).text, db.get(Completion, b).text] == [c["text"] for c in handed["completions"]]
    assert ranking.groups == [[b], [a]] and not ranking.none_acceptable
    assert ranking.comment == "A ignores the question" and ranking.time_spent_ms == 2500

    ranking_url = f"/api/v1/labeling/projects/{project.id}/assignments/{nxt['assignment_id']}/ranking"
    wrong = client.post(ranking_url, json={"verdict": "A"}, headers=headers)
    assert wrong.status_code == 422 and wrong.json()["detail"].startswith("verdict: this is a ranking task")
    missing = client.post(ranking_url, json={"comment": "x"}, headers=headers)
    assert missing.status_code == 422 and missing.json()["detail"].startswith("ranking: missing")


def test_the_title_and_progress_line_follow_the_kind_of_task(client, db):
    project = make_project(db, overlap=1, name="Wording")
    make_eval_task(db, project)
    make_task(db, project)
    make_eval_task(db, project)
    login(client, make_user(db, projects=[project]))
    headers = {**HX, "X-CSRF-Token": csrf_of(client, db)}

    html = client.get(f"/projects/{project.id}/label").text
    assert "<title>Compare · Wording · ranklab</title>" in html
    assert "<strong>0</strong> judged by you" in html and "ranked by you" not in html
    # Judged: the swapped-in ranking task brings its own title (htmx takes a top-level <title>).
    swapped = client.post(
        f"/projects/{project.id}/label/{_assignment_id(html)}", headers=headers, data={"verdict": "A"}
    )
    assert swapped.text.lstrip().startswith("<title>Rank · Wording · ranklab</title>")
    assert "<strong>1</strong> ranked by you" in swapped.text and "judged by you" not in swapped.text
    page = client.get(f"/projects/{project.id}/label").text
    assert "<title>Rank · Wording · ranklab</title>" in page and "<strong>1</strong> ranked by you" in page
    assignment_id = int(re.search(r'data-assignment-id="(\d+)"', page).group(1))
    skipped = client.post(
        f"/projects/{project.id}/label/{assignment_id}/skip", headers=headers, data={"reason": "Other"}
    )
    assert skipped.text.lstrip().startswith("<title>Compare · Wording · ranklab</title>")
    assert "<strong>1</strong> judged by you" in skipped.text
    # A full page carries its title in <head> only once (no second <title> inside the task block).
    assert page.count("<title>") == 1
    # The queue empties: its count holds both kinds, so it says neither "ranked" nor "judged".
    empty = client.post(
        f"/projects/{project.id}/label/{_assignment_id(skipped.text)}", headers=headers, data={"verdict": "tie"}
    )
    assert empty.text.lstrip().startswith("<title>Queue empty · Wording · ranklab</title>")
    assert "<strong>2</strong> done by you" in empty.text and "data-queue-empty" in empty.text
    assert "<title>Queue empty · Wording · ranklab</title>" in client.get(f"/projects/{project.id}/label").text
