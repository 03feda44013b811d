"""The judge's suggestion on a rating form in a real Chromium: a multi-aspect task with hostile
completions, a hostile judge name, a hostile aspect label and a short Likert label holding markup.
The suggestion shows all of it as text in the labeler's letters, nothing of it runs, no radio is
chosen for the labeler, and the labeler's own answer (not the judge's) is what gets stored."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from app.projects.forms_config import check_form_settings
from tests.browser.test_forms_browser import HOSTILE, _assert_clean, _ids, _open, _submit_and_wait_for_next, _values
from tests.factories import make_project, make_task, make_user
from tests.judges.helpers import set_judge
from tests.judges.test_rating_suggestions import _judge_rates
from tests.labeling.helpers import fresh

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

JUDGE_NAME = "<img src=x onerror=\"window.__pwned='name'\">critic"
ASPECT_LABEL = "<img src=x onerror=\"window.__pwned='aspect'\">Helpful"
SETTINGS = {
    "likert_points": 3,
    "likert_labels": ["bad", "ok", "<b>top</b>"],  # short: shown beside the numbers, as text
    "aspects": [
        {"name": "helpfulness", "label": ASPECT_LABEL, "scale": "likert"},
        {"name": "honesty", "label": "Honest", "scale": "ranking"},
    ],
    "overall_ranking": True,
}


def test_a_rating_suggestion_renders_as_text_and_leaves_the_form_alone(live_url, browser, db, screenshots):
    settings = check_form_settings("multi_aspect", SETTINGS)
    project = make_project(db, overlap=1, feedback_form="multi_aspect", form_settings=settings)
    task = make_task(db, project, k=3, texts=HOSTILE)
    task.kind = "multi_aspect"
    make_task(db, project, k=3).kind = "multi_aspect"  # the next one, which the judge has not rated
    db.commit()
    labeler = make_user(db, projects=[project])
    judge = set_judge(db, project, name=JUDGE_NAME, show_suggestion=True)
    first, second, third = task.completion_ids
    # Helpfulness 3 / 2 / 1; honesty rated 1 / 1 / 3, so ranked third > first = second; overall
    # by the mean rating (2, 1.5, 2): first = third > second.
    _judge_rates(
        db,
        judge,
        task,
        {
            first: {"helpfulness": 3, "honesty": 1},
            second: {"helpfulness": 2, "honesty": 1},
            third: {"helpfulness": 1, "honesty": 3},
        },
    )

    context, page, problems = _open(browser, live_url, labeler, project, "[data-rating-form]")
    shown = _ids(page)  # the labeler's display order
    letter = dict(zip(shown, "ABC", strict=True))
    assert page.eval_on_selector_all(".rating-card", "cards => cards.map(c => c.dataset.letter)") == ["A", "B", "C"]
    note = page.locator("[data-ai-suggestion]")
    expect(note).to_contain_text(f"AI suggestion ({JUDGE_NAME} v1):")
    expect(note).to_contain_text("an AI judge's guess, not the right answer; nothing is filled in for you")
    words = {first: "3 (<b>top</b>)", second: "2 (ok)", third: "1 (bad)"}
    helpful = " · ".join(f"{letter[cid]} {words[cid]}" for cid in shown)
    expect(note.locator("[data-ai-aspect='helpfulness']")).to_have_text(f"{ASPECT_LABEL}: {helpful}")
    tied = " = ".join(letter[cid] for cid in shown if cid != third)
    expect(note.locator("[data-ai-aspect='honesty']")).to_have_text(f"Honest: {letter[third]} > {tied}")
    overall = " = ".join(letter[cid] for cid in shown if cid != second)  # mean 2.0 each, tied
    expect(note.locator("[data-ai-aspect='']")).to_have_text(f"Overall: {overall} > {letter[second]}")
    assert note.locator("img, script, b").count() == 0  # the markup is text
    # Nothing is chosen for the labeler; focus starts on the first row as without a judge.
    assert page.locator("[data-rating-form] input:checked").count() == 0
    expect(page.locator("[data-row]").first).to_be_focused()
    page.screenshot(path=screenshots / "ranklab-ai-rating-suggestion.png")

    # The labeler answers otherwise (every row 1: helpfulness 1, every place #1) and that is stored.
    for _ in range(9):  # per completion: helpfulness, honesty, overall
        page.keyboard.press("1")
    expect(page.locator("[data-submit]")).to_be_focused()
    _submit_and_wait_for_next(page, "[data-rating-form]", "Enter")
    expect(page.locator("[data-ai-suggestion]")).to_have_count(0)  # the next task: no verdict, no note
    fresh(db)
    assert _values(db, labeler, "helpfulness") == {cid: 1 for cid in shown}
    _assert_clean(page, problems)
    context.close()
