"""Uploaded completions: K of them for one prompt become one ranking task.

Idempotency: a prompt's completions are compared as a set of texts (order and model names
ignored) with the uploaded tasks it already has; an identical set returns the existing task
(created=False, HTTP 200) and stores nothing. A different set for the same prompt is a new task:
a prompt may be ranked against several sets (e.g. outputs of different models).

Files are stored GROUP_BATCH lines at a time: one query resolves the prompts, one finds the
sets already uploaded for them, and three executemany INSERTs write tasks, completions and
their positions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.markdown import html_columns
from app.models import (
    Completion,
    CompletionSource,
    Project,
    Prompt,
    PromptSplit,
    RankingTask,
    TaskCompletion,
    TaskStatus,
    utcnow,
)
from app.projects import priorities
from app.projects.forms_config import task_kind_for
from app.prompts.jsonl import describe_errors, parse_lines
from app.prompts.schemas import CompletionGroupIn, CompletionIn
from app.prompts.store import DEFAULT_MAX_TEXT_CHARS, IngestReport, insert_prompt_rows, prompt_row, too_long


class PromptNotFound(LookupError):
    def __init__(self, external_id: str) -> None:
        super().__init__(
            f"external_id: no prompt {external_id!r} in this project; upload the prompt first "
            "(or, in a completions file, include its text)"
        )
        self.external_id = external_id


class CompletionsRejected(ValueError):
    """The message starts with the field it is about, e.g. `completions[2].text: is empty`."""

    def __init__(self, message: str, *, field: str = "completions") -> None:
        super().__init__(message)
        self.field = field


GROUP_BATCH = 200


class _Pending(NamedTuple):
    line: int
    external_id: str
    completions: Sequence[CompletionIn]
    prompt: dict | None = None
    """A prompt row to store first (from a line that carried its prompt)."""


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


def add_completions(
    db: Session,
    *,
    project: Project,
    prompt_external_id: str,
    completions: Sequence[dict[str, Any] | CompletionIn],
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> tuple[RankingTask, CompletionsReport]:
    """Creates (or finds) the ranking task for these completions of a stored prompt.

    Raises CompletionsRejected (K outside the project's k_min..k_max, empty or over-long text,
    wrong types, repeated texts) or PromptNotFound; nothing is stored then."""
    records = [_as_record(index, item) for index, item in enumerate(completions)]
    check_completion_set(project, records, max_text_chars)
    external_id = prompt_external_id.strip()
    outcomes = _store_sets(db, project, [_Pending(1, external_id, records)])
    outcome = outcomes[1]
    if outcome is None:
        raise PromptNotFound(external_id)
    if outcome.created:
        priorities.refresh_after_new_tasks(db, project_id=project.id)
    task = db.get_one(RankingTask, outcome.task_id)
    return task, outcome


def ingest_completion_groups(
    db: Session, *, project: Project, lines: Iterable[bytes], max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
) -> GroupIngestReport:
    """A JSONL file of CompletionGroupIn lines: each good line gives one task; bad lines are reported.

    A line may carry its prompt (`text`/`messages`), which is stored first if new (an existing
    prompt with that external_id is used as is)."""
    report = GroupIngestReport()
    pending: list[_Pending] = []
    for number, record in parse_lines(lines, CompletionGroupIn):
        if isinstance(record, str):
            report.reject(number, record)
            continue
        reason, prompt = _check_group(project, record, max_text_chars)
        if reason is not None:
            report.reject(number, reason)
            continue
        if prompt:
            external_id = prompt["external_id"]
        else:
            assert record.external_id is not None  # CompletionGroupIn's validator: no prompt, then an external_id
            external_id = record.external_id.strip()
        pending.append(_Pending(number, external_id, record.completions, prompt))
        if len(pending) >= GROUP_BATCH:
            _finish_batch(db, project, pending, report)
            pending = []
    _finish_batch(db, project, pending, report)
    if report.created:  # under an active handout order the new tasks get scored, not queued last
        priorities.refresh_after_new_tasks(db, project_id=project.id)
    return report


def check_completion_set(project: Project, records: Sequence[CompletionIn], max_text_chars: int) -> None:
    count = len(records)
    if not project.k_min <= count <= project.k_max:
        raise CompletionsRejected(
            f"completions: {count} given; project {project.name!r} takes "
            f"{project.k_min}–{project.k_max} completions per prompt"
        )
    first_seen: dict[str, int] = {}
    for index, record in enumerate(records):
        if len(record.text) > max_text_chars:
            raise CompletionsRejected(
                f"completions[{index}].text: is {len(record.text)} characters long; the limit "
                f"is {max_text_chars} (setting RANKLAB_MAX_TEXT_CHARS)",
                field=f"completions[{index}].text",
            )
        if record.text in first_seen:
            raise CompletionsRejected(
                f"completions[{index}].text: same text as completions[{first_seen[record.text]}]; "
                "the completions of a task must differ",
                field=f"completions[{index}].text",
            )
        first_seen[record.text] = index


def _as_record(index: int, item: dict[str, Any] | CompletionIn) -> CompletionIn:
    if isinstance(item, CompletionIn):
        return item
    try:
        return CompletionIn.model_validate(item)
    except ValidationError as exc:
        raise CompletionsRejected(
            describe_errors(exc, CompletionIn, prefix=f"completions[{index}]."), field=f"completions[{index}]"
        ) from None


def _check_group(project: Project, record: CompletionGroupIn, max_text_chars: int) -> tuple[str | None, dict | None]:
    """(why the line is refused or None, the row of the prompt it carries or None)."""
    if record.split == PromptSplit.eval:
        return (
            "split: eval prompts are the fixed eval set and take no ranking tasks; upload them as prompts "
            "(evaluations compare model versions on them)",
            None,
        )
    try:
        check_completion_set(project, record.completions, max_text_chars)
    except CompletionsRejected as exc:
        return str(exc), None
    prompt_in = record.prompt()
    if prompt_in is None:
        return None, None
    if reason := too_long(prompt_in, max_text_chars):
        return reason, None
    return None, prompt_row(project, prompt_in)


def _finish_batch(db: Session, project: Project, pending: list[_Pending], report: GroupIngestReport) -> None:
    prompts = {item.external_id: item.prompt for item in reversed(pending) if item.prompt}  # first line wins
    report.prompts_created += len(insert_prompt_rows(db, list(prompts.values())))
    outcomes = _store_sets(db, project, pending)
    for item in pending:
        outcome = outcomes[item.line]
        if outcome is None:
            report.reject(item.line, str(PromptNotFound(item.external_id)))
        elif outcome.created:
            report.created += 1
        else:
            report.already_present += 1


def _store_sets(db: Session, project: Project, pending: Sequence[_Pending]) -> dict[int, CompletionsReport | None]:
    """Stores each pending set as a task unless its prompt already has an identical one.
    Returns line -> outcome, None where the prompt does not exist."""
    if not pending:
        return {}
    # FOR UPDATE (Postgres; SQLite ignores it and serialises writers anyway), in id order so
    # concurrent uploads queue instead of deadlocking: the second finds the first's tasks.
    prompt_ids = dict(
        db.execute(
            select(Prompt.external_id, Prompt.id)
            .where(Prompt.project_id == project.id, Prompt.external_id.in_({p.external_id for p in pending}))
            .order_by(Prompt.id)
            .with_for_update()
        ).all()
    )
    known = _uploaded_sets(db, set(prompt_ids.values()))
    outcomes: dict[int, CompletionsReport | None] = {}
    new: list[tuple[_Pending, int]] = []
    first_new: dict[tuple[int, tuple[str, ...]], int] = {}
    repeats: list[tuple[_Pending, int]] = []
    for item in pending:
        prompt_id = prompt_ids.get(item.external_id)
        if prompt_id is None:
            outcomes[item.line] = None
            continue
        key = tuple(sorted(c.text for c in item.completions))
        if key in known[prompt_id]:
            task_id, completion_ids = known[prompt_id][key]
            outcomes[item.line] = CompletionsReport(created=False, task_id=task_id, completion_ids=completion_ids)
        elif (prompt_id, key) in first_new:  # the same set twice in one batch: one task
            repeats.append((item, first_new[prompt_id, key]))
        else:
            first_new[prompt_id, key] = len(new)
            new.append((item, prompt_id))
    created = _insert_tasks(db, project, new)
    for (item, _prompt_id), (task_id, completion_ids) in zip(new, created, strict=True):
        outcomes[item.line] = CompletionsReport(created=True, task_id=task_id, completion_ids=completion_ids)
    for item, index in repeats:
        task_id, completion_ids = created[index]
        outcomes[item.line] = CompletionsReport(created=False, task_id=task_id, completion_ids=completion_ids)
    return outcomes


def _uploaded_sets(db: Session, prompt_ids: set[int]) -> dict[int, dict[tuple[str, ...], tuple[int, list[int]]]]:
    """prompt id -> {sorted texts of an uploaded task: (task id, completion ids in position order)}."""
    rows = db.execute(
        select(RankingTask.prompt_id, TaskCompletion.task_id, Completion.id, Completion.text)
        .join(TaskCompletion, TaskCompletion.task_id == RankingTask.id)
        .join(Completion, Completion.id == TaskCompletion.completion_id)
        .where(RankingTask.prompt_id.in_(prompt_ids), RankingTask.round_id.is_(None))
        .order_by(TaskCompletion.task_id, TaskCompletion.position)
    )
    tasks: dict[int, tuple[int, list[int], list[str]]] = {}
    for prompt_id, task_id, completion_id, text in rows:
        entry = tasks.setdefault(task_id, (prompt_id, [], []))
        entry[1].append(completion_id)
        entry[2].append(text)
    known: dict[int, dict[tuple[str, ...], tuple[int, list[int]]]] = defaultdict(dict)
    for task_id in sorted(tasks):  # the oldest task wins if two share a set
        prompt_id, completion_ids, texts = tasks[task_id]
        known[prompt_id].setdefault(tuple(sorted(texts)), (task_id, completion_ids))
    return known


def _insert_tasks(db: Session, project: Project, new: list[tuple[_Pending, int]]) -> list[tuple[int, list[int]]]:
    """Bulk-inserts tasks, their completions and positions; (task id, completion ids) per item."""
    if not new:
        return []
    now = utcnow()
    task_ids = list(
        db.scalars(
            insert(RankingTask).returning(RankingTask.id, sort_by_parameter_order=True),
            [
                {
                    "project_id": project.id,
                    "prompt_id": prompt_id,
                    "kind": task_kind_for(project),  # the project's feedback form (issue 15)
                    "status": TaskStatus.open,
                    "slots_taken": 0,
                    "rankings_count": 0,
                    "created_at": now,
                }
                for _item, prompt_id in new
            ],
        )
    )
    completion_rows = [
        {
            "prompt_id": prompt_id,
            "text": c.text,
            "source": CompletionSource.upload,
            "model_name": c.model,
            "generation_params": c.generation_params,
            "created_at": now,
            **html_columns(c.text),
        }
        for item, prompt_id in new
        for c in item.completions
    ]
    completion_ids = list(
        db.scalars(insert(Completion).returning(Completion.id, sort_by_parameter_order=True), completion_rows)
    )
    result: list[tuple[int, list[int]]] = []
    positions: list[dict[str, int]] = []
    start = 0
    for (item, _prompt_id), task_id in zip(new, task_ids, strict=True):
        ids = completion_ids[start : start + len(item.completions)]
        start += len(ids)
        positions.extend({"task_id": task_id, "completion_id": cid, "position": i} for i, cid in enumerate(ids))
        result.append((task_id, ids))
    db.execute(insert(TaskCompletion), positions)
    return result
