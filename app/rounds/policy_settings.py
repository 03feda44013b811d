"""The round settings of each policy optimizer (`RoundConfigIn.optimizer`): PPO, DPO, RLOO/GRPO, KTO.

Like app/rounds/schemas.py, each section mirrors a worker.ml config dataclass by field name
without importing it (the web process never imports torch); tests/loop/test_configs.py keeps the
names, defaults and ranges in step. worker/loop/optimizers.py maps `optimizer` to the stage.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# NaN and Infinity would pass `ge=0` checks and then not fit in a JSONB config (or a sane run).
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


ROLLOUT_BACKEND_HELP = (
    "What samples the rollouts: hf (transformers on the policy in memory), vllm (the worker's vLLM engine, the "
    "policy adapter re-saved after each update; needs vllm, CUDA, one process), auto: vllm where it can run, else "
    "hf. vLLM rollouts have never run on a GPU yet (docs/generation-engines.md): set hf if they fail."
)


class PPOSettings(BaseModel):
    """PPO against the round's reward model (worker.ml.ppo.PPOConfig)."""

    model_config = STRICT
    steps: int = Field(8, ge=1, le=100_000, description="PPO iterations (each: roll out, score, update).")
    batch_size: int = Field(8, ge=2, le=4096, description="Prompts (= responses) per iteration.")
    minibatch_size: int = Field(4, ge=1, le=4096, description="Responses per gradient step (≤ batch_size).")
    ppo_epochs: int = Field(4, ge=1, le=100, description="Passes over each rollout batch.")
    learning_rate: float = Field(5e-5, gt=0.0, lt=1.0, description="AdamW LR of the policy's LoRA and value head.")
    kl_coef: float = Field(0.05, ge=0.0, le=100.0, description="beta: weight of the per-token KL penalty.")
    adaptive_kl_target: float = Field(0.0, ge=0.0, description="> 0: adapt beta so the KL tracks this; 0: fixed.")
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=8192,
        description="Longest response during PPO rollouts; empty: generation's, what the reward model learned from.",
    )
    temperature: float | None = Field(
        None,
        gt=0.0,
        le=5.0,
        description="Rollout sampling temperature; empty: generation's, what the reward model learned from.",
    )
    rollout_backend: Literal["auto", "hf", "vllm"] = Field("auto", description=ROLLOUT_BACKEND_HELP)
    missing_eos_penalty: float = Field(
        0.0,
        ge=0.0,
        description=(
            "Opt-in: subtracted from a response that hits max_new_tokens without ending. 0 leaves such answers to "
            "the reward model; above 0 it pushes the policy towards short answers."
        ),
    )
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank of the policy adapter.")
    reward_source: Literal["reward_model", "zero"] = Field(
        "reward_model",
        description=(
            "reward_model: PPO maximises the round's reward model. zero: a control run in which the policy "
            "sees only the KL penalty, to show what PPO does without a preference signal."
        ),
    )

    @model_validator(mode="after")
    def _minibatch_fits(self) -> PPOSettings:
        if self.minibatch_size > self.batch_size:
            raise ValueError(f"minibatch_size ({self.minibatch_size}) must be ≤ batch_size ({self.batch_size})")
        return self


Optimizer = Literal["ppo", "dpo", "rloo", "grpo", "kto"]


class DPOSettings(BaseModel):
    """Direct preference optimisation on K-way rankings (worker.ml.dpo_config.DPOConfig), when the
    round's optimizer is "dpo": no reward model in the loss, the reference is the lineage's start."""

    model_config = STRICT
    beta: float = Field(
        0.1, gt=0.0, le=100.0, description="Pull towards the reference: implicit reward = beta·(log π − log ref)."
    )
    loss: Literal["sigmoid", "ipo", "plackett_luce"] = Field(
        "sigmoid",
        description=(
            "sigmoid: DPO over every ordered pair of a ranking; ipo: squared margin (does not overfit sure "
            "preferences); plackett_luce: likelihood of the whole ranked order."
        ),
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=0.5, description="sigmoid only: the assumed chance a pair's label is flipped."
    )
    learning_rate: float = Field(5e-5, gt=0.0, lt=1.0, description="Peak AdamW LR of the policy's LoRA.")
    epochs: int = Field(1, ge=1, le=100, description="Passes over the rankings.")
    batch_rankings: int = Field(8, ge=1, le=4096, description="Rankings per optimizer step.")
    max_length: int = Field(512, ge=8, le=32768, description="Tokens per prompt+completion.")
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank of the policy adapter.")
    rankings_from: Literal["policy_line", "this_round"] = Field(
        "policy_line",
        description=(
            "policy_line: the rankings of this round and of every earlier round of its policy line (iterative "
            "DPO); this_round: only this round's, collected from the current policy."
        ),
    )

    @model_validator(mode="after")
    def _smoothing_is_sigmoid_only(self) -> DPOSettings:
        if self.label_smoothing and self.loss != "sigmoid":
            raise ValueError(f"label_smoothing applies to the sigmoid loss only, not {self.loss!r}")
        return self


