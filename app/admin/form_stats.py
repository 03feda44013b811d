"""Agreement on a project's feedback-form judgments (issue 15), read from the DB for the admin
page: pairwise verdicts (stored as rankings of task kind "pairwise") and the rating forms'
`feedback_ratings`. The measures themselves are in app/admin/form_agreement.py."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.admin.form_agreement import FormAgreement, categorical_agreement, pairwise_category, scale_agreement
from app.admin.stats import user_emails
from app.judges.data_filter import labelling_data
from app.models import OVERALL, Feedback, FeedbackForm, FeedbackRating, Ranking, RankingTask, TaskCompletion


@dataclass
class FormAgreementReport:
    measures: list[FormAgreement] = field(default_factory=list)
    """In page order: pairwise, good/bad, Likert, a multi-aspect overall ranking, each aspect in
    the order the project's settings list them."""
    emails: dict[int, str] = field(default_factory=dict)
    """user id -> email of every labeler in a per-labeler table."""


def project_form_agreement(db: Session, *, project_id: int, form_settings: dict[str, Any]) -> FormAgreementReport:
    """Every feedback-form measure the project has overlapped judgments for (a ranking-form
    project has none: its figures are app/admin/stats.py's)."""
    measures = [m for m in (_pairwise(db, project_id),) if m is not None]
    measures += _rating_forms(db, project_id, form_settings)
    users = {user for m in measures for user in m.per_labeler}
    return FormAgreementReport(measures=measures, emails=user_emails(db, user_ids=users))


def _pairwise(db: Session, project_id: int) -> FormAgreement | None:
    overlapped = select(RankingTask.id).where(
        RankingTask.project_id == project_id,
        RankingTask.kind == FeedbackForm.pairwise.value,
        RankingTask.rankings_count >= 2,
    )
    judgments = db.execute(
        select(Ranking.task_id, Ranking.user_id, Ranking.groups, Ranking.none_acceptable).where(
            Ranking.task_id.in_(overlapped), labelling_data()
        )
    ).all()
    if not judgments:
        return None
    # The completion at task position 0 names "first"; positions are the same for every labeler.
    first = dict(
        db.execute(
            select(TaskCompletion.task_id, TaskCompletion.completion_id).where(
                TaskCompletion.task_id.in_(overlapped), TaskCompletion.position == 0
            )
        ).all()
    )
    units: dict[int, dict[int, str]] = defaultdict(dict)
    for task_id, user_id, groups, none_acceptable in judgments:
        units[task_id][user_id] = pairwise_category(groups, none_acceptable=none_acceptable, first_id=first[task_id])
    return categorical_agreement("pairwise", "Pairwise verdicts", units)


def _rating_forms(db: Session, project_id: int, form_settings: dict[str, Any]) -> list[FormAgreement]:
    overlapped = (
        select(Feedback.task_id)
        .where(Feedback.project_id == project_id, labelling_data(Feedback))
        .group_by(Feedback.task_id)
        .having(func.count() >= 2)
    )
    rows = db.execute(
        select(
            Feedback.task_id,
            Feedback.user_id,
            Feedback.form,
            Feedback.settings,
            FeedbackRating.completion_id,
            FeedbackRating.aspect,
            FeedbackRating.value,
        )
        .join(FeedbackRating, FeedbackRating.feedback_id == Feedback.id)
        .where(Feedback.task_id.in_(overlapped), FeedbackRating.value.is_not(None), labelling_data(Feedback))
    )
    # (form, aspect, scale) -> unit (task, completion) -> user -> value
    grouped: dict[tuple[str, str, str], dict[tuple[int, int], dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    for task_id, user_id, form, settings, completion_id, aspect, value in rows:
        grouped[(form, aspect, _scale(form, aspect, settings))][(task_id, completion_id)][user_id] = value

    labels = {a["name"]: a.get("label") or a["name"] for a in form_settings.get("aspects", [])}
    order = list(labels)
    measures: list[tuple[tuple[int, int], FormAgreement]] = []
    for (form, aspect, scale), units in grouped.items():
        if form == FeedbackForm.good_bad.value:
            categories = {unit: {u: "good" if v else "bad" for u, v in by.items()} for unit, by in units.items()}
            rank, measure = (0, 0), categorical_agreement("good_bad", "Good / bad", categories)
        elif form == FeedbackForm.likert.value:
            rank, measure = (1, 0), scale_agreement("likert", "Likert ratings", units)
        elif aspect == OVERALL:  # multi_aspect's optional overall ranking: levels, 0 = best
            rank, measure = (2, 0), scale_agreement("overall_ranking", "Overall ranking", units, interval=False)
        else:
            ranked = scale == "ranking"
            label = f"{labels.get(aspect, aspect)} ({'ranked' if ranked else 'Likert'})"
            position = order.index(aspect) if aspect in order else len(order)
            rank, measure = (3, position), scale_agreement(f"aspect:{aspect}", label, units, interval=not ranked)
        measures.append((rank, measure))
    return [m for _, m in sorted(measures, key=lambda pair: pair[0])]


def _scale(form: str, aspect: str, settings: dict[str, Any]) -> str:
    """ "likert" or "ranking": how the values of `aspect` were given, by the settings the labeler
    answered under (Feedback.settings), so a later change of the project's settings cannot turn
    stored ranks into points."""
    if form != FeedbackForm.multi_aspect.value:
        return "likert" if form == FeedbackForm.likert.value else "binary"
    if aspect == OVERALL:
        return "ranking"
    for entry in settings.get("aspects", []):
        if entry.get("name") == aspect:
            return entry.get("scale", "likert")
    return "likert"
