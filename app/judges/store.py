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
"""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from app.db import start_write_transaction
from app.labeling.partition import pairs_from_groups
from app.labeling.ranking_store import store_ranking
from app.models import Assignment, AssignmentState, PairwiseComparison, Project, Ranking, RankingTask, utcnow
from app.models.judges import JudgeMode, JudgeVerdict

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
    groups: list[list[int]] | None,
    outcome: str,
    shown: list[int],
    orders: str,
) -> str:
    """Stores the judge's verdict on the task (and its ranking when `outcome` is STORED);
    returns the outcome, which becomes NO_SLOT when slot mode finds the overlap full, or
    "already" when this judge version judged the task before (a redelivered run)."""
    start_write_transaction(db)
    task = db.execute(
        select(RankingTask.id, RankingTask.project_id, RankingTask.status)
        .where(RankingTask.id == task_id)
        .with_for_update()
    ).one()
    if already_judged(db, task_id=task_id, user_id=user_id):
        return "already"
    project = db.get_one(Project, task.project_id)
    now = utcnow()
    ranking_id = None
    counted = False
    if outcome == STORED and groups is not None:
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
                ranking_id = _store_in_slot(
                    db, task_id=task_id, project=project, user_id=user_id, groups=groups, shown=shown
                )
                counted = True
            else:
                outcome = NO_SLOT
        else:
            ranking_id = _store_compare_only(
                db, task_id=task_id, project=project, user_id=user_id, groups=groups, shown=shown
            )
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


def _store_in_slot(
    db: Session, *, task_id: int, project: Project, user_id: int, groups: list[list[int]], shown: list[int]
) -> int:
    now = utcnow()
    assignment = Assignment(
        task_id=task_id,
        user_id=user_id,
        project_id=project.id,
        state=AssignmentState.leased,
        display_order=shown,
        leased_at=now,
        lease_expires_at=now + timedelta(minutes=project.lease_minutes),
    )
    db.add(assignment)
    db.flush()
    ranking = {
        "task_id": task_id,
        "user_id": user_id,
        "project_id": project.id,
        "assignment_id": assignment.id,
        "groups": groups,
        "flags": {},
        "none_acceptable": False,
        "display_order": shown,
        "time_spent_ms": None,
        "comment": "",
        "late": False,
        "created_at": now,
    }
    return store_ranking(db, ranking=ranking, overlap=project.overlap, now=now)


def _store_compare_only(
    db: Session, *, task_id: int, project: Project, user_id: int, groups: list[list[int]], shown: list[int]
) -> int:
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
