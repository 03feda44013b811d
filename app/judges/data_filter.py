"""Which Rankings (and rating-form Feedback rows) are labelling data: every human's, and an AI
judge's only where it took one of a task's overlap slots (mode "slot": it came through the
handout with an assignment). A judge in mode "compare" writes them too, with no assignment, to be
measured against the humans on its own page (app/judges); those never enter training, exports,
or the human agreement figures."""

from __future__ import annotations

from sqlalchemy import ColumnElement, exists, or_

from app.models import Feedback, Ranking, User
from app.models.judges import AI_ROLE


def labelling_data(answers: type[Ranking] | type[Feedback] = Ranking) -> ColumnElement[bool]:
    """WHERE clause keeping every Ranking (or Feedback row) but an AI judge's compare-only ones."""
    return or_(
        answers.assignment_id.is_not(None),
        ~exists().where(User.id == answers.user_id, User.role == AI_ROLE),
    )
