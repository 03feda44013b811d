"""The supervised fine-tuning stage's documented configuration (worker/ml/sft.py trains with it).

Like config.py's dataclasses: each field carries its docstring (the CLI's --help and docs/sft.md
come from them) and `__post_init__` rejects a bad value with a ValueError naming the field, so a
bad request fails before any model is loaded. `asdict(cfg)` is what the artifact's card keeps.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from worker.ml.config import LR_SCHEDULES, _check, _Config

SFT_MODES = ("lora", "full")
PEFT_METHODS = ("lora", "dora", "ia3", "prompt_tuning", "qlora")


def qlora_unavailable_reason(device: str | None) -> str | None:
    """Why QLoRA cannot run here (None when it can): it needs CUDA and bitsandbytes' 4-bit kernels."""
    import torch

    if device is not None and not str(device).startswith(("cuda", "auto")):
        return f"device is {device!r}; QLoRA's 4-bit kernels run on CUDA only"
    if not torch.cuda.is_available():
        return "no CUDA device is present; QLoRA's 4-bit kernels run on CUDA only"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install bitsandbytes)"
    return None


@dataclass
class SFTConfig(_Config):
    model: str = ""
    """Starting model: hub id, local folder, or an adapter folder (merged into its base first)."""
    mode: str = "lora"
    """"lora": train a parameter-efficient adapter (which one: peft_method), the base frozen;
    "full": train every weight (use a ~10x lower learning_rate)."""
    peft_method: str = "lora"
    """With mode "lora": "lora" (low-rank adapters, the default), "dora" (LoRA with a learned
    per-column magnitude, peft's use_dora), "ia3" (learned scaling vectors on keys, values and
    the MLP: the fewest parameters), "prompt_tuning" (num_virtual_tokens trainable input
    embeddings, the model untouched), or "qlora" (LoRA on a 4-bit base: CUDA and bitsandbytes only)."""
    lora_r: int = 16
    """LoRA/DoRA/QLoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch."""
    target_modules: tuple[str, ...] = ()
    """Modules that get adapters (LoRA, DoRA, QLoRA, IA3); each must name a module of the model.
    Empty: the model's attention and MLP projections under its family's names (worker/ml/lora.py)."""
    num_virtual_tokens: int = 16
    """Prompt tuning: trainable soft-prompt tokens put before every sequence."""
    learning_rate: float = 2e-4
    """Peak AdamW learning rate. 2e-4 suits LoRA/DoRA; IA3 and prompt tuning want more (~3e-3);
    full fine-tuning ~2e-5."""
    lr_schedule: str = "linear"
    """Decay after warmup: "linear" to 0, "cosine" to 0, or "constant"."""
    warmup_fraction: float = 0.05
    """Fraction of optimizer steps spent warming the LR up linearly from 0 (rounded up)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clipping; 0 disables it."""
    epochs: int = 3
    """Passes over the training demonstrations; the held-out loss is measured after each and the
    best epoch's weights are the ones saved."""
    batch_tokens: int = 2048
    """Real tokens (prompt + answer) per optimizer step: whole examples are packed until the next
    would pass it (an example longer than that makes a step alone)."""
    max_length: int = 1024
    """Tokens per example (longer ones keep their start, as TRL does; an example whose answer is
    cut away entirely is skipped) and per packed row."""
    padding_free: bool | None = None
    """Pack examples back to back in rows with a block attention mask (no padding, no attention
    between examples) instead of padding them. None: packed wherever exact (not with prompt
    tuning, whose soft prompt peft puts before each row, nor with flash-attention kernels, which
    take no block mask); True insists (refused with prompt tuning); False pads."""
    eval_fraction: float = 0.1
    """Fraction of prompts held out for the per-epoch loss when no eval data is given (the split
    is by prompt, so the held-out loss measures answers to unseen prompts); 0: no held-out loss."""
    seed: int = 0
    """Seed for the split, the example order and adapter initialisation."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% more compute."""
    device: str | None = None
    """"cpu", "cuda", ...; None picks CUDA when present."""
    autocast: bool = True
    """bf16 autocast where the hardware has it; weights and optimizer state stay fp32."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes saved with the card (e.g. the job id)."""

    def __post_init__(self) -> None:
        _check(self.mode in SFT_MODES, "mode", f"must be one of {SFT_MODES}, got {self.mode!r}")
        _check(
            self.peft_method in PEFT_METHODS, "peft_method", f"must be one of {PEFT_METHODS}, got {self.peft_method!r}"
        )
        _check(
            self.mode == "lora" or self.peft_method == "lora",
            "peft_method",
            f"{self.peft_method!r} is an adapter method; mode 'full' trains every weight (use mode 'lora')",
        )
        _check(1 <= self.lora_r <= 1024, "lora_r", f"must be between 1 and 1024, got {self.lora_r}")
        _check(self.lora_alpha > 0, "lora_alpha", "must be positive")
        _check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        _check(all(self.target_modules), "target_modules", "a module name is empty")
        _check(1 <= self.num_virtual_tokens <= 512, "num_virtual_tokens", "must be between 1 and 512")
        _check(0 < self.learning_rate < 1, "learning_rate", f"must be in (0, 1), got {self.learning_rate}")
        _check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"must be one of {LR_SCHEDULES}")
        _check(0 <= self.warmup_fraction < 1, "warmup_fraction", "must be in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        _check(1 <= self.epochs <= 100, "epochs", f"must be between 1 and 100, got {self.epochs}")
        _check(8 <= self.max_length <= 32768, "max_length", f"must be between 8 and 32768, got {self.max_length}")
        _check(self.batch_tokens >= 8, "batch_tokens", f"must be at least 8, got {self.batch_tokens}")
        _check(0 <= self.eval_fraction < 1, "eval_fraction", f"must be in [0, 1), got {self.eval_fraction}")
        _check(
            not (self.padding_free and self.prompt_tuning),
            "padding_free",
            "cannot be combined with peft_method 'prompt_tuning': peft puts the soft prompt before each "
            "row, not before each packed example; leave padding_free unset (prompt tuning then pads)",
        )
        if self.peft_method == "qlora":
            reason = qlora_unavailable_reason(self.device)
            _check(reason is None, "peft_method", f"'qlora' is not available here: {reason}; use 'lora'")

    @property
    def prompt_tuning(self) -> bool:
        return self.mode == "lora" and self.peft_method == "prompt_tuning"
