"""The feedback forms (issue 15) in a real Chromium, each answered by keyboard only: Likert,
good/bad, multi-aspect, pairwise, and the critique box on the ranking page. Per form: the keys
panel lists the keys the page handles, the page fits a phone, model output shows as text (with
hidden characters as markers) and never runs, no CSP refusal or page error, the answer swaps in
the next task without a reload, and the stored answer is the one typed."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.models import Assignment, Feedback, FeedbackRating, Ranking
from tests.factories import PASSWORD, make_project, make_task, make_user
from tests.labeling.helpers import FORM_SETTINGS, fresh

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

RLO = "\u202e"
HOSTILE = [
    "<script>window.__pwned='script'</script> A plain answer.",
    f"<img src=x onerror=\"window.__pwned='img'\"> Open invoice{RLO}fdp.exe now",
    "A long answer. " + "w" * 400 + "\n\n```python\nx = '" + "y" * 300 + "'\n```",
]
WATCH = """window.__problems = [];
document.addEventListener("securitypolicyviolation", e => window.__problems.push("csp " + e.violatedDirective), true);
Object.defineProperty(window, "__pwned",
                      { get() { return undefined; }, set(v) { window.__problems.push("ran " + v); } });"""
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def _form_project(db, kind: str, tasks: int, *, texts=None):
    """A project of feedback form `kind` (tests/labeling/helpers.FORM_SETTINGS) with `tasks` tasks,
    the first with `texts` as its completions, and a labeler on it."""
    project = make_project(db, overlap=1, feedback_form=kind, form_settings=FORM_SETTINGS[kind])
    k = 2 if kind == "pairwise" else 3
    for i in range(tasks):
        task = make_task(db, project, k=k, texts=texts[:k] if texts and i == 0 else None)
        task.kind = kind
    db.commit()
    return project, make_user(db, projects=[project])


def _open(browser, live_url, user, project, selector):
    context = browser.new_context(viewport=DESKTOP)
    context.add_init_script(WATCH)
    page = context.new_page()
    problems: list[str] = []
    page.on("dialog", lambda d: (problems.append(f"dialog {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: problems.append(f"pageerror {e}"))
    page.on("console", lambda m: problems.append(f"console {m.text}") if m.type == "error" else None)
    page.goto(f"{live_url}/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_url}/")
    page.goto(f"{live_url}/projects/{project.id}/label")
    page.wait_for_selector(selector)
    # The deferred scripts have set the form up (its keys work): a key pressed before would be lost.
    page.wait_for_selector("form[data-ready='1']", state="attached")
    page.evaluate("() => { window.__sameDocument = true; }")
    return context, page, problems


def _assert_clean(page, problems: list[str]) -> None:
    """Nothing from the page ran, was refused by the CSP or threw; the page was never reloaded."""
    assert problems == []
    assert page.evaluate("() => window.__problems") == []
    assert page.evaluate("() => window.__sameDocument") is True
    assert page.locator(".untrusted :is(script, img, iframe, [onerror])").count() == 0


def _assert_hostile_text_shown(page) -> None:
    expect(page.get_by_text("<script>window.__pwned='script'</script> A plain answer.")).to_be_visible()
    expect(page.locator(".response-body .hidden-char", has_text="U+202E")).to_be_visible()
    expect(page.locator(".response-body .hidden-chars-notice")).to_be_visible()


def _assert_fits_phone(page, screenshots, name: str) -> None:
    """At 390 px nothing scrolls sideways and every card and choice lies within the screen."""
    page.screenshot(path=screenshots / f"forms-{name}-desktop.png")
    page.set_viewport_size(PHONE)
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    boxes = page.eval_on_selector_all(
        ".response-card, .rating-row, .choice, .verdict, .critique",
        "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.left, r.right]; })",
    )
    assert boxes and all(left >= 0 and right <= PHONE["width"] for left, right in boxes), boxes
    page.screenshot(path=screenshots / f"forms-{name}-phone.png", full_page=True)
    page.set_viewport_size(DESKTOP)


def _assert_keys_listed(page, *keys: str) -> None:
    """The shortcut panel names each key the page handles (in a <kbd>)."""
    expect(page.locator("#shortcut-keys dt")).not_to_have_count(0)
    listed = set(page.locator("#shortcut-keys kbd").all_inner_texts())
    assert set(keys) <= listed, sorted(set(keys) - listed)


def _ids(page, selector=".rating-card") -> list[int]:
    return page.eval_on_selector_all(selector, "cards => cards.map(c => Number(c.dataset.completionId))")


def _submit_and_wait_for_next(page, selector: str, key: str) -> None:
    """Presses `key` to submit and waits for the next task's form to replace the one answered.
    The answered id is read before the key: read after, a fast swap would already show the next
    task's id and the wait would be for a third task that never comes."""
    answered = page.get_attribute(selector, "data-assignment-id")
    page.keyboard.press(key)
    page.wait_for_selector(f"{selector}:not([data-assignment-id='{answered}'])")
    expect(page.get_by_text("Saved.")).to_be_visible()


