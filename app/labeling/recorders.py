"""How a task kind keeps a labeler's answer: the storage hook of app/labeling/task_types.py.

submission.submit_answer owns what every kind shares (the locked assignment, the retry check, the
skipped → 409 and late-submit rules, the next task); a Recorder owns the rest, in three steps:

  check(data, held)        the answer validated against the task; InvalidSubmission (422) naming
                           the field. Runs before the retry check: malformed is a 422 either way.
  record(db, accepted, a)  stores the checked answer, marks the assignment submitted and counts the
                           answer on its task (`finish_and_count`), returning the stored row's id.
  stored(db, held)         what a retry answers: (id, late) of the answer this assignment stored.

RankingRecorder turns the answer into a Ranking (kinds "ranking", "pairwise_eval" and "pairwise",
through their `judgment`, app/labeling/judgments.py); app/labeling/rating_recorder.py records the
rating forms (likert, good_bad, multi_aspect); app/demonstrations/recorders.py records
demonstrations and their reviews.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Row
from sqlalchemy.orm import Session

from app.labeling.errors import InvalidSubmission
from app.labeling.partition import InvalidRanking, validate_partition
from app.labeling.ranking_store import COUNT_ANSWER, FINISH_ASSIGNMENT, store_ranking
from app.labeling.schemas import RankingIn
from app.models import AssignmentState, Project
from app.rounds import service as rounds_service

Held = Row[Any]
"""The labeler's assignment joined with its task, locked (submission._ASSIGNMENT_FOR_SUBMIT):
id, task_id, project_id, state, lease_expires_at, display_order, round_id, kind,
demonstration_id, ranking_id, late."""


@dataclass(frozen=True)
class Accepted:
    """A submit the shared path let through: the answer may be stored now."""

    held: Held
    user_id: int
    project: Project
    now: datetime
    late: bool
    """Sent after the lease expired, taken because a slot was still free."""


class Recorder(Protocol):
    @property
    def stores(self) -> str:
        """What the returned id names: "ranking", "feedback" or "demonstration" (SubmitOut's `<stores>_id`)."""
        ...

    def check(self, data: Any, held: Held, project: Project) -> Any: ...

    def record(self, db: Session, accepted: Accepted, answer: Any) -> int: ...

    def stored(self, db: Session, held: Held) -> tuple[int, bool] | None: ...


def finish_and_count(db: Session, accepted: Accepted) -> None:
    """The assignment is submitted and its task has one more answer (complete at overlap): what
    store_ranking does in its own statement, for recorders that store something else."""
    held = accepted.held
    db.execute(
        FINISH_ASSIGNMENT,
        {"assignment_id": held.id, "new_state": AssignmentState.submitted, "now": accepted.now, "reason": None},
    )
    db.execute(COUNT_ANSWER, {"task_id": held.task_id, "overlap": accepted.project.overlap})


# ---- rankings ---------------------------------------------------------------------------------

Judgment = Callable[[Any, Sequence[int]], RankingIn]


@dataclass(frozen=True)
class RankingRecorder:
    """The answer becomes ranking groups (the kind's `judgment`), stored as a Ranking with its pairs."""

    judgment: Judgment
    takes_flags: bool
    name: str
    stores: str = "ranking"

    def check(self, data: Any, held: Held, project: Project) -> tuple[RankingIn, list[list[int]], dict]:
        judged = self.judgment(data, held.display_order)
        try:
            groups = validate_partition(judged.ranking, held.display_order)
        except InvalidRanking as exc:
            raise InvalidSubmission(str(exc)) from None
        if judged.flags and not self.takes_flags:
            raise InvalidSubmission(f"flags: a {self.name.lower()} task takes no flags; say why in the comment instead")
        flags = _checked_flags(judged.flags, completion_ids=set(held.display_order), allowed=set(project.flags or []))
        for cid in judged.critiques:  # (a pairwise judgment keys them by side, always one of the two)
            if cid not in held.display_order:
                raise InvalidSubmission(f"critiques.{cid}: completion {cid} is not part of this task")
        return judged, groups, flags

    def record(self, db: Session, accepted: Accepted, answer: tuple[RankingIn, list[list[int]], dict]) -> int:
        judged, groups, flags = answer
        held, project = accepted.held, accepted.project
        ranking_id = store_ranking(
            db,
            overlap=project.overlap,
            now=accepted.now,
            ranking={
                "task_id": held.task_id,
                "user_id": accepted.user_id,
                "project_id": project.id,
                "assignment_id": held.id,
                "groups": groups,
                "flags": flags,
                "none_acceptable": judged.none_acceptable,
                "display_order": held.display_order,
                "time_spent_ms": judged.time_spent_ms,
                "comment": judged.comment.strip(),
                "late": accepted.late,
                "created_at": accepted.now,
                "critiques": {
                    str(cid): text.replace("\r\n", "\n").strip()
                    for cid, text in judged.critiques.items()
                    if text.strip()
                },
            },
        )
        if held.round_id is not None:
            # A training round set to auto-start begins once its labeling threshold is reached. Only a
            # round's own tasks count towards it, so rankings of uploaded tasks need no look.
            rounds_service.on_rankings_added(db, project_id=project.id)
        return ranking_id

    def stored(self, db: Session, held: Held) -> tuple[int, bool] | None:
        # The submit statement already joined the labeler's ranking of the task: no extra query.
        return None if held.ranking_id is None else (held.ranking_id, held.late)


def _checked_flags(flags: dict[int, list[str]], *, completion_ids: set[int], allowed: set[str]) -> dict[str, list[str]]:
    checked: dict[str, list[str]] = {}
    for completion_id, names in flags.items():
        if completion_id not in completion_ids:
            raise InvalidSubmission(f"flags: completion {completion_id} is not part of this task")
        unknown = sorted(set(names) - allowed)
        if unknown:
            raise InvalidSubmission(
                f"flags[{completion_id}]: unknown flag {', '.join(map(repr, unknown))}; "
                f"this project's flags are {', '.join(sorted(allowed)) or 'none'}"
            )
        if names:
            checked[str(completion_id)] = sorted(set(names))
    return checked
