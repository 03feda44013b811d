"""Handing out tasks, one request at a time (the races are in test_races.py). SQLite and Postgres."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, select, update

from app.labeling import handout, service
from app.labeling.errors import NotAMember, NotFound
from app.models import Assignment, AssignmentState, RankingTask, Role, utcnow
from tests.factories import make_project, make_task, make_user
from tests.labeling.helpers import fresh, next_view, submit


def _expire(db, assignment_id: int) -> None:
    db.execute(
        update(Assignment)
        .where(Assignment.id == assignment_id)
        .values(lease_expires_at=utcnow() - timedelta(minutes=1))
    )
    db.commit()


def _task(db, task_id: int) -> RankingTask:
    fresh(db)
    return db.get(RankingTask, task_id)


def test_overlap_two_gives_each_task_to_two_different_labelers_and_never_twice_to_one(db, make_task_of_kind):
    project = make_project(db, overlap=2)
    tasks = [make_task_of_kind(db, project) for _ in range(3)]
    alice, bob, carol = (make_user(db, projects=[project]) for _ in range(3))

    seen = {}
    for user in (alice, bob):
        seen[user.id] = []
        while (view := next_view(db, user, project)) is not None:
            seen[user.id].append(view.task_id)
            submit(db, user, project, view)
    assert seen[alice.id] == [t.id for t in tasks]
    assert seen[bob.id] == [t.id for t in tasks]
    assert next_view(db, carol, project) is None  # every task already has its two rankings
    for task in tasks:
        row = _task(db, task.id)
        assert (row.slots_taken, row.rankings_count, row.status) == (2, 2, "complete")


def test_a_leased_slot_is_not_handed_to_anyone_else(db, make_task_of_kind):
    project = make_project(db, overlap=1)
    first, second = make_task_of_kind(db, project), make_task_of_kind(db, project)
    alice, bob, carol = (make_user(db, projects=[project]) for _ in range(3))

    assert next_view(db, alice, project).task_id == first.id
    assert next_view(db, bob, project).task_id == second.id
    assert next_view(db, carol, project) is None
    assert _task(db, first.id).slots_taken == 1 and _task(db, second.id).slots_taken == 1


def test_refreshing_returns_the_same_task_and_burns_no_slot(db):
    project = make_project(db, overlap=1)
    make_task(db, project, k=6)
    make_task(db, project)
    alice = make_user(db, projects=[project])

    first = next_view(db, alice, project)
    again = next_view(db, alice, project)
    assert again.assignment_id == first.assignment_id
    assert [c.id for c in again.completions] == [c.id for c in first.completions]  # same shuffled order
    assert _task(db, first.task_id).slots_taken == 1
    assert (
        db.scalar(select(Assignment.id).where(Assignment.user_id == alice.id).order_by(Assignment.id.desc()))
        == first.assignment_id
    )


def test_display_order_is_a_recorded_permutation_of_the_task(db):
    project = make_project(db, overlap=1)
    task = make_task(db, project, k=9)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    shown = [c.id for c in view.completions]
    assert sorted(shown) == sorted(task.completion_ids)
    assert db.get(Assignment, view.assignment_id).display_order == shown
    assert [c.letter for c in view.completions] == list("ABCDEFGHI")
    assert handout.display_order(task.completion_ids, task_id=task.id, user_id=alice.id) == shown


def test_an_expired_lease_frees_the_slot_for_another_labeler(db, make_task_of_kind):
    project = make_project(db, overlap=1, lease_minutes=30)
    task = make_task_of_kind(db, project)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])

    held = next_view(db, alice, project)
    assert next_view(db, bob, project) is None
    _expire(db, held.assignment_id)

    taken_over = next_view(db, bob, project)  # nothing free → the sweep runs → the slot is free again
    assert taken_over is not None and taken_over.task_id == task.id
    fresh(db)
    assert db.get(Assignment, held.assignment_id).state == AssignmentState.expired
    assert _task(db, task.id).slots_taken == 1
    lease = db.get(Assignment, taken_over.assignment_id)
    assert timedelta(minutes=29) < lease.lease_expires_at - utcnow() <= timedelta(minutes=30)


def test_the_periodic_sweep_frees_expired_leases_even_when_tasks_are_left(db, make_task_of_kind):
    project = make_project(db, overlap=1)
    make_task_of_kind(db, project)
    make_task_of_kind(db, project)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    held = next_view(db, alice, project)
    _expire(db, held.assignment_id)

    view = next_view(db, bob, project, sweep_every=0)  # due: sweeps first, so bob gets the oldest task back
    assert view.task_id == held.task_id


def test_own_expired_but_unswept_lease_is_renewed_on_refresh(db, make_task_of_kind):
    project = make_project(db, overlap=1, lease_minutes=10)
    make_task_of_kind(db, project)
    make_task_of_kind(db, project)
    alice = make_user(db, projects=[project])
    held = next_view(db, alice, project)
    _expire(db, held.assignment_id)

    again = next_view(db, alice, project)
    assert again.assignment_id == held.assignment_id
    assert again.lease_expires_at > utcnow() + timedelta(minutes=9)
    assert _task(db, held.task_id).slots_taken == 1


def test_a_swept_lease_is_never_handed_back_to_the_same_labeler(db, make_task_of_kind):
    project = make_project(db, overlap=2)
    task = make_task_of_kind(db, project)
    alice = make_user(db, projects=[project])
    held = next_view(db, alice, project)
    _expire(db, held.assignment_id)
    assert handout.expire_leases(db, now=utcnow()) == 1
    db.commit()

    assert next_view(db, alice, project) is None  # her one chance at this task is used up
    assert _task(db, task.id).slots_taken == 0


def test_labelers_only_label_projects_they_belong_to_and_admins_label_all(db):
    mine, other = make_project(db), make_project(db)
    alice = make_user(db, projects=[mine])
    admin = make_user(db, role=Role.admin)

    assert service.get_project_for_labeler(db, user=alice, project_id=mine.id).id == mine.id
    with pytest.raises(NotAMember, match="not a member"):
        service.get_project_for_labeler(db, user=alice, project_id=other.id)
    with pytest.raises(NotFound):
        service.get_project_for_labeler(db, user=alice, project_id=other.id + 1000)
    assert service.get_project_for_labeler(db, user=admin, project_id=other.id).id == other.id

    assert [p.id for p, _ in service.list_projects_for(db, user=alice)] == [mine.id]
    assert {p.id for p, _ in service.list_projects_for(db, user=admin)} == {mine.id, other.id}


def test_progress_counts_my_rankings_and_what_is_left_for_me(db):
    project = make_project(db, overlap=1)
    for _ in range(3):
        make_task(db, project)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    _, alice_next = submit(db, alice, project, next_view(db, alice, project))  # submitting leases her the 2nd
    assert service.progress(db, user_id=alice.id, project=project, holding_task=True) == service.Progress(1, 2)
    ((_, queue_progress),) = service.list_projects_for(db, user=bob)
    assert queue_progress == service.Progress(done=0, remaining=1)  # the 3rd; alice holds the 2nd

    next_view(db, bob, project)
    assert service.progress(db, user_id=alice.id, project=project, holding_task=True) == service.Progress(1, 1)
    ((_, queue_progress),) = service.list_projects_for(db, user=bob)
    assert queue_progress == service.Progress(done=0, remaining=1)  # now the one he holds


def test_what_is_left_is_counted_among_the_oldest_open_tasks_and_marked_as_a_lower_bound(db):
    project = make_project(db, overlap=2)
    for _ in range(service.REMAINING_CAP + 3):
        make_task(db, project)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    for _ in range(3):  # the tasks she ranked stay open for a second labeler
        _, view = submit(db, alice, project, view)

    # She had 4 of the 200 oldest open tasks (3 ranked, 1 held): 196 never had + the one she holds,
    # and the window was full, so the page says "197+" although 200 are left for her.
    expected = service.Progress(done=3, remaining=service.REMAINING_CAP - 3, capped=True)
    assert service.progress_with(db, view, user_id=alice.id, project=project) == expected  # read with the lease
    assert service.progress(db, user_id=alice.id, project=project, holding_task=True) == expected
    assert service.open_task_page(db, user=alice, project_id=project.id, sweep_every=3600).progress == expected


def test_retired_and_other_projects_tasks_are_never_handed_out(db, make_task_of_kind):
    project, other = make_project(db, overlap=1), make_project(db, overlap=1)
    retired = make_task_of_kind(db, project)
    db.execute(update(RankingTask).where(RankingTask.id == retired.id).values(status="retired"))
    db.commit()
    make_task(db, other)
    alice = make_user(db, projects=[project, other])
    assert next_view(db, alice, project) is None


def test_a_handout_is_a_handful_of_indexed_statements(db):
    project = make_project(db, overlap=1)
    for _ in range(20):
        make_task(db, project, k=9)
    alice = make_user(db, projects=[project])
    statements = []
    engine = db.get_bind()
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        next_view(db, alice, project)  # new lease
        first = len(statements)
        next_view(db, alice, project)  # same lease back
        again = len(statements) - first
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    # lock, held-lease check, pick, completion ids, insert, slot bump, view (2) (+ BEGIN/COMMIT on SQLite)
    assert first <= 11, statements
    assert again <= 6, statements[first:]
