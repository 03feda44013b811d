"""The Postgres handout in one statement: claim a slot, record the lease, read what is shown.

A new lease used to cost four round trips: claim the task (UPDATE … RETURNING), read its prompt
and completions (for the shuffle and the page), insert the assignment, count the labeler's
progress. Each round trip costs CPU on both sides, and this runs after every submit, so here they
are one statement with data-modifying CTEs. Postgres runs each CTE once, all against one snapshot:

  * `claimed` takes the slot exactly as handout._claim_statement does (same row choice, same
    FOR UPDATE [SKIP LOCKED] on the candidate), so the concurrency argument in handout.py holds.
    `status BETWEEN 'open' AND 'open'` with ORDER BY (status, id) is `status = 'open'` ORDER BY id
    in a form only ix_ranking_tasks_handout can serve: given the equality, the planner walked the
    primary key instead whenever its statistics lagged behind a burst of labeling ("all tasks
    open"), stepping over every finished task at the front of the table, slower as the project
    grows (docs/labeling-performance.md, "The browser flow and a one-statement handout", step 4).
    Under an active handout order (`prioritized`) the ORDER BY puts `handout_priority DESC NULLS
    LAST` between the two, which ix_ranking_tasks_priority serves the same way (migration 0010);
  * `shown` shuffles the task's completion ids by handout.display_order's key, computed in SQL;
  * `lease` inserts the assignment (the unique (task_id, user_id) stays the backstop);
  * the final SELECT reads the content and the progress counts. `left_for_you` takes the
    PROGRESS_CAP oldest open tasks with a free slot (an ordered LIMIT on the handout index) and
    probes only those for the labeler's lease. Filtering on "never had" inside the scan let the
    planner guess one matching row and scan and sort every open task instead, slower as the
    project grows (docs/labeling-performance.md, "A second pass", step 4). The counts see the
    snapshot from before the claim, so `waiting` still includes the task just claimed: it
    already is "the task you hold + the open ones you never had".

One row per completion (the lease and prompt repeated); no row when nothing could be claimed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Integer, bindparam, text
from sqlalchemy.orm import Session

from app.labeling.content import TaskContent, html_by_id
from app.models import AssignmentState, TaskStatus
from app.models._types import JSONType, UTCDateTime

# A literal, not a parameter: psycopg prepares the statement and Postgres soon switches to a
# generic plan, which knows nothing of a parameter's value. For `status BETWEEN $2 AND $2` it
# guessed two matching rows and chose a bitmap scan of every open task, anti-joined and sorted
# before LIMIT 1, growing with the project (docs/labeling-performance.md, "A second pass", step 4).
OPEN = f"'{TaskStatus.open.value}'"
assert TaskStatus.open.value.isidentifier()  # safe to write into the SQL
SUBMITTED = f"'{AssignmentState.submitted.value}'"  # the same, for the labeler's "done" count
assert AssignmentState.submitted.value.isidentifier()


def _statement(*, wait: bool, prioritized: bool = False):
    skip_locked = "" if wait else " SKIP LOCKED"
    # An active handout order (handout._claim_statement): highest priority first, unscored last,
    # then the oldest, in the order of ix_ranking_tasks_priority so the pick stays one index probe.
    priority = " candidate.handout_priority DESC NULLS LAST," if prioritized else ""
    sql = f"""
