"""Blind pairwise evaluation tasks in the labeling service: sides shuffled per labeler and
recorded, verdicts stored as ordinary rankings, mixed queues, refusals that name the field.
SQLite and Postgres. (The handout guarantees are the parametrized tests of test_handout.py,
test_submit.py and test_races.py; the pages and the JSON API are in test_evaluation_routes.py.)"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.labeling import handout, submission, task_types
from app.labeling.errors import InvalidSubmission
from app.labeling.schemas import RankingIn, SubmissionIn
from app.labeling.task_types import FormInput
from app.models import Assignment, Completion, PairwiseComparison, Ranking
from tests.factories import make_eval_task, make_project, make_task, make_user
from tests.labeling.helpers import fresh, make_labelers, next_view, snapshot, submit


def _send(db, user, project, view, data):
    result = submission.submit_answer(
        db, user=user, project=project, assignment_id=view.assignment_id, data=data, sweep_every=3600
    )
    db.commit()
    return result


def test_two_responses_are_shuffled_per_labeler_and_the_order_shown_is_recorded(db):
    """Two labelers of one task see different left/right sides often enough: over 24 labelers both
    orders occur (all 24 alike by chance: 2^-23), and every labeler's order is the assignment's."""
    project = make_project(db, overlap=24)
    task = make_eval_task(db, project)
    labelers = make_labelers(db, project, 24)
    shown = {}
    for user in labelers:
        view = next_view(db, user, project)
        assert view.task_id == task.id and view.kind == "pairwise_eval"
        assert [c.letter for c in view.completions] == ["A", "B"]
        shown[user.id] = [c.id for c in view.completions]
        assert db.get(Assignment, view.assignment_id).display_order == shown[user.id]
        # the handout's one shuffle key, computed in SQL on Postgres and in Python on SQLite
        assert handout.display_order(task.completion_ids, task_id=task.id, user_id=user.id) == shown[user.id]
        assert next_view(db, user, project).completions == view.completions  # a refresh keeps the sides
    assert sorted(map(sorted, shown.values())) == [sorted(task.completion_ids)] * 24
    assert {tuple(order) for order in shown.values()} == {tuple(task.completion_ids), tuple(task.completion_ids[::-1])}


@pytest.mark.parametrize(
    "verdict, groups, none_acceptable, pairs",
    [
        ("A", "a>b", False, {("a", "b")}),
        ("B", "b>a", False, {("b", "a")}),
        ("tie", "a=b", False, set()),
        ("both_bad", "a=b", True, set()),
    ],
)
def test_a_verdict_is_stored_as_a_ranking_of_the_sides_shown(db, verdict, groups, none_acceptable, pairs):
    project = make_project(db, overlap=1)
    make_eval_task(db, project)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    a, b = (c.id for c in view.completions)  # left (A), right (B) as this labeler saw them
    names = {"a": a, "b": b}

    result, nxt = submit(db, alice, project, view, verdict=verdict, comment="  B rambles ", time_spent_ms=3100)
    assert nxt is None and not result.duplicate

    ranking = db.get(Ranking, result.ranking_id)
    expected = {"a>b": [[a], [b]], "b>a": [[b], [a]], "a=b": [[a, b]]}[groups]
    assert ranking.groups == expected and ranking.none_acceptable is none_acceptable
    assert ranking.display_order == [a, b] and ranking.comment == "B rambles" and ranking.time_spent_ms == 3100
    assert task_types.verdict_of(ranking.groups, ranking.display_order, none_acceptable=none_acceptable) == verdict
    stored = {
        (p.chosen_id, p.rejected_id)
        for p in db.scalars(select(PairwiseComparison).where(PairwiseComparison.ranking_id == ranking.id))
    }
    assert stored == {(names[x], names[y]) for x, y in pairs}


def test_the_winning_version_follows_the_side_not_the_letter(db):
    """Two labelers both choose "A" but were shown different sides: each vote goes to the version
    that was on their left."""
    project = make_project(db, overlap=24)
    task = make_eval_task(db, project)
    version_of = dict(
        db.execute(
            select(Completion.id, Completion.model_version_id).where(Completion.id.in_(task.completion_ids))
        ).all()
    )
    winners = set()
    for user in make_labelers(db, project, 24):
        view = next_view(db, user, project)
        result, _ = submit(db, user, project, view, verdict="A")
        ranking = db.get(Ranking, result.ranking_id)
        assert ranking.groups[0] == [view.completions[0].id]
        winners.add(version_of[ranking.groups[0][0]])
    assert winners == set(version_of.values())  # both versions won some "A" votes


def test_a_mixed_queue_hands_out_ranking_and_evaluation_tasks_alike(db):
    project = make_project(db, overlap=2)
    tasks = [
        make_task(db, project),
        make_eval_task(db, project),
        make_task(db, project, k=5),
        make_eval_task(db, project),
    ]
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    for user in (alice, bob):
        kinds = []
        view = next_view(db, user, project)
        while view is not None:
            kinds.append((view.task_id, view.kind, len(view.completions)))
            _, view = submit(db, user, project, view)
        assert kinds == [
            (tasks[0].id, "ranking", 4),
            (tasks[1].id, "pairwise_eval", 2),
            (tasks[2].id, "ranking", 5),
            (tasks[3].id, "pairwise_eval", 2),
        ]
    fresh(db)
    assert sorted(db.scalars(select(Ranking.task_id))) == sorted([t.id for t in tasks] * 2)


def test_internal_callers_may_still_store_an_evaluation_as_ranking_groups(db):
    # The labeler's channels (form, JSON API) take only a verdict; a RankingIn is ours (imports, tests).
    project = make_project(db, overlap=1)
    make_eval_task(db, project)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    a, b = (c.id for c in view.completions)
    result, _ = _send(db, alice, project, view, RankingIn(ranking=[[b], [a]], comment="why"))
    assert db.get(Ranking, result.ranking_id).groups == [[b], [a]]


@pytest.mark.parametrize(
    "kind, data, problem",
    [
        ("ranking", SubmissionIn(verdict="A"), "verdict: this is a ranking task"),
        ("ranking", FormInput({"verdict": "A", "ranking": ""}), "verdict: this is a ranking task"),
        ("ranking", SubmissionIn(), "ranking: missing"),
        ("pairwise_eval", SubmissionIn(), "verdict: missing"),
        ("pairwise_eval", FormInput({"verdict": "C"}), "verdict: Input should be 'A', 'B', 'tie' or 'both_bad'"),
        ("pairwise_eval", FormInput({"verdict": ""}), "verdict: missing"),
        ("pairwise_eval", FormInput({"verdict": "A", "time_spent_ms": "soon"}), "time_spent_ms: Input should be"),
        ("pairwise_eval", FormInput({"verdict": "A"}, ["1:unsafe"]), "flag: an evaluation task takes no flags"),
        ("pairwise_eval", SubmissionIn(verdict="A", ranking=[[1]]), "ranking: a blind comparison takes no ranking"),
        ("pairwise_eval", "ids-as-groups", "ranking: a blind comparison takes no ranking.*send a `verdict`"),
        ("pairwise_eval", FormInput({"ranking": "[[1], [2]]"}), "ranking: a blind comparison takes no ranking"),
        ("pairwise_eval", SubmissionIn(verdict="tie", none_acceptable=True), "none_acceptable: .*both_bad"),
        ("pairwise_eval", SubmissionIn(verdict="B", flags={1: ["unsafe"]}), "flags: an evaluation task takes no flags"),
        ("pairwise_eval", "flags-on-groups", "flags: a blind comparison task takes no flags"),
    ],
)
def test_a_judgment_the_task_does_not_take_is_a_422_naming_the_field_and_stores_nothing(db, kind, data, problem):
    project = make_project(db, overlap=1, flags=["unsafe"])
    (make_task if kind == "ranking" else make_eval_task)(db, project)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    if data == "flags-on-groups":
        data = RankingIn(ranking=[[c.id] for c in view.completions], flags={view.completions[0].id: ["unsafe"]})
    if data == "ids-as-groups":  # valid groups of the task's own completions, as the JSON API would send them
        data = SubmissionIn(ranking=[[c.id] for c in view.completions])
    before = snapshot(db)
    with pytest.raises(InvalidSubmission, match=problem) as caught:
        _send(db, alice, project, view, data)
    assert caught.value.status_code == 422
    db.rollback()
    assert snapshot(db) == before


def test_a_verdict_retry_is_answered_with_the_stored_judgment(db):
    project = make_project(db, overlap=1)
    make_eval_task(db, project)
    make_eval_task(db, project)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    first, first_next = submit(db, alice, project, view, verdict="tie")
    before = snapshot(db)
    retry, retry_next = submit(db, alice, project, view, verdict="B")  # differs: the stored one stands
    assert retry.duplicate and retry.ranking_id == first.ranking_id
    assert retry_next.assignment_id == first_next.assignment_id
    assert snapshot(db) == before
    assert db.get(Ranking, first.ranking_id).groups == [[c.id for c in view.completions]]


def test_every_kind_of_task_has_a_type(db):
    assert set(task_types.TASK_TYPES) == {
        "ranking",
        "pairwise_eval",
        "demonstration",
        "demonstration_review",
        *("pairwise", "likert", "good_bad", "multi_aspect"),  # the feedback forms (issue 15)
    }
    assert task_types.task_type("pairwise_eval").completions == (2, 2)
    with pytest.raises(LookupError, match="unknown task kind 'poll'"):
        task_types.task_type("poll")
