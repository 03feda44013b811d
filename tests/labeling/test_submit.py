"""Submitting and skipping: what is stored, idempotency, late submissions, rejections. SQLite and Postgres."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.labeling import handout, submission
from app.labeling.errors import Conflict, InvalidSubmission, NotFound
from app.labeling.schemas import RankingIn
from app.models import Assignment, AssignmentState, PairwiseComparison, Ranking, RankingTask, utcnow
from tests.factories import make_project, make_task, make_user
from tests.labeling.helpers import fresh, next_view, snapshot, submit


def _expire(db, assignment_id: int) -> None:
    db.execute(
        update(Assignment)
        .where(Assignment.id == assignment_id)
        .values(lease_expires_at=utcnow() - timedelta(minutes=1))
    )
    db.commit()


def _sweep(db) -> int:
    freed = handout.expire_leases(db, now=utcnow())
    db.commit()
    return freed


def test_a_ranking_is_stored_with_its_pairs_flags_and_display_order(db):
    project = make_project(db, overlap=2, flags=["unsafe", "off_topic"])
    task = make_task(db, project, k=4)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    a, b, c, d = (item.id for item in view.completions)

    result, nxt = submit(
        db,
        alice,
        project,
        view,
        groups=[[c], [a, b], [d]],
        flags={d: ["unsafe", "off_topic"]},
        none_acceptable=True,
        time_spent_ms=4200,
        comment="  close call  ",
    )
    assert nxt is None and not result.late and not result.duplicate

    ranking = db.get(Ranking, result.ranking_id)
    assert ranking.groups == [[c], [a, b], [d]]
    assert ranking.flags == {str(d): ["off_topic", "unsafe"]}
    assert ranking.none_acceptable and ranking.time_spent_ms == 4200 and ranking.comment == "close call"
    assert ranking.display_order == [a, b, c, d]
    pairs = {
        (p.chosen_id, p.rejected_id, p.margin)
        for p in db.scalars(select(PairwiseComparison).where(PairwiseComparison.ranking_id == ranking.id))
    }
    assert pairs == {(c, a, 1), (c, b, 1), (c, d, 2), (a, d, 1), (b, d, 1)}  # the a=b tie gives no pair
    fresh(db)
    assignment = db.get(Assignment, view.assignment_id)
    assert assignment.state == AssignmentState.submitted and assignment.finished_at is not None
    row = db.get(RankingTask, task.id)
    assert (row.slots_taken, row.rankings_count, row.status) == (1, 1, "open")  # overlap 2: one more wanted


def test_the_task_is_complete_at_overlap(db, make_task_of_kind):
    project = make_project(db, overlap=2)
    task = make_task_of_kind(db, project)
    for _ in range(2):
        user = make_user(db, projects=[project])
        submit(db, user, project, next_view(db, user, project))
    fresh(db)
    row = db.get(RankingTask, task.id)
    assert (row.slots_taken, row.rankings_count, row.status) == (2, 2, "complete")


def test_submitting_twice_stores_one_ranking_and_answers_the_same(db, make_task_of_kind):
    project = make_project(db, overlap=1)
    make_task_of_kind(db, project)
    make_task_of_kind(db, project)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)

    first, first_next = submit(db, alice, project, view)
    before = snapshot(db)
    retry, retry_next = submit(db, alice, project, view, groups=[[c.id for c in view.completions]])  # differs: ignored
    assert retry.duplicate and (retry.id, retry.stores) == (first.id, first.stores)
    assert retry_next.assignment_id == first_next.assignment_id  # the same next task, no new lease
    assert snapshot(db) == before


def test_a_late_submission_is_accepted_while_the_lease_was_not_yet_swept(db, make_task_of_kind):
    project = make_project(db, overlap=1)
    task = make_task_of_kind(db, project)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    _expire(db, view.assignment_id)

    result, _ = submit(db, alice, project, view)
    retry, _ = submit(db, alice, project, view)
    assert result.late and retry.late and retry.duplicate  # the stored answer says it came late
    fresh(db)
    row = db.get(RankingTask, task.id)
    assert (row.slots_taken, row.rankings_count, row.status) == (1, 1, "complete")


def test_a_late_submission_after_the_sweep_takes_a_free_slot_again(db, make_task_of_kind):
    project = make_project(db, overlap=2)
    task = make_task_of_kind(db, project)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    view = next_view(db, alice, project)
    _expire(db, view.assignment_id)
    assert _sweep(db) == 1
    submit(db, bob, project, next_view(db, bob, project))  # one slot left

    result, _ = submit(db, alice, project, view)
    assert result.late
    fresh(db)
    row = db.get(RankingTask, task.id)
    assert (row.slots_taken, row.rankings_count, row.status) == (2, 2, "complete")


def test_a_late_submission_is_refused_with_a_clear_409_when_others_completed_the_task(db, make_task_of_kind):
    project = make_project(db, overlap=1)
    make_task_of_kind(db, project)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    view = next_view(db, alice, project)
    _expire(db, view.assignment_id)
    submit(db, bob, project, next_view(db, bob, project))  # bob's handout sweeps alice's lease and completes it

    before = snapshot(db)
    with pytest.raises(Conflict, match="completed by other labelers while your lease had expired") as caught:
        submit(db, alice, project, view)
    assert caught.value.status_code == 409
    db.rollback()
    assert snapshot(db) == before


def test_a_late_submission_is_refused_while_others_hold_every_slot(db, make_task_of_kind):
    project = make_project(db, overlap=1)
    make_task_of_kind(db, project)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    view = next_view(db, alice, project)
    _expire(db, view.assignment_id)
    assert next_view(db, bob, project) is not None  # bob now holds the only slot

    with pytest.raises(Conflict, match="other labelers took all its slots"):
        submit(db, alice, project, view)


@pytest.mark.parametrize(
    "groups, problem",
    [
        ("none", "must be a non-empty list"),
        ("missing", "completions .* are missing"),
        ("duplicate", "appears more than once"),
        ("foreign", "is not part of this task"),
        ("empty-group", r"ranking\[1\]: each group must be a non-empty list"),
    ],
)
def test_an_invalid_ranking_is_refused_with_422_naming_the_problem_and_stores_nothing(db, groups, problem):
    project = make_project(db, overlap=1)
    make_task(db, project)
    other = make_task(db, project)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    ids = [c.id for c in view.completions]
    groups = {
        "none": [],
        "missing": [[i] for i in ids[:-1]],
        "duplicate": [[i] for i in ids] + [[ids[0]]],
        "foreign": [[i] for i in ids] + [[other.completion_ids[0]]],
        "empty-group": [[ids[0]], [], [i for i in ids[1:]]],
    }[groups]

    before = snapshot(db)
    with pytest.raises(InvalidSubmission, match=problem) as caught:
        submit(db, alice, project, view, groups=groups)
    assert caught.value.status_code == 422
    db.rollback()
    assert snapshot(db) == before


def test_flags_must_be_the_projects_and_on_the_tasks_completions(db):
    project = make_project(db, overlap=1, flags=["unsafe"])
    make_task(db, project)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    first = view.completions[0].id
    before = snapshot(db)

    with pytest.raises(InvalidSubmission, match=rf"flags\[{first}\]: unknown flag 'rude'.*flags are unsafe"):
        submit(db, alice, project, view, flags={first: ["rude"]})
    db.rollback()
    with pytest.raises(InvalidSubmission, match="completion 999999 is not part of this task"):
        submit(db, alice, project, view, flags={999999: ["unsafe"]})
    db.rollback()
    assert snapshot(db) == before
    result, _ = submit(db, alice, project, view, flags={first: ["unsafe"], view.completions[1].id: []})
    assert db.get(Ranking, result.ranking_id).flags == {str(first): ["unsafe"]}


def test_nobody_can_submit_someone_elses_task(db, make_task_of_kind):
    project = make_project(db, overlap=2)
    make_task_of_kind(db, project)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    view = next_view(db, alice, project)
    with pytest.raises(NotFound) as caught:
        submit(db, bob, project, view)
    assert caught.value.status_code == 404


def test_skipping_frees_the_slot_and_the_task_never_comes_back_to_me(db, make_task_of_kind):
    project = make_project(db, overlap=1)
    first, second = make_task_of_kind(db, project), make_task_of_kind(db, project)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    view = next_view(db, alice, project)
    assert view.task_id == first.id

    nxt = submission.skip_task(
        db,
        user=alice,
        project=project,
        assignment_id=view.assignment_id,
        reason="I cannot judge this topic",
        sweep_every=3600,
    )
    db.commit()
    assert nxt.task_id == second.id
    skipped = db.get(Assignment, view.assignment_id)
    assert skipped.state == AssignmentState.skipped and skipped.skip_reason == "I cannot judge this topic"
    assert db.get(RankingTask, first.id).slots_taken == 0
    assert next_view(db, bob, project).task_id == first.id  # free for others

    # skipping again is harmless; submitting a skipped task is refused
    submission.skip_task(
        db, user=alice, project=project, assignment_id=view.assignment_id, reason="x", sweep_every=3600
    )
    db.commit()
    fresh(db)
    assert db.get(RankingTask, first.id).slots_taken == 1
    with pytest.raises(Conflict, match="You skipped this task"):
        submit(db, alice, project, view)


def test_skipping_an_expired_lease_frees_nothing_twice_and_submitted_tasks_cannot_be_skipped(db, make_task_of_kind):
    project = make_project(db, overlap=2)
    task = make_task_of_kind(db, project)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    view = next_view(db, alice, project)
    _expire(db, view.assignment_id)
    assert _sweep(db) == 1
    submission.skip_task(
        db, user=alice, project=project, assignment_id=view.assignment_id, reason="away", sweep_every=3600
    )
    db.commit()
    fresh(db)
    assert db.get(RankingTask, task.id).slots_taken == 0

    bob_view = next_view(db, bob, project)
    submit(db, bob, project, bob_view)
    with pytest.raises(Conflict, match="already submitted"):
        submission.skip_task(
            db, user=bob, project=project, assignment_id=bob_view.assignment_id, reason="x", sweep_every=3600
        )


def test_the_schema_refuses_malformed_input_naming_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="ranking.0.0"):
        RankingIn(ranking=[["1"]])
    with pytest.raises(ValidationError, match="time_spent_ms"):
        RankingIn(ranking=[[1]], time_spent_ms=-5)
    with pytest.raises(ValidationError, match="comment"):
        RankingIn(ranking=[[1]], comment="x" * 10_001)