def _values(db, user, aspect: str = "") -> dict[int, int | None]:
    feedback = db.scalars(select(Feedback).where(Feedback.user_id == user.id).order_by(Feedback.id)).first()
    rows = db.scalars(select(FeedbackRating).where(FeedbackRating.feedback_id == feedback.id))
    return {r.completion_id: r.value for r in rows if r.aspect == aspect}


def test_likert_by_keyboard(live_url, browser, db, screenshots):
    project, user = _form_project(db, "likert", 2, texts=HOSTILE)
    context, page, problems = _open(browser, live_url, user, project, "[data-rating-form]")
    _assert_hostile_text_shown(page)
    expect(page.get_by_text("5 · great").first).to_be_visible()  # the project's labels
    _assert_fits_phone(page, screenshots, "likert")
    _assert_keys_listed(page, "1", "9", "←", "→", "↑", "↓", "C", "Esc", "Enter")

    a, b, c = _ids(page)
    rows = page.locator("[data-row]")
    expect(rows.nth(0)).to_be_focused()  # the row, not a point: nothing looks chosen yet
    page.keyboard.press("4")  # A = 4, on to B
    expect(rows.nth(1)).to_be_focused()
    page.keyboard.press("2")  # B = 2, on to C
    page.keyboard.press("ArrowUp")  # back to B (its chosen point has focus) ...
    page.keyboard.press("ArrowRight")  # ... B = 3
    expect(page.locator(f"input[name='rating-{b}'][value='3']")).to_be_checked()
    page.keyboard.press("ArrowDown")  # C
    page.keyboard.press("c")  # C's critique box opens with focus
    expect(page.locator(f"textarea[name='critique-{c}']")).to_be_focused()
    page.keyboard.type("Invented a <b>citation</b> 7")  # digits typed here are text, not ratings
    page.keyboard.press("Escape")  # back to C's row
    expect(rows.nth(2)).to_be_focused()
    # Active time is counted while the labeler works (active_time.js ticks each second).
    expect(page.locator("[data-rating-form] [data-time-field]")).to_have_value(re.compile(r"^[1-9][0-9]{2,}$"))
    page.keyboard.press("5")  # C = 5: all answered, the submit button has focus
    expect(page.locator("[data-submit]")).to_be_focused()
    _submit_and_wait_for_next(page, "[data-rating-form]", "Enter")
    expect(page.locator("[data-row]").first).to_be_focused()  # the next task goes on by keyboard

    fresh(db)
    assert _values(db, user) == {a: 4, b: 3, c: 5}
    feedback = db.scalars(select(Feedback).where(Feedback.user_id == user.id)).one()
    assert feedback.time_spent_ms >= 100 and feedback.display_order == [a, b, c]
    critiques = {r.completion_id: r.critique for r in feedback.ratings if r.critique}
    assert critiques == {c: "Invented a <b>citation</b> 7"}

    # Enter with a completion not rated: the page says which, and goes there; nothing is sent.
    page.keyboard.press("3")
    page.keyboard.press("Enter")
    expect(page.locator("[data-error-slot]").first).to_contain_text("Your rating of completion B")
    expect(page.locator("[data-row]").nth(1)).to_be_focused()
    _assert_clean(page, problems)
    context.close()


def test_good_bad_by_keyboard_after_a_skip_with_a_reason(live_url, browser, db, screenshots):
    project, user = _form_project(db, "good_bad", 2, texts=HOSTILE)
    context, page, problems = _open(browser, live_url, user, project, "[data-rating-form]")
    _assert_hostile_text_shown(page)
    _assert_fits_phone(page, screenshots, "good-bad")
    _assert_keys_listed(page, "G", "B", "←", "→", "↑", "↓", "C", "Esc", "Enter")

    # Skip the first task by keyboard: Tab to the skip box, open it, choose a reason, send.
    skipped = int(page.get_attribute("[data-rating-form]", "data-assignment-id"))
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.matches('.skip-box > summary')"):
            break
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")  # the reason
    page.keyboard.press("ArrowDown")  # "I cannot judge this topic"
    page.keyboard.press("Tab")  # the details
    page.keyboard.type("not my field")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"[data-rating-form]:not([data-assignment-id='{skipped}'])")
    expect(page.get_by_text("Skipped.")).to_be_visible()
    expect(page.locator("[data-row]").first).to_be_focused()

    a, b, c = _ids(page)
    page.keyboard.press("g")  # A good
    page.keyboard.press("b")  # B bad
    page.keyboard.press("ArrowUp")  # back to B ...
    page.keyboard.press("ArrowLeft")  # ... good after all
    page.keyboard.press("ArrowDown")
    page.keyboard.press("b")  # C bad; the submit button has focus
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-queue-empty]")

    fresh(db)
    assert db.get(Assignment, skipped).skip_reason.startswith("I cannot judge this topic")
    assert _values(db, user) == {a: 1, b: 1, c: 0}
    _assert_clean(page, problems)
    context.close()


