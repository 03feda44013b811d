"""The storage hook of the rating forms "likert", "good_bad" and "multi_aspect" (issue 15): one
Feedback row per answer and one FeedbackRating per (completion, aspect) (app/models/feedback.py).
See app/labeling/recorders.py for the protocol and app/labeling/form_types.py for the kinds.

`check` turns the JSON API's SubmissionIn or the page's form into a RatingAnswer, or a 422 naming
the field ("ratings[2].value: must be 1–7, got 9"); values are checked against the project's
form_settings, which are stored with the answer so it keeps its meaning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.labeling.errors import InvalidSubmission
from app.labeling.partition import InvalidRanking, validate_partition
from app.labeling.recorders import Accepted, Held, finish_and_count
from app.labeling.schemas import (
    FormInput,
    RatingIn,
    SubmissionIn,
    critiques_from_form,
    describe_validation_error,
    form_int,
    prefixed,
)
from app.models import OVERALL, Feedback, FeedbackForm, FeedbackRating, Project
from app.projects.forms_config import aspects_of, likert_points
from app.rounds import service as rounds_service

GOOD_BAD = {"good": 1, "bad": 0}


@dataclass(frozen=True)
class RatingAnswer:
    values: dict[tuple[int, str], int | None]
    """(completion id, aspect) -> value; aspect OVERALL for the completion's own rating."""
    critiques: dict[int, str]
    comment: str
    time_spent_ms: int | None
    settings: dict[str, Any]


@dataclass(frozen=True)
class RatingRecorder:
    form: str
    """"likert", "good_bad" or "multi_aspect" (a FeedbackForm)."""
    stores: str = "feedback"

    def check(self, data: Any, held: Held, project: Project) -> RatingAnswer:
        sent = _as_submission(data, self.form)
        settings = dict(project.form_settings or {})
        ids = list(held.display_order)
        values = _checked_ratings(self.form, sent.ratings or [], ids, settings)
        if self.form == FeedbackForm.multi_aspect:
            values.update(_ranked_aspects(sent, ids, settings))
        return RatingAnswer(
            values=values,
            critiques=_checked_critiques(sent.critiques, ids),
            comment=sent.comment.strip(),
            time_spent_ms=sent.time_spent_ms,
            settings=settings,
        )

    def record(self, db: Session, accepted: Accepted, answer: RatingAnswer) -> int:
        finish_and_count(db, accepted)  # first: it locks the task row, as every kind's submit does
        feedback_id = self.write(db, accepted, answer)
        if accepted.held.round_id is not None:  # a round set to auto-start may have reached its threshold
            rounds_service.on_rankings_added(db, project_id=accepted.project.id)
        return feedback_id

    def write(self, db: Session, accepted: Accepted, answer: RatingAnswer) -> int:
        """The Feedback row and its ratings, counting nothing: `record` counts the answer on its
        task; an AI judge's compare-only answer (app/judges/store.py, no assignment) must not."""
        held = accepted.held
        feedback_id: int = db.execute(
            insert(Feedback)
            .values(
                task_id=held.task_id,
                user_id=accepted.user_id,
                project_id=accepted.project.id,
                assignment_id=held.id,
                form=self.form,
                settings=answer.settings,
                display_order=list(held.display_order),
                time_spent_ms=answer.time_spent_ms,
                comment=answer.comment,
                late=accepted.late,
                created_at=accepted.now,
            )
            .returning(Feedback.id)
        ).scalar_one()
        aspects = [a.name for a in aspects_of(answer.settings)] if self.form == FeedbackForm.multi_aspect else []
        rows = [
            {
                "feedback_id": feedback_id,
                "completion_id": cid,
                "aspect": aspect,
                "value": answer.values.get((cid, aspect)),
                "critique": answer.critiques.get(cid) if aspect == OVERALL else None,
            }
            for cid in held.display_order
            for aspect in (OVERALL, *aspects)
        ]
        db.execute(insert(FeedbackRating), rows)
        return feedback_id

    def stored(self, db: Session, held: Held) -> tuple[int, bool] | None:
        row = db.execute(
            select(Feedback.id, Feedback.late).where(Feedback.task_id == held.task_id, Feedback.user_id == held.user_id)
        ).first()
        return None if row is None else (row.id, row.late)


