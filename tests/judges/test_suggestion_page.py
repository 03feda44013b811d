"""The judge's suggestion on the labeling page, through HTTP (SQLite and Postgres): hidden by
default, shown (as the labeler's letters, labelled an AI suggestion) when the project turns it on
and the judge has a verdict for the task, and never pre-filled into the labeler's answer."""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from app.judges.store import STORED, record_verdict
from app.models import Assignment
from app.models.judges import JudgeRun
from tests.factories import login, make_project, make_task, make_user
from tests.judges.helpers import set_judge
from tests.labeling.helpers import make_form_task


def _judge_ranks(db, judge, task, groups: list[list[int]]) -> None:
    """The verdict a compare-mode judge run stores (app/judges/store.py), without a model."""
    run = JudgeRun(judge_id=judge.id, project_id=judge.project_id, user_id=judge.user_id, status="done")
    db.add(run)
    db.flush()
    shown = [c for group in groups for c in group]
    record_verdict(
        db,
        run_id=run.id,
        user_id=judge.user_id,
        task_id=task.id,
        mode="compare",
        groups=groups,
        outcome=STORED,
        shown=shown,
        orders=",".join(map(str, shown)),
    )
    db.commit()


def _letters(html: str) -> dict[int, str]:
    cards = re.findall(r'data-completion-id="(\d+)" data-letter="(\w)"', html)
    return {int(cid): letter for cid, letter in cards}


def test_the_ranking_page_shows_the_suggestion_only_when_turned_on(client, db):
    project = make_project(db, overlap=1)
    task = make_task(db, project, k=4)
    labeler = make_user(db, projects=[project])
    judge = set_judge(db, project, name="critic")
    a, b, c, d = task.completion_ids
    _judge_ranks(db, judge, task, [[c], [a, b], [d]])
    login(client, labeler)

    page = client.get(f"/projects/{project.id}/label")
    assert page.status_code == 200 and "data-completion-id" in page.text
    assert "AI suggestion" not in page.text and "data-ai-suggestion" not in page.text  # off by default
    assert client.get(f"/api/v1/labeling/projects/{project.id}/next").json()["task"]["suggestion"] is None

    set_judge(db, project, name="critic", show_suggestion=True)
    page = client.get(f"/projects/{project.id}/label")
    letters = _letters(page.text)
    order = f"{letters[c]} &gt; {letters[a]} = {letters[b]} &gt; {letters[d]}"
    assert "<strong>AI suggestion</strong> (<bdi>critic v1</bdi>)" in page.text
    assert f"<span data-ai-order>{order}</span>" in page.text
    # Not pre-filled: the answer field holds the cards as shown, one per place, as without a judge.
    field = re.search(r'name="ranking" value="([^"]*)"', page.text).group(1).replace("&#34;", '"')
    assert json.loads(field) == [[cid] for cid in letters]

    # The JSON API carries the same suggestion, in the task's labels.
    api_task = client.get(f"/api/v1/labeling/projects/{project.id}/next").json()["task"]
    by_label = {item["label"]: item["id"] for item in api_task["completions"]}
    assert api_task["suggestion"]["judge"] == "critic v1"
    assert [[by_label[x] for x in group] for group in api_task["suggestion"]["order"]] == [[c], [a, b], [d]]

    # A new judge version has judged nothing yet: no suggestion (the old version's is not shown).
    set_judge(db, project, name="critic", show_suggestion=True, orders=3)
    assert "AI suggestion" not in client.get(f"/projects/{project.id}/label").text
    assert client.get(f"/api/v1/labeling/projects/{project.id}/next").json()["task"]["suggestion"] is None


def test_the_pairwise_page_shows_it_and_a_task_without_a_verdict_does_not(client, db):
    project = make_project(db, overlap=1)
    task = make_form_task(db, project, "pairwise")
    labeler = make_user(db, projects=[project])
    judge = set_judge(db, project, name="pair judge", show_suggestion=True)
    login(client, labeler)
    page = client.get(f"/projects/{project.id}/label")
    assert page.status_code == 200 and "Which response is better?" in page.text
    assert "AI suggestion" not in page.text  # suggestions on, but no verdict on this task yet

    worse, better = task.completion_ids
    _judge_ranks(db, judge, task, [[better], [worse]])
    page = client.get(f"/projects/{project.id}/label")
    sides = re.findall(r'data-side="(\w)"', page.text)
    # The labeler's sides follow their own display order; the suggestion names the better one's side.
    shown = {cid: side for cid, side in zip(_display_order(db, labeler, task), sides, strict=True)}
    assert f"<span data-ai-order>{shown[better]} &gt; {shown[worse]}</span>" in page.text
    assert "(<bdi>pair judge v1</bdi>)" in page.text


def _display_order(db, user, task) -> list[int]:
    db.commit()
    mine = (Assignment.user_id == user.id) & (Assignment.task_id == task.id)
    return db.scalar(select(Assignment.display_order).where(mine))
