"""What an API client sends for prompts and completions, and what it gets back.

The same models validate the JSON batch bodies and every line of a JSONL upload, so a rule
(e.g. "the last chat turn is the user's") is written once."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from app.api_types import JsonObject, Text
from app.json_api import UnprocessableOut
from app.models import PromptSplit

STRICT = ConfigDict(extra="forbid")


class ChatMessage(BaseModel):
    model_config = STRICT
    role: Literal["system", "user", "assistant"]
    content: Text

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("empty_text", "is empty")
        return value


class PromptIn(BaseModel):
    """One prompt: plain `text` or a chat (`messages`), never both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"external_id": "faq-17", "text": "How do I reset my password?", "metadata": {"source": "faq"}},
                {
                    "external_id": "chat-3",
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Name three primes."},
                    ],
                },
            ]
        },
    )
    external_id: Text | None = Field(
        None,
        min_length=1,
        max_length=200,
        description=(
            "Your id for the prompt, unique within the project. Uploads are idempotent by it: a prompt whose "
            "external_id is already stored is counted as already_present and left unchanged. Left out, it is "
            "derived from the content (`sha256:` + 32 hex digits), so re-uploading the same text is idempotent too."
        ),
    )
    text: Text | None = Field(None, description="A plain-text prompt.")
    messages: list[ChatMessage] | None = Field(
        None,
        description=(
            "A chat prompt: turns with role system|user|assistant and string content; a system turn may only come "
            "first and the last turn must be the user's."
        ),
    )
    metadata: JsonObject = Field(default_factory=dict, description="Any JSON object, kept with the prompt.")
    split: PromptSplit = Field(
        PromptSplit.train,
        description=(
            "train (default); validation: held out of reward-model training, measures its accuracy; eval: the "
            "project's fixed eval set, never generated for ranking nor trained on, used by evaluations and eval "
            "metrics (docs/evaluation.md)."
        ),
    )

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise PydanticCustomError("empty_text", "is empty; send the prompt's text")
        return value

    @field_validator("external_id")
    @classmethod
    def _id_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise PydanticCustomError("empty_id", "is blank")
        return value

    @model_validator(mode="after")
    def _text_or_messages(self) -> PromptIn:
        if self.text is None and self.messages is None:
            raise PydanticCustomError("missing_text", 'text: missing; give the prompt as "text" or as chat "messages"')
        if self.text is not None and self.messages is not None:
            raise PydanticCustomError("text_and_messages", 'give either "text" or "messages", not both')
        if self.messages is not None:
            _check_turns(self.messages)
        return self


def _check_turns(messages: list[ChatMessage]) -> None:
    if not messages:
        raise PydanticCustomError("chat_empty", "messages: is empty; send at least one user turn")
    for index, message in enumerate(messages):
        if message.role == "system" and index > 0:
            raise PydanticCustomError(
                "chat_system", "messages[{i}].role: a system turn may only come first", {"i": index}
            )
    if messages[-1].role != "user":
        raise PydanticCustomError(
            "chat_last",
            "messages[{i}].role: the last turn must be the user's, not {role}",
            {"i": len(messages) - 1, "role": messages[-1].role},
        )


class CompletionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    text: Text = Field(description="The completion to rank.")
    model: Text = Field("", max_length=200, description="Free-form name of the model that wrote it.")
    generation_params: JsonObject = Field(
        default_factory=dict, description="How it was sampled (temperature, top_p, ...), kept as given."
    )

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("empty_text", "is empty")
        return value


class CompletionsIn(BaseModel):
    """K completions for one prompt; they become one ranking task."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "completions": [
                        {
                            "text": "Click 'Forgot password' on the login page.",
                            "model": "gpt-x",
                            "generation_params": {"temperature": 0.7},
                        },
                        {"text": "Ask an admin."},
                        {"text": "You cannot."},
                        {"text": "Reinstall the app."},
                    ]
                }
            ]
        },
    )
    completions: list[CompletionIn] = Field(
        description=("Between the project's k_min and k_max completions (4–9 at most), all with different texts.")
    )


class CompletionGroupIn(CompletionsIn):
    """One line of a completions JSONL file. Give `external_id` of a stored prompt, or the prompt
    itself (`text` or `messages`), which is stored first when it is new."""

    model_config = ConfigDict(extra="forbid")
    external_id: Text | None = Field(None, min_length=1, max_length=200)
    text: Text | None = None
    messages: list[ChatMessage] | None = None
    metadata: JsonObject = Field(default_factory=dict)
    split: PromptSplit = PromptSplit.train

    @model_validator(mode="after")
    def _prompt_reference(self) -> CompletionGroupIn:
        if self.text is None and self.messages is None and self.external_id is None:
            raise PydanticCustomError(
                "missing_prompt", 'external_id: missing; name a stored prompt or include its "text"'
            )
        if self.text is not None or self.messages is not None:
            self.prompt()  # validates the prompt part with PromptIn's rules
        return self

    def prompt(self) -> PromptIn | None:
        if self.text is None and self.messages is None:
            return None
        return PromptIn(
            external_id=self.external_id,
            text=self.text,
            messages=self.messages,
            metadata=self.metadata,
            split=self.split,
        )


class PromptBatchIn(BaseModel):
    model_config = STRICT
    prompts: list[PromptIn] = Field(description="Stored all together or, if any is refused, not at all.")


class RejectedLine(BaseModel):
    line: int = Field(description="1-based line number in the file (item number for JSON batches).")
    reason: str


class BatchRejectedOut(UnprocessableOut):
    errors: list[RejectedLine] = Field(default_factory=list, description="Each refused prompt with its reason.")


class IngestOut(BaseModel):
    created: int
    already_present: int = Field(description="Already stored (same external_id): left unchanged.")
    rejected: int
    errors: list[RejectedLine] = Field(description="The first rejected lines with their reasons.")
    errors_omitted: int = Field(0, description="Rejected lines beyond the reported list.")


class GroupIngestOut(IngestOut):
    prompts_created: int = Field(0, description="Prompts that came with a line and were new.")


class CompletionOut(BaseModel):
    id: int
    position: int
    text: str
    model: str


class TaskOut(BaseModel):
    task_id: int
    prompt_id: int
    prompt_external_id: str
    status: str
    created: bool = Field(description="False when this exact set of completions was already uploaded for the prompt.")
    completions: list[CompletionOut]