# ---- parsing the page's form ------------------------------------------------------------------


def _as_submission(data: Any, form: str) -> SubmissionIn:
    """The form's fields through the same model as the JSON API, so both refuse alike."""
    if isinstance(data, SubmissionIn):
        return data
    if not isinstance(data, FormInput):  # a RankingIn: refused by name before this (refuse_foreign_fields)
        raise InvalidSubmission("ranking: this task takes ratings, not a ranking")
    fields = data.fields
    values: dict[str, Any] = {
        "ratings": _form_ratings(fields, form),
        "critiques": critiques_from_form(fields),
        "comment": str(fields.get("comment") or ""),
        "time_spent_ms": form_int(fields.get("time_spent_ms")),
    }
    if form == FeedbackForm.multi_aspect:
        ranked = prefixed(fields, "aspect_ranking")
        places = _groups_from_places(prefixed(fields, "place"))
        values["aspect_rankings"] = {
            **{name: groups for name, groups in places.items() if name},
            **{name: _json_field(f"aspect_rankings.{name}", raw) for name, raw in ranked.items()},
        }
        if fields.get("ranking"):
            values["ranking"] = _json_field("ranking", fields["ranking"])
        elif OVERALL in places:
            values["ranking"] = places[OVERALL]
    try:
        return SubmissionIn(**values)
    except ValidationError as exc:
        raise InvalidSubmission(describe_validation_error(exc)) from None


def _form_ratings(fields: Any, form: str) -> list[dict[str, Any]]:
    """rating-<completion id> (or rating-<completion id>-<aspect>) = the value chosen."""
    ratings = []
    for key, raw in prefixed(fields, "rating").items():
        completion, _sep, aspect = key.partition("-")
        if not (completion.isascii() and completion.isdigit()):
            raise InvalidSubmission(f"ratings: rating-{key} names no completion; reload the page")
        value: Any = raw.strip() if form == FeedbackForm.good_bad and raw.strip() in GOOD_BAD else form_int(raw)
        ratings.append({"completion_id": int(completion), "value": value, **({"aspect": aspect} if aspect else {})})
    return ratings


def _groups_from_places(places: dict[str, str]) -> dict[str, list[list[int]]]:
    """place-<completion id>[-<aspect>] = "1".."K" -> per aspect (OVERALL: none), groups best first;
    completions given the same place are tied."""
    by_aspect: dict[str, dict[int, list[int]]] = {}
    for key, raw in places.items():
        completion, _sep, aspect = key.partition("-")
        place = raw.strip()
        where = f"aspect_rankings.{aspect}" if aspect else "ranking"
        if not (completion.isascii() and completion.isdigit() and place.isascii() and place.isdigit()):
            raise InvalidSubmission(f"{where}: place-{key}={raw!r} is not a completion's place (1, 2, ...)")
        by_aspect.setdefault(aspect, {}).setdefault(int(place), []).append(int(completion))
    return {aspect: [groups[place] for place in sorted(groups)] for aspect, groups in by_aspect.items()}


