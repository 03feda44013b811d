"""The blind evaluation page in a real Chromium: sides randomised per labeler and recorded as
shown, nothing that reveals a version, keyboard-only judging with the htmx swap, untrusted
responses that never run, and a phone layout without sideways scrolling."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from app.labeling import handout
from app.models import Assignment, Completion, Evaluation, EvaluationStatus, ModelVersion, Ranking
from tests.factories import PASSWORD, make_eval_task, make_project, make_task, make_user
from tests.labeling.helpers import fresh

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

# Ids no page would show by chance, so "not in the HTML" means something.
OLD_ID, NEW_ID, EVALUATION_ID = 987_601, 987_602, 987_603
OLD_NAME, NEW_NAME = "policy-round-7-kestrel", "policy-round-8-osprey"
HOSTILE = (
    "<script>window.__pwned='script'</script> Plain words.",
    "<img src=x onerror=\"window.__pwned='img'\"> " + "unbroken" * 80,
)


def _evaluation(db, project) -> Evaluation:
    """Two versions and an evaluation with distinctive names and ids."""
    for version_id, name in ((OLD_ID, OLD_NAME), (NEW_ID, NEW_NAME)):
        db.add(ModelVersion(id=version_id, project_id=project.id, kind="policy", name=name, base_model="tiny/base"))
    evaluation = Evaluation(
        id=EVALUATION_ID,
        project_id=project.id,
        name="kestrel vs osprey",
        status=EvaluationStatus.labeling,
        version_ids=[OLD_ID, NEW_ID],
        comparisons=[[OLD_ID, NEW_ID]],
    )
    db.add(evaluation)
    db.commit()
    return evaluation


def _log_in(page, base: str, user) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")


def _open(browser, live_url, user, project, **context_args):
    context = browser.new_context(**({"viewport": {"width": 1280, "height": 900}} | context_args))
    page = context.new_page()
    problems: list[str] = []
    page.on("dialog", lambda d: (problems.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: problems.append(str(e)))
    _log_in(page, live_url, user)
    page.goto(f"{live_url}/projects/{project.id}/label")
    page.wait_for_selector("[data-pairwise-form]")
    return context, page, problems


def _shown(page) -> list[str]:
    """The responses' text, left (A) then right (B)."""
    return [page.locator(f".response-card[data-side={side}] .response-body").inner_text() for side in "AB"]


def _assert_nothing_reveals_the_versions(page) -> None:
    html = page.content()
    assert "Response A" in html and "Response B" in html
    for secret in (OLD_NAME, NEW_NAME, "kestrel", "osprey", str(OLD_ID), str(NEW_ID), str(EVALUATION_ID)):
        assert secret not in html, secret
    assert "data-completion-id" not in html and "model_version" not in html


def test_two_labelers_see_the_versions_on_different_sides_as_recorded(live_url, browser, db, screenshots):
    project = make_project(db, overlap=2)
    task = make_eval_task(db, project, evaluation=_evaluation(db, project), texts=("old answer", "new answer"))
    # Labelers until one was shuffled each way (the handout's own key: md5 of task, labeler, completion).
    orders: dict[tuple[int, ...], object] = {}
    while len(orders) < 2:
        user = make_user(db, projects=[project])
        order = handout.display_order(task.completion_ids, task_id=task.id, user_id=user.id)
        orders.setdefault(tuple(order), user)
    text_of = dict(
        db.execute(select(Completion.id, Completion.text).where(Completion.id.in_(task.completion_ids))).all()
    )

    seen = []
    for order, user in orders.items():
        context, page, problems = _open(browser, live_url, user, project)
        shown = _shown(page)
        seen.append(shown)
        assert shown == [text_of[cid] for cid in order]
        _assert_nothing_reveals_the_versions(page)
        assignment_id = int(page.get_attribute("[data-pairwise-form]", "data-assignment-id"))
        fresh(db)
        assert db.get(Assignment, assignment_id).display_order == list(order)
        page.keyboard.press("a")
        page.keyboard.press("Enter")
        page.wait_for_selector("[data-queue-empty]")
        fresh(db)
        ranking = db.scalar(select(Ranking).where(Ranking.user_id == user.id))
        assert ranking.display_order == list(order) and ranking.groups == [[order[0]], [order[1]]]
        assert problems == []
        context.close()
    assert seen[0] == seen[1][::-1]  # the same two answers, on opposite sides


