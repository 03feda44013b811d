"""The judge's suggestion on the rating forms (Likert, good/bad, multi-aspect), through HTTP on
SQLite and Postgres: hidden by default; with the judge's "show suggestion" on, its ratings as text
in the labeler's own letters (the labeler's display order is set to the reverse of the stored one,
so letters that followed the stored order would fail), labelled an AI suggestion, the form not
pre-filled; and the JSON API's `task.suggestion` in the shape of a labeler's answer. The judge's
answer is stored by record_verdict, as a judge run stores it (no worker, no model)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event, update

from app.judges import suggestions
from app.judges.store import STORED, record_verdict
from app.judges.suggestion_kinds import Suggestion
from app.models import Assignment
from app.models.judges import JudgeRun
from tests.factories import login, make_project, make_user
from tests.judges.helpers import set_judge
from tests.labeling.helpers import fresh, make_form_task


def _judge_rates(db, judge, task, ratings: dict[int, dict[str, int]]) -> None:
    """The verdict a compare-mode judge run stores on a rating task (app/judges/store.py):
    completion id -> aspect ("" for its own rating) -> value."""
    run = JudgeRun(judge_id=judge.id, project_id=judge.project_id, user_id=judge.user_id, status="done")
    db.add(run)
    db.flush()
    shown = list(task.completion_ids)
    outcome = record_verdict(
        db,
        run_id=run.id,
        user_id=judge.user_id,
        task_id=task.id,
        mode="compare",
        ratings=ratings,
        outcome=STORED,
        shown=shown,
        orders="",
    )
    assert outcome == STORED
    db.commit()


def _labeler_sees_reversed(client, db, project, task):
    """A labeler holding the task, shown its completions in the reverse of the stored order:
    A is the last completion, C the first."""
    labeler = make_user(db, projects=[project])
    login(client, labeler)
    assert client.get(f"/projects/{project.id}/label").status_code == 200  # takes the lease
    fresh(db)
    mine = (Assignment.user_id == labeler.id) & (Assignment.task_id == task.id)
    db.execute(update(Assignment).where(mine).values(display_order=list(reversed(task.completion_ids))))
    db.commit()
    return labeler


def _page(client, project) -> str:
    page = client.get(f"/projects/{project.id}/label")
    assert page.status_code == 200 and "data-rating-form" in page.text
    cards = re.findall(r'aria-labelledby="completion-(\w)-\d+" data-completion-id="(\d+)"', page.text)
    assert [letter for letter, _ in cards] == ["A", "B", "C"]
    return page.text


def _api_suggestion(client, project):
    return client.get(f"/api/v1/labeling/projects/{project.id}/next").json()["task"]["suggestion"]


def _assert_not_prefilled(html: str) -> None:
    form = html[html.index('<form class="rating-form"') :]
    assert re.search(r"<input[^>]*\bchecked\b", form) is None
    assert re.search(r"<option[^>]*\bselected\b", form) is None


def _hidden(client, project) -> None:
    html = _page(client, project)
    assert "AI suggestion" not in html and "data-ai-suggestion" not in html
    assert _api_suggestion(client, project) is None


def test_likert_shows_the_judges_ratings_with_the_projects_short_labels(client, db):
    project = make_project(db, overlap=1)
    task = make_form_task(db, project, "likert")  # 5 points: awful, poor, fair, good, great
    first, second, third = task.completion_ids
    judge = set_judge(db, project, name="critic")
    _judge_rates(db, judge, task, {first: {"": 4}, second: {"": 2}, third: {"": 5}})
    _labeler_sees_reversed(client, db, project, task)
    _hidden(client, project)  # off by default

    set_judge(db, project, name="critic", show_suggestion=True)
    html = _page(client, project)
    assert "<strong>AI suggestion</strong> (<bdi>critic v1</bdi>)" in html
    assert "<span data-ai-order>A 5 (great) · B 2 (poor) · C 4 (good)</span>" in html
    _assert_not_prefilled(html)
    assert _api_suggestion(client, project) == {
        "judge": "critic v1",
        "order": [],
        "ratings": [
            {"label": "A", "value": 5, "aspect": None},
            {"label": "B", "value": 2, "aspect": None},
            {"label": "C", "value": 4, "aspect": None},
        ],
        "aspect_rankings": {},
    }

    # A new judge version has rated nothing yet: no suggestion (the old version's is not shown).
    assert set_judge(db, project, name="critic", show_suggestion=True, orders=3).version == 2
    _hidden(client, project)


def test_good_bad_shows_good_and_bad_in_the_labelers_letters(client, db):
    project = make_project(db, overlap=1)
    task = make_form_task(db, project, "good_bad")
    first, second, third = task.completion_ids
    judge = set_judge(db, project, name="gate")
    _labeler_sees_reversed(client, db, project, task)
    set_judge(db, project, name="gate", show_suggestion=True)
    _hidden(client, project)  # on, but the judge has not answered this task

    _judge_rates(db, judge, task, {first: {"": 1}, second: {"": 0}, third: {"": 0}})
    html = _page(client, project)
    assert "(<bdi>gate v1</bdi>): <span data-ai-order>A bad · B bad · C good</span>" in html
    _assert_not_prefilled(html)
    suggestion = _api_suggestion(client, project)
    assert (suggestion["order"], suggestion["aspect_rankings"]) == ([], {})
    assert [(r["label"], r["value"]) for r in suggestion["ratings"]] == [("A", "bad"), ("B", "bad"), ("C", "good")]


def test_multi_aspect_shows_one_line_per_aspect_and_the_overall_ranking(client, db):
    project = make_project(db, overlap=1)
    # FORM_SETTINGS: helpfulness rated 1..5, honesty ranked (label "Honest <b>really</b>"), overall ranking.
    task = make_form_task(db, project, "multi_aspect")
    first, second, third = task.completion_ids
    judge = set_judge(db, project, name="aspects")
    # The judge rates every aspect; a ranked aspect and the overall ranking come from its ratings
    # (worker/ml/judge_forms.py): honesty third > first = second; overall by mean first > third > second.
    ratings = {
        first: {"helpfulness": 5, "honesty": 2},
        second: {"helpfulness": 3, "honesty": 2},
        third: {"helpfulness": 1, "honesty": 5},
    }
    _judge_rates(db, judge, task, ratings)
    _labeler_sees_reversed(client, db, project, task)  # A = third, B = second, C = first
    _hidden(client, project)

    set_judge(db, project, name="aspects", show_suggestion=True)
    html = _page(client, project)
    assert "<strong>AI suggestion</strong> (<bdi>aspects v1</bdi>):" in html
    lines = dict(re.findall(r'<li data-ai-aspect="(\w*)">(.*?)</li>', html))
    assert lines == {
        "helpfulness": "<bdi>Helpful</bdi>: <span data-ai-order>A 1 · B 3 · C 5</span>",
        "honesty": "<bdi>Honest &lt;b&gt;really&lt;/b&gt;</bdi>: <span data-ai-order>A &gt; B = C</span>",
        "": "<bdi>Overall</bdi>: <span data-ai-order>C &gt; A &gt; B</span>",
    }
    _assert_not_prefilled(html)
    assert _api_suggestion(client, project) == {
        "judge": "aspects v1",
        "order": [["C"], ["A"], ["B"]],
        "ratings": [
            {"label": "A", "value": 1, "aspect": "helpfulness"},
            {"label": "B", "value": 3, "aspect": "helpfulness"},
            {"label": "C", "value": 5, "aspect": "helpfulness"},
        ],
        "aspect_rankings": {"honesty": [["A"], ["B", "C"]]},
    }


def test_a_rating_suggestion_is_one_statement_and_none_when_off(db):
    """The hot path: a project that shows no suggestions pays nothing once its flag is cached; one
    that shows them, one statement per page."""
    project = make_project(db, overlap=1)
    task = make_form_task(db, project, "likert")
    judge = set_judge(db, project, name="critic")
    _judge_rates(db, judge, task, {cid: {"": 3} for cid in task.completion_ids})
    statements: list[str] = []
    engine = db.get_bind()
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    ask = {"project_id": project.id, "task_id": task.id, "kind": "likert"}
    assert suggestions.suggestion(db, **ask) is None  # reads the flag (off)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert suggestions.suggestion(db, **ask) is None
        assert statements == []
        set_judge(db, project, name="critic", show_suggestion=True)  # forgets the flag
        assert suggestions.suggestion(db, **ask) is not None  # reads the flag, then the verdict
        statements.clear()
        found = suggestions.suggestion(db, **ask)
        assert len(statements) == 1, statements
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert found is not None and found.values == {"": {cid: 3 for cid in task.completion_ids}}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_long_likert_labels_are_left_out_and_unknown_kinds_show_nothing(db):
    long = ["entirely unacceptable answer", "b", "c"]
    found = Suggestion(judge="j v1", kind="likert", values={"": {7: 1, 8: 3}}, settings={"likert_labels": long})
    assert [line.text for line in found.lines({8: "A", 7: "B"})] == ["A 3 · B 1"]
    labels = ["no", "ok", "yes"]
    found = Suggestion(judge="j v1", kind="likert", values={"": {7: 1}}, settings={"likert_labels": labels})
    assert [line.text for line in found.lines({7: "A"})] == ["A 1 (no)"]
    assert suggestions.suggestion(db, project_id=1, task_id=1, kind="demonstration") is None
