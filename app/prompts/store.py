"""Building blocks shared by the prompt and completion uploads: the report, row building,
and the duplicate-tolerant bulk insert."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from app.models import Project, Prompt, utcnow
from app.prompts.schemas import PromptIn

BATCH_SIZE = 1000
MAX_REPORTED_ERRORS = 1000
DEFAULT_MAX_TEXT_CHARS = 100_000


@dataclass
class LineError:
    line: int
    reason: str


@dataclass
class IngestReport:
    created: int = 0
    already_present: int = 0
    rejected: int = 0
    errors: list[LineError] = field(default_factory=list)
    """The first MAX_REPORTED_ERRORS rejected lines; the rest are only counted in errors_omitted."""
    errors_omitted: int = 0

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(LineError(line, reason))
        else:
            self.errors_omitted += 1


def too_long(prompt: PromptIn, max_text_chars: int) -> str | None:
    if prompt.text is not None and len(prompt.text) > max_text_chars:
        return (
            f"text: is {len(prompt.text)} characters long; "
            f"the limit is {max_text_chars} (setting RANKLAB_MAX_TEXT_CHARS)"
        )
    if prompt.messages is not None:
        total = sum(len(m.content) for m in prompt.messages)
        if total > max_text_chars:
            return (
                f"messages: are {total} characters long in all; "
                f"the limit is {max_text_chars} (setting RANKLAB_MAX_TEXT_CHARS)"
            )
    return None


def external_id_of(prompt: PromptIn) -> str:
    """The given external_id, or one derived from the content (stable across uploads)."""
    if prompt.external_id is not None:
        return prompt.external_id.strip()
    content = prompt.text if prompt.messages is None else [m.model_dump() for m in prompt.messages]
    digest = hashlib.sha256(json.dumps(content, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
    return f"sha256:{digest[:32]}"


def prompt_row(project: Project, prompt: PromptIn) -> dict:
    return {
        "project_id": project.id,
        "external_id": external_id_of(prompt),
        "text": prompt.text,
        "messages": None if prompt.messages is None else [m.model_dump() for m in prompt.messages],
        "metadata": prompt.metadata,
        "split": str(prompt.split),
        "created_at": utcnow(),
    }


def insert_prompt_rows(db: Session, rows: list[dict]) -> set[str]:
    """Inserts rows whose (project, external_id) is new; returns the external_ids inserted."""
    if not rows:
        return set()
    from sqlalchemy.dialects import postgresql, sqlite

    # ON CONFLICT DO NOTHING: each supported backend's own insert() has it (SQLite and Postgres only).
    insert = postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert
    table = Prompt.__table__
    # executemany with one cached statement: SQLAlchemy's "insertmanyvalues" sends it as
    # multi-row INSERTs (RETURNING included) without recompiling SQL for each batch.
    statement = (
        insert(table)
        .on_conflict_do_nothing(index_elements=["project_id", "external_id"])
        .returning(table.c.external_id)
    )
    return set(db.execute(statement, rows).scalars())
