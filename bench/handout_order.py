"""`--order` for bench/labeling_load.py: the handout's active order (issue 16 §2) under load.

The bench's tasks get random priorities, as a refresh after a reward-model training would leave
them (worker/loop/active_order.py), every eighth left unscored (NULL) as tasks created after the
last refresh are; then the project hands out by priority. What is measured is the handout's
cost and guarantees with that order, not how good the priorities are (docs/active-learning.md).
"""

from __future__ import annotations

import random

from sqlalchemy import bindparam, select, text, update

from app.db import make_engine
from app.models import HandoutOrder, Project, RankingTask

ORDERS = ("default", "uncertainty")
UNSCORED_EVERY = 8


def apply_order(url: str, project_id: int, order: str, *, seed: int = 0) -> int:
    """Sets the project's handout_order; for an active order fills the priorities. Returns how
    many tasks got one."""
    engine = make_engine(url)
    tasks = RankingTask.__table__
    scored = 0
    with engine.begin() as conn:
        conn.execute(update(Project).where(Project.id == project_id).values(handout_order=HandoutOrder(order).value))
        if order != HandoutOrder.default:
            rng = random.Random(seed)
            ids = conn.scalars(select(tasks.c.id).where(tasks.c.project_id == project_id).order_by(tasks.c.id)).all()
            rows = [{"task_id": i, "p": None if rng.randrange(UNSCORED_EVERY) == 0 else rng.random()} for i in ids]
            conn.execute(
                update(tasks).where(tasks.c.id == bindparam("task_id")).values(handout_priority=bindparam("p")), rows
            )
            scored = sum(row["p"] is not None for row in rows)
    # Fresh planner statistics for the new column, as autovacuum would keep them (labeling_load.py).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return scored
