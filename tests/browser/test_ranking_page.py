"""The ranking page in a real Chromium: keyboard-only ranking, htmx swap to the next task,
untrusted text that never executes, inline errors that keep the ordering, phone width."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from playwright.sync_api import expect
from sqlalchemy import select, update

from app.models import Assignment, Ranking, utcnow
from tests.factories import PASSWORD, make_project, make_task, make_user
from tests.labeling.helpers import fresh, next_view, submit

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

HOSTILE = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=2">',
    "A long answer.\n\n"
    + "\n\n".join(f"Paragraph {i}: " + "words " * 40 for i in range(12))
    + "\n\n```python\n"
    + "x = '"
    + "y" * 400
    + "'\n```\n\n"
    + "z" * 600,
    "**Plain** answer with `code` and [a link](javascript:window.__pwned=3)",
]
GUIDELINES = "# How to rank\n\n1. Helpfulness first.\n2. Then honesty.\n\nFlag anything **unsafe**."


def _log_in(page, base: str, user) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")


def _order(page) -> list[int]:
    return page.eval_on_selector_all(".completion-card", "cards => cards.map(c => Number(c.dataset.completionId))")


def _card(page, completion_id: int):
    return page.locator(f".completion-card[data-completion-id='{completion_id}']")


def test_keyboard_only_ranking_swaps_in_the_next_task_and_never_runs_model_output(live_url, browser, db, screenshots):
    project = make_project(db, overlap=1, flags=["unsafe", "off_topic"], guidelines=GUIDELINES)
    make_task(db, project, texts=HOSTILE, prompt_text="Explain <b>closures</b> <script>window.__pwned=4</script>")
    make_task(db, project, k=5)
    user = make_user(db, projects=[project])

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs, errors = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    _log_in(page, live_url, user)
    page.screenshot(path=screenshots / "ranklab-queue.png")

    page.get_by_role("link", name="Start labeling").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(".completion-card")
    page.evaluate("() => { window.__sameDocument = true; }")

    # Untrusted text is shown as text and never runs.
    assert page.evaluate("() => window.__pwned") is None
    expect(page.get_by_text("<script>window.__pwned=1</script>")).to_be_visible()
    expect(page.get_by_text('<img src=x onerror="window.__pwned=2">')).to_be_visible()
    assert page.locator(".completion-body img, .completion-body script, .prompt script").count() == 0
    assert page.locator('a[href^="javascript"]').count() == 0
    page.screenshot(path=screenshots / "ranklab-desktop.png", full_page=False)

    # The long completion is clipped with a working "Show more" toggle. The page's script (deferred,
    # run from htmx's load event after DOMContentLoaded) shows the toggle and focuses the first card
    # a moment after the cards are parsed: expect() waits for that, a plain read would race it.
    long_card = page.locator(".completion-card", has_text="A long answer.")
    expect(long_card.locator('[data-action="expand"]')).to_be_visible()
    collapsed = long_card.bounding_box()["height"]

    # Rank by keyboard: the first card has focus on load.
    a, b, c, d = _order(page)
    expect(_card(page, a)).to_be_focused()
    page.keyboard.press("ArrowDown")  # focus b
    page.keyboard.press("Shift+ArrowUp")  # b above a
    expect(_card(page, b)).to_be_focused()
    assert _order(page) == [b, a, c, d]
    page.keyboard.press("ArrowDown")  # focus a
    page.keyboard.press("t")  # tie a with b
    page.keyboard.press("End")  # focus d
    page.keyboard.press("1")  # d to first place
    page.keyboard.press("ArrowDown")  # focus b
    page.keyboard.press("ArrowDown")  # focus a (tied with b)
    page.keyboard.press("ArrowDown")  # focus c
    page.keyboard.press("Space")  # pick c up ...
    page.keyboard.press("ArrowUp")  # ... above the b=a tie
    page.keyboard.press("Space")  # ... and drop it
    expected = [[d], [c], [b, a]]
    assert json.loads(page.input_value("[data-ranking-field]")) == expected
    expect(page.locator(".completion-card[data-tied=true] [data-tie-badge]")).to_be_visible()
    page.screenshot(path=screenshots / "ranklab-desktop-ranked.png", full_page=True)

    long_id = int(long_card.get_attribute("data-completion-id"))
    long_card.focus()
    page.keyboard.press("e")
    assert long_card.bounding_box()["height"] > collapsed + 100
    for _ in range(8):  # Tab into the card's flags, tick "unsafe" with Space
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.value") == f"{long_id}:unsafe":
            break
    page.keyboard.press("Space")

    page.wait_for_timeout(1200)  # some active time to measure
    first_assignment = page.get_attribute("[data-ranking-form]", "data-assignment-id")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(f"[data-ranking-form]:not([data-assignment-id='{first_assignment}'])")
    assert page.evaluate("() => window.__sameDocument") is True  # swapped in, not reloaded
    expect(page.get_by_text("Saved.")).to_be_visible()
    # Keyboard work goes on on the new task: htmx sets the swapped-in form up when it settles
    # (20 ms after the swap), so its first card takes focus a moment after it appears.
    expect(page.locator(".completion-card")).to_have_count(5)
    expect(page.locator(".completion-card").first).to_be_focused()

    fresh(db)
    ranking = db.scalar(select(Ranking).where(Ranking.user_id == user.id))
    assert ranking.groups == expected and ranking.flags == {str(long_id): ["unsafe"]}
    assert ranking.display_order == [a, b, c, d] and ranking.time_spent_ms >= 1000

    page.keyboard.press("Control+Enter")
    page.wait_for_selector("[data-queue-empty]")
    expect(page.get_by_text("Queue empty")).to_be_visible()
    assert page.locator("[data-queue-empty]").get_attribute("hx-trigger") == "every 10s"
    assert page.evaluate("() => window.__sameDocument") is True
    assert page.evaluate("() => window.__pwned") is None and dialogs == [] and errors == []
    context.close()


def test_a_refused_submission_shows_inline_and_keeps_the_ordering(live_url, browser, db, screenshots):
    project = make_project(db, overlap=1)
    make_task(db, project)
    user, rival = make_user(db, projects=[project]), make_user(db, projects=[project])
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    _log_in(page, live_url, user)
    page.goto(f"{live_url}/projects/{project.id}/label")
    page.wait_for_selector(".completion-card")

    page.keyboard.press("End")
    page.keyboard.press("1")
    page.keyboard.press("t")  # nothing above the top card: announced, nothing changes
    order = _order(page)
    ranking_before = page.input_value("[data-ranking-field]")

    # Meanwhile the lease runs out and another labeler completes the task.
    assignment_id = int(page.get_attribute("[data-ranking-form]", "data-assignment-id"))
    db.execute(
        update(Assignment)
        .where(Assignment.id == assignment_id)
        .values(lease_expires_at=utcnow() - timedelta(minutes=1))
    )
    db.commit()
    submit(db, rival, project, next_view(db, rival, project))

    page.keyboard.press("Control+Enter")
    error = page.locator("[data-ranking-form] [data-error-slot]")
    error.get_by_text("your ranking was not needed").wait_for()
    assert _order(page) == order and page.input_value("[data-ranking-field]") == ranking_before
    page.screenshot(path=screenshots / "ranklab-refused.png")
    next_task = page.get_by_role("button", name="Go to your next task")
    expect(next_task).to_be_visible()
    expect(next_task).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-queue-empty]")
    context.close()


def test_the_ranking_page_fits_a_phone(live_url, browser, db, screenshots):
    project = make_project(db, overlap=1, guidelines=GUIDELINES)
    make_task(db, project, texts=HOSTILE + ["`" + "w" * 300 + "`", "short"], prompt_text="Summarise " + "q" * 300)
    user = make_user(db, projects=[project])
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    _log_in(page, live_url, user)
    page.goto(f"{live_url}/projects/{project.id}/label")
    page.wait_for_selector(".completion-card")

    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    boxes = [page.locator(".completion-card").nth(i).bounding_box() for i in range(6)]
    assert all(box["x"] >= 0 and box["x"] + box["width"] <= 390 for box in boxes)
    assert all(boxes[i]["y"] < boxes[i + 1]["y"] for i in range(5))  # stacked
    expect(page.locator("#guidelines")).to_have_js_property("open", False)  # folded on phones (by the script)
    handle = page.locator(".drag-handle").first.bounding_box()
    assert handle["width"] >= 30 and handle["height"] >= 30  # a thumb-sized drag handle
    page.screenshot(path=screenshots / "ranklab-phone.png", full_page=True)
    page.locator(".completion-card").first.scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "ranklab-phone-cards.png")
    context.close()
