"""What an admin chooses for a training round, and what the rounds API answers.

The settings mirror worker/ml's config dataclasses (GenerationConfig, RewardConfig, and the
policy optimizers' in policy_settings.py)
without importing them: the web process never imports torch. A setting carries the name of the
dataclass field it sets; the worker passes a stored round config on by those names
(worker/loop/configs.py) and the dataclasses check ranges a second time. tests/loop/test_configs.py
fails when a name, default or range here disagrees with the dataclasses.
Defaults are small enough for a 2-core CPU with the bundled SmolLM2-135M.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from app.api_types import INT32_MAX, Text
from app.rounds.policy_settings import STRICT, DPOSettings, KTOSettings, Optimizer, PPOSettings, RLOOSettings


class PromptSelection(BaseModel):
    """Which of the project's prompts a round generates completions for. A round only takes
    prompts no earlier round used; later rounds of the loop take the next unused ones."""

    model_config = STRICT
    count: int = Field(16, ge=1, le=100_000, description="Prompts per round (fewer when fewer are unused).")
    all_unlabeled: bool = Field(False, description="Take every unused prompt instead of `count`.")
    validation_fraction: float = Field(
        0.2,
        ge=0.0,
        le=0.5,
        description=(
            "Share of each round's new prompts marked `validation`: their rankings are held out of reward-model "
            "training and measure its accuracy. Prompts uploaded with split=validation are kept as they are."
        ),
    )


class GenerationSettings(BaseModel):
    """Sampling the K completions labelers rank (worker.ml.config.GenerationConfig)."""

    model_config = STRICT
    temperature: float = Field(
        0.7, gt=0.0, le=5.0, description="Sampling temperature (K samples must differ); PPO samples at it too."
    )
    top_p: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description=(
            "Nucleus sampling mass; 1 disables it. PPO samples without it, so below 1 the reward model learns from "
            "answers drawn differently from the ones it scores in PPO."
        ),
    )
    max_new_tokens: int = Field(
        64, ge=1, le=8192, description="Longest completion in tokens; PPO's rollouts get the same budget."
    )
    prompts_per_task: int = Field(
        8,
        ge=1,
        le=1024,
        description=(
            "Prompts per generation job: generation is split into jobs of this many prompts so several "
            "workers can share it."
        ),
    )
    seed: int | None = Field(
        0, ge=0, le=INT32_MAX, description="Sampling seed (per job it is offset by the job number); null = random."
    )
    backend: Literal["auto", "hf", "vllm", "openai"] = Field(
        "auto",
        description=(
            "auto: vLLM where the worker has it and a GPU, else transformers (hf); openai: your own served model "
            "(vLLM server, TGI, Ollama, a provider) at base_url writes the completions to label. The round still "
            "trains its starting policy, so serve the same weights (docs/remote-generation.md)."
        ),
    )
    base_url: Text = Field(
        "", max_length=500, description="backend openai: the server's API root up to /v1, e.g. http://gpu-box:8000/v1."
    )
    remote_model: Text = Field("", max_length=200, description="backend openai: the served model's name.")
    api_key_env: str = Field(
        "RANKLAB_GENERATION_API_KEY",
        pattern=r"^RANKLAB_GENERATION_API_KEY(_[A-Z0-9]+)*$",
        description=(
            "backend openai: the worker's environment variable holding the API key (RANKLAB_GENERATION_API_KEY or "
            "RANKLAB_GENERATION_API_KEY_<NAME>); the key itself is never stored."
        ),
    )
    concurrency: int = Field(4, ge=1, le=256, description="backend openai: requests in flight at once.")
    use_n: bool = Field(
        True, description="backend openai: ask for the K samples in one request (n=K); off for servers without n."
    )

    @model_validator(mode="after")
    def _endpoint_named(self) -> GenerationSettings:
        if self.backend == "openai" and not (self.base_url and self.remote_model):
            missing = "base_url" if not self.base_url else "remote_model"
            raise ValueError(f"{missing}: backend openai needs the server's base_url and remote_model")
        return self


class RewardSettings(BaseModel):
    """Reward-model training on all of the project's rankings (worker.ml.config.RewardConfig)."""

    model_config = STRICT
    loss: Literal["kwise", "plackett_luce"] = Field(
        "kwise",
        description=(
            "kwise: mean -log sigmoid over every ordered pair of a ranking (InstructGPT); "
            "plackett_luce: likelihood of the whole ranked order."
        ),
    )
    mode: Literal["lora", "full"] = Field("lora", description="LoRA adapters + score head, or full fine-tuning.")
    learning_rate: float = Field(2e-4, gt=0.0, lt=1.0, description="Peak AdamW LR; ~2e-4 for LoRA, ~2e-5 for full.")
    epochs: int = Field(1, ge=1, le=100, description="Passes over the rankings; 1 is InstructGPT's advice.")
    batch_rankings: int = Field(8, ge=1, le=4096, description="Rankings per optimizer step.")
    max_length: int = Field(512, ge=16, le=32768, description="Tokens per prompt+completion (the end is kept).")
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank (mode lora).")
    weights: Annotated[
        dict[Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$")], Annotated[float, Field(ge=0.0, le=1000.0)]],
        BeforeValidator(parse_weights),
    ] = Field(
        default_factory=dict,
        description=(
            "Multi-aspect projects: the weight of each aspect in the reward PPO/RLOO/GRPO maximise (and in DPO's "
            'ranking where no overall ranking was asked), e.g. {"helpfulness": 0.7, "harmlessness": 0.3}; an '
            "aspect left out weighs 0. Empty: equal weights. Stored with the reward model."
        ),
    )
    init_from: Literal["sft", "base"] = Field(
        "sft",
        description=(
            "Where the reward model starts. sft: the SFT model the policy's lineage began with, as in InstructGPT "
            "(the base model when the lineage has none); base: the pre-SFT base model."
        ),
    )


def parse_weights(value: Any) -> Any:
    """ "helpfulness: 0.7, harmlessness: 0.3" (the launch form's text) -> {"helpfulness": 0.7, ...}; a
    mapping passes through. A part that is not `name: number` is left for the field's check to name."""
    if not isinstance(value, str):
        return value
    weights: dict[str, Any] = {}
    for part in filter(None, (piece.strip() for piece in value.split(","))):
        name, sep, number = part.partition(":")
        if not sep:
            raise ValueError(f"{part!r}: write each weight as aspect: number, e.g. helpfulness: 0.7")
        weights[name.strip()] = number.strip()
    return weights


class LabelingThreshold(BaseModel):
    """When a round's labeling is enough to train on. Both conditions must hold."""

    model_config = STRICT
    min_rankings: int = Field(1, ge=0, le=10_000_000, description="Rankings of this round's tasks needed.")
    min_coverage: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description=(
            "Share of wanted rankings present: rankings / (tasks × project overlap); 1.0 = every task fully ranked."
        ),
    )
    auto_start: bool = Field(
        False, description=("Start training by itself once the threshold is reached; otherwise an admin starts it.")
    )
    source: Literal["humans", "judge"] = Field(
        "humans",
        description=(
            "Who labels the round: the labeling team, or the project's AI judge alone (RLAIF: the judge ranks every "
            "task, each ranking takes an overlap slot, and training starts when it is done; the threshold and "
            "auto_start do not apply). Set up the judge first (the project's Judge page)."
        ),
    )
    judge_rounds: int = Field(
        1,
        ge=1,
        le=1000,
        description=(
            "With source judge: AI-labelled rounds in a row, this one included. Each creates the next from its new "
            "policy, AI-labelled while the count lasts; the round after the last waits for the labeling team."
        ),
    )


