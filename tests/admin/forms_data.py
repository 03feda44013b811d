"""Feedback-form judgments for the agreement and export tests, stored in the real tables.

A pairwise judgment goes through the labeling service's own ranking store (tests.factories'
make_ranking), so its pairs rows are written as a submit writes them. A rating judgment is a
`feedback` row with its `feedback_ratings`, in the shape app/models/feedback.py documents."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.models import OVERALL, Feedback, FeedbackRating, Project, RankingTask, User, utcnow
from tests.factories import make_project, make_ranking, make_task

LIKERT = {"likert_points": 7, "likert_labels": []}
ASPECTS = {
    "likert_points": 5,
    "likert_labels": [],
    "overall_ranking": True,
    "aspects": [
        {"name": "helpfulness", "label": "Helpful", "scale": "likert"},
        {"name": "honesty", "label": "Honest", "scale": "likert"},
        {"name": "style", "label": "Style", "scale": "ranking"},
    ],
}
SETTINGS = {"pairwise": {}, "likert": LIKERT, "good_bad": {}, "multi_aspect": ASPECTS}


def form_project(db: Session, form: str, **fields: Any) -> Project:
    defaults = {"overlap": 3, **({"k_min": 2, "k_max": 2} if form == "pairwise" else {"k_min": 1, "k_max": 9})}
    return make_project(db, feedback_form=form, form_settings=SETTINGS[form], **{**defaults, **fields})


def form_task(db: Session, project: Project, *, texts: list[str], prompt_text: str | None = None) -> RankingTask:
    task = make_task(db, project, texts=texts, prompt_text=prompt_text)
    task.kind = project.feedback_form
    db.commit()
    return task


def pairwise_judgment(db: Session, task: RankingTask, user: User, verdict: str, *, sides=None, **fields: Any):
    """`verdict` in completion terms: "first" / "second" better, "tie", "both_bad". `sides`: the
    completion ids as shown (A, B); the task order unless given."""
    first, second = task.completion_ids
    groups = {
        "first": [[first], [second]],
        "second": [[second], [first]],
        "tie": [[first, second]],
        "both_bad": [[first, second]],
    }[verdict]
    return make_ranking(
        db,
        task,
        user,
        groups,
        none_acceptable=verdict == "both_bad",
        display_order=list(sides or (first, second)),
        **fields,
    )


def rating_judgment(
    db: Session,
    task: RankingTask,
    user: User,
    values: dict[int, Any],
    *,
    critiques: dict[int, str] | None = None,
    **fields: Any,
) -> Feedback:
    """`values`: completion id -> its OVERALL value (likert, good_bad: "good"/"bad" or 1/0), or
    for multi_aspect completion id -> {aspect or "": value}."""
    project = db.get(Project, task.project_id)
    assert project is not None
    feedback = Feedback(
        task_id=task.id,
        user_id=user.id,
        project_id=project.id,
        form=task.kind,
        settings=project.form_settings,
        display_order=list(task.completion_ids),
        time_spent_ms=fields.pop("time_spent_ms", 1500),
        comment=fields.pop("comment", ""),
        late=fields.pop("late", False),
        created_at=fields.pop("created_at", utcnow()),
    )
    assert not fields, fields
    critiques = critiques or {}
    for cid in task.completion_ids:
        given = values.get(cid)
        per_aspect = given if isinstance(given, dict) else {OVERALL: given}
        per_aspect.setdefault(OVERALL, None)
        for aspect, value in per_aspect.items():
            if value in ("good", "bad"):
                value = int(value == "good")
            feedback.ratings.append(
                FeedbackRating(
                    completion_id=cid,
                    aspect=aspect,
                    value=value,
                    critique=critiques.get(cid) if aspect == OVERALL else None,
                )
            )
    db.add(feedback)
    db.commit()
    return feedback
