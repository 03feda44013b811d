"""Documented configuration for generation and reward-model training (cleanrl style).

Each field carries its docstring; `__post_init__` rejects out-of-range values with a
ValueError that names the field, so a bad request fails before any model is loaded.
`asdict(cfg)` is what gets saved in an artifact's card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

LR_SCHEDULES = ("linear", "cosine", "constant")
RM_LOSSES = ("kwise", "plackett_luce")
RM_MODES = ("lora", "full")
GEN_BACKENDS = ("auto", "hf", "vllm", "openai")

# How a policy samples, in one place: the completions labelers rank (GenerationConfig) are what
# the reward model learns from, and PPO's rollouts (PPOConfig) are what it then scores, so both
# default to the same length budget and the same distribution (docs/loop.md, "Sampling").
SAMPLING_TEMPERATURE = 0.7
"""lm-human-preferences' value for both its labeled samples and its rollouts."""
SAMPLING_MAX_NEW_TOKENS = 64
"""Tokens per completion and per rollout; 64 keeps a round quick on a 2-core CPU."""


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{name}: {message}")


class _Config:
    """Shared helpers: a plain dict for cards, and construction from a dict that names bad keys."""

    def to_dict(self: DataclassInstance) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[DataclassInstance], data: dict[str, Any]):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