class KTOSettings(BaseModel):
    """KTO on good/bad judgments (worker.ml.kto_config.KTOConfig), when the round's optimizer is
    "kto": a good/bad project's labels, unpaired; the reference is the lineage's start."""

    model_config = STRICT
    beta: float = Field(0.1, gt=0.0, le=100.0, description="Implicit reward = beta·(log π − log ref).")
    desirable_weight: float = Field(1.0, gt=0.0, le=100.0, description="λ_D: weight of the good answers' loss.")
    undesirable_weight: float = Field(1.0, gt=0.0, le=100.0, description="λ_U: weight of the bad answers' loss.")
    learning_rate: float = Field(5e-5, gt=0.0, lt=1.0, description="Peak AdamW LR of the policy's LoRA.")
    epochs: int = Field(1, ge=1, le=100, description="Passes over the labels.")
    batch_prompts: int = Field(
        8, ge=2, le=4096, description="Prompts per optimizer step (≥ 2: the KL reference point pairs prompts)."
    )
    max_length: int = Field(512, ge=8, le=32768, description="Tokens per prompt+completion.")
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank of the policy adapter.")
    labels_from: Literal["policy_line", "this_round"] = Field(
        "policy_line",
        description=(
            "policy_line: the labels of this and every earlier round of the policy line; this_round: only this round's."
        ),
    )


class RLOOSettings(BaseModel):
    """RLOO and GRPO against the round's reward model (worker.ml.rloo_config.RLOOConfig), when the
    round's optimizer is "rloo" or "grpo": k samples per prompt, no value head."""

    model_config = STRICT
    steps: int = Field(8, ge=1, le=100_000, description="Iterations (each: sample k per prompt, score, update).")
    prompts_per_step: int = Field(4, ge=1, le=4096, description="Prompts per iteration.")
    k: int | None = Field(None, ge=2, le=64, description="Samples per prompt (the group); empty: the round's K.")
    update_epochs: int = Field(
        1, ge=1, le=100, description="Passes over each batch of samples; above 1 the clipped ratio applies."
    )
    minibatch_size: int = Field(8, ge=1, le=4096, description="Responses per gradient step (≤ prompts_per_step × k).")
    learning_rate: float = Field(5e-5, gt=0.0, lt=1.0, description="AdamW LR of the policy's LoRA.")
    kl_coef: float = Field(0.05, ge=0.0, le=100.0, description="beta: weight of the KL to the reference.")
    kl_in: Literal["reward", "loss"] = Field(
        "reward",
        description=(
            "reward: each answer's KL is subtracted from its score before the baseline (RLOO paper); "
            "loss: a per-token KL term is added to the loss (GRPO paper)."
        ),
    )
    max_new_tokens: int | None = Field(
        None, ge=1, le=8192, description="Longest sampled response; empty: generation's."
    )
    temperature: float | None = Field(None, gt=0.0, le=5.0, description="Sampling temperature; empty: generation's.")
    rollout_backend: Literal["auto", "hf", "vllm"] = Field("auto", description=ROLLOUT_BACKEND_HELP)
    missing_eos_penalty: float = Field(
        0.0, ge=0.0, description="Opt-in: subtracted from a response cut at max_new_tokens."
    )
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank of the policy adapter.")
    reward_source: Literal["reward_model", "zero"] = Field(
        "reward_model", description="zero: a control run with no preference signal, only the KL term."
    )

    @model_validator(mode="after")
    def _minibatch_fits(self) -> RLOOSettings:
        if self.k is not None and self.minibatch_size > self.prompts_per_step * self.k:
            raise ValueError(
                f"minibatch_size ({self.minibatch_size}) must be ≤ prompts_per_step × k "
                f"({self.prompts_per_step} × {self.k})"
            )
        return self
