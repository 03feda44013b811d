"""Writing an accepted ranking: the ranking row, its pairwise comparisons, the assignment marked
submitted and the ranking counted on its task.

On Postgres that is one statement (data-modifying CTEs): four round trips cost more CPU on both
sides (docs/labeling-performance.md, "What changed, and what each change bought", 1), and this
runs on every submit. SQLite has no data-modifying CTEs; there the four statements run
in-process anyway. Either way it runs in the caller's transaction, after the caller locked the
assignment row (submission.submit_answer), and takes the task row's lock by updating it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, bindparam, case, func, insert, select, true, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app.db import is_sqlite
from app.labeling.partition import pairs_from_groups
from app.models import (
    Assignment,
    AssignmentState,
    PairwiseComparison,
    Ranking,
    RankingTask,
    TaskStatus,
)

_assignments = Assignment.__table__
_tasks = RankingTask.__table__
_rankings = Ranking.__table__
_pairs = PairwiseComparison.__table__

RANKING_FIELDS = (
    "task_id",
    "user_id",
    "project_id",
    "assignment_id",
    "groups",
    "flags",
    "none_acceptable",
    "display_order",
    "time_spent_ms",
    "comment",
    "late",
    "created_at",
    "critiques",
)


def _finish_assignment(prefix: str = ""):
    return (
        update(_assignments)
        .where(_assignments.c.id == bindparam(f"{prefix}assignment_id"))
        .values(
            state=bindparam(f"{prefix}new_state"),
            finished_at=bindparam(f"{prefix}now"),
            skip_reason=bindparam(f"{prefix}reason"),
        )
    )


def _count_ranking(prefix: str = ""):
    """One more ranking on the task; it is complete once it has `overlap` of them."""
    count = _tasks.c.rankings_count + 1
    return (
        update(_tasks)
        .where(_tasks.c.id == bindparam(f"{prefix}task_id"))
        .values(
            rankings_count=count,
            status=case(
                (and_(_tasks.c.status == TaskStatus.open, count >= bindparam(f"{prefix}overlap")), TaskStatus.complete),
                else_=_tasks.c.status,
            ),
        )
    )


def _store_statement_postgres():
    # Every bind name is unique across the whole statement: a parameter named like a column of a
    # table that one of the CTEs inserts into or updates would be taken as a value for that column.
    new_ranking = (
        insert(_rankings)
        .values({name: bindparam(f"r_{name}") for name in RANKING_FIELDS})
        .returning(_rankings.c.id)
        .cte("new_ranking")
    )
    int_array = ARRAY(Integer)
    pair = (
        func.unnest(
            bindparam("p_chosen", type_=int_array),
            bindparam("p_rejected", type_=int_array),
            bindparam("p_margin", type_=int_array),
        )
        .table_valued("chosen_id", "rejected_id", "margin")
        .render_derived(name="pair")
    )
    new_pairs = (
        insert(_pairs)
        .from_select(
            ["ranking_id", "task_id", "chosen_id", "rejected_id", "margin"],
            select(
                new_ranking.c.id,
                bindparam("r_task_id", type_=Integer),
                pair.c.chosen_id,
                pair.c.rejected_id,
                pair.c.margin,
            )
            .select_from(new_ranking)
            .join(pair, true()),
        )
        .cte("new_pairs")
    )
    # Postgres runs every data-modifying CTE exactly once, whether or not the query reads it.
    return select(new_ranking.c.id).add_cte(
        new_pairs, _finish_assignment("f_").cte("finished"), _count_ranking("c_").cte("counted")
    )


# Built once (see handout.py for why).
FINISH_ASSIGNMENT = _finish_assignment()
COUNT_ANSWER = _count_ranking()
"""One more answer on a task (recorders.finish_and_count uses it for answers that are no ranking)."""
_INSERT_RANKING = insert(_rankings).returning(_rankings.c.id)
_INSERT_PAIRS = insert(_pairs)
_STORE_POSTGRES = _store_statement_postgres()


def store_ranking(db: Session, *, ranking: dict[str, Any], overlap: int, now: datetime) -> int:
    """Returns the new ranking's id. `ranking` holds RANKING_FIELDS (`critiques` may be left out)."""
    ranking = {"critiques": {}, **ranking}
    pairs = pairs_from_groups(ranking["groups"])
    finish = {
        "assignment_id": ranking["assignment_id"],
        "new_state": AssignmentState.submitted,
        "now": now,
        "reason": None,
    }
    count = {"task_id": ranking["task_id"], "overlap": overlap}
    if not is_sqlite(db):
        return db.scalar(
            _STORE_POSTGRES,
            {
                **{f"r_{name}": ranking[name] for name in RANKING_FIELDS},
                **{f"f_{name}": value for name, value in finish.items()},
                **{f"c_{name}": v for name, v in count.items()},
                "p_chosen": [chosen for chosen, _, _ in pairs],
                "p_rejected": [rejected for _, rejected, _ in pairs],
                "p_margin": [margin for _, _, margin in pairs],
            },
        )
    ranking_id = db.scalar(_INSERT_RANKING, ranking)
    if pairs:
        db.execute(
            _INSERT_PAIRS,
            [
                {
                    "ranking_id": ranking_id,
                    "task_id": ranking["task_id"],
                    "chosen_id": chosen,
                    "rejected_id": rejected,
                    "margin": margin,
                }
                for chosen, rejected, margin in pairs
            ],
        )
    db.execute(FINISH_ASSIGNMENT, finish)
    db.execute(COUNT_ANSWER, count)
    return ranking_id
