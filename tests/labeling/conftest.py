"""Fixtures of the labeling tests."""

from __future__ import annotations

import pytest

from app.models import HandoutOrder
from tests.factories import make_eval_task, make_task
from tests.labeling.helpers import make_demonstration_task, make_review_task


def make_prioritized_task(db, project):
    """A ranking task in a project handed out by priority (issue 16 §2). Priorities fall as ids
    rise, so the expected order is the same as the default's while every pick goes through the
    prioritised statement (test_handout_order.py shows priority beating age)."""
    project.handout_order = HandoutOrder.uncertainty
    task = make_task(db, project)
    task.handout_priority = 1.0 / task.id
    db.commit()
    return task


TASK_KINDS = {
    "ranking": make_task,
    "ranking_by_priority": make_prioritized_task,
    "pairwise_eval": make_eval_task,
    "demonstration": make_demonstration_task,
    "demonstration_review": make_review_task,
}


BY_PRIORITY_TESTS = {
    "test_overlap_two_gives_each_task_to_two_different_labelers_and_never_twice_to_one",
    "test_a_leased_slot_is_not_handed_to_anyone_else",
    "test_an_expired_lease_frees_the_slot_for_another_labeler",
    "test_a_swept_lease_is_never_handed_back_to_the_same_labeler",
    "test_submitting_twice_stores_one_ranking_and_answers_the_same",
    "test_a_late_submission_is_refused_with_a_clear_409_when_others_completed_the_task",
}
"""The core guarantees (overlap, leases, never twice, idempotent submit, the late-submit rule) that
also run under an active order: the other shared tests exercise no code the order changes."""


def pytest_collection_modifyitems(config, items):
    """ranking_by_priority only on BY_PRIORITY_TESTS (deselected elsewhere, not skipped)."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        by_priority = params.get("make_task_of_kind") == "ranking_by_priority"
        (drop if by_priority and item.originalname not in BY_PRIORITY_TESTS else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=sorted(TASK_KINDS))
def make_task_of_kind(request):
    """`make(db, project)` for each task kind in turn: the handout guarantees (overlap, leases,
    never twice, idempotent and late submits) are the same tests for every kind, on both databases,
    and for a ranking task under an active handout order (ranking_by_priority).
    helpers.submit answers each kind as its page does (a verdict, a demonstration, a review)."""
    return TASK_KINDS[request.param]