def test_keyboard_only_judging_stores_each_verdict_and_swaps_in_the_next_task(live_url, browser, db, screenshots):
    project = make_project(db, overlap=1)
    evaluation = _evaluation(db, project)
    tasks = [make_eval_task(db, project, evaluation=evaluation, texts=HOSTILE if i == 0 else None) for i in range(5)]
    version_of = dict(db.execute(select(Completion.id, Completion.model_version_id)).all())

    def left_versions_for(user) -> set[int]:
        orders = (handout.display_order(t.completion_ids, task_id=t.id, user_id=user.id) for t in tasks[:4])
        return {version_of[order[0]] for order in orders}

    # A labeler who gets each version on the left at least once among the four judged tasks.
    while left_versions_for(user := make_user(db, projects=[project])) != {OLD_ID, NEW_ID}:
        pass
    # task: (keys pressed, verdict, reason typed)
    plan = [("b", "B", ""), ("t", "tie", ""), ("x", "both_bad", "both miss the point"), ("a", "A", ""), (None, "", "")]

    context, page, problems = _open(browser, live_url, user, project)
    page.evaluate("() => { window.__sameDocument = true; }")
    page.screenshot(path=screenshots / "ranklab-evaluation-desktop.png", full_page=True)
    # Untrusted responses are shown as text and never run.
    expect(page.get_by_text("<script>window.__pwned='script'</script> Plain words.")).to_be_visible()
    assert page.locator(".response-body script, .response-body img").count() == 0
    left_versions = []
    for i, (key, verdict, reason) in enumerate(plan):
        form = page.locator("[data-pairwise-form]")
        assignment_id = int(form.get_attribute("data-assignment-id"))
        expect(page.locator("[data-question]")).to_be_focused()  # no side is pre-selected
        _assert_nothing_reveals_the_versions(page)
        fresh(db)
        order = db.get(Assignment, assignment_id).display_order
        assert db.get(Assignment, assignment_id).task_id == tasks[i].id
        left_versions.append(version_of[order[0]])
        if key is None:  # the last one is skipped, by keyboard too
            page.locator(".skip-box summary").focus()
            page.keyboard.press("Enter")
            page.keyboard.press("Tab")
            page.keyboard.type("I")  # "I cannot judge this topic"
            page.keyboard.press("Tab")
            page.keyboard.press("Tab")
            page.keyboard.press("Enter")
            page.wait_for_selector("[data-queue-empty]")
            break
        page.keyboard.press("Enter")  # nothing chosen yet: the browser asks for a choice, nothing is sent
        page.keyboard.press(key)
        expect(page.locator(f"input[name=verdict][value={verdict}]")).to_be_checked()
        if reason:
            page.keyboard.press("r")
            expect(page.locator("[data-reason]")).to_be_focused()
            page.keyboard.type(reason)
            page.keyboard.press("Escape")  # leaves the box; Enter submits again
        if i == 0:
            page.wait_for_timeout(1200)  # some active time to measure
        page.keyboard.press("Enter")
        page.wait_for_selector(f"[data-pairwise-form]:not([data-assignment-id='{assignment_id}'])")
        expect(page.get_by_text("Saved.")).to_be_visible()
        fresh(db)
        ranking = db.scalar(select(Ranking).where(Ranking.assignment_id == assignment_id))
        a, b = order
        assert ranking.display_order == order
        assert ranking.groups == {"A": [[a], [b]], "B": [[b], [a]], "tie": [[a, b]], "both_bad": [[a, b]]}[verdict]
        assert ranking.none_acceptable == (verdict == "both_bad") and ranking.comment == reason
        if i == 0:
            assert ranking.time_spent_ms >= 1000
    assert page.evaluate("() => window.__sameDocument") is True  # swapped in each time, never reloaded
    skipped = db.scalar(select(Assignment).where(Assignment.task_id == tasks[4].id))
    fresh(db)
    assert db.get(Assignment, skipped.id).skip_reason == "I cannot judge this topic"
    assert db.scalar(select(Ranking).where(Ranking.task_id == tasks[4].id)) is None
    assert set(left_versions[:4]) == {OLD_ID, NEW_ID}  # shown as predicted: both sides
    assert page.evaluate("() => window.__pwned") is None and problems == []
    context.close()


