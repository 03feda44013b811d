"""Demonstration tasks and what their answers become: demonstrations, and reviews of them.

Creating tasks is an admin's action (REST or the project page); storing runs inside the labeler's
submit (app/demonstrations/recorders.py, called by app/labeling/submission.py), in its transaction,
after the shared path locked the assignment. Nothing here commits.

A demonstration is accepted at once unless the project has `demonstration_review` on; then it waits
("pending_review") for one review task, which its author is barred from (an assignment row in
state "barred": the handout never offers a labeler a task they had a row for). The first review
decides; with overlap > 1 later reviews are kept in meta["reviews"] as second opinions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.demonstrations.edit_distance import levenshtein
from app.markdown import RENDERER_VERSION, html_columns
from app.models import (
    Assignment,
    AssignmentState,
    Completion,
    Demonstration,
    DemonstrationSource,
    DemonstrationStatus,
    ModelVersion,
    Project,
    Prompt,
    PromptSplit,
    RankingTask,
    TaskCompletion,
    TaskStatus,
)

DEMONSTRATION = "demonstration"
DEMONSTRATION_REVIEW = "demonstration_review"
DECISIONS = ("accept", "edit", "reject")


class DemonstrationError(ValueError):
    """A request this service refuses; the message names what to change (a 4xx for routes)."""


# ---- creating tasks -----------------------------------------------------------------------------


@dataclass
class TasksCreated:
    task_ids: list[int] = field(default_factory=list)
    with_draft: int = 0
    """Tasks given the draft version's completion of their prompt."""
    already_queued: list[int] = field(default_factory=list)
    """Prompt ids left alone: they have a demonstration task that is not retired."""
    no_draft: list[int] = field(default_factory=list)
    """Prompt ids for which the draft version wrote nothing: their tasks have no draft."""


def create_demonstration_tasks(
    db: Session, project: Project, prompt_ids: Sequence[int], *, draft_version_id: int | None = None
) -> TasksCreated:
    """One demonstration task per prompt, in the order given; a prompt that already has one is left
    alone (so sending the same list twice creates nothing more). With `draft_version_id`, each task
    offers that model version's latest completion of its prompt as a draft to start from.

    Refused (DemonstrationError): an unknown prompt id, another project's prompt, a prompt of the
    eval split (demonstrations train; the evaluation set must stay unseen)."""
    ids = list(dict.fromkeys(prompt_ids))
    if not ids:
        raise DemonstrationError("prompt_ids: empty; name at least one prompt")
    prompts = {p.id: p for p in db.scalars(select(Prompt).where(Prompt.id.in_(ids)))}
    unknown = [i for i in ids if i not in prompts or prompts[i].project_id != project.id]
    if unknown:
        raise DemonstrationError(f"prompt_ids: no prompt {_listed(unknown)} in project {project.id}")
    held_out = [i for i in ids if prompts[i].split == PromptSplit.eval]
    if held_out:
        raise DemonstrationError(
            f"prompt_ids: {_listed(held_out)} belong to the eval split, which is never trained on; "
            "demonstrations are training data"
        )
    if draft_version_id is not None and (
        db.scalar(select(ModelVersion.project_id).where(ModelVersion.id == draft_version_id)) != project.id
    ):
        raise DemonstrationError(f"draft_version_id: no model version {draft_version_id} in project {project.id}")
    queued = set(
        db.scalars(
            select(RankingTask.prompt_id).where(
                RankingTask.prompt_id.in_(ids),
                RankingTask.kind == DEMONSTRATION,
                RankingTask.status != TaskStatus.retired,
            )
        )
    )
    drafts = _drafts(db, ids, draft_version_id) if draft_version_id is not None else {}
    created = TasksCreated(already_queued=[i for i in ids if i in queued])
    for prompt_id in ids:
        if prompt_id in queued:
            continue
        task = RankingTask(project_id=project.id, prompt_id=prompt_id, kind=DEMONSTRATION)
        db.add(task)
        db.flush()
        created.task_ids.append(task.id)
        if prompt_id in drafts:
            db.add(TaskCompletion(task_id=task.id, completion_id=drafts[prompt_id], position=0))
            created.with_draft += 1
        elif draft_version_id is not None:
            created.no_draft.append(prompt_id)
    db.flush()
    return created


def _drafts(db: Session, prompt_ids: list[int], version_id: int) -> dict[int, int]:
    """prompt id -> the version's latest completion of it."""
    rows = db.execute(
        select(Completion.prompt_id, Completion.id)
        .where(Completion.prompt_id.in_(prompt_ids), Completion.model_version_id == version_id)
        .order_by(Completion.id)
    )
    return {prompt_id: completion_id for prompt_id, completion_id in rows}  # the last one wins


def _listed(ids: Sequence[int]) -> str:
    shown = ", ".join(map(str, ids[:10]))
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


# ---- storing a labeler's demonstration --------------------------------------------------------


