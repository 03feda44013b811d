"""Storing prompts in bulk, idempotently by external_id.

Partial application, on purpose:
- JSONL files (`ingest_prompts`): every good line is stored and every bad line is reported with
  its number and reason. A 100k-line upload should not fail for one typo.
- JSON batches (`add_prompts`): all or nothing. A batch is small enough to fix and resend, and
  "nothing stored" is the easiest thing for a program to reason about.
Either way a prompt whose external_id is already stored is never changed, only counted.

Lines are validated, then inserted in batches of BATCH_SIZE with one INSERT ... ON CONFLICT DO
NOTHING RETURNING per batch, so 100k lines take seconds and a concurrent upload of the same ids
cannot fail the request."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy.orm import Session

from app.models import Project

# Completions live in their own module; re-exported so callers find every upload here.
from app.prompts.completions import (
    CompletionsRejected,
    CompletionsReport,
    GroupIngestReport,
    PromptNotFound,
    add_completions,
    ingest_completion_groups,
)
from app.prompts.jsonl import parse_lines
from app.prompts.schemas import PromptIn
from app.prompts.store import (
    BATCH_SIZE,
    DEFAULT_MAX_TEXT_CHARS,
    IngestReport,
    LineError,
    insert_prompt_rows,
    prompt_row,
    too_long,
)

__all__ = [
    "CompletionsRejected",
    "CompletionsReport",
    "GroupIngestReport",
    "IngestReport",
    "LineError",
    "PromptBatchRejected",
    "PromptIn",
    "PromptNotFound",
    "add_completions",
    "add_prompts",
    "ingest_completion_groups",
    "ingest_prompts",
]


class PromptBatchRejected(ValueError):
    """A JSON batch had refused items; nothing of it was stored."""

    def __init__(self, errors: list[LineError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"prompts[{e.line - 1}]: {e.reason}" for e in errors[:20]))


def ingest_prompts(
    db: Session, *, project: Project, lines: Iterable[bytes], max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
) -> IngestReport:
    """Stores the good lines of a JSONL file (each a PromptIn object) and reports the others.

    `lines` is consumed lazily (e.g. a file object or jsonl.read_lines), so memory stays flat."""
    report = IngestReport()
    pending: list[PromptIn] = []
    for number, record in parse_lines(lines, PromptIn):
        if isinstance(record, str):
            report.reject(number, record)
            continue
        if reason := too_long(record, max_text_chars):
            report.reject(number, reason)
            continue
        pending.append(record)
        if len(pending) >= BATCH_SIZE:
            _store(db, project, pending, report)
            pending = []
    _store(db, project, pending, report)
    return report


def add_prompts(
    db: Session, *, project: Project, prompts: Sequence[PromptIn], max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
) -> IngestReport:
    """Stores a whole JSON batch, or raises PromptBatchRejected (storing nothing)."""
    errors = [
        LineError(index + 1, reason)
        for index, prompt in enumerate(prompts)
        if (reason := too_long(prompt, max_text_chars))
    ]
    if errors:
        raise PromptBatchRejected(errors)
    report = IngestReport()
    for start in range(0, len(prompts), BATCH_SIZE):
        _store(db, project, list(prompts[start : start + BATCH_SIZE]), report)
    return report


def _store(db: Session, project: Project, prompts: list[PromptIn], report: IngestReport) -> None:
    unique: dict[str, dict] = {}
    for prompt in prompts:
        row = prompt_row(project, prompt)
        unique.setdefault(row["external_id"], row)  # a repeat within the batch: first one wins
    created = insert_prompt_rows(db, list(unique.values()))
    report.created += len(created)
    report.already_present += len(prompts) - len(created)
