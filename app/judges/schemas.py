"""What the judge API reads and answers."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from app.api_types import Text
from app.models.judges import JudgeKind, JudgeMode


class JudgeIn(BaseModel):
    """A project's judge. Changing what judges (kind, model, endpoint, template, orders) makes a
    new version with an AI labeler account of its own."""

    model_config = ConfigDict(extra="forbid")

    name: Text = Field(
        "judge", min_length=1, max_length=60, description="Shown as the AI labeler's name, with the version."
    )
    kind: JudgeKind = Field(
        JudgeKind.local_pointwise,
        description="local_pointwise: a model folder on the worker asked about each answer alone (the default; "
        "no position bias); local: the same answering the ranking template; endpoint: OpenAI-compatible.",
    )
    model_path: Text = Field("", max_length=1000, description="local: the model folder ('' = the bundled model).")
    endpoint_url: Text = Field("", max_length=1000, description="endpoint: base URL, e.g. http://vllm:8000/v1.")
    endpoint_model: Text = Field("", max_length=200, description="endpoint: the model name to ask for.")
    api_key_env: Text = Field(
        "",
        max_length=100,
        description="endpoint: the worker's environment variable holding the API key (RANKLAB_JUDGE_*, or "
        "OPENAI_API_KEY); '' = no key. The key itself is never sent to or stored by ranklab.",
    )
    prompt_template: Text | None = Field(
        None, max_length=20000, description="Placeholders {prompt}, {completions}, {k}; null = the default."
    )
    orders: StrictInt = Field(2, ge=1, le=4, description="Presentation orders per task (given, reversed, rotations).")
    mode: JudgeMode = Field(JudgeMode.compare, description="compare: never takes a slot; slot: one of the overlap.")
    show_suggestion: StrictBool = Field(False, description="Show the judge's answer to labelers as a suggestion.")
    max_attempts: StrictInt = Field(4, ge=1, le=10, description="Tries per endpoint call (backoff doubles from 1 s).")
    requests_per_minute: StrictFloat = Field(60.0, gt=0, le=100000, description="Rate limit of endpoint calls.")


class JudgeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    name: str
    version: int
    kind: str
    model_path: str
    endpoint_url: str
    endpoint_model: str
    api_key_env: str
    prompt_template: str
    orders: int
    mode: str
    show_suggestion: bool
    max_attempts: int
    requests_per_minute: float
    user_id: int | None
    labeler_name: str = ""


class JudgeRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    judge_id: int
    project_id: int
    status: str
    task_ids: int
    judged: int
    unparseable: int
    undecided: int
    no_slot: int
    already: int
    calls: int
    retries: int
    error_message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class AgreementOut(BaseModel):
    measure: str = Field(
        description='What agrees: "pairwise order" (ranking, pairwise), "Likert points", "good / bad".'
    )
    human_pct: float | None = Field(description="Human–human agreement on overlapped tasks (AI excluded).")
    human_comparisons: int
    judge_pct: float | None = Field(description="Judge–human agreement on tasks both judged.")
    judge_comparisons: int
    judge_tasks: int
    statistic_name: str = Field(description="Rating forms: the chance-corrected statistic ('' for rankings).")
    human_statistic: float | None
    judge_statistic: float | None
    instructgpt_pct: float = Field(description="InstructGPT's labeler–labeler agreement, for scale.")
