"""Hidden and bidirectional characters in a real Chromium: a right-to-left override in a prompt,
a completion (also one whose HTML an older renderer stored), a code block, an evaluation response
or a model draft shows as a marker and no longer reverses the text after it; a zero-width space
shows as a marker; each such card says so in a notice; nothing in the payloads runs.

"Not reversed" is measured, not assumed: the left edge of each character of "fdp.exe" on screen.
The same measurement on the raw text, put into the page by the test, shows it reversed, so the
check would catch a renderer that let the override through."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select, update

from app.models import Completion, Prompt
from tests.factories import PASSWORD, make_eval_task, make_project, make_task, make_user
from tests.labeling.helpers import fresh, make_demonstration_task

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

RLO, ZWSP = "\u202e", "\u200b"
NOTICE = "This text contains hidden or bidirectional Unicode characters, shown as markers."
SPOOF = f"Open invoice{RLO}fdp.exe now"  # with the override applied it reads "Open invoicewon exe.pdf"
HOSTILE = f"<img src=x onerror=\"window.__pwned='img'\"> <script>window.__pwned='script'</script> {RLO}evil"

WATCH = """window.__problems = [];
document.addEventListener("securitypolicyviolation", e => window.__problems.push("csp " + e.violatedDirective), true);
Object.defineProperty(window, "__pwned",
                      { get() { return undefined; }, set(v) { window.__problems.push("ran " + v); } });"""

# The left edge of each character of `word`, found in the first text node under `root` holding it.
LEFTS = """([root, word]) => {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    const at = node.data.indexOf(word);
    if (at < 0) continue;
    return [...word].map((_, i) => {
      const range = document.createRange();
      range.setStart(node, at + i);
      range.setEnd(node, at + i + 1);
      return range.getBoundingClientRect().left;
    });
  }
  return null;
}"""


def _lefts(locator, word: str) -> list[float]:
    lefts = locator.evaluate(f"root => ({LEFTS})([root, {word!r}])")
    assert lefts is not None, f"{word!r} is not shown"
    return lefts


def _open(browser, live_url, user, project, selector):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(WATCH)
    page = context.new_page()
    problems: list[str] = []
    page.on("dialog", lambda d: (problems.append(f"dialog {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: problems.append(f"pageerror {e}"))
    # The browser's refusals (CSP, MIME type); htmx's own warnings about the page are not this test's.
    page.on("console", lambda m: problems.append(f"console {m.text}") if "Refused" in m.text else None)
    page.goto(f"{live_url}/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_url}/")
    page.goto(f"{live_url}/projects/{project.id}/label")
    page.wait_for_selector(selector)
    return context, page, problems


def _assert_inert(page, problems: list[str]) -> None:
    assert problems == []
    assert page.evaluate("() => window.__problems") == []
    assert page.locator(".untrusted :is(script, img, iframe, [onerror])").count() == 0


def _assert_reads_in_order(body, word: str = "fdp.exe") -> None:
    """`word` is laid out left to right, with the marker just before it."""
    lefts = _lefts(body, word)
    assert lefts == sorted(lefts) and lefts[0] < lefts[-1], lefts
    marker = body.locator(".hidden-char", has_text="U+202E").first
    box = marker.bounding_box()
    assert box is not None and box["width"] > 10 and box["x"] + box["width"] <= lefts[0] + 1


def test_the_raw_override_would_reverse_the_text_in_this_browser(live_url, browser, db):
    """The control for the checks below: the same measurement sees the override applied."""
    project = make_project(db, overlap=1)
    make_task(db, project, texts=["a", "b", "c", "d"])
    context, page, _ = _open(browser, live_url, make_user(db, projects=[project]), project, ".completion-card")
    raw = page.evaluate_handle(
        """text => { const p = document.createElement("p"); p.textContent = text;
                     document.querySelector(".completion-body").append(p); return p; }""",
        SPOOF,
    )
    lefts = raw.evaluate(f"root => ({LEFTS})([root, 'fdp.exe'])")
    assert lefts == sorted(lefts, reverse=True) and lefts[0] > lefts[-1], lefts  # drawn right to left
    context.close()


def test_ranking_cards_and_the_prompt_show_markers_and_a_notice(live_url, browser, db, screenshots):
    project = make_project(db, overlap=1)
    texts = [SPOOF, f"zero{ZWSP}width", f"```py\nname = 'report{RLO}fdp.exe'\n```", "A plain answer."]
    task = make_task(db, project, texts=texts + [HOSTILE])
    prompt = db.get(Prompt, task.prompt_id)
    prompt.text, prompt.messages = None, [{"role": "user", "content": f"Which is safe: {SPOOF}?"}]
    # The override as the previous renderer stored it (raw): the page must render the text again.
    db.execute(
        update(Completion)
        .where(Completion.prompt_id == task.prompt_id, Completion.text == SPOOF)
        .values(text_html=f"<p>{SPOOF}</p>\n", html_renderer=1)
    )
    db.commit()
    user = make_user(db, projects=[project])
    context, page, problems = _open(browser, live_url, user, project, ".completion-card")

    spoof = page.locator(".completion-card", has_text="invoice").locator(".completion-body")
    expect(spoof.locator(".hidden-char")).to_have_text("U+202E")
    title = re.compile(r"^Hidden character: U\+202E RIGHT-TO-LEFT OVERRIDE")
    expect(spoof.locator(".hidden-char")).to_have_attribute("title", title)
    expect(spoof.locator(".hidden-chars-notice")).to_have_text(NOTICE)
    expect(spoof.locator(".hidden-chars-notice")).to_be_visible()
    assert "Open invoiceU+202Efdp.exe now" in spoof.inner_text()
    _assert_reads_in_order(spoof)

    zero = page.locator(".completion-card", has_text="width").locator(".completion-body")
    expect(zero.locator(".hidden-char")).to_have_text("U+200B")
    expect(zero.locator(".hidden-char")).to_be_visible()
    assert zero.locator(".hidden-char").bounding_box()["width"] > 10  # takes room: seen, not zero-width
    expect(zero.locator(".hidden-chars-notice")).to_be_visible()

    code = page.locator(".completion-card", has_text="report").locator(".completion-body")
    expect(code.locator("pre code .hidden-char")).to_have_text("U+202E")
    _assert_reads_in_order(code.locator("pre"))

    plain = page.locator(".completion-card", has_text="A plain answer.")
    expect(plain.locator(".hidden-chars-notice, .hidden-char")).to_have_count(0)

    turn = page.locator(".prompt .turn-content")
    expect(turn.locator(".hidden-chars-notice")).to_be_visible()
    _assert_reads_in_order(turn)

    hostile = page.locator(".completion-card", has_text="evil").locator(".completion-body")
    expect(hostile.locator(".hidden-char")).to_have_text("U+202E")
    assert "window.__pwned='script'" in hostile.inner_text()  # shown as text
    page.screenshot(path=str(screenshots / "hidden_chars_ranking.png"), full_page=True)
    _assert_inert(page, problems)
    context.close()

    fresh(db)
    stored = db.scalars(select(Completion.text).where(Completion.prompt_id == task.prompt_id)).all()
    assert sorted(stored) == sorted(texts + [HOSTILE])  # the stored text keeps every character


def test_evaluation_responses_show_markers(live_url, browser, db):
    project = make_project(db, overlap=1)
    make_eval_task(db, project, texts=(SPOOF, f"zero{ZWSP}width"))
    user = make_user(db, projects=[project])
    context, page, problems = _open(browser, live_url, user, project, "[data-pairwise-form]")
    spoof = page.locator(".response-body", has_text="invoice")
    expect(spoof.locator(".hidden-chars-notice")).to_be_visible()
    _assert_reads_in_order(spoof)
    zero = page.locator(".response-body", has_text="width")
    expect(zero.locator(".hidden-char")).to_have_text("U+200B")
    expect(zero.locator(".hidden-chars-notice")).to_be_visible()
    _assert_inert(page, problems)
    context.close()


def test_a_model_draft_and_the_live_preview_show_markers(live_url, browser, db):
    project = make_project(db, overlap=1)
    make_demonstration_task(db, project, draft=SPOOF)
    user = make_user(db, projects=[project])
    context, page, problems = _open(browser, live_url, user, project, "[data-demonstration-form]")
    page.locator("[data-draft] summary").click()
    draft = page.locator("[data-draft] .response-body")
    expect(draft.locator(".hidden-chars-notice")).to_be_visible()
    _assert_reads_in_order(draft)

    page.locator("textarea[name=response]").focus()
    page.keyboard.insert_text(f"My answer: report{RLO}fdp.exe and a{ZWSP}b")
    preview = page.locator("[data-preview-body]")  # rendered by the server as it will be shown
    expect(preview.locator(".hidden-char")).to_have_text(["U+202E", "U+200B"])
    expect(preview.locator(".hidden-chars-notice")).to_be_visible()
    _assert_reads_in_order(preview)
    _assert_inert(page, problems)
    context.close()
