"""Storing an uploaded JSONL file of demonstrations: all of it, or nothing.

Unlike the prompts file upload (which stores the good lines and reports the bad), a refused line
here refuses the file: demonstrations are training data, and a dataset silently missing the rows
that had a typo trains a different model than the one its owner thinks. The lines are still read
one at a time and stored in batches of BATCH_SIZE inside a savepoint, so a large file never sits
in memory; on the first refused line storing stops, the rest is still checked (so one answer
lists every problem, up to MAX_REPORTED_ERRORS), and the savepoint is rolled back.

Idempotent by `id` (the line's external id; left out, it is derived from the content, as for
prompts). A line whose id is stored with the same prompt and answer is counted as
already_present; with a different prompt or answer it is a conflict, refused and named: an upload
never changes a stored demonstration (it may have been reviewed, or have trained a model).
Its status is never changed by an upload either; review owns it. A new demonstration is
pending_review when the project reviews (unless its line gives a status), and then gets its
review task in the same transaction, as a written one does."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.demonstrations.service import open_reviews
from app.demonstrations.upload_schema import DemonstrationLine, Parsed, parsed
from app.markdown import RENDERER_VERSION, html_columns
from app.models import (
    Demonstration,
    DemonstrationSource,
    DemonstrationStatus,
    Project,
    Prompt,
    PromptSplit,
    utcnow,
)
from app.prompts.jsonl import parse_lines
from app.prompts.store import (
    BATCH_SIZE,
    DEFAULT_MAX_TEXT_CHARS,
    MAX_REPORTED_ERRORS,
    LineError,
    external_id_of,
    insert_prompt_rows,
    prompt_row,
    too_long,
)


@dataclass
class UploadReport:
    created: int = 0
    already_present: int = 0
    """Lines whose id was stored (or came earlier in the file) with the same prompt and answer."""
    prompts_created: int = 0
    pending_review: int = 0
    """Of `created`, those that wait for review."""
    rejected: int = 0
    conflicts: int = 0
    """Of `rejected`, lines refused only because their id is stored with another body."""
    errors: list[LineError] = field(default_factory=list)
    errors_omitted: int = 0

    def reject(self, line: int, reason: str, *, conflict: bool = False) -> None:
        self.rejected += 1
        self.conflicts += conflict
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(LineError(line, reason))
        else:
            self.errors_omitted += 1

    @property
    def refused(self) -> bool:
        return self.rejected > 0


def ingest_demonstrations(
    db: Session, *, project: Project, lines: Iterable[bytes], max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
) -> UploadReport:
    """Stores every line of a JSONL file of demonstrations, or (report.refused) none of them.

    `lines` is consumed lazily (jsonl.read_lines), so memory stays flat. Runs in the caller's
    transaction; the refusal is rolled back to a savepoint, so the caller may still commit."""
    report = UploadReport()
    savepoint = db.begin_nested()
    pending: list[Parsed] = []
    for number, record in parse_lines(lines, DemonstrationLine):
        if isinstance(record, str):
            report.reject(number, record)
            continue
        item = parsed(number, record)
        if reason := _too_long(item, record, max_text_chars):
            report.reject(number, reason)
            continue
        pending.append(item)
        if len(pending) >= BATCH_SIZE:
            _store(db, project, pending, report)
            pending = []
    _store(db, project, pending, report)
    if report.refused:
        savepoint.rollback()
        report.created = report.already_present = report.prompts_created = report.pending_review = 0
    else:
        savepoint.commit()
    return report


def _too_long(item: Parsed, record: DemonstrationLine, max_text_chars: int) -> str | None:
    if reason := too_long(item.prompt, max_text_chars):
        return reason.replace("text:", "prompt:", 1).replace(
            "messages:", "prompt:" if record.messages is None else "messages:", 1
        )
    if len(item.response) > max_text_chars:
        where = "completion" if record.messages is None else f"messages[{len(record.messages) - 1}].content"
        return (
            f"{where}: is {len(item.response)} characters long; "
            f"the limit is {max_text_chars} (setting RANKLAB_MAX_TEXT_CHARS)"
        )
    return None


def content_id(prompt_external_id: str, response: str) -> str:
    """The id of a line that gives none: the same prompt and answer always get the same id."""
    digest = hashlib.sha256(json.dumps([prompt_external_id, response], ensure_ascii=False).encode()).hexdigest()
    return f"sha256:{digest[:32]}"


def _store(db: Session, project: Project, items: list[Parsed], report: UploadReport) -> None:
    if not items:
        return
    storing = not report.refused  # after a refusal, only look for more problems
    # 1. The prompts: content-derived external ids, so the same prompt is one row, however it came.
    prompt_rows: dict[str, dict] = {}
    for item in items:
        row = prompt_row(project, item.prompt)
        prompt_rows.setdefault(row["external_id"], row)
    if storing:
        report.prompts_created += len(insert_prompt_rows(db, list(prompt_rows.values())))
    prompt_ids: dict[str, int] = {}
    eval_prompts: set[str] = set()
    for key, prompt_id, split in db.execute(
        select(Prompt.external_id, Prompt.id, Prompt.split).where(
            Prompt.project_id == project.id, Prompt.external_id.in_(prompt_rows)
        )
    ):
        prompt_ids[key] = prompt_id
        if split == PromptSplit.eval:
            eval_prompts.add(key)

    # 2. One row per id: a repeat within the batch is already_present or a conflict.
    rows: dict[str, dict] = {}
    lines: dict[str, int] = {}
    status = DemonstrationStatus.pending_review if project.demonstration_review else DemonstrationStatus.accepted
    for item in items:
        prompt_key = external_id_of(item.prompt)
        if prompt_key in eval_prompts:
            report.reject(item.line, EVAL_PROMPT)
            continue
        external_id = item.external_id or content_id(prompt_key, item.response)
        if external_id in rows:
            same = rows[external_id]["prompt_key"] == prompt_key and rows[external_id]["response"] == item.response
            if same:
                report.already_present += 1
            else:
                report.reject(item.line, _conflict(external_id, f"line {lines[external_id]}"), conflict=True)
            continue
        lines[external_id] = item.line
        rows[external_id] = {
            "project_id": project.id,
            "prompt_id": prompt_ids.get(prompt_key),  # None only after a refusal stopped storing
            "prompt_key": prompt_key,
            "external_id": external_id,
            "response": item.response,
            "response_html": html_columns(item.response)["text_html"],
            "status": item.status or status,
            "source": DemonstrationSource.upload,
            "meta": {"html_renderer": RENDERER_VERSION},  # as labelers' rows: which renderer made response_html
            "created_at": utcnow(),
        }

    # 3. Insert the new ids; compare the rest with what is stored.
    inserted: dict[str, int] = {}
    if storing:
        inserted = _insert(db, [{k: v for k, v in row.items() if k != "prompt_key"} for row in rows.values()])
        report.created += len(inserted)
        waiting = [i for i in inserted if rows[i]["status"] == DemonstrationStatus.pending_review]
        open_reviews(
            db,
            project_id=project.id,
            demonstrations=[(inserted[i], rows[i]["prompt_id"], None) for i in waiting],
            now=utcnow(),
        )
        report.pending_review += len(waiting)
    stored = db.execute(
        select(Demonstration.external_id, Demonstration.prompt_id, Demonstration.response).where(
            Demonstration.project_id == project.id, Demonstration.external_id.in_(set(rows) - inserted.keys())
        )
    ).all()
    for stored_id, prompt_id, response in stored:
        assert stored_id is not None  # selected by external_id
        row = rows[stored_id]
        # Prompt ids come from content-derived keys, so an equal id means an equal prompt. After a
        # refusal new prompts were not stored (prompt_id None): compare by key instead.
        same_prompt = prompt_id == row["prompt_id"] or (
            row["prompt_id"] is None and _prompt_key_of(db, prompt_id) == row["prompt_key"]
        )
        if same_prompt and response == row["response"]:
            report.already_present += 1
        else:
            report.reject(lines[stored_id], _conflict(stored_id, "an earlier upload"), conflict=True)


EVAL_PROMPT = (
    "prompt: is in the project's eval set (split eval), which never trains; "
    "a demonstration of it would leak the eval set into SFT"
)


def _conflict(external_id: str, where: str) -> str:
    shown = external_id if len(external_id) <= 60 else external_id[:57] + "..."
    return (
        f"id: {json.dumps(shown, ensure_ascii=False)} was already given, in {where}, to a different prompt or "
        "answer; an upload never changes a stored demonstration: give this one a new id"
    )


def _prompt_key_of(db: Session, prompt_id: int) -> str | None:
    return db.scalar(select(Prompt.external_id).where(Prompt.id == prompt_id))


def _insert(db: Session, rows: list[dict]) -> dict[str, int]:
    """INSERT ... ON CONFLICT (project_id, external_id) DO NOTHING; external id -> row id of those inserted.

    A concurrent upload of the same ids then waits for the other transaction (Postgres) or the
    write lock (SQLite) and compares with what it stored, instead of failing with a 500."""
    if not rows:
        return {}
    dialect_insert = postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert
    table = Demonstration.__table__
    statement = (
        dialect_insert(table)
        .on_conflict_do_nothing(index_elements=["project_id", "external_id"])
        .returning(table.c.external_id, table.c.id)
    )
    return {external_id: row_id for external_id, row_id in db.execute(statement, rows)}
