# ruff: noqa: E501 (the tables of bad answers read best one case per line)
"""Submitting each feedback form (issue 15) through the shared submit path: what is stored, and
bad answers refused with a 422 naming the field, storing nothing. SQLite and Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.labeling import feedback_read, submission
from app.labeling.errors import InvalidSubmission
from app.labeling.judgments import verdict_of
from app.labeling.schemas import FormInput, SubmissionIn
from app.models import Assignment, Feedback, FeedbackRating, Ranking, RankingTask
from tests.factories import make_project, make_task, make_user
from tests.labeling.helpers import FORM_SETTINGS, fresh, make_form_task, next_view, snapshot


def _submit(db, user, project, view, data):
    result, _next = submission.submit_answer(
        db, user=user, project=project, assignment_id=view.assignment_id, data=data, sweep_every=3600
    )
    db.commit()
    return result


def _ratings(db, feedback_id):
    rows = db.scalars(select(FeedbackRating).where(FeedbackRating.feedback_id == feedback_id))
    return {(r.completion_id, r.aspect): (r.value, r.critique) for r in rows}


def test_a_likert_answer_is_stored_with_its_settings_critiques_and_time(db):
    project = make_project(db, overlap=2)
    task = make_form_task(db, project, "likert")
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    a, b, c = (item.id for item in view.completions)
    data = SubmissionIn(
        ratings=[{"completion_id": b, "value": 5}, {"completion_id": a, "value": 1}, {"completion_id": c, "value": 3}],
        critiques={str(a): "  Invents a date.\r\nTwice. ", str(c): "   "},
        time_spent_ms=5100,
        comment=" hard one ",
    )
    result = _submit(db, alice, project, view, data)
    assert result.stores == "feedback" and result.ranking_id is None and not result.duplicate

    feedback = db.get(Feedback, result.id)
    assert (feedback.form, feedback.time_spent_ms, feedback.comment, feedback.late) == (
        "likert",
        5100,
        "hard one",
        False,
    )
    assert feedback.settings == FORM_SETTINGS["likert"] and feedback.display_order == [a, b, c]
    assert _ratings(db, feedback.id) == {
        (a, ""): (1, "Invents a date.\nTwice."),
        (b, ""): (5, None),
        (c, ""): (3, None),
    }
    fresh(db)
    assert db.get(Assignment, view.assignment_id).state == "submitted"
    row = db.get(RankingTask, task.id)
    assert (row.slots_taken, row.rankings_count, row.status) == (1, 1, "open")
    assert db.scalar(select(Ranking.id)) is None  # a rating is no ranking

    judgment = feedback_read.load_feedback(db, project_id=project.id)[0]
    assert judgment.prompt_id == task.prompt_id and judgment.critiques == {a: "Invents a date.\nTwice."}
    scores = feedback_read.scores(judgment)
    assert scores == {a: 0.0, b: 1.0, c: 0.5}
    assert feedback_read.groups_from_scores(scores) == [[b], [c], [a]]
    assert sorted(feedback_read.pairs_from_scores(scores)) == sorted([(b, a), (b, c), (c, a)])


def test_good_bad_takes_words_or_numbers_and_gives_kto_labels(db):
    project = make_project(db)
    make_form_task(db, project, "good_bad")
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    a, b, c = (item.id for item in view.completions)
    ratings = [
        {"completion_id": a, "value": "good"},
        {"completion_id": b, "value": 0},
        {"completion_id": c, "value": 1},
    ]
    result = _submit(db, alice, project, view, SubmissionIn(ratings=ratings))
    assert _ratings(db, result.id) == {(a, ""): (1, None), (b, ""): (0, None), (c, ""): (1, None)}
    judgment = feedback_read.load_feedback(db, project_id=project.id, form="good_bad")[0]
    assert feedback_read.kto_labels(judgment) == {a: True, b: False, c: True}
    pairs = feedback_read.pairs_from_scores(feedback_read.scores(judgment))
    assert sorted(pairs) == sorted([(a, b), (c, b)])  # good > bad; two goods give no pair


def test_a_multi_aspect_answer_stores_every_aspect_and_the_overall_ranking_as_levels(db):
    project = make_project(db)
    make_form_task(db, project, "multi_aspect")
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    a, b, c = (item.id for item in view.completions)
    data = SubmissionIn(
        ratings=[{"completion_id": cid, "aspect": "helpfulness", "value": v} for cid, v in ((a, 5), (b, 2), (c, 2))],
        aspect_rankings={"honesty": [[c], [a, b]]},
        ranking=[[a], [c], [b]],
        critiques={str(b): "rude"},
    )
    result = _submit(db, alice, project, view, data)
    assert _ratings(db, result.id) == {
        (a, ""): (0, None), (c, ""): (1, None), (b, ""): (2, "rude"),
        (a, "helpfulness"): (5, None), (b, "helpfulness"): (2, None), (c, "helpfulness"): (2, None),
        (c, "honesty"): (0, None), (a, "honesty"): (1, None), (b, "honesty"): (1, None),
    }  # fmt: skip
    judgment = feedback_read.load_feedback(db, project_id=project.id)[0]
    assert feedback_read.scores(judgment, "honesty") == {c: 1.0, a: 0.0, b: 0.0}
    assert feedback_read.scores(judgment) == {a: 1.0, c: 0.5, b: 0.0}  # the overall ranking's levels
    mixed = feedback_read.scores(judgment, {"helpfulness": 3, "honesty": 1})
    # helpfulness (v-1)/4: a 1, b and c 0.25; honesty: c 1, a and b 0; weighted 3:1
    assert mixed == pytest.approx({a: 0.75, b: 0.1875, c: 0.4375})
    assert feedback_read.groups_from_scores(feedback_read.scores(judgment, "helpfulness")) == [[a], sorted([b, c])]


@pytest.mark.parametrize(
    ("verdict", "groups", "none_acceptable"),
    [("A", "ab", False), ("B", "ba", False), ("tie", "a=b", False), ("both_bad", "a=b", True)],
)
def test_a_pairwise_verdict_is_stored_as_a_ranking_of_the_sides_shown(db, verdict, groups, none_acceptable):
    project = make_project(db)
    make_form_task(db, project, "pairwise")
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    a, b = (item.id for item in view.completions)  # A, B in alice's shuffled order
    data = SubmissionIn(verdict=verdict, critiques={"B": "too long"}, comment="why", time_spent_ms=800)
    result = _submit(db, alice, project, view, data)
    ranking = db.get(Ranking, result.ranking_id)
    assert ranking.groups == {"ab": [[a], [b]], "ba": [[b], [a]], "a=b": [[a, b]]}[groups]
    assert ranking.none_acceptable is none_acceptable and ranking.display_order == [a, b]
    assert ranking.critiques == {str(b): "too long"} and ranking.comment == "why" and ranking.time_spent_ms == 800
    assert verdict_of(ranking.groups, ranking.display_order, none_acceptable=ranking.none_acceptable) == verdict


def test_pairwise_sides_are_shuffled_per_labeler_and_recorded(db):
    project = make_project(db, overlap=8)
    task = make_form_task(db, project, "pairwise")
    orders = set()
    for _ in range(8):
        labeler = make_user(db, projects=[project])
        view = next_view(db, labeler, project)
        _submit(db, labeler, project, view, SubmissionIn(verdict="A"))
        orders.add(tuple(c.id for c in view.completions))
    assert orders == {tuple(task.completion_ids), tuple(reversed(task.completion_ids))}
    stored = {tuple(order) for order in db.scalars(select(Ranking.display_order))}
    assert stored == orders


def test_a_ranking_takes_critiques_by_completion_id(db):
    project = make_project(db)
    make_task(db, project, k=4)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    ids = [c.id for c in view.completions]
    data = SubmissionIn(ranking=[[i] for i in ids], critiques={str(ids[2]): "wrong unit"})
    result = _submit(db, alice, project, view, data)
    assert db.get(Ranking, result.ranking_id).critiques == {str(ids[2]): "wrong unit"}


def _likert(view, **change):
    ratings = [{"completion_id": c.id, "value": 3} for c in view.completions]
    return ratings


BAD_ANSWERS = {
    "value too high": ("likert", lambda v, ids: {"ratings": _set(_likert(v), 2, value=9)}, r"ratings\[2\]\.value: must be 1–5, got 9"),
    "value zero": ("likert", lambda v, ids: {"ratings": _set(_likert(v), 0, value=0)}, r"ratings\[0\]\.value: must be 1–5"),
    "a word on likert": ("likert", lambda v, ids: {"ratings": _set(_likert(v), 1, value="good")}, r"ratings\[1\]\.value: must be 1–5"),
    "foreign completion": ("likert", lambda v, ids: {"ratings": _set(_likert(v), 1, completion_id=99999)}, r"ratings\[1\]\.completion_id: completion 99999 is not part of this task"),
    "missing rating": ("likert", lambda v, ids: {"ratings": _likert(v)[:2]}, r"ratings: completion {c} has no rating"),
    "rated twice": ("likert", lambda v, ids: {"ratings": _likert(v) + _likert(v)[:1]}, r"ratings\[3\]: completion \d+ is rated twice"),
    "aspect on likert": ("likert", lambda v, ids: {"ratings": _set(_likert(v), 0, aspect="honesty")}, r"ratings\[0\]\.aspect: a likert task rates each completion once"),
    "no ratings": ("likert", lambda v, ids: {}, "ratings: completion"),
    "ranking on likert": ("likert", lambda v, ids: {"ranking": [ids], "ratings": _likert(v)}, "ranking: a rating task takes no `ranking`"),
    "foreign critique": ("likert", lambda v, ids: {"ratings": _likert(v), "critiques": {"99999": "x"}}, r"critiques\.99999: not a completion of this task"),
    "good_bad number": ("good_bad", lambda v, ids: {"ratings": _set(_likert(v), 0, value=5)}, r'ratings\[0\]\.value: must be "good" or "bad"'),
    "unknown aspect": ("multi_aspect", lambda v, ids: _multi(ids, aspect="speed"), r"ratings\[0\]\.aspect: 'speed' is not one of this project's aspects \(helpfulness\)"),
    "ranked aspect rated": ("multi_aspect", lambda v, ids: _multi(ids, aspect="honesty"), r"ratings\[0\]\.aspect: 'honesty' is ranked, not rated; send it in aspect_rankings"),
    "aspect missing": ("multi_aspect", lambda v, ids: _multi(ids, aspect=None), r"ratings\[0\]\.aspect: missing"),
    "aspect rating missing": ("multi_aspect", lambda v, ids: {**_multi(ids), "ratings": _multi(ids)["ratings"][1:]}, "has no `helpfulness` rating"),
    "aspect ranking missing": ("multi_aspect", lambda v, ids: {**_multi(ids), "aspect_rankings": {}}, r"aspect_rankings\.honesty: missing"),
    "aspect ranking partial": ("multi_aspect", lambda v, ids: {**_multi(ids), "aspect_rankings": {"honesty": [ids[:2]]}}, r"aspect_rankings\.honesty: completions \[\d+\] are missing"),
    "rated aspect ranked": ("multi_aspect", lambda v, ids: {**_multi(ids), "aspect_rankings": {"honesty": [ids], "helpfulness": [ids]}}, r"aspect_rankings\.helpfulness: this aspect is rated, not ranked"),
    "overall missing": ("multi_aspect", lambda v, ids: {**_multi(ids), "ranking": None}, "ranking: missing; this project also asks for an overall ranking"),
    "verdict on multi": ("multi_aspect", lambda v, ids: {**_multi(ids), "verdict": "A"}, "verdict: a multi-aspect rating task takes no `verdict`"),
    "pairwise side C": ("pairwise", lambda v, ids: {"verdict": "A", "critiques": {"C": "x"}}, 'critiques.C: a pairwise task names its responses "A" and "B"'),
    "pairwise flags": ("pairwise", lambda v, ids: {"verdict": "A", "flags": {ids[0]: ["unsafe"]}}, "flags: a pairwise task takes no flags"),
    "pairwise no verdict": ("pairwise", lambda v, ids: {}, "verdict: missing"),
    "ranking foreign critique": ("ranking", lambda v, ids: {"ranking": [ids], "critiques": {"99999": "x"}}, r"critiques\.99999: completion 99999 is not part of this task"),
    "ranking side critique": ("ranking", lambda v, ids: {"ranking": [ids], "critiques": {"A": "x"}}, r"critiques\.A: not a completion id"),
}  # fmt: skip


def _set(ratings, index, **fields):
    ratings[index] = {**ratings[index], **fields}
    return ratings


def _multi(ids, aspect="helpfulness"):
    return {
        "ratings": [{"completion_id": cid, "value": 4, **({"aspect": aspect} if aspect else {})} for cid in ids],
        "aspect_rankings": {"honesty": [ids]},
        "ranking": [[cid] for cid in ids],
    }


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_a_bad_answer_is_refused_with_422_naming_the_field_and_stores_nothing(db, case):
    kind, answer, problem = BAD_ANSWERS[case]
    project = make_project(db)
    if kind == "ranking":
        make_task(db, project, k=4)
    else:
        make_form_task(db, project, kind)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    ids = [c.id for c in view.completions]
    before = snapshot(db)
    with pytest.raises(InvalidSubmission, match=problem.replace("{c}", str(ids[-1]))) as caught:
        _submit(db, alice, project, view, SubmissionIn(**answer(view, ids)))
    assert caught.value.status_code == 422
    db.rollback()
    assert snapshot(db) == before


def test_the_page_form_of_each_rating_form_is_parsed_like_the_json_api(db):
    project = make_project(db)
    make_form_task(db, project, "multi_aspect")
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    a, b, c = (item.id for item in view.completions)
    fields = {
        **{f"rating-{cid}-helpfulness": "4" for cid in (a, b, c)},
        f"place-{a}-honesty": "2", f"place-{b}-honesty": "1", f"place-{c}-honesty": "2",
        f"place-{a}": "1", f"place-{b}": "3", f"place-{c}": "2",
        f"critique-{c}": "Off topic.\r\n", "comment": "", "time_spent_ms": "1200",
    }  # fmt: skip
    result = _submit(db, alice, project, view, FormInput(fields))
    stored = _ratings(db, result.id)
    assert {aspect: stored[(cid, aspect)][0] for cid in (a,) for aspect in ("", "helpfulness", "honesty")} == {
        "": 0,
        "helpfulness": 4,
        "honesty": 1,
    }
    assert stored[(b, "honesty")] == (0, None) and stored[(c, "")] == (1, "Off topic.")
    assert db.get(Feedback, result.id).time_spent_ms == 1200


@pytest.mark.parametrize(
    ("kind", "fields", "problem"),
    [
        ("likert", {"rating-{a}": "6", "rating-{b}": "1", "rating-{c}": "2"}, r"ratings\[0\]\.value: must be 1–5, got 6"),
        ("likert", {"rating-{a}": "x", "rating-{b}": "1", "rating-{c}": "2"}, r"ratings\[0\]\.value: must be 1–5, got 'x'"),
        ("likert", {"rating-{a}": "5", "rating-{b}": "1"}, "ratings: completion {c} has no rating"),
        ("good_bad", {"rating-{a}": "good", "rating-{b}": "meh", "rating-{c}": "bad"}, r"ratings\[1\]\.value: must be"),
        ("good_bad", {"rating-{a}": "good", "rating-{b}": "bad", "rating-{c}": "bad", "verdict": "A"}, "verdict: a good or bad task takes no `verdict`"),
        ("multi_aspect", {"place-{a}-honesty": "first"}, r"aspect_rankings\.honesty: place-{a}-honesty='first' is not"),
    ],
)  # fmt: skip
def test_a_bad_page_form_is_refused_naming_the_field(db, kind, fields, problem):
    project = make_project(db)
    make_form_task(db, project, kind)
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    a, b, c = (item.id for item in view.completions)

    def fill(text):
        return text.replace("{a}", str(a)).replace("{b}", str(b)).replace("{c}", str(c))

    with pytest.raises(InvalidSubmission, match=fill(problem)):
        _submit(db, alice, project, view, FormInput({fill(k): v for k, v in fields.items()}))


def test_likert_and_good_bad_page_forms_store_their_ratings(db):
    project = make_project(db)
    make_form_task(db, project, "good_bad")
    alice = make_user(db, projects=[project])
    view = next_view(db, alice, project)
    a, b, c = (item.id for item in view.completions)
    fields = {f"rating-{a}": "bad", f"rating-{b}": "good", f"rating-{c}": "good", f"critique-{a}": "unsafe"}
    result = _submit(db, alice, project, view, FormInput(fields))
    assert _ratings(db, result.id) == {(a, ""): (0, "unsafe"), (b, ""): (1, None), (c, ""): (1, None)}
