"""The active handout order (issue 16 §2): highest priority first, unscored tasks last, then the
oldest; the default order ignores priorities. SQLite and Postgres. The guarantees under the active
order run with the shared handout tests (conftest.BY_PRIORITY_TESTS, test_races.py)."""

from __future__ import annotations

import pytest

from app.models import HandoutOrder
from tests.factories import make_project, make_task, make_user
from tests.labeling.helpers import next_view, submit

PRIORITIES = [None, 0.2, 0.9, None, 0.5]


@pytest.mark.parametrize("order", [HandoutOrder.uncertainty, HandoutOrder.margin, HandoutOrder.default])
def test_a_task_with_higher_priority_is_handed_out_first(db, order):
    project = make_project(db, overlap=1)
    project.handout_order = order
    tasks = [make_task(db, project) for _ in PRIORITIES]
    for task, priority in zip(tasks, PRIORITIES, strict=True):
        task.handout_priority = priority
    db.commit()
    labelers = [make_user(db, projects=[project]) for _ in tasks]

    views = [next_view(db, labeler, project) for labeler in labelers]  # each keeps a lease
    handed = [view.task_id for view in views if view is not None]

    ids = [t.id for t in tasks]
    if order == HandoutOrder.default:
        assert handed == ids  # the oldest first: priorities play no part
    else:
        assert handed == [ids[2], ids[4], ids[1], ids[0], ids[3]]  # 0.9, 0.5, 0.2, then unscored by age


def test_one_labeler_works_down_the_priorities_and_submits_hand_out_the_next(db):
    """The submit's own handout (after_submit: SKIP LOCKED, no wait) takes the same order."""
    project = make_project(db, overlap=1)
    project.handout_order = HandoutOrder.uncertainty
    tasks = [make_task(db, project) for _ in range(4)]
    for task, priority in zip(tasks, [0.1, None, 0.7, 0.4], strict=True):
        task.handout_priority = priority
    db.commit()
    alice = make_user(db, projects=[project])

    seen, view = [], next_view(db, alice, project)
    while view is not None:
        seen.append(view.task_id)
        _result, view = submit(db, alice, project, view)
    assert seen == [tasks[2].id, tasks[3].id, tasks[0].id, tasks[1].id]
