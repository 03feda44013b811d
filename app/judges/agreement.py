"""Agreement of a project's judge with its humans, beside human–human agreement (AI accounts left
out of the latter), measured the way the project's form is measured elsewhere:

  * ranking and pairwise: pairwise order agreement (app/admin/agreement.py), the judge's current
    version against each human who ranked the same task;
  * likert: exact-match share and Krippendorff's interval alpha over (task, completion) units;
  * good_bad: exact-match share and Fleiss' kappa (app/admin/form_agreement.py);
  * multi_aspect: as likert, pooled over the Likert-scale aspects (units per aspect too).

For the rating forms the judge's units are (task, completion, aspect, human): the judge's value and that
human's, so the share is "how often the judge gave the same value as a human" and the statistic is
the same one computed on judge–human pairs. A registry keyed by form picks the measure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.admin.agreement import AgreementSummary, agreement_report, compare_rankings
from app.admin.form_agreement import FormAgreement, categorical_agreement, scale_agreement
from app.models import OVERALL, Feedback, FeedbackForm, FeedbackRating, Project, Ranking, RankingTask, User
from app.models.judges import AI_ROLE, Judge

INSTRUCTGPT_AGREEMENT_PCT = 72.6
"""InstructGPT (Ouyang et al. 2022): training labelers agreed with each other 72.6 ± 1.5% of the time."""


@dataclass(frozen=True)
class Side:
    """One row of the agreement table: human–human, or judge–human."""

    agreement_pct: float | None
    comparisons: int
    """Ranking forms: pairs of completions compared; rating forms: pairs of values."""
    tasks: int
    statistic: float | None = None
    """Rating forms: Krippendorff's interval alpha (likert) or Fleiss' kappa (good_bad)."""


@dataclass(frozen=True)
class JudgeAgreement:
    human: Side
    judge: Side
    measure: str = "pairwise order"
    statistic_name: str = ""
    """What Side.statistic is ('' for the ranking forms)."""
    instructgpt_pct: float = INSTRUCTGPT_AGREEMENT_PCT


def agreement(db: Session, *, project_id: int) -> JudgeAgreement:
    form, settings = db.execute(
        select(Project.feedback_form, Project.form_settings).where(Project.id == project_id)
    ).one()
    judge = db.scalar(select(Judge).where(Judge.project_id == project_id))
    judge_user = None if judge is None else judge.user_id
    rating = RATING_MEASURES.get(str(form))
    if rating is None:
        return _ranking_agreement(db, project_id, judge_user)
    return _rating_agreement(db, project_id, judge_user, str(form), rating, rating.aspects(settings or {}))


def _ranking_agreement(db: Session, project_id: int, judge_user: int | None) -> JudgeAgreement:
    humans: dict[int, dict[int, list[list[int]]]] = defaultdict(dict)
    ai: dict[int, list[list[int]]] = {}
    for task_id, user_id, role, groups in db.execute(
        select(Ranking.task_id, Ranking.user_id, User.role, Ranking.groups)
        .join(RankingTask, RankingTask.id == Ranking.task_id)
        .join(User, User.id == Ranking.user_id)
        .where(
            Ranking.project_id == project_id,
            RankingTask.kind.in_((FeedbackForm.ranking.value, FeedbackForm.pairwise.value)),
        )
    ):
        if role != AI_ROLE:
            humans[task_id][user_id] = groups
        elif user_id == judge_user:
            ai[task_id] = groups
    human = agreement_report(humans).overall
    versus = AgreementSummary()
    for task_id, mine in ai.items():
        for groups in humans.get(task_id, {}).values():
            versus.add(task_id, compare_rankings(mine, groups))
    return JudgeAgreement(human=_ranking_side(human), judge=_ranking_side(versus))


def _ranking_side(summary: AgreementSummary) -> Side:
    return Side(summary.agreement_pct, summary.comparisons, len(summary.tasks))


@dataclass(frozen=True)
class RatingMeasure:
    label: str
    statistic_name: str
    measure: Callable[[Mapping[Any, Mapping[int, Any]]], FormAgreement]
    statistic: Callable[[FormAgreement], float | None]
    aspects: Callable[[Mapping[str, Any]], set[str]] = lambda settings: {OVERALL}
    """The feedback_ratings aspects measured (the form settings')."""


RATING_MEASURES: dict[str, RatingMeasure] = {
    FeedbackForm.likert.value: RatingMeasure(
        "Likert points",
        "Krippendorff's alpha (interval)",
        lambda units: scale_agreement("likert", "Likert", units),
        lambda result: result.alpha_interval,
    ),
    FeedbackForm.good_bad.value: RatingMeasure(
        "good / bad",
        "Fleiss' kappa",
        lambda units: categorical_agreement("good_bad", "Good / bad", units),
        lambda result: result.kappa,
    ),
    FeedbackForm.multi_aspect.value: RatingMeasure(
        "Likert aspects",
        "Krippendorff's alpha (interval)",
        lambda units: scale_agreement("aspects", "Likert aspects", units),
        lambda result: result.alpha_interval,
        lambda settings: {a["name"] for a in settings.get("aspects", []) if a.get("scale", "likert") == "likert"},
    ),
}


def _rating_agreement(
    db: Session, project_id: int, judge_user: int | None, form: str, rating: RatingMeasure, aspects: set[str]
) -> JudgeAgreement:
    humans: dict[tuple[int, int, str], dict[int, int | None]] = defaultdict(dict)
    ai: dict[tuple[int, int, str], int | None] = {}
    for task_id, user_id, role, completion_id, aspect, value in db.execute(
        select(Feedback.task_id, Feedback.user_id, User.role, FeedbackRating.completion_id)
        .add_columns(FeedbackRating.aspect, FeedbackRating.value)
        .join(FeedbackRating, FeedbackRating.feedback_id == Feedback.id)
        .join(User, User.id == Feedback.user_id)
        .where(
            Feedback.project_id == project_id,
            Feedback.form == form,
            FeedbackRating.aspect.in_(aspects),
            FeedbackRating.value.is_not(None),
        )
    ):
        if role != AI_ROLE:
            humans[(task_id, completion_id, aspect)][user_id] = value
        elif user_id == judge_user:
            ai[(task_id, completion_id, aspect)] = value
    versus: dict[tuple[int, int, str, int], dict[int, int | None]] = {}
    for unit, mine in ai.items():
        for human, theirs in humans.get(unit, {}).items():
            versus[(*unit, human)] = {-1: mine, human: theirs}  # -1: the judge (no user id clash)
    return JudgeAgreement(
        human=_rating_side(rating, humans),
        judge=_rating_side(rating, versus),
        measure=rating.label,
        statistic_name=rating.statistic_name,
    )


def _rating_side(rating: RatingMeasure, units: Mapping[Any, Mapping[int, Any]]) -> Side:
    result = rating.measure(units)
    tasks = {key[0] for key, by_user in units.items() if len(by_user) >= 2}
    return Side(result.agreement_pct, result.comparisons, len(tasks), rating.statistic(result))
