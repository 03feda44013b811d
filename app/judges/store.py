"""Storing an AI judgment of one task, in the caller's transaction (a judge run commits each task
on its own, so a task is judged wholly or not at all).

Slot mode goes through the labeling service's own path: the judge takes a free overlap slot the
way the handout does (conditional UPDATE on the locked task row), holds an assignment, and
ranking_store.store_ranking writes the ranking and its pairs, marks the assignment submitted and
counts the ranking (completing the task at `overlap`). With no free slot it stores nothing: a
judge never displaces a human.

Compare mode must not touch the task's counts (that is what keeps humans' overlap intact), so it
writes the Ranking row and its pairs (partition.pairs_from_groups, as store_ranking does) with no
assignment and leaves slots_taken and rankings_count alone.

A rating form's answer (`ratings`) goes through the form's own recorder
(app/labeling/rating_recorder.py, looked up in FORM_TYPES): `check` validates it exactly as a
human's, then `record` (slot: counted, like a human's submit) or `write` (compare: the Feedback
row with no assignment, nothing counted). Its verdict has no ranking_id: the Feedback row is the
one of (task, AI account).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from app.db import start_write_transaction
from app.labeling.form_types import FORM_TYPES
from app.labeling.partition import pairs_from_groups
from app.labeling.ranking_store import store_ranking
from app.labeling.rating_recorder import RatingRecorder
from app.labeling.recorders import Accepted, Held
from app.labeling.schemas import SubmissionIn
from app.models import Assignment, AssignmentState, PairwiseComparison, Project, Ranking, RankingTask, utcnow
from app.models.judges import JudgeMode, JudgeVerdict
from worker.ml.judge_forms import RATING_FORMS

STORED, UNPARSEABLE, UNDECIDED, NO_SLOT = "stored", "unparseable", "undecided", "no_slot"


def already_judged(db: Session, *, task_id: int, user_id: int) -> bool:
    return (
        db.scalar(select(JudgeVerdict.id).where(JudgeVerdict.task_id == task_id, JudgeVerdict.user_id == user_id))
        is not None
    )


def record_verdict(
    db: Session,
    *,
    run_id: int,
    user_id: int,
    task_id: int,
    mode: str,
    groups: list[list[int]] | None = None,
    ratings: dict[int, dict[str, int]] | None = None,
    outcome: str,
    shown: list[int],
    orders: str,
) -> str:
    """Stores the judge's verdict on the task (and its ranking, or its `ratings` on a rating
    form's task: completion id -> aspect ("" for its own rating) -> value, when `outcome` is STORED);
    returns the outcome, which becomes NO_SLOT when slot mode finds the overlap full, or
    "already" when this judge version judged the task before (a redelivered run)."""
    start_write_transaction(db)
    task = db.execute(
        select(RankingTask.id, RankingTask.project_id, RankingTask.status, RankingTask.kind, RankingTask.round_id)
        .where(RankingTask.id == task_id)
        .with_for_update()
    ).one()
    if already_judged(db, task_id=task_id, user_id=user_id):
        return "already"
    project = db.get_one(Project, task.project_id)
    now = utcnow()
    ranking_id = None
    counted = False
    answer = Answer(groups, ratings, shown, task.kind, task.round_id)
    if outcome == STORED and (groups is not None or ratings is not None):
        if mode == JudgeMode.slot:
            taken = db.execute(
                update(RankingTask)
                .where(
                    RankingTask.id == task_id,
                    RankingTask.status == "open",
                    RankingTask.slots_taken < project.overlap,
                )
                .values(slots_taken=RankingTask.slots_taken + 1)
            )
            if cast(CursorResult, taken).rowcount == 1:
                ranking_id = _store_in_slot(db, task_id=task_id, project=project, user_id=user_id, answer=answer)
                counted = True
            else:
                outcome = NO_SLOT
        else:
            ranking_id = _store_compare_only(db, task_id=task_id, project=project, user_id=user_id, answer=answer)
    db.add(
        JudgeVerdict(
            run_id=run_id,
            task_id=task_id,
            user_id=user_id,
            ranking_id=ranking_id,
            outcome=outcome,
            counted=counted,
            orders=orders,
            created_at=now,
        )
    )
    db.flush()
    return outcome


class Answer(NamedTuple):
    groups: list[list[int]] | None
    ratings: dict[int, dict[str, int]] | None
    shown: list[int]
    kind: str
    round_id: int | None


def _store_in_slot(db: Session, *, task_id: int, project: Project, user_id: int, answer: Answer) -> int | None:
    """The ranking's id (None for ratings: the Feedback row is the one of task and account)."""
    now = utcnow()
    assignment = Assignment(
        task_id=task_id,
        user_id=user_id,
        project_id=project.id,
        state=AssignmentState.leased,
        display_order=answer.shown,
        leased_at=now,
        lease_expires_at=now + timedelta(minutes=project.lease_minutes),
    )
    db.add(assignment)
    db.flush()
    if answer.ratings is not None:
        _rate(db, assignment.id, task_id=task_id, project=project, user_id=user_id, answer=answer, now=now)
        return None
    ranking: dict[str, object] = {
        "task_id": task_id,
        "user_id": user_id,
        "project_id": project.id,
        "assignment_id": assignment.id,
        "groups": answer.groups,
        "flags": {},
        "none_acceptable": False,
        "display_order": answer.shown,
        "time_spent_ms": None,
        "comment": "",
        "late": False,
        "created_at": now,
    }
    return store_ranking(db, ranking=ranking, overlap=project.overlap, now=now)


def _rate(
    db: Session,
    assignment: int | None,
    *,
    task_id: int,
    project: Project,
    user_id: int,
    answer: Answer,
    now: datetime,
) -> None:
    """The form's recorder checks the ratings as a human's, then records them (counted, on the
    judge's assignment) or, with no assignment, only writes them."""
    recorder = FORM_TYPES[answer.kind].recorder
    assert isinstance(recorder, RatingRecorder), f"{answer.kind} tasks take no ratings"
    held = cast(Held, _HeldByJudge(assignment, task_id, answer.shown, answer.round_id, user_id))
    fields = RATING_FORMS[answer.kind].submission(answer.ratings or {}, answer.shown, project.form_settings or {})
    checked = recorder.check(SubmissionIn.model_validate(fields), held, project)
    accepted = Accepted(held=held, user_id=user_id, project=project, now=now, late=False)
    if assignment is None:
        recorder.write(db, accepted, checked)
    else:
        recorder.record(db, accepted, checked)


class _HeldByJudge(NamedTuple):
    """What a recorder reads of the held assignment (recorders.Held), for the judge's answer."""

    id: int | None
    task_id: int
    display_order: list[int]
    round_id: int | None
    user_id: int


def _store_compare_only(db: Session, *, task_id: int, project: Project, user_id: int, answer: Answer) -> int | None:
    if answer.ratings is not None:
        _rate(db, None, task_id=task_id, project=project, user_id=user_id, answer=answer, now=utcnow())
        return None
    groups, shown = answer.groups or [], answer.shown
    ranking = Ranking(
        task_id=task_id,
        user_id=user_id,
        project_id=project.id,
        assignment_id=None,
        groups=groups,
        flags={},
        none_acceptable=False,
        display_order=shown,
        comment="",
        late=False,
        critiques={},
    )
    ranking.pairs = [
        PairwiseComparison(task_id=task_id, chosen_id=chosen, rejected_id=rejected, margin=margin)
        for chosen, rejected, margin in pairs_from_groups(groups)
    ]
    db.add(ranking)
    db.flush()
    return ranking.id
