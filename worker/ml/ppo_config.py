"""PPOConfig: every PPO hyper-parameter, documented where declared (cleanrl style).

Kept free of torch so the CLI can build its flags from it without loading the ML stack;
`worker.ml.ppo` re-exports it. `asdict(cfg)` is saved in the policy artifact's card.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.ml.config import SAMPLING_MAX_NEW_TOKENS, SAMPLING_TEMPERATURE, _check, _Config

KL_ESTIMATORS = ("k1", "k2", "k3")
VALUE_MODES = ("shared", "adapter")
REWARD_SOURCES = ("reward_model", "zero")
"""See worker/ml/values.py for what each value mode means and costs."""
ROLLOUT_BACKENDS = ("auto", "hf", "vllm")
"""Where rollouts are sampled (worker/ml/rollout_engines.py, docs/generation-engines.md)."""


@dataclass
class PPOConfig(_Config):
    model: str = ""
    """Starting policy: a local HF folder (base or SFT, e.g. the converted SmolLM2), an SFT
    adapter folder (merged into its base; that merged model is the KL reference), or a policy
    adapter folder from an earlier run (training continues that adapter; the model that run
    started from stays the reference)."""
    steps: int = 8
    """PPO iterations. Each samples `batch_size` prompts, rolls out, scores and updates."""
    batch_size: int = 8
    """Prompts (= responses) per iteration."""
    minibatch_size: int = 4
    """Responses per gradient step; batch_size / minibatch_size steps per PPO epoch."""
    ppo_epochs: int = 4
    """Passes over each rollout batch, freshly shuffled each time."""
    max_new_tokens: int = SAMPLING_MAX_NEW_TOKENS
    """Longest response; by default the budget of the completions the reward model learned from
    (GenerationConfig.max_new_tokens)."""
    max_prompt_tokens: int = 256
    """Longer prompts keep their last tokens (the assistant-turn opener must survive)."""
    generation_batch_size: int = 0
    """Prompts per `generate` call (left-padded together); 0 = the whole batch in one call."""
    temperature: float = SAMPLING_TEMPERATURE
    """Sampling temperature (no top-k/top-p); logprobs use logits divided by the same value. By
    default the temperature of the completions the reward model learned from."""
    rollout_backend: str = "auto"
    """What samples the rollouts: "hf" (transformers generate on the policy in memory), "vllm"
    (the process's vLLM engine serving the policy's LoRA adapter, re-saved before each
    iteration's rollouts; needs vllm, CUDA and one process) or "auto" (vllm where that holds,
    else hf: always hf on CPU). Log-probs, values and KL are computed by the policy in torch
    either way (rollout_engines.py)."""
    learning_rate: float = 5e-5
    """AdamW learning rate for the LoRA weights and the value head (Adam eps 1e-5)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    lora_r: int = 16
    """LoRA rank of the policy adapter (and of the value adapter in value_mode "adapter")."""
    lora_alpha: int = 32
    """LoRA scaling numerator (updates are scaled by alpha / r)."""
    lora_targets: tuple[str, ...] = ()
    """Module names that get LoRA adapters; each must name a module of the model. Empty (the
    default): the model's attention and MLP projections under its family's names: q/k/v/o_proj
    + gate/up/down_proj (Llama, Qwen, Gemma, Mistral), qkv_proj, o_proj, gate_up_proj and
    down_proj (Phi-3), c_attn, c_proj and c_fc (GPT-2), query_key_value, dense, dense_h_to_4h
    and dense_4h_to_h (GPT-NeoX); worker/ml/lora.py. LoRA dropout is always 0 (dropout off in RL)."""
    kl_coef: float = 0.05
    """beta: weight of the per-token KL(policy || reference) penalty in the reward."""
    kl_estimator: str = "k1"
    """Per-token KL estimate in the reward: "k1" (log ratio), "k2" or "k3" (see ppo_math)."""
    adaptive_kl_target: float = 0.0
    """When > 0, beta adapts so the mean per-response KL tracks this value (Ziegler et al.);
    0 keeps beta fixed. beta starts at kl_coef, or, when `model` is a policy adapter from an
    earlier adaptive run, where that run left it (its card's `kl_coef_next`), so the controller
    carries on across the rounds of one policy line."""
    adaptive_kl_horizon_steps: float = 2.0
    """How fast the adaptive beta moves, in PPO iterations: each iteration multiplies beta by
    1 + e / horizon, e = clip(KL / target - 1, -0.2, 0.2) (Ziegler et al.'s controller, whose
    horizon of 10,000 samples is about 20 iterations of their 512). With 2, a default round's 8
    iterations can move beta by x2.14 (KL >= 1.2x target throughout) or x0.43 (<= 0.8x)."""
    missing_eos_penalty: float = 0.0
    """Opt-in: subtracted from the score of a response that hit `max_new_tokens` without a stop
    token. 0 (the default) leaves such answers to the reward model, which learned from
    completions cut at the same budget; a penalty is a length prior (docs/loop.md)."""
    reward_source: str = "reward_model"
    """"reward_model": maximise the given reward. "zero": a control run whose score is 0 for
    every response, so only the KL penalty shapes the policy (what PPO does without any
    preference signal; the reward is not even loaded)."""
    whiten_rewards: bool = False
    """Scale per-token rewards to unit variance (mean kept) before GAE."""
    gamma: float = 1.0
    """Discount over response tokens."""
    lam: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """PPO ratio clip epsilon."""
    clip_range_value: float = 0.2
    """How far a value prediction may move from its rollout value before the loss clips."""
    vf_coef: float = 0.1
    """Weight of the value loss in the total loss."""
    value_mode: str = "shared"
    """"shared": value head on the policy's trunk; "adapter": a second LoRA + head (values.py)."""
    merge: bool = False
    """Also save a merged full model under `out_dir/merged` (loads without peft)."""
    seed: int = 0
    """Seeds LoRA/value-head initialisation, prompt order and sampling."""
    device: str | None = None
    """"cpu", "cuda", ...; None picks CUDA when present."""
    autocast: bool = True
    """bf16 autocast for the trunk where the hardware has it; logprobs are always fp32."""

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "steps", f"must be at least 1, got {self.steps}")
        _check(self.batch_size >= 2, "batch_size", f"must be at least 2, got {self.batch_size}")
        _check(1 <= self.minibatch_size <= self.batch_size, "minibatch_size", "must be between 1 and batch_size")
        _check(self.ppo_epochs >= 1, "ppo_epochs", "must be at least 1")
        _check(1 <= self.max_new_tokens <= 8192, "max_new_tokens", "must be between 1 and 8192")
        _check(self.max_prompt_tokens >= 1, "max_prompt_tokens", "must be at least 1")
        _check(self.generation_batch_size >= 0, "generation_batch_size", "must be >= 0")
        _check(0 < self.temperature <= 5, "temperature", f"must be in (0, 5], got {self.temperature}")
        _check(
            self.rollout_backend in ROLLOUT_BACKENDS,
            "rollout_backend",
            f"must be one of {ROLLOUT_BACKENDS}, got {self.rollout_backend!r}",
        )
        _check(0 < self.learning_rate < 1, "learning_rate", "must be in (0, 1)")
        _check(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")
        _check(1 <= self.lora_r <= 1024, "lora_r", "must be between 1 and 1024")
        _check(self.lora_alpha > 0, "lora_alpha", "must be positive")
        _check(all(self.lora_targets), "lora_targets", "a module name is empty")
        _check(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        _check(self.kl_estimator in KL_ESTIMATORS, "kl_estimator", f"must be one of {KL_ESTIMATORS}")
        _check(self.adaptive_kl_target >= 0, "adaptive_kl_target", "must be >= 0 (0 = fixed beta)")
        _check(self.adaptive_kl_horizon_steps >= 1, "adaptive_kl_horizon_steps", "must be at least 1")
        _check(self.missing_eos_penalty >= 0, "missing_eos_penalty", "must be >= 0")
        _check(
            self.reward_source in REWARD_SOURCES,
            "reward_source",
            f"must be one of {REWARD_SOURCES}, got {self.reward_source!r}",
        )
        _check(0 < self.gamma <= 1, "gamma", "must be in (0, 1]")
        _check(0 <= self.lam <= 1, "lam", "must be in [0, 1]")
        _check(self.clip_range > 0, "clip_range", "must be positive")
        _check(self.clip_range_value > 0, "clip_range_value", "must be positive")
        _check(self.vf_coef >= 0, "vf_coef", "must be >= 0")
        _check(self.value_mode in VALUE_MODES, "value_mode", f"must be one of {VALUE_MODES}")
