"""The DPO stage's documented configuration (worker/ml/dpo.py trains with it).

Like config.py's dataclasses: each field carries its docstring and `__post_init__` rejects a bad
value with a ValueError naming the field, so a bad request fails before any model is loaded.
`asdict(cfg)` is what the artifact's card keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.ml.config import _check, _Config
from worker.ml.dpo_losses import DPO_LOSSES


@dataclass
class DPOConfig(_Config):
    model: str = ""
    """Starting policy: hub id, local folder, or an adapter folder (an SFT adapter is merged into
    its base first). It is also the reference: the same weights with the DPO adapter disabled."""
    beta: float = 0.1
    """Strength of the pull towards the reference: the implicit reward is beta * (log pi - log
    ref). Small (0.1) lets the policy move far; large keeps it close."""
    loss: str = "sigmoid"
    """"sigmoid" (DPO), "ipo" (squared margin to 1 / (2 beta): does not overfit deterministic
    preferences), or "plackett_luce" (listwise likelihood of the whole ranked order)."""
    label_smoothing: float = 0.0
    """Sigmoid loss only: the assumed chance a pair's label is flipped (conservative DPO), in
    [0, 0.5)."""
    learning_rate: float = 5e-5
    """Peak AdamW learning rate for the LoRA adapter."""
    epochs: int = 1
    """Passes over the training rankings."""
    batch_rankings: int = 8
    """Rankings per optimizer step; each forwards its prompt once and its K completions once."""
    max_length: int = 512
    """Tokens per prompt + completion: a completion keeps its first max_length - 1 tokens and the
    prompt keeps its last tokens that still fit beside the ranking's longest completion."""
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
    """Fraction of prompts held out for the implicit-reward accuracy (split by prompt)."""
    seed: int = 0
    """Seed for the split, the batch order and the adapter's initialisation."""
    device: str | None = None
    """"cpu", "cuda", ...; None picks CUDA when present."""
    autocast: bool = True
    """bf16 autocast where the hardware has it; weights and optimizer state stay fp32."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes saved with the card (e.g. the round id)."""

    def __post_init__(self) -> None:
        _check(0 < self.beta <= 100, "beta", f"must be in (0, 100], got {self.beta}")
        _check(self.loss in DPO_LOSSES, "loss", f"must be one of {DPO_LOSSES}, got {self.loss!r}")
        _check(0 <= self.label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)")
        _check(
            self.label_smoothing == 0 or self.loss == "sigmoid",
            "label_smoothing",
            f"applies to the sigmoid loss only, not {self.loss!r}",
        )
        _check(0 < self.learning_rate < 1, "learning_rate", f"must be in (0, 1), got {self.learning_rate}")
        _check(1 <= self.epochs <= 100, "epochs", f"must be between 1 and 100, got {self.epochs}")
        _check(self.batch_rankings >= 1, "batch_rankings", "must be at least 1")
        _check(8 <= self.max_length <= 32768, "max_length", f"must be between 8 and 32768, got {self.max_length}")
        _check(1 <= self.lora_r <= 1024, "lora_r", f"must be between 1 and 1024, got {self.lora_r}")
        _check(self.lora_alpha > 0, "lora_alpha", "must be positive")
        _check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        _check(all(self.lora_targets), "lora_targets", "a module name is empty")
        _check(0 <= self.warmup_fraction < 1, "warmup_fraction", "must be in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        _check(0 <= self.val_fraction < 1, "val_fraction", f"must be in [0, 1), got {self.val_fraction}")
