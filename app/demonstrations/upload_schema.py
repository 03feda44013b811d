"""One line of a demonstrations upload, in either of TRL's dataset forms, and what it means.

TRL's SFT datasets come as `{"messages": [...]}` (the last turn is the assistant's) or as
`{"prompt": ..., "completion": ...}`, each either conversational (lists of chat turns) or
standard (plain strings). All four are accepted; each becomes a prompt (stored as a Prompt row,
text or chat) and the assistant's answer. Structural rules are checked here so the upload and
the API's error messages share them; storing is in app/demonstrations/upload.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from app.api_types import Text
from app.prompts.jsonl import describe_errors
from app.prompts.schemas import ChatMessage, PromptIn

_TURNS = TypeAdapter(list[ChatMessage])
UploadStatus = Literal["accepted", "pending_review", "rejected"]


class DemonstrationLine(BaseModel):
    """One JSONL line. `prompt` and `completion` are typed loosely (Any) and checked by hand, so
    a wrong shape is named as `prompt: ...` rather than as a list of failed union members."""

    model_config = ConfigDict(extra="forbid")
    id: Text | None = Field(None, max_length=200, description="Your id: re-sending it never duplicates.")
    messages: list[ChatMessage] | None = None
    prompt: Any = None
    completion: Any = None
    status: UploadStatus | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _integer_id(cls, value: object) -> object:
        """Hub datasets often number their rows: an integer id is kept as its decimal string."""
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise PydanticCustomError("empty_id", "is blank; leave it out or give an id")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> DemonstrationLine:
        pair = self.prompt is not None or self.completion is not None
        if self.messages is None and not pair:
            raise PydanticCustomError(
                "missing_form",
                'messages: missing; send "messages" (the last turn the assistant\'s) or "prompt" and "completion"',
            )
        if self.messages is not None and pair:
            raise PydanticCustomError("two_forms", 'give either "messages" or "prompt" and "completion", not both')
        self.parts()  # raises the first structural problem with its field named
        return self

    def parts(self) -> tuple[PromptIn, str]:
        """The prompt (as the prompts upload would take it) and the assistant's answer."""
        if self.messages is not None:
            turns = self.messages
            if len(turns) < 2:
                raise PydanticCustomError(
                    "chat_short", "messages: needs the user's turn(s) and then the assistant's answer"
                )
            if turns[-1].role != "assistant":
                raise PydanticCustomError(
                    "chat_last",
                    "messages[{i}].role: the last turn must be the assistant's (the demonstration), not {role}",
                    {"i": len(turns) - 1, "role": turns[-1].role},
                )
            return _prompt_of(turns[:-1], "messages"), turns[-1].content
        if self.prompt is None:
            raise PydanticCustomError("missing_prompt", "prompt: missing; it goes with completion")
        if self.completion is None:
            raise PydanticCustomError("missing_completion", "completion: missing; send the assistant's answer")
        if isinstance(self.prompt, str):
            prompt = _prompt_of(_text("prompt", self.prompt), "prompt")
        else:
            prompt = _prompt_of(_turns("prompt", self.prompt), "prompt")
        if isinstance(self.completion, str):
            return prompt, _text("completion", self.completion)
        answer = _turns("completion", self.completion)
        if len(answer) != 1 or answer[0].role != "assistant":
            raise PydanticCustomError(
                "completion_turns", 'completion: must be one assistant turn, [{"role": "assistant", "content": ...}]'
            )
        return prompt, answer[0].content


def _text(field: str, value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("empty_text", "{field}: is empty", {"field": field})
    if "\x00" in value:  # what app.api_types.Text refuses: PostgreSQL cannot store it
        raise PydanticCustomError(
            "nul_character",
            r"{field}: contains a NUL character (\x00), which cannot be stored; remove it",
            {"field": field},
        )
    return value


def _turns(field: str, value: object) -> list[ChatMessage]:
    if not isinstance(value, list):
        raise PydanticCustomError("turns_type", "{field}: must be a string or a list of chat turns", {"field": field})
    try:
        return _TURNS.validate_python(value)
    except ValidationError as exc:
        raise PydanticCustomError("turns", "{message}", {"message": describe_errors(exc, prefix=field)}) from None


def _prompt_of(value: str | list[ChatMessage], field: str) -> PromptIn:
    """A single user turn is stored as a text prompt: the same prompt as an uploaded text one,
    and it exports back as one user turn, so nothing is lost."""
    if isinstance(value, list) and len(value) == 1 and value[0].role == "user":
        value = value[0].content
    try:
        if isinstance(value, str):
            return PromptIn(text=value)
        return PromptIn(messages=value)
    except ValidationError as exc:
        # PromptIn names `messages[i]`; the turns here are the line's `prompt` or `messages`.
        message = describe_errors(exc).replace("text" if isinstance(value, str) else "messages", field, 1)
        raise PydanticCustomError("prompt", "{message}", {"message": message}) from None


@dataclass(frozen=True)
class Parsed:
    """A line reduced to what is stored."""

    line: int
    external_id: str | None
    prompt: PromptIn
    response: str
    status: str | None


def parsed(line: int, record: DemonstrationLine) -> Parsed:
    prompt, response = record.parts()
    return Parsed(line, record.id.strip() if record.id else None, prompt, response, record.status)
