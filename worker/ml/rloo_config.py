"""RLOOConfig: every RLOO / GRPO hyper-parameter, documented where declared (cleanrl style).

Kept free of torch so the CLI can build its flags from it without loading the ML stack;
`worker.ml.rloo` re-exports it. `asdict(cfg)` is saved in the policy artifact's card.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.ml.config import SAMPLING_MAX_NEW_TOKENS, SAMPLING_TEMPERATURE, _check, _Config
from worker.ml.ppo_config import REWARD_SOURCES, ROLLOUT_BACKENDS

ESTIMATORS = ("rloo", "grpo")
KL_PLACEMENTS = ("reward", "loss")


@dataclass
class RLOOConfig(_Config):
    model: str = ""
    """Starting policy: a local HF folder (base or SFT), an SFT adapter folder (merged into its
    base; that merged model is the KL reference), or a policy adapter folder from an earlier
    PPO, RLOO or GRPO run (training continues that adapter; the model that run started from
    stays the reference)."""
    estimator: str = "rloo"
    """How a response's advantage comes from the K scores of its prompt's group: "rloo" (the
    leave-one-out baseline, A_i = r_i - mean of the other K-1 scores) or "grpo" (A_i = (r_i -
    group mean) / (group std + 1e-4), std with Bessel's correction)."""
    steps: int = 8
    """Iterations; each samples K responses for each of `prompts_per_step` prompts, scores them
    and updates the policy."""
    prompts_per_step: int = 4
    """Prompts per iteration; the rollout batch is prompts_per_step * k responses."""
    k: int = 4
    """Responses sampled per prompt (the group the baseline is taken over); at least 2."""
    update_epochs: int = 1
    """Passes over each rollout batch, freshly shuffled each time. With 1 and one minibatch per
    batch the update is plain REINFORCE (the ratio is 1); more reuse the samples, kept close to
    the rollout policy by the clipped ratio."""
    minibatch_size: int = 8
    """Responses per gradient step (at most prompts_per_step * k)."""
    learning_rate: float = 5e-5
    """AdamW learning rate for the LoRA weights (Adam eps 1e-5)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    kl_coef: float = 0.05
    """beta: weight of the KL(policy || reference) term, wherever `kl_in` puts it."""
    kl_in: str = "reward"
    """Where the KL to the reference acts. "reward": each score loses beta * (sum of the
    response's per-token log-ratios) before the advantages are taken (the RLOO paper's
    sequence-level KL). "loss": beta * the mean per-token k3 estimate is added to the loss and
    the advantages see the plain scores (the GRPO paper)."""
    clip_range: float = 0.2
    """Ratio clip epsilon, as PPO's; it only binds when update_epochs > 1 or a batch is split
    into several minibatches."""
    max_new_tokens: int = SAMPLING_MAX_NEW_TOKENS
    """Longest response; by default the budget of the completions the reward model learned from
    (GenerationConfig.max_new_tokens)."""
    max_prompt_tokens: int = 256
    """Longer prompts keep their last tokens (the assistant-turn opener must survive)."""
    temperature: float = SAMPLING_TEMPERATURE
    """Sampling temperature (no top-k/top-p); logprobs use logits divided by the same value. By
    default the temperature of the completions the reward model learned from."""
    generation_batch_size: int = 0
    """Responses per `generate` call (left-padded together); 0 = the whole batch in one call."""
    rollout_backend: str = "auto"
    """What samples the rollouts: "hf", "vllm" or "auto" (vllm where it can run, else hf;
    always hf on CPU), as PPOConfig.rollout_backend."""
    missing_eos_penalty: float = 0.0
    """Opt-in: subtracted from the score of a response that hit `max_new_tokens` without a stop
    token (as PPOConfig.missing_eos_penalty)."""
    reward_source: str = "reward_model"
    """"reward_model": maximise the given reward. "zero": a control run whose score is 0 for
    every response (the reward is not even loaded), so only the KL term shapes the policy."""
    lora_r: int = 16
    """LoRA rank of the policy adapter."""
    lora_alpha: int = 32
    """LoRA scaling numerator (updates are scaled by alpha / r)."""
    lora_targets: tuple[str, ...] = ()
    """Module names that get LoRA adapters; each must name a module of the model. Empty (the
    default): the model's attention and MLP projections under its family's names (as PPO,
    worker/ml/lora.py). LoRA dropout is always 0 (dropout off in RL)."""
    merge: bool = False
    """Also save a merged full model under `out_dir/merged` (loads without peft)."""
    seed: int = 0
    """Seeds LoRA initialisation, prompt order and sampling."""
    device: str | None = None
    """"cpu", "cuda", ...; None picks CUDA when present."""
    autocast: bool = True
    """bf16 autocast for the trunk where the hardware has it; logprobs are always fp32."""

    def __post_init__(self) -> None:
        _check(self.estimator in ESTIMATORS, "estimator", f"must be one of {ESTIMATORS}, got {self.estimator!r}")
        _check(self.steps >= 1, "steps", f"must be at least 1, got {self.steps}")
        _check(self.prompts_per_step >= 1, "prompts_per_step", f"must be at least 1, got {self.prompts_per_step}")
        _check(self.k >= 2, "k", f"must be at least 2 (the baseline needs other samples), got {self.k}")
        _check(self.update_epochs >= 1, "update_epochs", f"must be at least 1, got {self.update_epochs}")
        _check(
            1 <= self.minibatch_size <= self.prompts_per_step * self.k,
            "minibatch_size",
            f"must be between 1 and prompts_per_step * k = {self.prompts_per_step * self.k}, got {self.minibatch_size}",
        )
        _check(0 < self.learning_rate < 1, "learning_rate", "must be in (0, 1)")
        _check(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")
        _check(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        _check(self.kl_in in KL_PLACEMENTS, "kl_in", f"must be one of {KL_PLACEMENTS}, got {self.kl_in!r}")
        _check(self.clip_range > 0, "clip_range", "must be positive")
        _check(1 <= self.max_new_tokens <= 8192, "max_new_tokens", "must be between 1 and 8192")
        _check(self.max_prompt_tokens >= 1, "max_prompt_tokens", "must be at least 1")
        _check(0 < self.temperature <= 5, "temperature", f"must be in (0, 5], got {self.temperature}")
        _check(self.generation_batch_size >= 0, "generation_batch_size", "must be >= 0")
        _check(
            self.rollout_backend in ROLLOUT_BACKENDS,
            "rollout_backend",
            f"must be one of {ROLLOUT_BACKENDS}, got {self.rollout_backend!r}",
        )
        _check(self.missing_eos_penalty >= 0, "missing_eos_penalty", "must be >= 0")
        _check(
            self.reward_source in REWARD_SOURCES,
            "reward_source",
            f"must be one of {REWARD_SOURCES}, got {self.reward_source!r}",
        )
        _check(1 <= self.lora_r <= 1024, "lora_r", "must be between 1 and 1024")
        _check(self.lora_alpha > 0, "lora_alpha", "must be positive")
        _check(all(self.lora_targets), "lora_targets", "a module name is empty")

    @property
    def batch_size(self) -> int:
        """Responses per iteration: prompts_per_step * k."""
        return self.prompts_per_step * self.k
