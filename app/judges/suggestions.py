"""The judge's verdict shown to a human labeler as a suggestion (issue 16: off by default; the
page says it is an AI suggestion and never pre-fills the labeler's answer): its order on a ranking
or pairwise task, its ratings on a Likert, good/bad or multi-aspect one. How each kind's verdict is
read and shown is a table (app/judges/suggestion_kinds.py SUGGESTION_KINDS).

The labeling page renders on every refresh, poll and submit, so this stays off the hot path for
the projects that do not show suggestions (nearly all): whether a project shows them is cached per
process (and per connection pool: the read and the write sessions of a process share one, and
each test database has its own) for
FLAG_SECONDS, and only a project that shows them pays one statement per page: the current judge
version's verdict on the task, on the rankings or feedback (task_id, user_id) unique index. Saving
a judge forgets the flag in its own process at once; other web processes follow within FLAG_SECONDS.
"""

from __future__ import annotations

import time
from weakref import WeakKeyDictionary

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

from app.judges.suggestion_kinds import SUGGESTION_KINDS, Suggestion, SuggestionLine
from app.models.judges import Judge

__all__ = ["JUDGED_KINDS", "Suggestion", "SuggestionLine", "forget", "shows_suggestions", "suggestion"]

FLAG_SECONDS = 10.0
JUDGED_KINDS = frozenset(SUGGESTION_KINDS)
"""The task kinds a judge answers: ranking, pairwise and the rating forms."""

_flags: WeakKeyDictionary[Pool, dict[int, tuple[bool, float]]] = WeakKeyDictionary()

# Built once with bind parameters (statement building costs more CPU than running it).
_SHOWS = select(Judge.id).where(
    Judge.project_id == bindparam("project_id"), Judge.show_suggestion.is_(True), Judge.user_id.is_not(None)
)


def shows_suggestions(db: Session, *, project_id: int) -> bool:
    """Whether the project's judge shows suggestions (cached for FLAG_SECONDS)."""
    cache = _flags.setdefault(_pool(db), {})
    now = time.monotonic()
    cached = cache.get(project_id)
    if cached is not None and cached[1] > now:
        return cached[0]
    shows = db.execute(_SHOWS, {"project_id": project_id}).first() is not None
    cache[project_id] = (shows, now + FLAG_SECONDS)
    return shows


def forget(db: Session, *, project_id: int) -> None:
    """Called when the judge is saved: this process reads the flag afresh on the next page."""
    _flags.get(_pool(db), {}).pop(project_id, None)


def _pool(db: Session) -> Pool:
    bind = db.get_bind()
    return bind.engine.pool  # an Engine's (or the engine of a Connection a session is bound to)


def suggestion(db: Session, *, project_id: int, task_id: int, kind: str = "ranking") -> Suggestion | None:
    """The current judge version's verdict on the task, or None: suggestions off (the default), a
    kind no judge answers, or no verdict stored for this task."""
    how = SUGGESTION_KINDS.get(kind)
    if how is None or not shows_suggestions(db, project_id=project_id):
        return None
    rows = db.execute(how.statement, {"task_id": task_id, "project_id": project_id}).all()
    return how.read(rows, kind) if rows else None
