"""Demonstrations as TRL SFT datasets: rows for streamed JSONL, read in keyset-paged batches.

The forms are the upload's (app/demonstrations/upload_schema.py), so an exported file uploads
again unchanged and an uploaded file exports back line for line. The assistant's turn is the
training text: the reviewer's edit when there is one (Demonstration.training_response).
Every row of one export has the same keys and value types, which `datasets.load_dataset("json")`
needs to infer one schema (a mix of string and list prompts would not load)."""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.exports.service import plain_prompt
from app.models import Demonstration, DemonstrationStatus, Prompt

BATCH = 500


class ExportForm(StrEnum):
    messages = "messages"
    """{"messages": [...prompt turns, {"role": "assistant", "content": answer}]}."""
    prompt_completion = "prompt_completion"
    """{"prompt": [...turns], "completion": [{"role": "assistant", "content": answer}]}."""


class ExportStyle(StrEnum):
    conversational = "conversational"
    """Chat turns; a text prompt is one user turn. TRL applies the tokenizer's chat template."""
    standard = "standard"
    """prompt_completion only: plain strings (a multi-turn prompt flattened to 'Role: content'
    paragraphs, as in the pairs export). TRL then trains on the text without a chat template."""


class StatusFilter(StrEnum):
    accepted = "accepted"
    pending_review = "pending_review"
    rejected = "rejected"
    all = "all"


class ExportRefused(ValueError):
    """A combination of options that has no meaning; the message names the parameter."""


def check_options(form: ExportForm, style: ExportStyle) -> None:
    if form is ExportForm.messages and style is ExportStyle.standard:
        raise ExportRefused("style: standard has no messages form; use format=prompt_completion for plain strings")


def export_id(demonstration_id: int, external_id: str | None) -> str:
    """The uploader's id, or one naming the row for demonstrations written in ranklab (uploading
    the export to another project keeps them apart from that project's own rows)."""
    return external_id if external_id is not None else f"ranklab-demonstration-{demonstration_id}"


def iter_demonstrations(
    db: Session,
    *,
    project_id: int,
    form: ExportForm = ExportForm.messages,
    style: ExportStyle = ExportStyle.conversational,
    status: StatusFilter = StatusFilter.accepted,
) -> Iterator[dict[str, Any]]:
    """Oldest first. Keys: `id`, then `messages`, or `prompt` and `completion`."""
    check_options(form, style)
    query = _query(project_id, status)
    last = 0
    while True:
        rows = db.execute(query.where(Demonstration.id > last).order_by(Demonstration.id).limit(BATCH)).all()
        if not rows:
            return
        for demonstration_id, external_id, response, reviewed, text, messages in rows:
            answer = reviewed if reviewed is not None else response
            row: dict[str, Any] = {"id": export_id(demonstration_id, external_id)}
            if style is ExportStyle.standard:
                row["prompt"] = plain_prompt(text, messages)
                row["completion"] = answer
            else:
                if form is ExportForm.messages:
                    row["messages"] = conversation(text, messages, answer)
                else:
                    row["prompt"] = prompt_turns(text, messages)
                    row["completion"] = [{"role": "assistant", "content": answer}]
            yield row
        last = rows[-1][0]


def _query(project_id: int, status: StatusFilter) -> Select:
    query = (
        select(
            Demonstration.id,
            Demonstration.external_id,
            Demonstration.response,
            Demonstration.reviewed_response,
            Prompt.text,
            Prompt.messages,
        )
        .join(Prompt, Prompt.id == Demonstration.prompt_id)
        .where(Demonstration.project_id == project_id)
    )
    if status is not StatusFilter.all:
        query = query.where(Demonstration.status == DemonstrationStatus(status.value))
    return query


def prompt_turns(text: str | None, messages: list[dict[str, str]] | None) -> list[dict[str, str]]:
    """A prompt as chat turns: its messages, or its text as one user turn."""
    if messages is not None:
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    return [{"role": "user", "content": text or ""}]


def conversation(text: str | None, messages: list[dict[str, str]] | None, answer: str) -> list[dict[str, str]]:
    """TRL's conversational `messages`: the prompt's turns, then the answer as the assistant's
    turn (the only one SFT's loss is on). The export and the SFT stage both build it here."""
    return [*prompt_turns(text, messages), {"role": "assistant", "content": answer}]