def store_demonstration(
    db: Session,
    *,
    project: Project,
    task_id: int,
    prompt_id: int,
    assignment_id: int | None,
    user_id: int,
    response: str,
    draft_completion_id: int | None,
    time_spent_ms: int | None,
    late: bool,
    now: datetime,
) -> int:
    """Stores the demonstration (and, when the project reviews, its review task); returns its id."""
    distance = None
    if draft_completion_id is not None:
        draft = db.scalar(select(Completion.text).where(Completion.id == draft_completion_id))
        distance = levenshtein(draft or "", response)
    reviewed = project.demonstration_review
    demonstration = Demonstration(
        project_id=project.id,
        prompt_id=prompt_id,
        task_id=task_id,
        assignment_id=assignment_id,
        user_id=user_id,
        response=response,
        response_html=html_columns(response)["text_html"],
        draft_completion_id=draft_completion_id,
        edit_distance=distance,
        time_spent_ms=time_spent_ms,
        status=DemonstrationStatus.pending_review if reviewed else DemonstrationStatus.accepted,
        source=DemonstrationSource.labeler,
        meta={"html_renderer": RENDERER_VERSION, "late": late},
        created_at=now,
    )
    db.add(demonstration)
    db.flush()
    if reviewed:
        pending = [(demonstration.id, demonstration.prompt_id, user_id)]
        open_reviews(db, project_id=demonstration.project_id, demonstrations=pending, now=now)
    return demonstration.id


def open_reviews(
    db: Session, *, project_id: int, demonstrations: Sequence[tuple[int, int, int | None]], now: datetime
) -> None:
    """One demonstration_review task per (demonstration id, prompt id, author id), in one multi-row
    INSERT (a labeler's submit opens one, an upload a whole file's). The author, when there is
    one, gets a `barred` assignment on it: it holds no slot and the handout never offers a task to
    someone with a row for it, so nobody reviews their own demonstration."""
    if not demonstrations:
        return
    created = db.execute(
        insert(RankingTask).returning(RankingTask.id, RankingTask.demonstration_id),
        [
            {
                "project_id": project_id,
                "prompt_id": prompt_id,
                "kind": DEMONSTRATION_REVIEW,
                "demonstration_id": demonstration_id,
                "created_at": now,
            }
            for demonstration_id, prompt_id, _ in demonstrations
        ],
    ).all()
    authors = {demonstration_id: author for demonstration_id, _, author in demonstrations if author is not None}
    barred = [
        {
            "task_id": task_id,
            "user_id": authors[demonstration_id],
            "project_id": project_id,
            "state": AssignmentState.barred,
            "display_order": [],
            "leased_at": now,
            "lease_expires_at": now,
            "finished_at": now,
            "skip_reason": "wrote the demonstration under review",
        }
        for task_id, demonstration_id in created
        if demonstration_id in authors
    ]
    if barred:
        db.execute(insert(Assignment), barred)


def stored_demonstration(db: Session, *, task_id: int, user_id: int) -> tuple[int, bool] | None:
    row = db.execute(
        select(Demonstration.id, Demonstration.meta).where(
            Demonstration.task_id == task_id, Demonstration.user_id == user_id
        )
    ).first()
    return None if row is None else (row.id, bool((row.meta or {}).get("late")))


# ---- reviewing ----------------------------------------------------------------------------------


def review_demonstration(
    db: Session,
    *,
    demonstration_id: int,
    reviewer_id: int,
    decision: str,
    reviewed_response: str | None,
    comment: str,
    time_spent_ms: int | None,
    late: bool,
    now: datetime,
) -> int:
    """Records one review; the first decides the demonstration's status. Returns its id."""
    demonstration = db.scalar(
        select(Demonstration).where(Demonstration.id == demonstration_id).with_for_update(of=Demonstration)
    )
    if demonstration is None:  # the review task cascades away with its demonstration: cannot happen
        raise DemonstrationError(f"demonstration {demonstration_id} no longer exists")
    if decision == "edit" and reviewed_response == demonstration.response:
        decision, reviewed_response = "accept", None  # an edit that changed nothing
    entry: dict[str, Any] = {
        "reviewer_id": reviewer_id,
        "decision": decision,
        "comment": comment,
        "time_spent_ms": time_spent_ms,
        "late": late,
        "at": now.isoformat(),
    }
    if reviewed_response is not None:
        entry["reviewed_response"] = reviewed_response
    meta = dict(demonstration.meta or {})
    meta["reviews"] = [*meta.get("reviews", []), entry]
    demonstration.meta = meta  # a new dict: JSON columns do not track changes inside
    if demonstration.reviewer_id is None:
        demonstration.status = DemonstrationStatus.rejected if decision == "reject" else DemonstrationStatus.accepted
        demonstration.reviewer_id = reviewer_id
        demonstration.reviewed_at = now
        demonstration.review_comment = comment
        demonstration.reviewed_response = reviewed_response
    db.flush()
    return demonstration.id


def stored_review(db: Session, *, demonstration_id: int, reviewer_id: int) -> tuple[int, bool] | None:
    meta = db.scalar(select(Demonstration.meta).where(Demonstration.id == demonstration_id))
    for entry in (meta or {}).get("reviews", []):
        if entry.get("reviewer_id") == reviewer_id:
            return demonstration_id, bool(entry.get("late"))
    return None
