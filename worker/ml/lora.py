"""Which modules get LoRA adapters, for every model family.

Families name their projections differently: Llama, Qwen, Gemma and Mistral have q/k/v/o_proj
and gate/up/down_proj; Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj; GPT-2 has
c_attn (fused q/k/v, a Conv1D), attn.c_proj, c_fc and mlp.c_proj; GPT-NeoX query_key_value,
dense, dense_h_to_4h and dense_4h_to_h. peft silently skips a target a model lacks (the Llama
names on Phi-3 adapt o_proj and down_proj alone) and fails with a generic message when none
matches (GPT-2). So an empty `lora_targets` means "this model's own attention (and, for PPO,
MLP) projections", and named targets must all exist.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ATTENTION_PROJECTIONS = (
    *("q_proj", "k_proj", "v_proj", "o_proj"),  # Llama, Qwen, Gemma, Mistral (Phi-3: o_proj)
    "qkv_proj",  # Phi-3
    *("c_attn", "attn.c_proj"),  # GPT-2
    *("query_key_value", "attention.dense"),  # GPT-NeoX
)
"""Attention projections by family (peft matches a target against the end of a module's name,
so "attn.c_proj" is GPT-2's attention output and not its MLP's c_proj)."""
MLP_PROJECTIONS = (
    *("gate_proj", "up_proj", "down_proj"),  # Llama, Qwen, Gemma, Mistral (Phi-3: down_proj)
    "gate_up_proj",  # Phi-3
    *("c_fc", "mlp.c_proj"),  # GPT-2
    *("dense_h_to_4h", "dense_4h_to_h"),  # GPT-NeoX
)
"""MLP projections by family, in the same sense."""
_HEADS = {"lm_head", "score", "embed_out"}


def linear_layer_names(model: nn.Module) -> list[str]:
    """The distinct last name parts of the model's linear layers (nn.Linear, GPT-2's Conv1D),
    output heads left out."""
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
    }
    return sorted(names - _HEADS)


def _names(model: nn.Module, target: str) -> list[str]:
    return [name for name, _ in model.named_modules() if name == target or name.endswith(f".{target}")]


def default_lora_targets(model: nn.Module, *, mlp: bool) -> tuple[str, ...]:
    """The attention projections (and with `mlp` the MLP projections) this model has, under
    whichever names its family uses. Raises when it has none of the known names."""
    known = ATTENTION_PROJECTIONS + (MLP_PROJECTIONS if mlp else ())
    found = tuple(t for t in known if _names(model, t))
    if not any(t in ATTENTION_PROJECTIONS for t in found):
        raise ValueError(
            f"lora_targets: {type(model).__name__} has none of the attention projections ranklab knows "
            f"({', '.join(ATTENTION_PROJECTIONS)}); name its modules to adapt, its linear layers are "
            f"{', '.join(linear_layer_names(model))}"
        )
    return found


def check_lora_targets(model: nn.Module, targets: Sequence[str]) -> None:
    """Raise unless every LoRA target names a module of this architecture. peft silently skips
    the missing ones (Phi-3 fuses q/k/v into qkv_proj) or fails with a generic message when
    none match (GPT-2 calls its projections c_attn and c_proj)."""
    missing = [t for t in targets if not _names(model, t)]
    if missing:
        raise ValueError(
            f"lora_targets: {', '.join(missing)} name no module of {type(model).__name__}; "
            f"its linear layers are {', '.join(linear_layer_names(model))} "
            "(leave lora_targets empty to adapt its attention projections, whatever their names)"
        )


def resolve_lora_targets(model: nn.Module, targets: Sequence[str], *, mlp: bool) -> tuple[str, ...]:
    """`targets` when given (each must name a module), else the model's own projections."""
    if not targets:
        return default_lora_targets(model, mlp=mlp)
    check_lora_targets(model, targets)
    return tuple(targets)