@dataclass
class GenerationConfig(_Config):
    k: int = 4
    """Completions sampled per prompt: 1 to 9. A ranking task wants 4 to 9 (the round form
    enforces that); an eval prompt gets one answer per version."""
    temperature: float = SAMPLING_TEMPERATURE
    """Sampling temperature, > 0 (K samples must differ, so greedy decoding is not offered).
    PPO's rollouts default to the same value."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]; 1 (the default) disables it. PPO samples without top-p
    (its logprobs must be those of the sampling distribution), so below 1 the reward model
    learns from answers drawn differently from the ones it will score."""
    max_new_tokens: int = SAMPLING_MAX_NEW_TOKENS
    """Longest completion in tokens; a completion that hits it has finish_reason "length".
    PPO's rollouts default to the same budget."""
    max_prompt_tokens: int = 1024
    """Longer prompts keep their last `max_prompt_tokens` tokens (the end matters most in chat)."""
    batch_size: int = 32
    """Sequences (prompt x sample rows) per generate call; prompts per call = batch_size // k."""
    seed: int | None = 0
    """Sampling seed for reproducible rounds; None draws a fresh one."""
    backend: str = "auto"
    """"hf" (transformers generate), "vllm" (needs vllm and CUDA), "auto" (vllm when usable, else
    hf), or "openai": a served model at `base_url` (remote_generate.py; never picked by "auto")."""
    device: str | None = None
    """"cpu", "cuda", ...; None picks CUDA when present."""
    autocast: bool = True
    """bf16 autocast where the hardware has it (faster: docs/measured-facts.md); False for fp32."""
    # The "openai" backend: an OpenAI-compatible server (vLLM, TGI, SGLang, Ollama, a provider).
    base_url: str = ""
    """The server's API root, up to and including /v1 (e.g. http://gpu-box:8000/v1)."""
    remote_model: str = ""
    """The model name the server serves (the request's "model"); also the completions' default
    model_version."""
    api_key_env: str = "RANKLAB_GENERATION_API_KEY"
    """Name of the environment variable holding the API key (sent as a Bearer token; unset or
    empty: no key). The key itself never enters a config, a card or a log."""
    concurrency: int = 4
    """Requests in flight at once: that many prompts are asked in parallel (a prompt's own
    requests, several without use_n, go one after another)."""
    use_n: bool = True
    """Ask for the K samples in one request (n=K); False sends K requests of n=1, for servers that
    reject n. A server that returns fewer than asked is asked again for the rest either way."""
    max_retries: int = 5
    """Retries of a request after a 429, 5xx, timeout or dropped connection, waiting
    retry_backoff_s x 2^attempt or the server's Retry-After (either capped at 120 s)."""
    retry_backoff_s: float = 1.0
    """First wait before a retry, in seconds."""
    timeout_s: float = 120.0
    """Seconds one request may take (connect, send, wait, read) before it counts as failed."""

    def __post_init__(self) -> None:
        _check(1 <= self.k <= 9, "k", f"must be between 1 and 9, got {self.k}")
        _check(0 < self.temperature <= 5, "temperature", f"must be in (0, 5], got {self.temperature}")
        _check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(
            1 <= self.max_new_tokens <= 8192, "max_new_tokens", f"must be between 1 and 8192, got {self.max_new_tokens}"
        )
        _check(self.max_prompt_tokens >= 1, "max_prompt_tokens", "must be at least 1")
        _check(self.batch_size >= 1, "batch_size", f"must be at least 1, got {self.batch_size}")
        _check(self.backend in GEN_BACKENDS, "backend", f"must be one of {GEN_BACKENDS}")
        if self.backend == "openai":
            _check(
                self.base_url.startswith(("http://", "https://")),
                "base_url",
                f"backend openai needs the server's http(s) URL up to /v1, got {self.base_url!r}",
            )
            _check(
                "@" not in urlsplit(self.base_url).netloc,
                "base_url",
                "must not carry credentials (they would be saved with the round); put the API key in "
                "the environment variable named by api_key_env",
            )
            _check(bool(self.remote_model), "remote_model", "backend openai needs the served model's name")
        _check(1 <= self.concurrency <= 256, "concurrency", f"must be between 1 and 256, got {self.concurrency}")
        _check(0 <= self.max_retries <= 20, "max_retries", f"must be between 0 and 20, got {self.max_retries}")
        _check(0 <= self.retry_backoff_s <= 60, "retry_backoff_s", "must be between 0 and 60 seconds")
        _check(0 < self.timeout_s <= 3600, "timeout_s", "must be in (0, 3600] seconds")

    @property
    def prompts_per_batch(self) -> int:
        return max(1, self.batch_size // self.k)


@dataclass
class RewardConfig(_Config):
    model: str = ""
    """Backbone: hub id or local folder of a causal LM (the policy's base, usually)."""
    mode: str = "lora"
    """"lora" (adapters + trainable score head, small artifact) or "full" fine-tuning."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch."""
    lora_targets: tuple[str, ...] = ()
    """Module names that get LoRA adapters (the score head is always fully trained); each must
    name a module of the model. Empty (the default): the model's attention projections under
    its family's names: q/k/v/o_proj (Llama, Qwen, Gemma, Mistral), qkv_proj + o_proj (Phi-3),
    c_attn + attn.c_proj (GPT-2), query_key_value + attention.dense (GPT-NeoX); worker/ml/lora.py."""
    learning_rate: float = 2e-4
    """Peak learning rate (AdamW). 2e-4 suits LoRA; use ~2e-5 for full fine-tuning."""
    lr_schedule: str = "linear"
    """Decay after warmup: "linear" to 0, "cosine" to 0, or "constant"."""
    warmup_fraction: float = 0.05
    """Fraction of optimizer steps spent warming the LR up linearly from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    epochs: int = 1
    """Passes over the training rankings; 1 is the InstructGPT recommendation (more overfits)."""
    batch_rankings: int = 8
    """Rankings per optimizer step. Each ranking forwards its K completions once."""
    max_tokens_per_forward: int = 4096
    """Padded tokens (sequences x longest) per forward pass; a step whose rankings exceed it is
    split into several forwards with gradient accumulation (a ranking is never split)."""
    max_length: int = 512
    """Tokens per prompt+completion; longer sequences keep their end, where the reward is read."""
    loss: str = "kwise"
    """"kwise": mean -log sigmoid(r_better - r_worse) over all pairs of a ranking (InstructGPT).
    "plackett_luce": listwise likelihood of the ranked order (ties: Breslow, see reward.py)."""
    val_fraction: float = 0.1
    """Fraction of prompts held out for validation (the split is by prompt, never by ranking)."""
    norm_samples: int = 1024
    """Training completions scored after training to fit the reward's mean/std normalisation."""
    seed: int = 0
    """Seed for the split, shuffling, and the score head's initialisation."""
    device: str | None = None
    """"cpu", "cuda", ...; None picks CUDA when present."""
    autocast: bool = True
    """bf16 autocast where the hardware has it; False trains in the weights' dtype."""
    share_prompt_prefix: bool = True
    """Forward each ranking's shared prompt once and reuse its key/value cache for the K
    completions (same result up to float rounding, far fewer tokens); False forwards K full
    sequences."""
    gradient_checkpointing: bool = False
    """Trade compute for memory (recompute activations in the backward pass). Needs
    share_prompt_prefix=False: transformers drops the key/value cache under checkpointing."""
    aspects: tuple[str, ...] = ()
    """A multi-aspect reward model: one score head per named aspect on the shared backbone,
    each trained on the rankings' `aspect_groups[name]` (the overall `groups` are not read; to
    have an overall head, name it an aspect). Empty (the default): one head trained on the
    overall rankings. docs/feedback-training.md."""
    aspect_weights: tuple[float, ...] = ()
    """Default weights combining the aspects' normalised scores into one reward (scorer.py),
    one per aspect, >= 0, normalised to sum 1; stored with the model, and a scorer may be given
    others when loaded. Empty: equal weights."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes saved with the card (e.g. the round id)."""

    def __post_init__(self) -> None:
        _check(self.mode in RM_MODES, "mode", f"must be one of {RM_MODES}, got {self.mode!r}")
        _check(self.loss in RM_LOSSES, "loss", f"must be one of {RM_LOSSES}, got {self.loss!r}")
        _check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"must be one of {LR_SCHEDULES}")
        _check(1 <= self.lora_r <= 1024, "lora_r", f"must be between 1 and 1024, got {self.lora_r}")
        _check(self.lora_alpha > 0, "lora_alpha", "must be positive")
        _check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        _check(all(self.lora_targets), "lora_targets", "a module name is empty")
        _check(0 < self.learning_rate < 1, "learning_rate", f"must be in (0, 1), got {self.learning_rate}")
        _check(0 <= self.warmup_fraction < 1, "warmup_fraction", "must be in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")
        _check(1 <= self.epochs <= 100, "epochs", f"must be between 1 and 100, got {self.epochs}")
        _check(self.batch_rankings >= 1, "batch_rankings", "must be at least 1")
        _check(self.max_tokens_per_forward >= 16, "max_tokens_per_forward", "must be at least 16")
        _check(16 <= self.max_length <= 32768, "max_length", f"must be between 16 and 32768, got {self.max_length}")
        _check(0 <= self.val_fraction < 1, "val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        _check(self.norm_samples >= 0, "norm_samples", "must be >= 0")
        _check(
            not (self.gradient_checkpointing and self.share_prompt_prefix),
            "gradient_checkpointing",
            "cannot be combined with share_prompt_prefix (checkpointed layers drop the key/value "
            "cache the shared prompt is reused from); set share_prompt_prefix=False to checkpoint",
        )
        _check(all(self.aspects), "aspects", "an aspect name is empty")
        _check(len(set(self.aspects)) == len(self.aspects), "aspects", f"names repeat: {list(self.aspects)}")
        _check(
            not self.aspect_weights or len(self.aspect_weights) == len(self.aspects),
            "aspect_weights",
            f"needs one weight per aspect ({len(self.aspects)}), got {len(self.aspect_weights)}",
        )
        _check(
            all(isinstance(w, (int, float)) and 0 <= w < float("inf") for w in self.aspect_weights)
            and (not self.aspect_weights or sum(self.aspect_weights) > 0),
            "aspect_weights",
            f"must be finite numbers >= 0, not all 0, got {list(self.aspect_weights)}",
        )

    def default_weights(self) -> dict[str, float]:
        """{aspect: weight}, normalised to sum 1 (equal weights when none are given)."""
        weights = self.aspect_weights or (1.0,) * len(self.aspects)
        total = float(sum(weights))
        return {aspect: float(w) / total for aspect, w in zip(self.aspects, weights, strict=True)}
