"""Numbers for the admin's demonstrations page: who wrote how many, how long, how fast, and how
many a reviewer accepted.

Medians need every value and SQLite has no percentile function, so the narrow columns are
streamed in batches and only word counts and times are kept (one int per demonstration)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.exports.service import plain_prompt
from app.markdown import render_markdown, stored_or_rendered
from app.models import Demonstration, DemonstrationSource, DemonstrationStatus, Prompt, User

STREAM_BATCH = 1000


def words(text: str) -> int:
    """Whitespace-separated words, what a labeler's word counter shows."""
    return len(text.split())


@dataclass
class AuthorStats:
    """One labeler's demonstrations (or, with `user` None, the uploaded ones)."""

    user: User | None
    written: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    reviewed: int = 0
    """Accepted or rejected by a reviewer (not accepted at once, not uploaded with a status)."""
    reviewed_accepted: int = 0
    edited_by_reviewer: int = 0
    from_draft: int = 0
    """Started from a model draft."""
    median_words: float | None = None
    median_seconds: float | None = None

    @property
    def acceptance_rate(self) -> float | None:
        """Percent of the reviewed ones that were accepted; None before any review."""
        return 100 * self.reviewed_accepted / self.reviewed if self.reviewed else None

    @property
    def label(self) -> str:
        return self.user.email if self.user is not None else "uploaded"


@dataclass
class DemonstrationStats:
    total: int
    by_status: Counter[str]
    by_source: Counter[str]
    authors: list[AuthorStats]
    """Labelers by email, then the uploaded ones."""
    median_words: float | None
    median_seconds: float | None
    acceptance_rate: float | None


def project_stats(db: Session, *, project_id: int) -> DemonstrationStats:
    stats: dict[int | None, AuthorStats] = {}
    word_counts: dict[int | None, list[int]] = defaultdict(list)
    times: dict[int | None, list[int]] = defaultdict(list)
    rows = db.execute(
        select(
            Demonstration.user_id,
            Demonstration.source,
            Demonstration.status,
            Demonstration.reviewer_id,
            Demonstration.reviewed_response.is_not(None),
            Demonstration.draft_completion_id.is_not(None),
            Demonstration.time_spent_ms,
            Demonstration.response,
        )
        .where(Demonstration.project_id == project_id)
        .execution_options(yield_per=STREAM_BATCH)
    )
    by_source: Counter[str] = Counter()
    for user_id, source, status, reviewer_id, edited, from_draft, spent_ms, response in rows:
        key = user_id if source != DemonstrationSource.upload else None
        author = stats.setdefault(key, AuthorStats(user=None))
        author.written += 1
        author.by_status[status] += 1
        by_source[source] += 1
        if reviewer_id is not None and status != DemonstrationStatus.pending_review:
            author.reviewed += 1
            author.reviewed_accepted += status == DemonstrationStatus.accepted
            author.edited_by_reviewer += bool(edited)
        author.from_draft += bool(from_draft)
        word_counts[key].append(words(response))
        if spent_ms is not None:
            times[key].append(spent_ms)

    users = {u.id: u for u in db.scalars(select(User).where(User.id.in_([k for k in stats if k is not None])))}
    for key, author in stats.items():
        author.user = users.get(key) if key is not None else None
        author.median_words = _median(word_counts[key])
        author.median_seconds = _median(times[key], scale=1000)
    authors = sorted(stats.values(), key=lambda a: (a.user is None, a.user.email if a.user is not None else ""))
    by_status: Counter[str] = sum((a.by_status for a in authors), Counter())
    reviewed = sum(a.reviewed for a in authors)
    return DemonstrationStats(
        total=sum(a.written for a in authors),
        by_status=by_status,
        by_source=by_source,
        authors=authors,
        median_words=_median([n for counts in word_counts.values() for n in counts]),
        median_seconds=_median([t for spent in times.values() for t in spent], scale=1000),
        acceptance_rate=100 * sum(a.reviewed_accepted for a in authors) / reviewed if reviewed else None,
    )


def _median(values: list[int], *, scale: int = 1) -> float | None:
    return statistics.median(values) / scale if values else None


@dataclass
class RecentDemonstration:
    id: int
    created_at: datetime
    author: str
    status: str
    source: str
    prompt: str
    """Plain text (the template escapes it)."""
    answer_html: Markup
    """The training text, sanitised HTML: stored when written, or rendered by app/markdown.py."""
    edited_by_reviewer: bool
    words: int


def recent(db: Session, *, project_id: int, limit: int = 20) -> list[RecentDemonstration]:
    rows = db.execute(
        select(Demonstration, Prompt.text, Prompt.messages, User.email)
        .join(Prompt, Prompt.id == Demonstration.prompt_id)
        .outerjoin(User, User.id == Demonstration.user_id)
        .where(Demonstration.project_id == project_id)
        .order_by(Demonstration.id.desc())
        .limit(limit)
    ).all()
    out = []
    for demo, text, messages, email in rows:
        answer = demo.training_response
        if demo.reviewed_response is None:  # the stored HTML, if the current renderer made it
            html = stored_or_rendered(answer, demo.response_html, (demo.meta or {}).get("html_renderer"))
        else:
            html = render_markdown(answer)
        out.append(
            RecentDemonstration(
                id=demo.id,
                created_at=demo.created_at,
                author=email if demo.source != DemonstrationSource.upload and email else "uploaded",
                status=demo.status,
                source=demo.source,
                prompt=plain_prompt(text, messages),
                answer_html=html,
                edited_by_reviewer=demo.reviewed_response is not None,
                words=words(answer),
            )
        )
    return out


def count(db: Session, *, project_id: int, status: str | None = None) -> int:
    query = select(func.count()).select_from(Demonstration).where(Demonstration.project_id == project_id)
    if status is not None:
        query = query.where(Demonstration.status == status)
    return db.scalar(query) or 0
