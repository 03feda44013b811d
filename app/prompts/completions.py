"""Uploaded completions: K of them for one prompt become one ranking task.

Idempotency: a prompt's completions are compared as a set of texts (order and model names
ignored) with the uploaded tasks it already has; an identical set returns the existing task
(created=False, HTTP 200) and stores nothing. A different set for the same prompt is a new task:
a prompt may be ranked against several sets (e.g. outputs of different models)."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Completion, CompletionSource, Project, Prompt, RankingTask, TaskCompletion, TaskStatus
from app.prompts.jsonl import describe_errors, parse_lines
from app.prompts.schemas import CompletionGroupIn, CompletionIn
from app.prompts.store import (DEFAULT_MAX_TEXT_CHARS, IngestReport, external_id_of, insert_prompt_rows, prompt_row,
                               too_long)


class PromptNotFound(LookupError):
    def __init__(self, external_id: str) -> None:
        super().__init__(f"external_id: no prompt {external_id!r} in this project; upload the prompt first "
                         "(or, in a completions file, include its text)")
        self.external_id = external_id


class CompletionsRejected(ValueError):
    """The message starts with the field it is about, e.g. `completions[2].text: is empty`."""

    def __init__(self, message: str, *, field: str = "completions") -> None:
        super().__init__(message)
        self.field = field


@dataclass
class CompletionsReport:
    created: bool
    """False when this exact set was already uploaded for the prompt (the existing task is returned)."""
    task_id: int
    completion_ids: list[int]


@dataclass
class GroupIngestReport(IngestReport):
    prompts_created: int = 0
    """Prompts that came inside a line and were new; `created` counts tasks."""


def add_completions(db: Session, *, project: Project, prompt_external_id: str,
                    completions: Sequence[dict[str, Any] | CompletionIn],
                    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> tuple[RankingTask, CompletionsReport]:
    """Creates (or finds) the ranking task for these completions of a stored prompt.

    Raises CompletionsRejected (K outside the project's k_min..k_max, empty or over-long text,
    wrong types, repeated texts) or PromptNotFound; nothing is stored then."""
    records = [_as_record(index, item) for index, item in enumerate(completions)]
    check_completion_set(project, records, max_text_chars)
    prompt = _find_prompt(db, project, prompt_external_id.strip())
    if prompt is None:
        raise PromptNotFound(prompt_external_id)
    return _task_for(db, project, prompt, records)


def ingest_completion_groups(db: Session, *, project: Project, lines: Iterable[bytes],
                             max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> GroupIngestReport:
    """A JSONL file of CompletionGroupIn lines: each good line gives one task; bad lines are reported.

    A line may carry its prompt (`text`/`messages`), which is stored first if new (an existing
    prompt with that external_id is used as is)."""
    report = GroupIngestReport()
    for number, record, reason in parse_lines(lines, CompletionGroupIn):
        if reason is None:
            reason = _store_group(db, project, record, max_text_chars, report)
        if reason is not None:
            report.reject(number, reason)
    return report


def check_completion_set(project: Project, records: Sequence[CompletionIn], max_text_chars: int) -> None:
    count = len(records)
    if not project.k_min <= count <= project.k_max:
        raise CompletionsRejected(f"completions: {count} given; project {project.name!r} takes "
                                  f"{project.k_min}–{project.k_max} completions per prompt")
    first_seen: dict[str, int] = {}
    for index, record in enumerate(records):
        if len(record.text) > max_text_chars:
            raise CompletionsRejected(f"completions[{index}].text: is {len(record.text)} characters long; the limit "
                                      f"is {max_text_chars} (setting RANKLAB_MAX_TEXT_CHARS)",
                                      field=f"completions[{index}].text")
        if record.text in first_seen:
            raise CompletionsRejected(f"completions[{index}].text: same text as completions[{first_seen[record.text]}]; "
                                      "the completions of a task must differ", field=f"completions[{index}].text")
        first_seen[record.text] = index


def _as_record(index: int, item: dict[str, Any] | CompletionIn) -> CompletionIn:
    if isinstance(item, CompletionIn):
        return item
    try:
        return CompletionIn.model_validate(item)
    except ValidationError as exc:
        raise CompletionsRejected(describe_errors(exc, CompletionIn, prefix=f"completions[{index}]."),
                                  field=f"completions[{index}]") from None


def _store_group(db: Session, project: Project, record: CompletionGroupIn, max_text_chars: int,
                 report: GroupIngestReport) -> str | None:
    """Stores one line; returns why it was refused, or None."""
    try:
        check_completion_set(project, record.completions, max_text_chars)
    except CompletionsRejected as exc:
        return str(exc)
    prompt_in = record.prompt()
    if prompt_in is not None:
        if reason := too_long(prompt_in, max_text_chars):
            return reason
        external_id = external_id_of(prompt_in)
        report.prompts_created += len(insert_prompt_rows(db, [prompt_row(project, prompt_in)]))
    else:
        external_id = record.external_id.strip()
    prompt = _find_prompt(db, project, external_id)
    if prompt is None:
        return str(PromptNotFound(external_id))
    _task, outcome = _task_for(db, project, prompt, record.completions)
    if outcome.created:
        report.created += 1
    else:
        report.already_present += 1
    return None


def _find_prompt(db: Session, project: Project, external_id: str) -> Prompt | None:
    # FOR UPDATE (Postgres; SQLite ignores it and serialises writers anyway): two requests
    # posting the same set for one prompt queue here, so the second finds the first's task.
    return db.scalar(select(Prompt).where(Prompt.project_id == project.id, Prompt.external_id == external_id)
                     .with_for_update())


def _task_for(db: Session, project: Project, prompt: Prompt,
              records: Sequence[CompletionIn]) -> tuple[RankingTask, CompletionsReport]:
    existing = _identical_task(db, prompt, sorted(r.text for r in records))
    if existing is not None:
        return existing, CompletionsReport(created=False, task_id=existing.id, completion_ids=existing.completion_ids)
    completions = [Completion(prompt_id=prompt.id, text=r.text, source=CompletionSource.upload, model_name=r.model,
                              generation_params=r.generation_params) for r in records]
    db.add_all(completions)
    task = RankingTask(project_id=project.id, prompt_id=prompt.id, status=TaskStatus.open)
    db.add(task)
    db.flush()
    db.add_all(TaskCompletion(task_id=task.id, completion_id=c.id, position=i) for i, c in enumerate(completions))
    db.flush()
    db.refresh(task, ["items"])
    return task, CompletionsReport(created=True, task_id=task.id, completion_ids=[c.id for c in completions])


def _identical_task(db: Session, prompt: Prompt, texts: list[str]) -> RankingTask | None:
    rows = db.execute(select(TaskCompletion.task_id, Completion.text)
                      .join(Completion, Completion.id == TaskCompletion.completion_id)
                      .join(RankingTask, RankingTask.id == TaskCompletion.task_id)
                      .where(RankingTask.prompt_id == prompt.id, RankingTask.round_id.is_(None)))
    texts_by_task: dict[int, list[str]] = defaultdict(list)
    for task_id, text in rows:
        texts_by_task[task_id].append(text)
    for task_id, task_texts in sorted(texts_by_task.items()):
        if sorted(task_texts) == texts:
            return db.get(RankingTask, task_id)
    return None
