"""The SFT pages in a real Chromium with a real Celery worker training the tiny model: an admin
uploads demonstrations on the demonstrations page, launches a run from the SFT tab, watches its
progress and loss chart arrive in place, cancels it (the worker stops it and takes the next run),
launches a short run that finishes, and finds its sft version on the runs list and the model
versions page. Untrusted text (a demonstration's prompt and answer, the run's name) shows as text
on every page and never runs."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.models import ModelVersion, Role
from app.models.jobs import JobEvent, TrainingJob
from app.rounds import lifecycle
from tests.browser.test_rounds_browser import DESKTOP, _log_in
from tests.factories import make_project, make_user
from tests.loop import conftest as loop_fixtures
from tests.loop.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]
# The loop's fixtures: settings with a broker the worker subprocess shares, the worker, the tiny model.
settings, workers, start_worker = loop_fixtures.settings, loop_fixtures.workers, loop_fixtures.start_worker
tiny_model_dir = loop_fixtures.tiny_model_dir

WORDS = "cat dog bird fish tree sun moon star".split()
HOSTILE_PROMPT = "say cat <script>window.__pwned = 'prompt'</script>"
HOSTILE_ANSWER = "cat cat <img src=x onerror=\"window.__pwned = 'answer'\">"
HOSTILE_NAME = "tiny <img src=x onerror=\"window.__pwned = 'name'\">"
N_DEMOS = 48
LONG_RUN = {"epochs": 100, "batch_tokens": 8}
"""~3600 optimizer steps (one example each), minutes: far longer than the test waits before cancelling."""
SHORT_RUN = {"epochs": 1, "batch_tokens": 48}
TINY = {"max_length": 96, "eval_fraction": 0.25, "lora_r": 4, "lora_alpha": 8}


def _jsonl() -> bytes:
    lines = [
        {"id": f"d{i}", "prompt": f"say {WORDS[i % 8]}", "completion": f"{WORDS[i % 8]} {WORDS[i % 8]}"}
        for i in range(N_DEMOS - 1)
    ]
    lines.append({"id": "hostile", "prompt": HOSTILE_PROMPT, "completion": HOSTILE_ANSWER})
    return "\n".join(json.dumps(line) for line in lines).encode()


def _launch(page, *, name: str, start_id: int, hyper: dict) -> int:
    """Fill the "Run SFT" form on the SFT tab and submit it; the id of the run page it lands on.
    The other inputs keep the defaults the page filled in (a blank one would block the submit)."""
    page.fill("#f-name", name)
    page.select_option("#f-start_model_id", str(start_id))
    for key, value in {**TINY, **hyper}.items():
        page.fill(f"#f-sft-{key}", str(value))
    page.get_by_role("button", name="Run SFT").click()
    page.wait_for_url(re.compile(r".*/admin/sft/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def _not_pwned(page) -> None:
    assert page.evaluate("() => window.__pwned") is None


def test_sft_from_the_pages_with_a_real_worker(live_url, browser, db, tiny_model_dir, start_worker, screenshots):
    worker = start_worker()  # boots (torch, celery) while the browser works
    project = make_project(db, name="Helpdesk")
    admin = make_user(db, role=Role.admin)
    start = lifecycle.base_version(db, project_id=project.id, base_model=str(tiny_model_dir))
    db.commit()

    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    problems: list[str] = []
    confirms: list[str] = []

    def on_dialog(dialog) -> None:  # only the cancel button's confirmation is expected
        if dialog.message.startswith("Cancel SFT run"):
            confirms.append(dialog.message)
            dialog.accept()
        else:
            problems.append(dialog.message)
            dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda e: problems.append(str(e)))
    _log_in(page, live_url, admin)

    # 1. Demonstrations uploaded on their page; the hostile one is shown as text.
    page.goto(f"{live_url}/admin/projects/{project.id}/demonstrations")
    page.set_input_files(
        "input[name=file]", files=[{"name": "demos.jsonl", "mimeType": "application/x-ndjson", "buffer": _jsonl()}]
    )
    page.get_by_role("button", name="Upload demonstrations").click()
    expect(page.locator("#upload-result")).to_contain_text(f"{N_DEMOS} created")
    expect(page.locator("[data-status=accepted]")).to_have_text(str(N_DEMOS))
    hostile = page.locator("article.demonstration").first  # the newest first
    expect(hostile).to_contain_text(HOSTILE_PROMPT)
    expect(hostile.locator(".answer")).to_contain_text(HOSTILE_ANSWER)
    assert hostile.locator("img, script").count() == 0
    _not_pwned(page)

    # 2. A long run from the SFT tab: progress and the loss chart arrive without a reload.
    page.get_by_role("link", name="Helpdesk").click()  # the project page names no SFT; its tabbed pages do
    page.get_by_role("link", name="Model versions").click()
    page.get_by_role("link", name="SFT", exact=True).click()
    page.wait_for_url(f"{live_url}/admin/projects/{project.id}/sft")
    expect(page.locator("p.intro")).to_contain_text(f"{N_DEMOS} accepted demonstrations")
    long_id = _launch(page, name="long", start_id=start.id, hyper=LONG_RUN)
    page.evaluate("() => { window.__sameDocument = true; }")
    live = page.locator("#job-live")
    expect(page.locator("[data-demonstrations]")).to_have_text(str(N_DEMOS))
    expect(live).to_have_attribute("data-status", "running", timeout=120_000)
    page.wait_for_function("() => document.querySelector('#job-live progress')?.value > 0", timeout=60_000)
    expect(page.locator("[data-current-step]")).to_have_text(re.compile("^(train|evaluate)$"))
    # An ETA once a stage has reported twice, though every short epoch switches train ↔ evaluate.
    expect(page.locator("#job-live .eta")).to_have_text(re.compile(r"^ETA \d"), timeout=30_000)
    training = page.locator("#charts figure", has_text="Training loss")
    expect(training.locator("svg.chart-svg")).to_be_visible()
    assert page.evaluate("() => window.__sameDocument") is True  # updated in place, never reloaded
    page.screenshot(path=screenshots / "sft-run-live-desktop.png", full_page=True)

    # 3. Cancel (after a confirmation): the page shows it at once; the worker stops the run at its
    # next report (its log says so) and is free for the next run.
    page.get_by_role("button", name="Cancel run").click()
    expect(live).to_have_attribute("data-status", "cancelled")
    assert confirms == [f"Cancel SFT run #{long_id}?"]
    expect(page.get_by_role("button", name="Retry")).to_be_visible()

    def stopped() -> bool:
        db.commit()  # a fresh read snapshot
        messages = db.scalars(select(JobEvent.message).where(JobEvent.job_id == long_id)).all()
        return any(m.startswith(f"stopped: job {long_id} is cancelled") for m in messages)

    wait_for(stopped, timeout=60, what="the worker to stop the cancelled run", worker=worker)
    cancelled = db.get_one(TrainingJob, long_id, populate_existing=True)
    assert cancelled.status == "cancelled" and cancelled.claim_token is None and 0 < cancelled.progress < 1

    # 4. A short run finishes; its sft version is on the run page, the runs list and the versions page.
    page.get_by_role("link", name="SFT", exact=True).click()
    expect(page.locator(f"a[href='/admin/sft/{long_id}']")).to_be_visible()
    short_id = _launch(page, name=HOSTILE_NAME, start_id=start.id, hyper=SHORT_RUN)
    expect(live).to_have_attribute("data-status", "done", timeout=120_000)
    db.commit()  # a fresh read snapshot
    version = db.scalars(select(ModelVersion).where(ModelVersion.job_id == short_id)).one()
    assert (version.kind, version.name, version.parent_id) == ("sft", HOSTILE_NAME, start.id)
    expect(page.locator("[data-result]")).to_have_text(f"sft #{version.id}")
    expect(page.locator("#job-live .untrusted", has_text=HOSTILE_NAME).first).to_be_visible()
    assert live.get_attribute("hx-trigger") is None  # finished: polling stops
    expect(training.locator("svg.chart-svg")).to_be_visible()
    expect(page.locator("#charts figure", has_text="Held-out loss").locator("svg.chart-svg")).to_be_visible()
    assert page.locator("#job-live img").count() == 0
    page.screenshot(path=screenshots / "sft-run-done-desktop.png", full_page=True)
    _not_pwned(page)

    page.get_by_role("link", name="SFT", exact=True).click()
    row = page.locator("tr", has=page.locator(f"a[href='/admin/sft/{short_id}']"))
    expect(row.get_by_role("link", name=f"version #{version.id}")).to_be_visible()
    expect(page.locator("tr", has=page.locator(f"a[href='/admin/sft/{long_id}']"))).to_contain_text("cancelled")

    page.get_by_role("link", name="Model versions").click()
    listed = page.locator("tr", has=page.locator(f"a[href='/admin/models/{version.id}']"))
    expect(listed).to_contain_text("sft")
    expect(listed).to_contain_text(HOSTILE_NAME)
    assert listed.locator("img").count() == 0
    _not_pwned(page)
    assert problems == []
    context.close()
