"""The judge's suggestion in a real Chromium: shown as text beside hostile completions and a
hostile judge name, nothing of either runs, and the labeler's answer is not pre-filled."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.browser.test_hidden_chars_browser import _open
from tests.factories import make_project, make_task, make_user
from tests.judges.helpers import set_judge
from tests.judges.test_suggestion_page import _judge_ranks

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

HOSTILE = [
    "<script>window.__pwned='script'</script> first",
    "<img src=x onerror=\"window.__pwned='img'\"> second",
    "third",
]
JUDGE_NAME = "<img src=x onerror=\"window.__pwned='name'\">critic"


def test_the_suggestion_renders_as_text_and_leaves_the_answer_alone(live_url, browser, db, screenshots):
    project = make_project(db, overlap=1)
    task = make_task(db, project, texts=HOSTILE, prompt_text="<script>window.__pwned='prompt'</script>?")
    labeler = make_user(db, projects=[project])
    judge = set_judge(db, project, name=JUDGE_NAME, show_suggestion=True)
    first, second, third = task.completion_ids
    _judge_ranks(db, judge, task, [[third], [first, second]])

    # Logged in on the labeling page with the hostile-script watch installed (the hidden-chars test's).
    context, page, problems = _open(browser, live_url, labeler, project, "form[data-ready='1']")

    letters = dict(
        page.eval_on_selector_all(
            ".completion-card", "cards => cards.map(c => [Number(c.dataset.completionId), c.dataset.letter])"
        )
    )
    note = page.locator("[data-ai-suggestion]")
    expect(note).to_contain_text(f"AI suggestion ({JUDGE_NAME} v1): ")
    order = f"{letters[third]} > {letters[first]} = {letters[second]}"
    expect(note.locator("[data-ai-order]")).to_have_text(order)
    assert note.locator("img, script").count() == 0
    # The cards and the answer field are the labeler's display order, not the judge's.
    shown = page.eval_on_selector_all(".completion-card", "cards => cards.map(c => Number(c.dataset.completionId))")
    assert json.loads(page.input_value("input[data-ranking-field]")) == [[cid] for cid in shown]
    page.screenshot(path=screenshots / "ranklab-ai-suggestion.png")
    assert problems == [] and page.evaluate("() => window.__problems") == []
    context.close()
