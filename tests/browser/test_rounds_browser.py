"""The round console in a real Chromium: live progress through htmx polling (no reload), polling
that stops when the round is finished, launching from the form, cancelling with a confirmation;
screenshots at desktop and phone width for a look."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update

from app.models import Completion, Prompt, Role, TrainingRound
from app.rounds.views import STAGES
from tests.factories import PASSWORD, make_project, make_user
from tests.rounds.helpers import add_event, make_round, make_round_task, make_version

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def _log_in(page, base: str, user) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")


def _set(db, training_round, **values) -> None:
    db.execute(update(TrainingRound).where(TrainingRound.id == training_round.id).values(**values))
    db.commit()


def _new_page(browser, base, user, viewport):
    context = browser.new_context(
        viewport=viewport,
        device_scale_factor=1 if viewport == DESKTOP else 2,
        is_mobile=viewport == PHONE,
        has_touch=viewport == PHONE,
    )
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _log_in(page, base, user)
    return page, errors


def test_round_page_shows_progress_as_it_happens(live_url, browser, db, screenshots):
    project = make_project(db, name="Support answers")
    admin = make_user(db, role=Role.admin)
    base = make_version(db, project, kind="base", name="SmolLM2-135M-Instruct (bundled)")
    training_round = make_round(
        db,
        project,
        status="training_policy",
        progress=0.1,
        eta_seconds=400,
        current_step="ppo step 1/8",
        policy_in_id=base.id,
    )
    add_event(db, training_round, stage="training_policy", message="ppo step 1/8: score 0.100, kl 0.000")

    page, errors = _new_page(browser, live_url, admin, DESKTOP)
    polls = []
    page.on("request", lambda r: polls.append(r.url) if r.headers.get("hx-request") else None)
    page.goto(f"{live_url}/admin/rounds/{training_round.id}")
    page.evaluate("() => { window.__sameDocument = true; }")
    assert page.locator("[data-percent]").inner_text() == "10%"
    assert page.locator(".step-current .step-label").inner_text() == "Training policy"

    # The worker's writes, as the worker makes them: progress, a log line, metric points.
    _set(db, training_round, progress=0.55, eta_seconds=95, current_step="ppo step 5/8")
    for step in range(1, 6):
        add_event(
            db,
            training_round,
            kind="metric",
            stage="training_policy",
            step=step,
            data={
                "score": 0.1 * step,
                "kl": 0.004 * step * step,
                "entropy": 2.2 - 0.1 * step,
                "response_length": 24 + 2 * step,
            },
        )
    add_event(db, training_round, kind="metric", stage="training_reward", step=1, data={"val_accuracy": 0.62})
    add_event(db, training_round, stage="training_policy", message="ppo step 5/8: score <0.5>, kl 0.100")

    page.wait_for_function("() => document.querySelector('[data-percent]').textContent === '55%'", timeout=10_000)
    assert page.locator("[data-current-step]").inner_text() == "ppo step 5/8"
    assert page.get_by_text("ppo step 5/8: score <0.5>, kl 0.100").is_visible()
    assert page.locator("#charts svg.chart-svg").count() == 5
    assert "step 5 · 0.5" in page.locator("figure", has_text="PPO reward").inner_text()
    assert page.evaluate("() => window.__sameDocument") is True  # updated in place, never reloaded
    page.screenshot(path=screenshots / "rounds-live-desktop.png", full_page=True)

    # Done: the last fragment has no trigger, so polling stops.
    _set(db, training_round, status="done", progress=1.0, current_step="done")
    page.wait_for_selector('#round-live[data-status="done"]', timeout=10_000)
    assert page.locator("#round-live").get_attribute("hx-trigger") is None
    count = len(polls)
    page.wait_for_timeout(4_500)
    assert len(polls) == count, "polling went on after the round finished"
    assert page.locator(".step-done").count() == len(STAGES)  # every step of a finished round
    assert page.evaluate("() => window.__sameDocument") is True
    assert errors == []


def test_launch_from_the_form_then_cancel(live_url, browser, db, screenshots):
    project = make_project(db, name="Helpdesk", k_min=4, k_max=6)
    db.add_all(Prompt(project_id=project.id, external_id=f"q{i}", text=f"Question {i}?") for i in range(4))
    db.commit()
    admin = make_user(db, role=Role.admin)
    page, errors = _new_page(browser, live_url, admin, DESKTOP)

    page.goto(f"{live_url}/admin/projects/{project.id}")
    page.get_by_role("link", name="Launch round").click()
    page.wait_for_url(re.compile(r".*/rounds/new$"))
    page.screenshot(path=screenshots / "rounds-launch-desktop.png", full_page=True)
    # A mistake only the server can see (minibatch larger than batch) comes back beside its field.
    page.fill("#f-ppo-batch_size", "4")
    page.fill("#f-ppo-minibatch_size", "8")
    page.fill("#f-prompts-count", "2")
    page.select_option("#f-reward-mode", "full")
    page.get_by_role("button", name="Launch round").click()
    page.wait_for_selector("#f-ppo-minibatch_size-error")
    assert page.locator("#f-ppo-minibatch_size-error").inner_text() == "minibatch_size (8) must be ≤ batch_size (4)"
    assert page.locator("#f-ppo-minibatch_size").get_attribute("aria-invalid") == "true"
    assert page.locator("#f-reward-mode").input_value() == "full"  # what was chosen is kept
    page.fill("#f-ppo-minibatch_size", "2")
    page.get_by_role("button", name="Launch round").click()
    page.wait_for_url(re.compile(r".*/admin/rounds/\d+$"))
    assert page.locator("#round-live").get_attribute("data-status") == "pending"
    assert page.locator(".status").inner_text() == "Queued"
    assert page.get_by_text(re.compile(r"round 0 launched by .*: 2 prompts × K=4")).is_visible()

    # Cancel asks first; the answer swaps in without a reload.
    page.evaluate("() => { window.__sameDocument = true; }")
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.get_by_role("button", name="Cancel round").click()
    page.wait_for_selector('#round-live[data-status="cancelled"]', timeout=10_000)
    assert dialogs and dialogs[0].startswith("Cancel round 0?")
    assert page.evaluate("() => window.__sameDocument") is True
    assert page.locator("#round-live").get_attribute("hx-trigger") is None
    assert errors == []


def test_pages_at_phone_width(live_url, browser, db, screenshots):
    """Screenshots for a look; and nothing may be wider than the phone's screen."""
    project = make_project(db, name="Phone check")
    admin = make_user(db, role=Role.admin)
    base = make_version(db, project, kind="base", name="tiny base")
    failed = make_round(
        db,
        project,
        status="failed",
        policy_in_id=base.id,
        error_step="training_reward",
        error_message="RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB " + "x" * 200,
    )
    task = make_round_task(db, project, failed)
    policy = make_version(
        db,
        project,
        name="policy r0 with a rather long name",
        parent=base,
        training_round=failed,
        artifact_path="/srv/ranklab/data/artifacts/project-1/round-0/policy-adapter-and-card",
    )
    prompt = db.get(Prompt, task.prompt_id)
    db.add(
        Completion(prompt_id=prompt.id, text="A **better** hi, with `code` " + "y" * 300, model_version_id=policy.id)
    )
    db.commit()
    for step in range(1, 4):
        add_event(db, failed, kind="metric", stage="training_reward", step=step, data={"val_accuracy": 0.5 + step / 10})
    add_event(db, failed, stage="training_reward", message="Traceback (most recent call last): " + "z" * 300)

    for name, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        page, errors = _new_page(browser, live_url, admin, viewport)
        for slug, path in (
            ("round", f"/admin/rounds/{failed.id}"),
            ("launch", f"/admin/projects/{project.id}/rounds/new"),
            ("models", f"/admin/projects/{project.id}/models?a={policy.id}&b={base.id}"),
            ("model", f"/admin/models/{policy.id}"),
        ):
            page.goto(f"{live_url}{path}")
            page.screenshot(path=screenshots / f"rounds-{slug}-{name}.png", full_page=True)
            page.screenshot(path=screenshots / f"rounds-{slug}-{name}-top.png")
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{slug} is {overflow}px wider than the {name} screen"
        assert errors == []
        page.context.close()
