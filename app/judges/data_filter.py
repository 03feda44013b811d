"""Which Rankings are labelling data: every human's, and an AI judge's only where it took one of a
task's overlap slots (mode "slot": it came through the handout with an assignment). A judge in
mode "compare" writes Rankings too, with no assignment, to be measured against the humans on its
own page (app/judges); those never enter training, exports, or the human agreement figures."""

from __future__ import annotations

from sqlalchemy import ColumnElement, exists, or_

from app.models import Ranking, User
from app.models.judges import AI_ROLE


def labelling_data() -> ColumnElement[bool]:
    """WHERE clause keeping every Ranking but an AI judge's compare-only ones."""
    return or_(
        Ranking.assignment_id.is_not(None),
        ~exists().where(User.id == Ranking.user_id, User.role == AI_ROLE),
    )
