"""The demonstration page in a real Chromium: a labeler writes a demonstration by keyboard alone
(start from the draft, edit, live preview, word count, Ctrl+Enter), a reviewer accepts an edit,
untrusted text never runs, and the page fits a 390 px phone."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.demonstrations.edit_distance import levenshtein
from app.models import Demonstration
from tests.factories import PASSWORD, make_project, make_user
from tests.labeling.helpers import fresh, make_demonstration_task

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

DRAFT = "The capital is Paris. <script>window.__pwned='draft'</script>"


def _open(browser, live_url, user, project, selector, **context_args):
    context = browser.new_context(**({"viewport": {"width": 1280, "height": 900}} | context_args))
    page = context.new_page()
    problems: list[str] = []
    page.on("dialog", lambda d: (problems.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(f"{live_url}/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_url}/")
    page.goto(f"{live_url}/projects/{project.id}/label")
    page.wait_for_selector(selector)
    return context, page, problems


def test_a_demonstration_written_by_keyboard_is_stored_and_reviewed(live_url, browser, db, screenshots):
    project = make_project(db, overlap=1, demonstration_review=True)
    task = make_demonstration_task(db, project, draft=DRAFT)
    author, reviewer = make_user(db, projects=[project]), make_user(db, projects=[project])

    context, page, problems = _open(browser, live_url, author, project, "[data-demonstration-form]")
    page.evaluate("() => { window.__sameDocument = true; }")
    expect(page.locator("#shortcut-keys")).to_contain_text("start from the model draft")
    expect(page.locator(".turn-content").first).to_contain_text("Question")  # the chat so far
    expect(page.locator("[data-question]")).to_be_focused()
    assert page.locator(".draft script").count() == 0  # the draft's tag is text

    page.keyboard.press("d")  # start from the draft: the box holds its text, the caret at the start
    box = page.locator("textarea[name=response]")
    expect(box).to_be_focused()
    expect(box).to_have_value(DRAFT)
    page.keyboard.press("Control+End")
    for _ in range(len("<script>window.__pwned='draft'</script>")):
        page.keyboard.press("Backspace")
    page.keyboard.type("It is **Paris**.")
    expect(page.locator("[data-word-count]")).to_have_text("7 words")
    preview = page.locator("[data-preview-body]")
    expect(preview.locator("strong")).to_have_text("Paris")  # rendered by the server, as labelers see it
    page.wait_for_timeout(1100)  # some active time to measure
    page.screenshot(path=screenshots / "ranklab-demonstration-desktop.png", full_page=True)
    page.keyboard.press("Control+Enter")  # from inside the box
    page.wait_for_selector("[data-queue-empty]")  # the review task is never the author's
    expect(page.get_by_text("Saved.")).to_be_visible()
    assert page.evaluate("() => window.__sameDocument") is True and problems == []
    context.close()

    fresh(db)
    demo = db.scalars(select(Demonstration)).one()
    written = "The capital is Paris. It is **Paris**."
    assert (demo.task_id, demo.user_id, demo.status, demo.response) == (task.id, author.id, "pending_review", written)
    assert demo.draft_completion_id == task.completion_ids[0] and demo.edit_distance == levenshtein(DRAFT, written)
    assert demo.time_spent_ms >= 1000

    context, page, problems = _open(browser, live_url, reviewer, project, "[data-review-form]", **_phone())
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the review page scrolls sideways on a phone ({width}px)"
    page.keyboard.press("e")  # edit: the box gets the demonstration's text
    box = page.locator("textarea[name=reviewed_response]")
    expect(box).to_be_focused()
    expect(box).to_have_value(written)
    page.keyboard.press("Control+End")
    page.keyboard.type(" Since 508.")
    page.screenshot(path=screenshots / "ranklab-demonstration-review-phone.png", full_page=True)
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("[data-queue-empty]")
    assert problems == [] and page.evaluate("() => window.__pwned") is None
    context.close()
    fresh(db)
    demo = db.get(Demonstration, demo.id)
    assert (demo.status, demo.reviewer_id) == ("accepted", reviewer.id)
    assert demo.training_response == written + " Since 508."


def test_the_writing_page_fits_a_phone_and_refuses_an_empty_answer_inline(live_url, browser, db, screenshots):
    project = make_project(db, overlap=1)
    make_demonstration_task(db, project, draft=None)
    user = make_user(db, projects=[project])
    context, page, problems = _open(browser, live_url, user, project, "[data-demonstration-form]", **_phone())
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the demonstration page scrolls sideways on a phone ({width}px)"
    page.keyboard.press("w")
    page.keyboard.type("   ")
    page.keyboard.press("Control+Enter")  # the browser's own check lets blanks through; the server names the field
    expect(page.locator("[data-error-slot]").first).to_contain_text("response: empty")
    expect(page.locator("textarea[name=response]")).to_be_focused()  # the text stays where it was
    page.screenshot(path=screenshots / "ranklab-demonstration-phone.png", full_page=True)
    page.keyboard.type("<img src=x onerror=\"window.__pwned='img'\"> fine")
    expect(page.locator("[data-preview-body]")).to_contain_text("<img src=x")  # shown as text
    assert page.locator("[data-preview-body] img").count() == 0
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("[data-queue-empty]")
    assert problems == [] and page.evaluate("() => window.__pwned") is None
    context.close()


def _phone() -> dict:
    return {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
