"""What an API client sends to launch an evaluation or hold out an eval set, and what it reads back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.api_types import INT32_MAX, DbId, Text

# strict: JSON true is not the number 1, nor "3" the id 3.
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
VersionId = DbId
Opponent = Literal["previous", "base", "sft"]
NamedPreset = Literal["sft_vs_base", "policy_vs_sft"]


class EvaluationIn(BaseModel):
    """One of three ways to choose: `version_ids` (two or more; every pair is compared unless
    `comparisons` says which), `version_id` with `against` (the version vs its previous policy, the
    base of its backbone, the SFT model its lineage started from), or a named `preset` ("SFT vs
    base": the latest SFT model against its base; "policy vs SFT": the latest policy against the
    SFT model its rounds started from)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        strict=True,
        json_schema_extra={
            "examples": [
                {"version_ids": [3, 7], "prompts": 32},
                {"version_id": 7, "against": ["previous", "base"]},
                {"preset": "policy_vs_sft"},
            ]
        },
    )
    version_ids: list[VersionId] | None = Field(
        None, max_length=50, description="Model versions (base, SFT or policy) of this project to compare."
    )
    comparisons: list[Annotated[list[VersionId], Field(min_length=2, max_length=2)]] | None = Field(
        None, max_length=1225, description="Pairs [a, b] of version_ids to compare; left out, every pair."
    )
    version_id: VersionId | None = Field(None, description="With `against`: the version to evaluate.")
    against: list[Opponent] | None = Field(None, max_length=3, description="previous, base and/or sft.")
    preset: NamedPreset | None = Field(None, description="sft_vs_base or policy_vs_sft (alone).")
    prompts: int = Field(32, ge=1, le=100_000, description="Eval prompts per pair: the first N of the eval split.")
    seed: int = Field(1234, ge=0, le=INT32_MAX, description="Sampling seed of the eval answers (reused when equal).")
    name: Text | None = Field(None, max_length=200, description="Shown in the list; left out, the versions.")

    @model_validator(mode="after")
    def _one_way(self) -> EvaluationIn:
        if self.preset is not None:
            if self.version_ids is not None or self.version_id is not None or self.against is not None:
                raise ValueError("preset: give a preset alone, or version_ids, or version_id with against")
            return self
        if self.version_ids is None and self.version_id is None:
            raise ValueError("version_ids: missing; give two or more version_ids, or version_id with against")
        if self.version_ids is not None and (self.version_id is not None or self.against is not None):
            raise ValueError("version_id: give either version_ids or version_id with against, not both")
        if self.version_id is not None and not self.against:
            raise ValueError("against: missing; name previous, base and/or sft for version_id")
        return self


class EvalSetIn(BaseModel):
    model_config = STRICT
    count: int = Field(ge=1, le=100_000, description="How many unused prompts move into the eval split.")
    seed: int = Field(0, ge=0, le=INT32_MAX, description="The random choice's seed (same seed, same prompts).")


class EvalSetOut(BaseModel):
    eval_prompts: int = Field(description="The eval split's size after the change.")
    moved: list[int] = Field(description="Ids of the prompts moved into the eval split.")


class IntervalOut(BaseModel):
    rate: float | None
    low: float | None = Field(description="95% interval, lower end.")
    high: float | None


class WinRateOut(BaseModel):
    a: int
    b: int
    n: int = Field(description="Judgments of this pair.")
    wins: int = Field(description="a preferred.")
    losses: int = Field(description="b preferred.")
    ties: int
    both_bad: int = Field(description="Counted as ties; also reported on their own.")
    tie_share: float | None = Field(description="(ties + both bad) / n.")
    both_bad_share: float | None
    split: IntervalOut = Field(description="Ties (and both bad) as half a win each; Wilson on an effective n.")
    excluded: IntervalOut = Field(description="Ties left out: wins / (wins + losses), Wilson.")


class LabelerWinRateOut(WinRateOut):
    labeler_id: int
    labeler: str = Field(description="The labeler's email.")


class ComparisonOut(WinRateOut):
    per_labeler: list[LabelerWinRateOut]


class RatingOut(BaseModel):
    version: int
    name: str
    kind: str
    strength: float = Field(description="Bradley–Terry strength, the anchor's being 1.")
    elo: float = Field(description="1000 + 400 · log10(strength).")
    elo_low: float | None = Field(description="95% interval from the Fisher information (None for the anchor).")
    elo_high: float | None
    judgments: int
    wins: float = Field(description="Ties as halves.")


class LeaderboardOut(BaseModel):
    anchor: int | None = Field(description="The version rated 1000 (the oldest judged base version).")
    prior_games: float = Field(description="Virtual tied games per version against a reference, for finite ratings.")
    ratings: list[RatingOut] = Field(description="Best first, over every judged version of the project.")


class ResultsOut(BaseModel):
    tie_rule: str
    judgments: int
    comparisons: list[ComparisonOut]
    leaderboard: LeaderboardOut


class ProgressOut(BaseModel):
    tasks: int
    tasks_expected: int = Field(description="Eval prompts × comparisons.")
    tasks_complete: int
    judgments: int
    wanted: int = Field(description="Live tasks × the project's overlap.")
    share: float = Field(description="judgments / wanted, 0..1.")
    generation: float = Field(description="0..1 while the worker writes the eval answers.")


class EvaluationOut(BaseModel):
    id: int
    project_id: int
    round_id: int | None
    name: str
    status: str = Field(description="generating, labeling, done, failed or cancelled.")
    version_ids: list[int]
    comparisons: list[list[int]]
    config: dict[str, Any]
    error_message: str | None
    created_at: datetime
    finished_at: datetime | None
    progress: ProgressOut
    results: ResultsOut