Opponent = Literal["previous", "base", "sft"]


class EvaluationSettings(BaseModel):
    """What a round measures after the policy step, on the project's eval prompts (split "eval", never trained on)."""

    model_config = STRICT
    metrics: bool = Field(
        True,
        description=(
            "After the policy step, the new policy (and the base, the first time) answers the eval prompts with a "
            "fixed seed; stored per version: reward score, length, EOS share, KL to the reference, distinct-n and "
            "the length-controlled reward win rate against the previous policy."
        ),
    )
    max_prompts: int = Field(64, ge=1, le=100_000, description="Eval prompts used: the first N, the same every round.")
    seed: int = Field(1234, ge=0, le=INT32_MAX, description="Sampling seed of the eval answers (fixed across rounds).")
    human: bool = Field(
        False, description="Also launch a blind human evaluation of the new policy against `human_against`."
    )
    human_against: list[Opponent] = Field(
        default_factory=lambda: list[Opponent](["previous"]),
        description="Opponents of the new policy in the human evaluation (those that exist).",
    )
    human_prompts: int = Field(32, ge=1, le=100_000, description="Eval prompts per pair in the human evaluation.")


class RoundConfigIn(BaseModel):
    """Everything an admin chooses for a round; saved with the round (TrainingRound.config)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [{"k": 4, "prompts": {"count": 16}, "labeling": {"min_coverage": 1.0, "auto_start": True}}]
        },
    )
    model: Text = Field(
        "",
        max_length=500,
        description=(
            "Starting policy: a hub id or a folder on the worker. Empty: the project's latest trained policy, "
            "or the bundled SmolLM2-135M-Instruct (converted once under the data dir) for a first round."
        ),
    )
    start_version_id: int | None = Field(
        None,
        ge=1,
        le=INT32_MAX,
        description=(
            "Starting policy as a model version of this project (an SFT model, a policy or a base). It writes "
            "the completions to label and is PPO's KL reference. Empty: `model`, else the latest policy."
        ),
    )
    k: int | None = Field(
        None,
        ge=1,
        le=9,
        description=(
            "Completions per prompt; within the project's k range, which its feedback form sets (ranking 4–9, "
            "pairwise 2, Likert, good/bad and multi-aspect 1–9). Default: the project's k_min."
        ),
    )
    seed: int = Field(0, ge=0, le=INT32_MAX, description="Seed for the validation split and training.")
    gpu_class: str = Field(
        "",
        max_length=32,
        pattern=r"^[a-z0-9_-]*$",
        description=(
            "Workers of this GPU class run every step of the round (queues train.<class>, generate.<class>, "
            "evaluate.<class>; docs/deployment.md), e.g. a100 for a model the default workers cannot hold. "
            "Empty: the deployment's class for each role (RANKLAB_TRAIN_GPU_CLASS, ...)."
        ),
    )
    optimizer: Optimizer = Field(
        "ppo",
        description=(
            "The policy step: ppo (LoRA-PPO against the reward model), dpo (DPO on the rankings themselves), "
            "rloo or grpo (k samples per prompt scored by the reward model, no value head), kto (KTO on a "
            "good/bad project's labels). Each reads its own section (ppo, dpo, rloo — grpo shares rloo's — kto)."
        ),
    )
    prompts: PromptSelection = Field(default_factory=PromptSelection)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    reward: RewardSettings = Field(default_factory=RewardSettings)
    ppo: PPOSettings = Field(default_factory=PPOSettings)
    dpo: DPOSettings = Field(default_factory=DPOSettings)
    rloo: RLOOSettings = Field(default_factory=RLOOSettings)
    kto: KTOSettings = Field(default_factory=KTOSettings)
    labeling: LabelingThreshold = Field(default_factory=LabelingThreshold)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)

    @model_validator(mode="after")
    def _one_start(self) -> RoundConfigIn:
        if self.model and self.start_version_id is not None:
            raise ValueError("start_version_id: name the starting policy once: a model version or `model`, not both")
        return self


class StartTrainingIn(BaseModel):
    model_config = STRICT
    force: bool = Field(False, description="Start even though the labeling threshold is not reached.")


# ---- answers --------------------------------------------------------------------------------


class RoundEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str = Field(description="log or metric.")
    stage: str
    step: int | None
    data: dict[str, Any]
    message: str
    created_at: datetime


class LabelingProgressOut(BaseModel):
    tasks: int
    rankings: int
    wanted: int = Field(description="tasks × project overlap.")
    coverage: float
    threshold_met: bool


class RoundOut(BaseModel):
    """A round's state as the admin UI polls it (from our DB, never Celery's result store)."""

    id: int
    project_id: int
    number: int
    status: str = Field(
        description="pending, generating, labeling (or judging, in an AI-labelled round), training_reward, "
        "training_policy, evaluating, "
        "generating_next, done, failed or cancelled."
    )
    current_step: str
    progress: float = Field(description="0..1 within the current step.")
    eta_seconds: float | None
    error_message: str | None
    error_step: str | None
    policy_in_id: int | None
    reward_model_id: int | None
    policy_out_id: int | None
    config: dict[str, Any]
    metrics: dict[str, Any] = Field(
        description=(
            "generation, reward, policy and reward_next_round summaries, and evaluation: the eval-set metrics of "
            "the versions the round measured (by_role base / previous / new: rm_score, mean_tokens, eos_share, "
            "kl_to_reference, distinct_1/2; the new policy's lc_win_rate_vs_previous with its 95% interval and "
            "sample pairs), or {skipped: why} (docs/evaluation-metrics.md)."
        )
    )
    labeling: LabelingProgressOut
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    events: list[RoundEventOut] = Field(default_factory=list, description="Events after `events_after`, oldest first.")


class ModelVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    project_id: int | None
    kind: str = Field(description="base, sft, reward or policy.")
    name: str
    base_model: str
    parent_id: int | None = Field(description="Lineage: the policy this one was trained from.")
    round_id: int | None
    job_id: int | None = Field(None, description="The SFT run (GET /api/v1/sft-runs/{id}) that trained it, if any.")
    artifact_path: str | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime
