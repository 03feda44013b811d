"""Judges on the rating forms (Likert, good/bad), on a real database (SQLite and Postgres): the
endpoint judge against the real OpenAI-compatible test server (strict parsing, asked again when
unparseable), the local judges on the tiny model; stored through the form's own recorder, compare
mode beside humans (nothing counted, left out of training data) and slot mode (counted)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app.judges import agreement as judge_agreement
from app.labeling import feedback_read, submission
from app.labeling.schemas import SubmissionIn
from app.models import Feedback, FeedbackRating, Prompt
from app.models.judges import JudgeRun, JudgeVerdict
from tests.factories import make_project, make_user
from tests.judges.helpers import fresh, new_run, set_judge, task_counts, verdicts
from tests.labeling.helpers import FORM_SETTINGS, make_form_task, next_view
from tests.openai_server import OpenAIServer
from worker.loop import judging
from worker.ml import judge_forms
from worker.ml.judge import LocalJudge

POINTS = {"best": 5, "good": 4, "ok": 3, "bad": 1}


def _rate_by_word():
    """An endpoint that reads the one answer shown and rates it by its word. Prompts "chatty" get
    an unparseable first reply per answer (then asked again), "hopeless" ones never parse."""
    asked: set[str] = set()

    def reply(messages, _i) -> str:
        text = messages[-1]["content"]
        word = re.search(r"## The answer\n(\w+)", text).group(1)
        first_time = "chatty" in text and word not in asked
        if "chatty" in text:
            asked.add(word)
        if "hopeless" in text or first_time:
            return "It is a decent answer, I would say 4 out of 5 overall."
        return f"The answer is {word}.\nRating: {POINTS[word]}"

    return reply


def _task_texts(db, task, texts: list[str], prompt: str | None = None) -> None:
    for item, text in zip(task.items, texts, strict=True):
        item.completion.text = text
    if prompt is not None:
        db.get_one(Prompt, task.prompt_id).text = prompt
    db.commit()


def _human_rates(db, user, project, values_by_text: dict[str, int]) -> None:
    view = next_view(db, user, project)
    ratings = [{"completion_id": c.id, "value": values_by_text[c.text]} for c in view.completions]
    submission.submit_answer(
        db, user=user, project=project, assignment_id=view.assignment_id, data=SubmissionIn(ratings=ratings),
        sweep_every=3600,
    )  # fmt: skip
    db.commit()


def _ai_values(db, user_id: int) -> dict[int, dict[int, int | None]]:
    db.commit()
    rows = db.execute(
        select(Feedback.task_id, FeedbackRating.completion_id, FeedbackRating.value)
        .join(FeedbackRating, FeedbackRating.feedback_id == Feedback.id)
        .where(Feedback.user_id == user_id)
    )
    values: dict[int, dict[int, int | None]] = {}
    for task_id, completion_id, value in rows:
        values.setdefault(task_id, {})[completion_id] = value
    return values


def test_the_endpoint_judge_rates_likert_tasks_beside_humans(db, unit):
    project = make_project(db, overlap=2)
    rated = make_form_task(db, project, "likert")  # the project takes the Likert form (5 points)
    _task_texts(db, rated, ["best", "ok", "bad"])
    humans = [make_user(db, projects=[project]) for _ in range(2)]
    _human_rates(db, humans[0], project, {"best": 5, "ok": 3, "bad": 1})
    _human_rates(db, humans[1], project, {"best": 4, "ok": 3, "bad": 1})
    chatty, hopeless = (make_form_task(db, project, "likert") for _ in range(2))
    _task_texts(db, chatty, ["good", "bad", "ok"], prompt="chatty")
    _task_texts(db, hopeless, ["good", "bad", "ok"], prompt="hopeless")
    assert task_counts(db, rated.id) == (2, 2, "complete")

    with OpenAIServer(model_name="j", reply=_rate_by_word()) as server:
        judge = set_judge(db, project, kind="endpoint", endpoint_url=server.url, endpoint_model="j", max_attempts=2)
        result = judging.run(new_run(db, judge), session=unit, backoff_seconds=0.01)

    assert fresh(db, JudgeRun, result["run_id"]).status == "done"
    assert verdicts(db, judge.user_id) == {rated.id: "stored", chatty.id: "stored", hopeless.id: "unparseable"}
    by_text = {t.id: {item.completion_id: POINTS[item.completion.text] for item in t.items} for t in (rated, chatty)}
    assert _ai_values(db, judge.user_id) == by_text  # the chatty first reply was asked again; nothing of hopeless
    # Compare only: no assignment, no count; the verdict names no ranking; not training data.
    assert [task_counts(db, t.id) for t in (rated, chatty)] == [(2, 2, "complete"), (0, 0, "open")]
    (ai_feedback,) = db.scalars(select(Feedback).where(Feedback.user_id == judge.user_id, Feedback.task_id == rated.id))
    assert ai_feedback.assignment_id is None and ai_feedback.settings == FORM_SETTINGS["likert"]
    assert db.scalar(select(JudgeVerdict.ranking_id).where(JudgeVerdict.task_id == rated.id)) is None
    assert {j.user_id for j in feedback_read.load_feedback(db, project_id=project.id)} == {h.id for h in humans}

    agreement = judge_agreement.agreement(db, project_id=project.id)
    assert agreement.measure == "Likert points" and agreement.statistic_name.startswith("Krippendorff")
    assert agreement.human.comparisons == 3 and agreement.human.agreement_pct == pytest.approx(200 / 3)  # 5 vs 4
    # The judge said 5, 3, 1: all three as humans[0], two of three as humans[1].
    assert (agreement.judge.comparisons, agreement.judge.tasks) == (6, 1)
    assert agreement.judge.agreement_pct == pytest.approx(500 / 6)
    assert agreement.human.statistic is not None and agreement.judge.statistic is not None


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite: the counting is the humans' in the test above
def test_the_local_pointwise_judge_takes_good_bad_slots(db, unit, tiny_judge_dir):
    project = make_project(db, overlap=2)
    tasks = [make_form_task(db, project, "good_bad") for _ in range(2)]
    judge = set_judge(db, project, kind="local_pointwise", model_path=str(tiny_judge_dir), mode="slot")
    judging.run(new_run(db, judge), session=unit)

    local = LocalJudge.load(tiny_judge_dir)
    values = _ai_values(db, judge.user_id)
    for task in tasks:
        texts = [item.completion.text for item in task.items]
        scores = local.scores(db.get_one(Prompt, task.prompt_id).text, texts)
        expected = {item.completion_id: int(s > 0) for item, s in zip(task.items, scores, strict=True)}
        assert values[task.id] == expected  # good when p(Yes) > 0.5
        assert task_counts(db, task.id) == (1, 1, "open")  # one of the two slots, counted like a human's
    stored = db.scalars(select(Feedback).where(Feedback.user_id == judge.user_id)).all()
    assert len(stored) == 2 and all(f.assignment_id is not None and f.form == "good_bad" for f in stored)
    assert {j.user_id for j in feedback_read.load_feedback(db, project_id=project.id)} == {judge.user_id}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the storage is the pointwise test's
def test_the_local_judge_answers_the_likert_template_constrained(db, unit, tiny_judge_dir):
    project = make_project(db, overlap=1)
    task = make_form_task(db, project, "likert")
    judge = set_judge(db, project, kind="local", model_path=str(tiny_judge_dir))
    judging.run(new_run(db, judge), session=unit)
    assert verdicts(db, judge.user_id) == {task.id: "stored"}
    (values,) = _ai_values(db, judge.user_id).values()
    assert set(values) == set(task.completion_ids) and all(1 <= v <= 5 for v in values.values())


def test_rating_answers_are_parsed_strictly_and_scores_map_to_ratings():
    assert judge_forms.parse_likert("Looks fine.\nRating: 4", 5) == 4
    assert judge_forms.parse_likert("**Rating:** 5/5", 5) == 5
    for bad in ("Rating: 6", "Rating: 4/7", "I'd give it a 4", "Rating: 3 or 4", "Rating: 4\nThanks!", ""):
        assert judge_forms.parse_likert(bad, 5) is None, bad
    assert [judge_forms.parse_good_bad(a) for a in ("Verdict: Good", "bad.", "Verdict: **Bad**")] == [1, 0, 0]
    for bad in ("Good and bad", "Verdict: fine", "It is good, mostly"):
        assert judge_forms.parse_good_bad(bad) is None, bad
    # Likert: p(Yes) in N equal bins; good/bad: p(Yes) > 0.5.
    assert [judge_forms.likert_from_score(s, 5) for s in (-9.0, -1.0, 0.0, 1.0, 9.0, 800.0)] == [1, 2, 3, 4, 5, 5]
    assert [judge_forms.good_bad_from_score(s) for s in (-0.1, 0.0, 0.1)] == [0, 0, 1]


def test_the_endpoint_judge_rates_each_aspect_of_a_multi_aspect_task(db, unit):
    """helpfulness (Likert) and honesty (ranked) asked about apart; the overall ranking by the
    mean of a completion's ratings; stored as the form's answer, agreement on the Likert aspect."""
    project = make_project(db, overlap=2)
    task = make_form_task(db, project, "multi_aspect")  # FORM_SETTINGS: the overall ranking asked for
    _task_texts(db, task, ["best", "ok", "bad"])
    human = make_user(db, projects=[project])
    ids = {item.completion.text: item.completion_id for item in task.items}
    view = next_view(db, human, project)
    answer = SubmissionIn(
        ratings=[{"completion_id": ids[w], "aspect": "helpfulness", "value": POINTS[w]} for w in ids],
        aspect_rankings={"honesty": [[ids["best"]], [ids["ok"]], [ids["bad"]]]},
        ranking=[[ids["best"]], [ids["ok"]], [ids["bad"]]],
    )
    submission.submit_answer(
        db, user=human, project=project, assignment_id=view.assignment_id, data=answer, sweep_every=3600
    )
    db.commit()
    honesty = {"best": 2, "ok": 2, "bad": 5}

    def reply(messages, _i) -> str:
        text = messages[-1]["content"]
        word = re.search(r"## The answer\n(\w+)", text).group(1)
        if "answer's Helpful," in text:
            return f"Rating: {POINTS[word]}"
        assert "answer's Honest <b>really</b>," in text  # the aspect's label, as the admin wrote it
        return f"Rating: {honesty[word]}/5"

    with OpenAIServer(model_name="j", reply=reply) as server:
        judge = set_judge(db, project, kind="endpoint", endpoint_url=server.url, endpoint_model="j")
        judging.run(new_run(db, judge), session=unit)

    assert verdicts(db, judge.user_id) == {task.id: "stored"}
    db.commit()
    rows = db.execute(
        select(FeedbackRating.completion_id, FeedbackRating.aspect, FeedbackRating.value)
        .join(Feedback, Feedback.id == FeedbackRating.feedback_id)
        .where(Feedback.user_id == judge.user_id)
    ).all()
    word = {cid: w for w, cid in ids.items()}
    stored = {(word[cid], aspect): value for cid, aspect, value in rows}
    assert {w: stored[(w, "helpfulness")] for w in ids} == {"best": 5, "ok": 3, "bad": 1}
    # Ranked aspects and the overall ranking are levels (0 = best; ties share one).
    assert {w: stored[(w, "honesty")] for w in ids} == {"bad": 0, "best": 1, "ok": 1}
    assert {w: stored[(w, "")] for w in ids} == {"best": 0, "bad": 1, "ok": 2}  # means 3.5, 3, 2.5
    assert task_counts(db, task.id) == (1, 1, "open")  # compare only: the human's answer alone counts

    agreement = judge_agreement.agreement(db, project_id=project.id)
    assert agreement.measure == "Likert aspects" and agreement.human.comparisons == 0
    assert (agreement.judge.comparisons, agreement.judge.agreement_pct) == (3, 100.0)
