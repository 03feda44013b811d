"""Fixtures of the labeling tests."""

from __future__ import annotations

import pytest

from tests.factories import make_eval_task, make_task
from tests.labeling.helpers import make_demonstration_task, make_review_task

TASK_KINDS = {
    "ranking": make_task,
    "pairwise_eval": make_eval_task,
    "demonstration": make_demonstration_task,
    "demonstration_review": make_review_task,
}


@pytest.fixture(params=sorted(TASK_KINDS))
def make_task_of_kind(request):
    """`make(db, project)` for each task kind in turn: the handout guarantees (overlap, leases,
    never twice, idempotent and late submits) are the same tests for every kind, on both databases.
    helpers.submit answers each kind as its page does (a verdict, a demonstration, a review)."""
    return TASK_KINDS[request.param]
