"""The admin's evaluation pages in a real Chromium: an evaluation launched from the model versions
page, its page following the worker and the labelers through htmx polling (progress, win rates,
leaderboard, the round-over-round chart), a labeler's hostile reason shown inert, and closing it."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.evaluation import service
from app.models import Evaluation, RankingTask, Role
from tests.evaluation.helpers import judge, setup
from tests.factories import PASSWORD, make_user

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

HOSTILE_REASON = "<img src=x onerror=\"window.__pwned='reason'\"> clearer"


def _log_in(page, base: str, user) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")


def test_launch_from_the_models_page_then_results_leaderboard_and_chart_appear(live_url, browser, db, screenshots):
    s = setup(db, prompts=3, overlap=2)
    admin = make_user(db, role=Role.admin)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: d.accept())  # "Withdraw the open tasks?" when closing
    _log_in(page, live_url, admin)

    # The model versions page: the policy against its previous policy and the base (one pair here:
    # round 0's previous policy is the base), on the 3 eval prompts.
    page.goto(f"{live_url}/admin/projects/{s.project.id}/models")
    form = page.locator("form[data-evaluate=preset]")
    form.locator("select[name=version_id]").select_option(str(s.policy.id))
    form.locator("input[name=prompts]").fill("3")
    form.get_by_role("button", name="Launch evaluation").click()
    page.wait_for_url(re.compile(r"/admin/evaluations/\d+$"))
    live = page.locator("#evaluation-live")
    expect(live).to_have_attribute("data-status", "generating")
    evaluation = db.scalars(select(Evaluation).where(Evaluation.project_id == s.project.id)).one()
    assert evaluation.comparisons == [[s.policy.id, s.base.id]] and page.url.endswith(f"/{evaluation.id}")

    # The worker finds every answer stored already and opens the tasks; two labelers judge them.
    assert service.open_for_labeling(db, evaluation) == 3
    db.commit()
    expect(live).to_have_attribute("data-status", "labeling")  # the page polls every 3 s
    expect(live.locator("[data-judgments]")).to_have_text("0 / 6 judgments")
    ann, bob = s.labelers
    tasks = db.scalars(select(RankingTask).where(RankingTask.evaluation_id == evaluation.id)).all()
    for task in tasks:
        judge(db, task, ann, "win", winner_version=s.policy.id, comment=HOSTILE_REASON)
        judge(db, task, bob, "tie")
    expect(live.locator("[data-judgments]")).to_have_text("6 / 6 judgments")

    # Win rate with ties split (3 wins, 3 ties: 75%) and excluded (100%), per labeler too.
    pair = live.locator(f'tr[data-pair="{s.policy.id}-{s.base.id}"]')
    expect(pair.locator("[data-split]")).to_contain_text("75.0%")
    expect(pair.locator("[data-excluded]")).to_contain_text("100.0%")
    expect(live.locator("tr.per-labeler")).to_have_count(2)
    ratings = live.locator("#leaderboard tr[data-version]")
    expect(ratings).to_have_count(2)
    expect(ratings.first).to_have_attribute("data-version", str(s.policy.id))
    expect(live.locator("#rounds-chart svg.chart-svg")).to_be_visible()  # round 0's policy vs its previous
    expect(live.locator("#reasons")).to_contain_text("<img src=x onerror=")  # shown as text
    assert page.evaluate("() => window.__pwned") is None
    page.screenshot(path=screenshots / "admin-evaluation-labeling.png", full_page=True)

    # Closing withdraws nothing judged; the page stops polling once the evaluation is done.
    live.get_by_role("button", name="Close labeling").click()
    expect(live).to_have_attribute("data-status", "done")
    expect(live).not_to_have_attribute("hx-get", re.compile(".*"))
    expect(live.locator("[data-judgments]")).to_have_text("6 / 6 judgments")

    # The project's evaluations page lists it, with the same leaderboard.
    page.goto(f"{live_url}/admin/projects/{s.project.id}/evaluations")
    expect(page.locator(f'a[href="/admin/evaluations/{evaluation.id}"]').first).to_be_visible()
    expect(page.locator("tr[data-version]")).to_have_count(2)
    assert problems == [], problems
    context.close()
