"""The judge's order shown to a human labeler as a suggestion (issue 16: off by default; the page
says it is an AI suggestion and never pre-fills the labeler's answer).

The labeling page renders on every refresh, poll and submit, so this stays off the hot path for
the projects that do not show suggestions (nearly all): whether a project shows them is cached per
process (and per connection pool: the read and the write sessions of a process share one, and
each test database has its own) for
FLAG_SECONDS, and only a project that shows them pays one statement per page: the current judge
version's ranking of the task, on the rankings (task_id, user_id) unique index. Saving a judge
forgets the flag in its own process at once; other web processes follow within FLAG_SECONDS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

from app.models import Ranking
from app.models.judges import Judge

FLAG_SECONDS = 10.0
JUDGED_KINDS = frozenset({"ranking", "pairwise"})
"""The task kinds a judge ranks (a pairwise task is a ranking of two)."""

_flags: WeakKeyDictionary[Pool, dict[int, tuple[bool, float]]] = WeakKeyDictionary()

# Built once with bind parameters (statement building costs more CPU than running it).
_SHOWS = select(Judge.id).where(
    Judge.project_id == bindparam("project_id"), Judge.show_suggestion.is_(True), Judge.user_id.is_not(None)
)
_ORDER = (
    select(Ranking.groups, Judge.name, Judge.version)
    .join(Judge, Judge.user_id == Ranking.user_id)
    .where(
        Ranking.task_id == bindparam("task_id"),
        Judge.project_id == bindparam("project_id"),
        Judge.show_suggestion.is_(True),
    )
)


@dataclass(frozen=True)
class Suggestion:
    judge: str
    """The judge's name and version, e.g. "critic v2"."""
    groups: list[list[int]]
    """Completion ids, best first; a group of several is a tie."""

    def text(self, labels: dict[int, str]) -> str:
        """The order in the labeler's own names for the completions, e.g. "C > A = B > D"."""
        named = [[labels[c] for c in group if c in labels] for group in self.groups]
        return " > ".join(" = ".join(group) for group in named if group)


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
    """The current judge version's order of the task, or None: suggestions off (the default), a
    kind the judge does not rank, or no verdict stored for this task."""
    if kind not in JUDGED_KINDS or not shows_suggestions(db, project_id=project_id):
        return None
    row = db.execute(_ORDER, {"task_id": task_id, "project_id": project_id}).first()
    if row is None:
        return None
    groups, name, version = row
    return Suggestion(judge=f"{name} v{version}", groups=groups)
