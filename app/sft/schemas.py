"""What an admin chooses for an SFT run, and what the SFT API answers.

`SFTSettings` mirrors worker/ml/sft_config.py's SFTConfig (names, defaults and ranges) without importing
it: the web never imports torch. The worker passes the stored settings on by field name
(worker/loop/sft.py) and SFTConfig checks the ranges again; tests/sft/test_settings_mirror.py
fails when the two declarations disagree. Defaults suit the bundled SmolLM2-135M on a CPU.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from app.api_types import INT32_MAX, Text

# strict: JSON false is not the number 0, nor "3" the number 3 (the page form validates laxly: app/sft/form.py).
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class SFTSettings(BaseModel):
    """Supervised fine-tuning on demonstrations (worker.ml.sft_config.SFTConfig); loss on the answer only."""

    model_config = STRICT
    mode: Literal["lora", "full"] = Field("lora", description="Adapters on the start model, or a full fine-tune.")
    peft_method: Literal["lora", "dora", "ia3", "prompt_tuning", "qlora"] = Field(
        "lora",
        description=(
            "Adapter kind (mode lora): LoRA, DoRA, IA³, soft prompts, or QLoRA (needs a CUDA worker with "
            "bitsandbytes; refused by the worker otherwise)."
        ),
    )
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA / DoRA / QLoRA rank.")
    lora_alpha: int = Field(
        32, ge=1, le=4096, description="LoRA scaling numerator (the update is scaled by alpha / r)."
    )
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    num_virtual_tokens: int = Field(16, ge=1, le=512, description="Soft-prompt tokens (peft_method prompt_tuning).")
    learning_rate: float = Field(
        2e-4,
        gt=0.0,
        lt=1.0,
        description="Peak AdamW LR: ~2e-4 for LoRA/DoRA, ~3e-3 for IA³ and soft prompts, ~2e-5 full.",
    )
    lr_schedule: Literal["linear", "cosine", "constant"] = Field("linear", description="Decay after the warm-up.")
    warmup_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="Share of steps with a linear LR warm-up.")
    weight_decay: float = Field(0.0, ge=0.0, le=10.0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, ge=0.0, le=1000.0, description="Gradient-norm clip; 0 disables it.")
    epochs: int = Field(
        3, ge=1, le=100, description="Passes over the demonstrations; the best epoch's weights are kept."
    )
    batch_tokens: int = Field(
        2048,
        ge=8,
        le=1_048_576,
        description="Real tokens per optimizer step (whole examples packed up to this budget).",
    )
    max_length: int = Field(1024, ge=8, le=32768, description="Tokens per conversation (longer ones keep their start).")
    eval_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of prompts held out for the per-epoch held-out loss; 0: none."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations: less memory, ~30% slower.")
    seed: int = Field(0, ge=0, le=INT32_MAX, description="Seed for the split, the example order and adapter init.")

    @model_validator(mode="after")
    def _method_fits_mode(self) -> SFTSettings:
        if self.mode == "full" and self.peft_method != "lora":
            raise ValueError(f"peft_method {self.peft_method!r} is an adapter method; mode 'full' trains every weight")
        return self


Status = Literal["accepted", "pending_review", "rejected"]


class DemonstrationFilter(BaseModel):
    """Which of the project's demonstrations train. Every condition given must hold."""

    model_config = STRICT
    statuses: list[Status] = Field(
        default_factory=lambda: list[Status](["accepted"]),
        min_length=1,
        max_length=3,
        description="Review statuses that train; only accepted ones by default.",
    )
    labeler_ids: list[int] | None = Field(
        None, max_length=1000, description="Only these authors' demonstrations (user ids); empty: everyone's."
    )
    source: Literal["labeler", "upload"] | None = Field(None, description="Written in the browser, or uploaded.")
    created_after: AwareDatetime | None = Field(
        None, strict=False, description="Only demonstrations stored after this time."
    )
    created_before: AwareDatetime | None = Field(
        None, strict=False, description="Only demonstrations stored before this time."
    )
    limit: int | None = Field(None, ge=1, le=10_000_000, description="At most this many, oldest first.")


class SFTRunIn(BaseModel):
    """An SFT run: demonstrations, start model and hyper-parameters (stored as TrainingJob.config)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        strict=True,
        json_schema_extra={"examples": [{"demonstrations": {"statuses": ["accepted"]}, "sft": {"epochs": 2}}]},
    )
    name: Text = Field("", max_length=200, description="Name of the resulting model version; empty: 'SFT job N'.")
    start_model_id: int | None = Field(
        None,
        ge=1,
        le=INT32_MAX,
        description="Model version (base, SFT or policy) of this project to fine-tune; empty: the bundled base.",
    )
    demonstrations: DemonstrationFilter = Field(default_factory=DemonstrationFilter)
    sft: SFTSettings = Field(default_factory=SFTSettings)

    @model_validator(mode="after")
    def _window(self) -> SFTRunIn:
        after, before = self.demonstrations.created_after, self.demonstrations.created_before
        if after is not None and before is not None and after >= before:
            raise ValueError("demonstrations.created_after must be earlier than created_before")
        return self


class JobEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str = Field(description="log or metric (metric: data holds loss / eval_loss at `step`).")
    step: int | None
    data: dict[str, Any]
    message: str
    created_at: datetime


class JobOut(BaseModel):
    """A job's state as the UI polls it (from our DB, never Celery's result store)."""

    id: int
    project_id: int
    kind: str
    status: str = Field(description="pending, running, done, failed or cancelled.")
    current_step: str
    progress: float = Field(description="0..1.")
    eta_seconds: float | None
    error_message: str | None
    config: dict[str, Any]
    start_model_id: int | None
    result_model_id: int | None
    demonstrations: int = Field(description="Demonstrations the filter selects now (trained on, once done).")
    metrics: dict[str, Any] = Field(description="train_loss, eval_loss per epoch, best_epoch, tokens_per_s, ...")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    events: list[JobEventOut] = Field(default_factory=list, description="Events after `events_after`, oldest first.")