def test_a_mixed_queue_swaps_between_the_two_kinds_of_task_and_their_shortcuts(live_url, browser, db):
    project = make_project(db, overlap=1)
    make_eval_task(db, project)
    make_task(db, project, k=4)
    make_eval_task(db, project)
    user = make_user(db, projects=[project])
    context, page, problems = _open(browser, live_url, user, project)
    page.evaluate("() => { window.__sameDocument = true; }")
    keys, progress = page.locator("#shortcut-keys"), page.locator("[data-progress]")
    expect(keys).to_contain_text("both are bad")
    expect(page).to_have_title(re.compile(r"^Compare · "))
    expect(progress).to_contain_text("0 judged by you")

    page.keyboard.press("t")
    page.keyboard.press("Enter")
    expect(page.locator(".completion-card")).to_have_count(4)  # a ranking task, set up by ranking.js
    expect(page.locator(".completion-card").first).to_be_focused()
    expect(keys).to_contain_text("tie it with the one above")  # the panel followed (out-of-band swap)
    expect(keys).not_to_contain_text("both are bad")
    expect(page).to_have_title(re.compile(r"^Rank · "))  # so did the title and the progress line's verb
    expect(progress).to_contain_text("1 ranked by you")
    expect(page.locator("#task title")).to_have_count(0)  # htmx took the <title> out of the swapped HTML
    page.keyboard.press("Control+Enter")
    expect(page.locator("[data-pairwise-form]")).to_have_count(1)
    expect(page.locator("[data-question]")).to_be_focused()
    expect(keys).to_contain_text("both are bad")
    expect(page).to_have_title(re.compile(r"^Compare · "))
    expect(progress).to_contain_text("2 judged by you")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-queue-empty]")
    expect(page).to_have_title(re.compile(r"^Queue empty · "))
    expect(progress).to_contain_text("3 done by you")
    assert page.evaluate("() => window.__sameDocument") is True and problems == []
    fresh(db)
    assert db.scalar(select(func.count()).select_from(Ranking).where(Ranking.user_id == user.id)) == 3
    context.close()


def test_the_evaluation_page_fits_a_phone_with_the_responses_stacked(live_url, browser, db, screenshots):
    project = make_project(db, overlap=1)
    make_eval_task(db, project, texts=HOSTILE, prompt_text="Compare " + "q" * 300)
    user = make_user(db, projects=[project])
    phone = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    context, page, problems = _open(browser, live_url, user, project, **phone)

    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    a, b = (page.locator(f".response-card[data-side={side}]").bounding_box() for side in "AB")
    assert a["x"] >= 0 and a["x"] + a["width"] <= 390 and b["x"] + b["width"] <= 390
    assert b["y"] >= a["y"] + a["height"]  # stacked: B below A
    for verdict in page.locator("label.verdict").all():
        box = verdict.bounding_box()
        assert box["height"] >= 40 and box["x"] + box["width"] <= 390  # thumb-sized, on screen
    page.locator("label.verdict", has_text="B is better").tap()
    expect(page.locator("input[name=verdict][value=B]")).to_be_checked()
    page.screenshot(path=screenshots / "ranklab-evaluation-phone.png", full_page=True)
    assert page.evaluate("() => window.__pwned") is None and problems == []
    context.close()


def test_side_by_side_on_a_wide_screen(live_url, browser, db):
    project = make_project(db, overlap=1)
    make_eval_task(db, project)
    context, page, _ = _open(browser, live_url, make_user(db, projects=[project]), project)
    a, b = (page.locator(f".response-card[data-side={side}]").bounding_box() for side in "AB")
    assert abs(a["y"] - b["y"]) < 2 and b["x"] >= a["x"] + a["width"]
    assert re.fullmatch(r"Response A", page.locator(".response-card[data-side=A] h3").inner_text())
    context.close()
