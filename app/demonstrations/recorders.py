"""The storage hooks of the "demonstration" and "demonstration_review" task kinds (see
app/labeling/recorders.py for the protocol and app/labeling/task_types.py for the kinds).

`check` turns what the labeler sent (the JSON API's SubmissionIn or the page's form) into an
answer or a 422 naming the field; `record` stores it through app/demonstrations/service.py and
finishes the assignment like any other kind; `stored` is what a retry gets back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.demonstrations import service
from app.labeling.content import TaskContent
from app.labeling.errors import InvalidSubmission
from app.labeling.recorders import Accepted, Held, finish_and_count
from app.labeling.schemas import FormInput, SubmissionIn, describe_validation_error, form_int
from app.markdown import stored_or_rendered
from app.models import Demonstration, Project


def _as_submission(data: Any, names: tuple[str, ...]) -> SubmissionIn:
    """The form's fields through the same model as the JSON API, so both refuse alike."""
    if isinstance(data, SubmissionIn):
        return data
    if not isinstance(data, FormInput):  # a RankingIn: refused by name before this (refuse_foreign_fields)
        raise InvalidSubmission("ranking: this task takes no ranking")
    fields = data.fields
    values: dict[str, Any] = {name: fields.get(name) or None for name in names}
    if "from_draft" in values:
        values["from_draft"] = str(fields.get("from_draft") or "").lower() in ("1", "true", "on")
    if "comment" in values:
        values["comment"] = str(fields.get("comment") or "")
    values["time_spent_ms"] = form_int(fields.get("time_spent_ms"))
    try:
        return SubmissionIn(**values)
    except ValidationError as exc:
        raise InvalidSubmission(describe_validation_error(exc)) from None


def _text(value: str | None) -> str:
    """Browsers send textarea lines as CRLF; what is stored (and measured) uses LF."""
    return (value or "").replace("\r\n", "\n").replace("\r", "\n")


# ---- writing a demonstration --------------------------------------------------------------------


@dataclass(frozen=True)
class DemonstrationAnswer:
    response: str
    draft_completion_id: int | None
    time_spent_ms: int | None


@dataclass(frozen=True)
class DemonstrationRecorder:
    stores: str = "demonstration"

    def check(self, data: Any, held: Held, project: Project) -> DemonstrationAnswer:
        sent = _as_submission(data, ("response", "from_draft"))
        response = _text(sent.response)
        if not response.strip():
            raise InvalidSubmission("response: empty; write the assistant's answer (markdown) before submitting")
        draft = None
        if sent.from_draft:
            if not held.display_order:
                raise InvalidSubmission("from_draft: this task has no model draft; write the answer from scratch")
            draft = held.display_order[0]
        return DemonstrationAnswer(response=response, draft_completion_id=draft, time_spent_ms=sent.time_spent_ms)

    def record(self, db: Session, accepted: Accepted, answer: DemonstrationAnswer) -> int:
        held = accepted.held
        finish_and_count(db, accepted)
        return service.store_demonstration(
            db,
            project=accepted.project,
            task_id=held.task_id,
            prompt_id=held.prompt_id,
            assignment_id=held.id,
            user_id=accepted.user_id,
            response=answer.response,
            draft_completion_id=answer.draft_completion_id,
            time_spent_ms=answer.time_spent_ms,
            late=accepted.late,
            now=accepted.now,
        )

    def stored(self, db: Session, held: Held) -> tuple[int, bool] | None:
        return service.stored_demonstration(db, task_id=held.task_id, user_id=held.user_id)


# ---- reviewing one ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewAnswer:
    decision: str
    reviewed_response: str | None
    comment: str
    time_spent_ms: int | None


@dataclass(frozen=True)
class ReviewRecorder:
    stores: str = "demonstration"

    def check(self, data: Any, held: Held, project: Project) -> ReviewAnswer:
        sent = _as_submission(data, ("decision", "reviewed_response", "comment"))
        comment = sent.comment.strip()
        edited = _text(sent.reviewed_response) if sent.reviewed_response is not None else None
        if sent.decision is None:
            raise InvalidSubmission('decision: missing; "accept", "edit" or "reject" the demonstration')
        if sent.decision == "edit" and not (edited or "").strip():
            raise InvalidSubmission('reviewed_response: empty; with decision "edit", send the corrected answer')
        if sent.decision != "edit" and edited is not None:
            raise InvalidSubmission(f'reviewed_response: only with decision "edit", not "{sent.decision}"')
        if sent.decision == "reject" and not comment:
            raise InvalidSubmission("comment: say why you reject the demonstration; its author will read it")
        return ReviewAnswer(sent.decision, edited, comment, sent.time_spent_ms)

    def record(self, db: Session, accepted: Accepted, answer: ReviewAnswer) -> int:
        finish_and_count(db, accepted)  # first: it locks the task row, so reviews of one demonstration queue
        return service.review_demonstration(
            db,
            demonstration_id=accepted.held.demonstration_id,
            reviewer_id=accepted.user_id,
            decision=answer.decision,
            reviewed_response=answer.reviewed_response,
            comment=answer.comment,
            time_spent_ms=answer.time_spent_ms,
            late=accepted.late,
            now=accepted.now,
        )

    def stored(self, db: Session, held: Held) -> tuple[int, bool] | None:
        return service.stored_review(db, demonstration_id=held.demonstration_id, reviewer_id=held.user_id)


@dataclass(frozen=True)
class ReviewView:
    """What a review task shows besides its prompt (TaskView.extra)."""

    demonstration_id: int
    response: str
    html: Markup


def load_review(db: Session, content: TaskContent) -> ReviewView | None:
    if content.demonstration_id is None:
        return None
    row = db.execute(
        select(Demonstration.id, Demonstration.response, Demonstration.response_html, Demonstration.meta).where(
            Demonstration.id == content.demonstration_id
        )
    ).first()
    if row is None:
        return None
    html = stored_or_rendered(row.response, row.response_html, (row.meta or {}).get("html_renderer"))
    return ReviewView(demonstration_id=row.id, response=row.response, html=html)
