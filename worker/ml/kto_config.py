"""The KTO stage's documented configuration (worker/ml/kto.py trains with it).

Like dpo_config.py: each field carries its docstring and `__post_init__` rejects a bad value with
a ValueError naming the field, so a bad request fails before any model is loaded. `asdict(cfg)`
is what the artifact's card keeps. The LoRA fields mean what they mean in DPOConfig, because
both stages build their policy with dpo.build_policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.ml.config import _check, _Config


@dataclass
class KTOConfig(_Config):
    model: str = ""
    """Starting policy: hub id, local folder, or an adapter folder (an SFT adapter is merged into
    its base first; an earlier policy adapter trains on). It is also the reference: the same
    weights with the KTO adapter disabled."""
    beta: float = 0.1
    """Implicit reward scale: r = beta * (log pi - log ref), compared with the KL reference point
    z0 through sigmoid(beta * (log-ratio - z0)). Large keeps the policy close to the reference."""
    desirable_weight: float = 1.0
    """lambda_D: weight of a good completion's loss term. The paper advises
    desirable_weight * n_good / (undesirable_weight * n_bad) in [1, 4/3]."""
    undesirable_weight: float = 1.0
    """lambda_U: weight of a bad completion's loss term."""
    learning_rate: float = 5e-5
    """Peak AdamW learning rate for the LoRA adapter."""
    epochs: int = 1
    """Passes over the training examples."""
    batch_prompts: int = 8
    """Prompts per optimizer step (at least 2: z0 pairs each completion with another prompt of the
    batch). Each prompt is forwarded once with all its labelled completions."""
    max_length: int = 512
    """Tokens per prompt + completion: a completion keeps its first max_length - 1 tokens and the
    prompt keeps its last tokens that still fit beside its longest completion."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch (0: the policy's log-probs are deterministic, as the loss assumes)."""
    lora_targets: tuple[str, ...] = ()
    """Modules that get LoRA adapters; each must name a module of the model. Empty: the model's
    attention and MLP projections under its family's names (worker/ml/lora.py)."""
    warmup_fraction: float = 0.1
    """Fraction of optimizer steps spent warming the LR up linearly from 0 (rounded up)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clipping; 0 disables it."""
    val_fraction: float = 0.1
    """Fraction of prompts held out for the held-out metrics (split by prompt)."""
    seed: int = 0
    """Seed for the split, the batches, their order and the adapter's initialisation."""
    device: str | None = None
    """"cpu", "cuda", ...; None picks CUDA when present."""
    autocast: bool = True
    """bf16 autocast where the hardware has it; weights and optimizer state stay fp32."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes saved with the card (e.g. the round id)."""

    def __post_init__(self) -> None:
        _check(0 < self.beta <= 100, "beta", f"must be in (0, 100], got {self.beta}")
        for name in ("desirable_weight", "undesirable_weight"):
            value = getattr(self, name)
            _check(0 < value <= 100, name, f"must be in (0, 100], got {value}")
        _check(0 < self.learning_rate < 1, "learning_rate", f"must be in (0, 1), got {self.learning_rate}")
        _check(1 <= self.epochs <= 100, "epochs", f"must be between 1 and 100, got {self.epochs}")
        _check(
            self.batch_prompts >= 2,
            "batch_prompts",
            f"must be at least 2 (z0 pairs completions with other prompts), got {self.batch_prompts}",
        )
        _check(8 <= self.max_length <= 32768, "max_length", f"must be between 8 and 32768, got {self.max_length}")
        _check(1 <= self.lora_r <= 1024, "lora_r", f"must be between 1 and 1024, got {self.lora_r}")
        _check(self.lora_alpha > 0, "lora_alpha", "must be positive")
        _check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        _check(all(self.lora_targets), "lora_targets", "a module name is empty")
        _check(0 <= self.warmup_fraction < 1, "warmup_fraction", "must be in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        _check(0 <= self.val_fraction < 1, "val_fraction", f"must be in [0, 1), got {self.val_fraction}")
