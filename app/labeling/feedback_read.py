"""Reading rating-form judgments (likert, good_bad, multi_aspect; issue 15) for agreement, exports
and training: one RatingJudgment per Feedback row, and the scores, ranking groups, pairs and KTO
labels derived from it. Pairwise-form answers are Rankings (app/labeling/judgments.verdict_of).

Scores are on one scale for every form and aspect, higher = better, in [0, 1]: a Likert value v of
N points → (v - 1) / (N - 1); good → 1, bad → 0; a ranked aspect (or the overall ranking) at level
l of L levels → 1 - l / (L - 1) (one level: 0.5, everything tied). A weighted combination of
aspects is the weighted mean of their scores over the weights given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.judges.data_filter import labelling_data
from app.models import OVERALL, Feedback, FeedbackForm, FeedbackRating, RankingTask
from app.projects.forms_config import aspects_of, likert_points


@dataclass(frozen=True)
class RatingJudgment:
    feedback_id: int
    task_id: int
    prompt_id: int
    user_id: int
    form: str
    """"likert", "good_bad" or "multi_aspect"."""
    settings: dict[str, Any]
    """The project's form settings when this was answered (points, labels, aspects)."""
    display_order: list[int]
    values: dict[str, dict[int, int | None]]
    """aspect (OVERALL "" for the completion's own rating) -> completion id -> stored value."""
    critiques: dict[int, str]
    comment: str
    time_spent_ms: int | None
    late: bool
    created_at: datetime


def load_feedback(db: Session, *, project_id: int, form: str | None = None) -> list[RatingJudgment]:
    """Every rating-form answer in the project (of one form if given), oldest first; two queries."""
    query = (
        select(Feedback, RankingTask.prompt_id)
        .join(RankingTask, RankingTask.id == Feedback.task_id)
        .where(Feedback.project_id == project_id, labelling_data(Feedback))  # no compare-only AI answers
        .order_by(Feedback.id)
    )
    if form is not None:
        query = query.where(Feedback.form == form)
    rows = db.execute(query).all()
    if not rows:
        return []
    ratings = db.execute(
        select(FeedbackRating.feedback_id, FeedbackRating.completion_id, FeedbackRating.aspect)
        .add_columns(FeedbackRating.value, FeedbackRating.critique)
        .where(FeedbackRating.feedback_id.in_([feedback.id for feedback, _ in rows]))
        .order_by(FeedbackRating.id)
    ).all()
    values: dict[int, dict[str, dict[int, int | None]]] = {}
    critiques: dict[int, dict[int, str]] = {}
    for feedback_id, completion_id, aspect, value, critique in ratings:
        values.setdefault(feedback_id, {}).setdefault(aspect, {})[completion_id] = value
        if critique:
            critiques.setdefault(feedback_id, {})[completion_id] = critique
    return [
        RatingJudgment(
            feedback_id=f.id,
            task_id=f.task_id,
            prompt_id=prompt_id,
            user_id=f.user_id,
            form=f.form,
            settings=f.settings,
            display_order=list(f.display_order),
            values=values.get(f.id, {}),
            critiques=critiques.get(f.id, {}),
            comment=f.comment,
            time_spent_ms=f.time_spent_ms,
            late=f.late,
            created_at=f.created_at,
        )
        for f, prompt_id in rows
    ]


def scale_of(judgment: RatingJudgment, aspect: str = OVERALL) -> str:
    """How `aspect`'s values read: "likert" (1..N), "good_bad" (1/0) or "ranking" (levels, 0 best)."""
    if aspect == OVERALL:
        return {FeedbackForm.likert: "likert", FeedbackForm.good_bad: "good_bad"}.get(
            FeedbackForm(judgment.form), "ranking"
        )
    for known in aspects_of(judgment.settings):
        if known.name == aspect:
            return known.scale
    raise KeyError(f"{aspect!r} is not an aspect of this judgment ({', '.join(judgment.values)})")


def scores(judgment: RatingJudgment, aspect: str | Mapping[str, float] = OVERALL) -> dict[int, float]:
    """Completion id -> score in [0, 1], higher = better, for one aspect (OVERALL: the completion's
    own rating, or the overall ranking) or a weighted combination {aspect: weight}. Completions
    without a value (no overall ranking asked) are left out."""
    if not isinstance(aspect, str):
        total = sum(aspect.values())
        if total <= 0:
            raise ValueError("weights must add up to more than 0")
        parts = {name: scores(judgment, name) for name, weight in aspect.items() if weight}
        common = set.intersection(*(set(part) for part in parts.values())) if parts else set()
        return {cid: sum(aspect[name] * parts[name][cid] for name in parts) / total for cid in sorted(common)}
    given = {cid: value for cid, value in judgment.values.get(aspect, {}).items() if value is not None}
    scale = scale_of(judgment, aspect)
    if scale == "good_bad":
        return {cid: float(value) for cid, value in given.items()}
    if scale == "likert":
        top = likert_points(judgment.settings)
        return {cid: (value - 1) / (top - 1) for cid, value in given.items()}
    levels = max(given.values(), default=0) + 1
    return {cid: 0.5 if levels == 1 else 1 - value / (levels - 1) for cid, value in given.items()}


def groups_from_scores(by_completion: Mapping[int, float]) -> list[list[int]]:
    """Ranking groups, best first; equal scores are tied (what the K-wise reward model reads)."""
    levels: dict[float, list[int]] = {}
    for cid, score in by_completion.items():
        levels.setdefault(score, []).append(cid)
    return [sorted(levels[score]) for score in sorted(levels, reverse=True)]


def pairs_from_scores(by_completion: Mapping[int, float]) -> list[tuple[int, int]]:
    """(chosen, rejected) for every two completions with different scores; equal scores give none."""
    ordered = sorted(by_completion.items())
    return [
        (a, b) if score_a > score_b else (b, a)
        for i, (a, score_a) in enumerate(ordered)
        for b, score_b in ordered[i + 1 :]
        if score_a != score_b
    ]


def kto_labels(judgment: RatingJudgment) -> dict[int, bool]:
    """good_bad: completion id -> desirable (KTO's unpaired label)."""
    if judgment.form != FeedbackForm.good_bad:
        raise ValueError(f"KTO labels come from good_bad judgments, not {judgment.form}")
    return {cid: bool(value) for cid, value in judgment.values.get(OVERALL, {}).items() if value is not None}