def test_multi_aspect_by_keyboard(live_url, browser, db, screenshots):
    project, user = _form_project(db, "multi_aspect", 2, texts=HOSTILE)
    context, page, problems = _open(browser, live_url, user, project, "[data-rating-form]")
    _assert_hostile_text_shown(page)
    expect(page.get_by_text("Honest <b>really</b>").first).to_be_visible()  # admin text, escaped
    _assert_fits_phone(page, screenshots, "multi-aspect")
    _assert_keys_listed(page, "1", "9", "←", "→", "↑", "↓", "C", "Esc", "Enter")

    a, b, c = _ids(page)
    # Rows per completion: helpfulness (1-5), honesty (place 1-3), overall (place 1-3).
    for key in ["5", "1", "1", "3", "1", "2", "2", "3", "3"]:
        page.keyboard.press(key)
    expect(page.locator("[data-submit]")).to_be_focused()
    page.keyboard.press("Shift+Tab")  # the comment box ...
    page.keyboard.press("Shift+Tab")  # ... C's critique ...
    page.keyboard.press("Shift+Tab")  # ... C's overall place (#3)
    page.keyboard.press("ArrowLeft")  # C overall #2: tied with B
    expect(page.locator("[data-order-of=honesty]")).to_have_text("A = B > C")  # the places, read as orders
    expect(page.locator("[data-order-of=overall]")).to_have_text("A > B = C")
    _submit_and_wait_for_next(page, "[data-rating-form]", "Control+Enter")

    fresh(db)
    assert _values(db, user, "helpfulness") == {a: 5, b: 3, c: 2}
    assert _values(db, user, "honesty") == {a: 0, b: 0, c: 1}  # levels, 0 = best; A and B tied
    assert _values(db, user) == {a: 0, b: 1, c: 1}
    _assert_clean(page, problems)
    context.close()


def test_pairwise_form_by_keyboard_with_critiques_by_side(live_url, browser, db, screenshots):
    project, user = _form_project(db, "pairwise", 1, texts=HOSTILE)
    context, page, problems = _open(browser, live_url, user, project, "[data-pairwise-form]")
    _assert_hostile_text_shown(page)
    assert page.locator("[data-completion-id]").count() == 0  # blind
    _assert_fits_phone(page, screenshots, "pairwise")
    _assert_keys_listed(page, "A", "B", "T", "X", "R", "C", "Shift", "Esc", "Enter")

    page.keyboard.press("c")  # A's critique
    expect(page.locator("textarea[name='critique-A']")).to_be_focused()
    page.keyboard.type("misses the point")
    page.keyboard.press("Escape")
    page.keyboard.press("Shift+C")  # B's critique
    page.keyboard.type("bold but right")  # "b" typed here is text, not a verdict
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    expect(page.locator("input[name=verdict][value=B]")).to_be_checked()
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-queue-empty]")

    fresh(db)
    ranking = db.scalars(select(Ranking).where(Ranking.user_id == user.id)).one()
    a, b = ranking.display_order
    assert ranking.groups == [[b], [a]]
    assert ranking.critiques == {str(a): "misses the point", str(b): "bold but right"}
    _assert_clean(page, problems)
    context.close()


def test_ranking_critique_by_keyboard(live_url, browser, db, screenshots):
    project = make_project(db, overlap=1)
    make_task(db, project, k=4)
    user = make_user(db, projects=[project])
    context, page, problems = _open(browser, live_url, user, project, ".completion-card")
    _assert_fits_phone(page, screenshots, "ranking-critique")
    _assert_keys_listed(page, "C", "Esc")

    first = _ids(page, ".completion-card")[0]
    expect(page.locator(".completion-card").first).to_be_focused()
    page.keyboard.press("c")
    page.keyboard.type("wrong date; 1 and t typed here stay text")
    page.keyboard.press("Escape")  # back to the card: the keys rank again
    expect(page.locator(".completion-card").first).to_be_focused()
    page.keyboard.press("4")  # the card to the last place
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("[data-queue-empty]")

    fresh(db)
    ranking = db.scalars(select(Ranking).where(Ranking.user_id == user.id)).one()
    assert ranking.groups[-1] == [first]
    assert ranking.critiques == {str(first): "wrong date; 1 and t typed here stay text"}
    _assert_clean(page, problems)
    context.close()
