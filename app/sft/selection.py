"""Which demonstrations an SFT run trains on, and the conversations they become.

Shared by the web (counts on the launch page and in the job's status) and the worker (the rows it
trains on), so both read the same filter the same way. No torch here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.demonstrations import export
from app.models.demonstrations import Demonstration
from app.models.projects import Prompt


def query(project_id: int, selection: dict[str, Any]) -> Select[Any]:
    """Demonstrations of the project that `selection` (a stored schemas.DemonstrationFilter) picks,
    oldest first; the limit applies after the other conditions."""
    stmt = select(Demonstration).where(
        Demonstration.project_id == project_id,
        Demonstration.status.in_(selection.get("statuses") or ["accepted"]),
    )
    if selection.get("labeler_ids"):
        stmt = stmt.where(Demonstration.user_id.in_(selection["labeler_ids"]))
    if selection.get("source"):
        stmt = stmt.where(Demonstration.source == selection["source"])
    if selection.get("created_after"):
        stmt = stmt.where(Demonstration.created_at > _when(selection["created_after"]))
    if selection.get("created_before"):
        stmt = stmt.where(Demonstration.created_at < _when(selection["created_before"]))
    stmt = stmt.order_by(Demonstration.id)
    if selection.get("limit"):
        stmt = stmt.limit(selection["limit"])
    return stmt


def _when(value: Any):
    from datetime import datetime

    return datetime.fromisoformat(value) if isinstance(value, str) else value


def count(db: Session, *, project_id: int, selection: dict[str, Any]) -> int:
    return db.scalar(select(func.count()).select_from(query(project_id, selection).subquery())) or 0


def conversation(prompt: Prompt, response: str) -> dict[str, Any]:
    """One SFT example in TRL's conversational form, built as the export builds it."""
    return {"messages": export.conversation(prompt.text, prompt.messages, response)}


def examples(db: Session, *, project_id: int, selection: dict[str, Any]) -> tuple[list[int], list[dict[str, Any]]]:
    """(demonstration ids, conversations) the selection picks now."""
    rows = list(db.scalars(query(project_id, selection)))
    return [row.id for row in rows], [conversation(row.prompt, row.training_response) for row in rows]
