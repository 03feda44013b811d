"""Project bodies and answers of the /api/v1 API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api_types import Text

STRICT_BODY = ConfigDict(extra="forbid", strict=True)
FlagName = Annotated[Text, Field(min_length=1, max_length=64)]
FormName = Literal["ranking", "pairwise", "likert", "multi_aspect", "good_bad"]
FORM_DESCRIPTION = (
    "How labelers judge completions: ranking (order 4–9), pairwise (A/B, tie, both bad; k = 2), likert "
    "(rate each 1..N), multi_aspect (rate or rank each admin-defined aspect), good_bad (each good or bad). "
    "Fixed once the project has tasks."
)
HandoutOrderName = Literal["default", "uncertainty", "margin", "information"]
HANDOUT_ORDER_DESCRIPTION = (
    "Which open task a labeler gets next: default (the oldest open task first), uncertainty (the "
    "tasks an ensemble of score heads disagrees on most first), margin (the smallest reward margins "
    "first) or information (the tasks whose ranking is expected to teach the reward model most about the "
    "open tasks first; batches chosen so they do not ask the same thing twice). The active orders use "
    "priorities refreshed after each reward-model training; unscored tasks come after the scored ones "
    "(docs/active-learning.md)."
)
SETTINGS_DESCRIPTION = (
    'The form\'s options. likert: {"likert_points": 3–9 (7), "likert_labels": [one per point]}. multi_aspect: '
    'also {"aspects": [{"name": "helpfulness", "label": "Helpful", "scale": "likert" or "ranking"}] (1–8), '
    '"overall_ranking": false}. Other forms take none.'
)


class ProjectCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "support answers",
                    "guidelines": "Prefer correct, short answers.",
                    "k_min": 4,
                    "k_max": 6,
                    "overlap": 3,
                }
            ]
        },
    )
    name: Text = Field(min_length=1, max_length=200, description="Unique among projects.")
    description: Text = ""
    guidelines: Text = Field("", description="Markdown shown to labelers beside every task.")
    k_min: int | None = Field(
        None, ge=1, le=9, description="Fewest completions per task (ranking 4–9, pairwise 2, rating forms 1–9)."
    )
    k_max: int | None = Field(None, ge=1, le=9, description="Most completions per task (≥ k_min).")
    overlap: int = Field(1, ge=1, le=50, description="Independent rankings wanted per task.")
    lease_minutes: int = Field(30, ge=1, le=7 * 24 * 60, description="How long a labeler holds a task.")
    flags: list[FlagName] | None = Field(
        None, description="Per-completion flags labelers can set. Default: unsafe, factually_wrong, off_topic."
    )
    demonstration_review: bool = Field(
        False, description="Demonstrations wait for a second labeler's review (accept, edit, reject) before they train."
    )
    feedback_form: FormName = Field("ranking", description=FORM_DESCRIPTION)
    form_settings: dict[str, Any] | None = Field(None, description=SETTINGS_DESCRIPTION)
    handout_order: HandoutOrderName = Field("default", description=HANDOUT_ORDER_DESCRIPTION)


class ProjectUpdate(BaseModel):
    """Only the fields sent are changed."""

    model_config = STRICT_BODY
    name: Text | None = Field(None, min_length=1, max_length=200)
    description: Text | None = None
    guidelines: Text | None = None
    k_min: int | None = Field(None, ge=1, le=9)
    k_max: int | None = Field(None, ge=1, le=9)
    overlap: int | None = Field(None, ge=1, le=50)
    lease_minutes: int | None = Field(None, ge=1, le=7 * 24 * 60)
    flags: list[FlagName] | None = None
    demonstration_review: bool | None = None
    feedback_form: FormName | None = Field(None, description="Only while the project has no tasks.")
    form_settings: dict[str, Any] | None = Field(None, description="Only while the project has no tasks.")
    handout_order: HandoutOrderName | None = Field(None, description=HANDOUT_ORDER_DESCRIPTION)


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    description: str
    guidelines: str
    k_min: int
    k_max: int
    overlap: int
    lease_minutes: int
    flags: list[str]
    demonstration_review: bool
    feedback_form: str
    form_settings: dict[str, Any]
    created_at: datetime
    handout_order: str
    priority_model_id: int | None = Field(description="The reward model version behind the stored priorities.")
    priority_method: str | None = Field(
        description="uncertainty, margin or information: what the last refresh computed."
    )
    priorities_refreshed_at: datetime | None
    priority_stats: dict[str, Any] = Field(
        description='The last refresh: {"tasks": scored, "rankings": fitted on, "heads": n, "seconds": s, '
        '"newest_task_id": the newest task it read}; "skipped" says why nothing was scored.'
    )


class ProgressOut(BaseModel):
    prompts: int
    eval_prompts: int = Field(
        description='Prompts of split "eval": the fixed eval set, never generated for ranking nor trained on.'
    )
    tasks: int = Field(description="Open and complete tasks (retired ones are left out).")
    tasks_open: int
    tasks_complete: int
    tasks_retired: int
    rankings: int = Field(description="Answers: rankings, pairwise verdicts and rating-form answers.")
    overlap: int
    coverage: float = Field(description="Rankings on live tasks / (tasks × overlap); 1.0 when labeling is done.")
    tasks_by_rankings: dict[str, int] = Field(
        description='How many live tasks have 0, 1, 2... rankings, e.g. {"0": 12, "1": 3}.'
    )
    open_leases: int = Field(description="Tasks held right now by a labeler.")


class RefreshOut(BaseModel):
    queued: bool = Field(
        description="The refresh was sent to a worker; the project's priorities_refreshed_at moves when it is done."
    )
    reward_model_id: int = Field(description="The reward model version whose features score the tasks.")
