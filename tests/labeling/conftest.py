"""Fixtures of the labeling tests."""

from __future__ import annotations

import pytest

from tests.factories import make_eval_task, make_task

TASK_KINDS = {"ranking": make_task, "pairwise_eval": make_eval_task}


@pytest.fixture(params=sorted(TASK_KINDS))
def make_task_of_kind(request):
    """`make(db, project)` for each task kind in turn: the handout guarantees (overlap, leases,
    never twice, idempotent and late submits) are the same tests for every kind, on both databases.
    helpers.submit answers a pairwise evaluation with a verdict, as its page does."""
    return TASK_KINDS[request.param]
