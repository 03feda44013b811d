"""What a ranking task shows: its kind, its prompt and its completions (in the task's own order).

One statement for both, because it runs on every render of the ranking page and with every
handout (the handout needs the completion ids to shuffle them for the labeler)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup
from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session

from app.markdown import stored_or_rendered
from app.models import Completion, Prompt, RankingTask, TaskCompletion

_tasks = RankingTask.__table__
_prompts = Prompt.__table__
_items = TaskCompletion.__table__
_completions = Completion.__table__

# One row per completion, the prompt repeated on each (prompts are short next to the cost of a
# second statement); a task without completions still yields its prompt.
_TASK_CONTENT = (
    select(
        _tasks.c.kind,
        _tasks.c.demonstration_id,
        _prompts.c.text,
        _prompts.c.messages,
        _completions.c.id,
        _completions.c.text.label("completion_text"),
        _completions.c.text_html,
        _completions.c.html_renderer,
    )
    .select_from(_tasks)
    .join(_prompts, _prompts.c.id == _tasks.c.prompt_id)
    .outerjoin(_items, _items.c.task_id == _tasks.c.id)
    .outerjoin(_completions, and_(_completions.c.id == _items.c.completion_id))
    .where(_tasks.c.id == bindparam("task_id"))
    .order_by(_items.c.position)
)


@dataclass(frozen=True)
class TaskContent:
    kind: str
    """The task's type (app/labeling/task_types.py)."""
    demonstration_id: int | None
    """The demonstration a demonstration_review task reviews."""
    prompt_text: str | None
    prompt_messages: list[dict[str, Any]] | None
    completions: dict[int, str]
    """Completion id → text, in the task's order (TaskCompletion.position)."""
    completions_html: dict[int, Markup]
    """Completion id → its HTML (stored at ingestion, or rendered now for older rows)."""


def load_task_content(db: Session, *, task_id: int) -> TaskContent:
    rows = db.execute(_TASK_CONTENT, {"task_id": task_id}).all()
    if not rows:
        raise LookupError(f"ranking task {task_id} does not exist")
    return TaskContent(
        kind=rows[0].kind,
        demonstration_id=rows[0].demonstration_id,
        prompt_text=rows[0].text,
        prompt_messages=rows[0].messages,
        completions={row.id: row.completion_text for row in rows if row.id is not None},
        completions_html=html_by_id(rows),
    )


def html_by_id(rows) -> dict[int, Markup]:
    """From rows with id, completion_text, text_html and html_renderer (see app/markdown.py)."""
    return {
        row.id: stored_or_rendered(row.completion_text, row.text_html, row.html_renderer)
        for row in rows
        if row.id is not None
    }