def _json_field(name: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidSubmission(f"{name}: not valid JSON; reload the page if this keeps happening") from None


# ---- checking an answer against its task and the project's form ---------------------------------


def _checked_ratings(
    form: str, ratings: list[RatingIn], ids: list[int], settings: dict[str, Any]
) -> dict[tuple[int, str], int | None]:
    points = likert_points(settings)
    aspects = {a.name: a for a in aspects_of(settings)}
    rated = [name for name, a in aspects.items() if a.scale == "likert"]
    values: dict[tuple[int, str], int | None] = {}
    for i, rating in enumerate(ratings):
        where = f"ratings[{i}]"
        if rating.completion_id not in ids:
            cid = rating.completion_id
            raise InvalidSubmission(f"{where}.completion_id: completion {cid} is not part of this task")
        aspect = _checked_aspect(form, rating.aspect, where, aspects)
        key = (rating.completion_id, aspect)
        if key in values:
            what = f"on `{aspect}` " if aspect else ""
            raise InvalidSubmission(f"{where}: completion {rating.completion_id} is rated {what}twice")
        values[key] = _checked_value(form, rating.value, f"{where}.value", points)
    wanted = rated if form == FeedbackForm.multi_aspect else [OVERALL]
    for cid in ids:
        for aspect in wanted:
            if (cid, aspect) not in values:
                if aspect == OVERALL:
                    raise InvalidSubmission(f"ratings: completion {cid} has no rating; rate every completion")
                raise InvalidSubmission(
                    f"ratings: completion {cid} has no `{aspect}` rating; rate every completion on every rated aspect"
                )
    return values


def _checked_aspect(form: str, aspect: str | None, where: str, aspects: dict[str, Any]) -> str:
    if form != FeedbackForm.multi_aspect:
        if aspect is not None:
            raise InvalidSubmission(f"{where}.aspect: a {form} task rates each completion once, with no aspect")
        return OVERALL
    rated = ", ".join(name for name, a in aspects.items() if a.scale == "likert") or "none"
    if aspect is None:
        raise InvalidSubmission(f"{where}.aspect: missing; name one of this project's rated aspects ({rated})")
    if aspect not in aspects:
        raise InvalidSubmission(f"{where}.aspect: {aspect!r} is not one of this project's aspects ({rated})")
    if aspects[aspect].scale != "likert":
        raise InvalidSubmission(f"{where}.aspect: {aspect!r} is ranked, not rated; send it in aspect_rankings")
    return aspect


def _checked_value(form: str, value: int | str, where: str, points: int) -> int:
    if form == FeedbackForm.good_bad:
        if isinstance(value, str) and value in GOOD_BAD:
            return GOOD_BAD[value]
        if value not in (0, 1):
            raise InvalidSubmission(f'{where}: must be "good" or "bad" (or 1 / 0), got {value!r}')
        return value
    if isinstance(value, str) or not 1 <= value <= points:
        raise InvalidSubmission(f"{where}: must be 1–{points}, got {value!r}")
    return value


def _ranked_aspects(sent: SubmissionIn, ids: list[int], settings: dict[str, Any]) -> dict[tuple[int, str], int | None]:
    """Ranking-scale aspects and the optional overall ranking as levels (0 = best, ties share)."""
    aspects = {a.name: a for a in aspects_of(settings)}
    ranked = [name for name, a in aspects.items() if a.scale == "ranking"]
    given = sent.aspect_rankings or {}
    for name in given:
        if name not in aspects:
            raise InvalidSubmission(f"aspect_rankings.{name}: not one of this project's aspects ({', '.join(aspects)})")
        if name not in ranked:
            raise InvalidSubmission(f"aspect_rankings.{name}: this aspect is rated, not ranked; send it in ratings")
    levels: dict[tuple[int, str], int | None] = {}
    for name in ranked:
        if name not in given:
            raise InvalidSubmission(f"aspect_rankings.{name}: missing; rank the completions on every ranked aspect")
        levels.update(_levels(given[name], ids, name, f"aspect_rankings.{name}"))
    if settings.get("overall_ranking"):
        if sent.ranking is None:
            raise InvalidSubmission(
                "ranking: missing; this project also asks for an overall ranking (groups of completion ids, best first)"
            )
        levels.update(_levels(sent.ranking, ids, OVERALL, "ranking"))
    elif sent.ranking is not None:
        raise InvalidSubmission("ranking: this project asks for no overall ranking; send ratings only")
    return levels


def _levels(groups: list[list[int]], ids: list[int], aspect: str, where: str) -> dict[tuple[int, str], int | None]:
    try:
        checked = validate_partition(groups, ids)
    except InvalidRanking as exc:
        raise InvalidSubmission(where + str(exc).removeprefix("ranking")) from None
    return {(cid, aspect): level for level, group in enumerate(checked) for cid in group}


def _checked_critiques(critiques: dict[str, str], ids: list[int]) -> dict[int, str]:
    checked: dict[int, str] = {}
    for key, text in critiques.items():
        if not (key.isascii() and key.isdigit()) or int(key) not in ids:
            raise InvalidSubmission(f"critiques.{key}: not a completion of this task; key each critique by its id")
        if text.strip():
            checked[int(key)] = text.replace("\r\n", "\n").strip()
    return checked