WITH claimed AS (
    UPDATE ranking_tasks SET slots_taken = ranking_tasks.slots_taken + 1
    WHERE ranking_tasks.id = (
        SELECT candidate.id FROM ranking_tasks AS candidate
        WHERE candidate.project_id = :project AND candidate.status BETWEEN {OPEN} AND {OPEN}
          AND candidate.slots_taken < :overlap
          AND NOT EXISTS (SELECT 1 FROM assignments AS had
                          WHERE had.task_id = candidate.id AND had.user_id = :labeler)
        ORDER BY candidate.status,{priority} candidate.id LIMIT 1
        FOR UPDATE OF candidate{skip_locked})
    RETURNING ranking_tasks.id, ranking_tasks.prompt_id, ranking_tasks.kind, ranking_tasks.demonstration_id
), shown AS (
    SELECT claimed.id AS task_id, claimed.prompt_id, claimed.kind, claimed.demonstration_id,
           COALESCE(jsonb_agg(item.completion_id
                              ORDER BY md5(claimed.id || ':' || :labeler || ':' || item.completion_id),
                                       item.completion_id)
                    FILTER (WHERE item.completion_id IS NOT NULL), '[]'::jsonb) AS display_order
    FROM claimed LEFT JOIN task_completions AS item ON item.task_id = claimed.id
    GROUP BY claimed.id, claimed.prompt_id, claimed.kind, claimed.demonstration_id
), lease AS (
    INSERT INTO assignments (task_id, user_id, project_id, state, display_order, leased_at, lease_expires_at)
    SELECT shown.task_id, :labeler, :project, :leased, shown.display_order, :now, :expires FROM shown
    RETURNING assignments.id, assignments.task_id, assignments.lease_expires_at, assignments.display_order
)
SELECT lease.id AS assignment_id, lease.task_id, lease.lease_expires_at, lease.display_order, shown.kind,
       shown.demonstration_id,
       prompt.text AS prompt_text, prompt.messages AS prompt_messages,
       completion.id, completion.text AS completion_text, completion.text_html, completion.html_renderer,
       (SELECT count(*) FROM assignments AS answered
        WHERE answered.user_id = :labeler AND answered.project_id = :project
          AND answered.state = {SUBMITTED}) AS done,
       left_for_you.waiting, left_for_you.window_full
FROM lease
JOIN shown ON shown.task_id = lease.task_id
JOIN prompts AS prompt ON prompt.id = shown.prompt_id
LEFT JOIN task_completions AS item ON item.task_id = lease.task_id
LEFT JOIN completions AS completion ON completion.id = item.completion_id
CROSS JOIN (
    SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM assignments AS had
                                              WHERE had.task_id = oldest.id AND had.user_id = :labeler)) AS waiting,
           count(*) >= :cap AS window_full
    FROM (SELECT open_task.id FROM ranking_tasks AS open_task
          WHERE open_task.project_id = :project AND open_task.status BETWEEN {OPEN} AND {OPEN}
            AND open_task.slots_taken < :overlap
          ORDER BY open_task.status, open_task.id LIMIT :cap) AS oldest
) AS left_for_you
ORDER BY item.position
"""
    return (
        text(sql)
        .bindparams(
            bindparam("labeler", type_=Integer),
            bindparam("project", type_=Integer),
            bindparam("overlap", type_=Integer),
            bindparam("cap", type_=Integer),
            bindparam("now", type_=UTCDateTime()),
            bindparam("expires", type_=UTCDateTime()),
        )
        .columns(lease_expires_at=UTCDateTime(), display_order=JSONType, prompt_messages=JSONType)
    )


_CLAIM_AND_LEASE = {
    (wait, prioritized): _statement(wait=wait, prioritized=prioritized)
    for wait in (False, True)
    for prioritized in (False, True)
}


class NewLease(NamedTuple):
    assignment_id: int
    task_id: int
    lease_expires_at: datetime
    display_order: list[int]
    content: TaskContent
    done: int
    """Tasks the labeler answered in the project (rankings, verdicts, demonstrations, reviews)."""
    waiting: int
    """The task just leased plus open tasks with a free slot the labeler never had, among the
    `cap` oldest open tasks with a free slot."""
    window_full: bool
    """There were `cap` such oldest open tasks: more may be left than `waiting`."""


def claim_and_lease(
    db: Session,
    *,
    user_id: int,
    project_id: int,
    overlap: int,
    lease_minutes: int,
    now: datetime,
    wait: bool,
    cap: int,
    prioritized: bool = False,
) -> NewLease | None:
    rows = db.execute(
        _CLAIM_AND_LEASE[wait, prioritized],
        {
            "labeler": user_id,
            "project": project_id,
            "overlap": overlap,
            "cap": cap,
            "now": now,
            "expires": now + timedelta(minutes=lease_minutes),
            "leased": AssignmentState.leased.value,
        },
    ).all()
    if not rows:
        return None
    first = rows[0]
    content = TaskContent(
        kind=first.kind,
        demonstration_id=first.demonstration_id,
        prompt_text=first.prompt_text,
        prompt_messages=first.prompt_messages,
        completions={r.id: r.completion_text for r in rows if r.id is not None},
        completions_html=html_by_id(rows),
    )
    return NewLease(
        first.assignment_id,
        first.task_id,
        first.lease_expires_at,
        first.display_order,
        content,
        first.done,
        first.waiting,
        first.window_full,
    )
