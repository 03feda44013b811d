"""The parameter-efficient methods a stage can train, through peft: one place that turns a
stage config into a peft config and a model to train.

- lora: low-rank updates B·A on the chosen projections (Hu et al.); B starts at 0, so training
  starts from the base model exactly.
- dora: LoRA on the direction of each weight plus a learned per-output magnitude (Liu et al.,
  peft's `use_dora`); ~the same parameters as LoRA, a slower step (the norm of W + BA is
  recomputed every forward).
- ia3: learned vectors that rescale the keys, values and the MLP's input to its output
  projection (Liu et al., "(IA)³"): the fewest parameters, initialised to 1 (identity).
- prompt_tuning: num_virtual_tokens trainable embeddings put before every sequence (Lester et
  al.); the model itself is untouched. Initialised from embeddings of sampled vocabulary tokens,
  which starts closer to real input than random vectors.
- qlora: LoRA on a base loaded in 4-bit NF4 with bf16 compute (Dettmers et al.); CUDA and
  bitsandbytes only (SFTConfig refuses it elsewhere).

Every method saves as a plain peft adapter folder that `peft.AutoPeftModelForCausalLM` loads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worker.ml.lora import check_lora_targets, linear_layer_names, resolve_lora_targets

IA3_ATTENTION = ("k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value")
"""Keys and values (fused with the queries in Phi-3, GPT-2 and GPT-NeoX, scaled together there)."""
IA3_FEEDFORWARD = ("down_proj", "mlp.c_proj", "dense_4h_to_h")
"""The MLP's output projection, whose input (IA)³ rescales."""


def _present(model: nn.Module, names: tuple[str, ...]) -> list[str]:
    modules = [name for name, _ in model.named_modules()]
    return [t for t in names if any(m == t or m.endswith(f".{t}") for m in modules)]


def _named_field(error: ValueError) -> ValueError:
    """lora.py's messages name RewardConfig's field; SFTConfig calls it target_modules."""
    return ValueError(
        str(error).replace("lora_targets:", "target_modules:", 1).replace("lora_targets", "target_modules")
    )


def lora_targets(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """`targets` (each must exist) or the model's attention and MLP projections (lora.py)."""
    try:
        return list(resolve_lora_targets(model, targets, mlp=True))
    except ValueError as error:
        raise _named_field(error) from None


def ia3_targets(model: nn.Module, targets: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(target_modules, feedforward_modules) for IA3: `targets` when given (those among the MLP
    output projections are feed-forward), else the model's keys/values and MLP output projection."""
    if targets:
        try:
            check_lora_targets(model, targets)
        except ValueError as error:
            raise _named_field(error) from None
        return list(targets), [t for t in targets if t in IA3_FEEDFORWARD]
    attention, feedforward = _present(model, IA3_ATTENTION), _present(model, IA3_FEEDFORWARD)
    if not attention:
        raise ValueError(
            f"target_modules: {type(model).__name__} has none of the key/value projections IA3 knows "
            f"({', '.join(IA3_ATTENTION)}); name its modules, its linear layers are "
            f"{', '.join(linear_layer_names(model))}"
        )
    return attention + feedforward, feedforward


def peft_config(cfg, model: nn.Module):
    """The peft config for `cfg.peft_method` on `model` (a causal LM)."""
    from peft import IA3Config, LoraConfig, PromptTuningConfig, PromptTuningInit

    method = cfg.peft_method
    if method in ("lora", "dora", "qlora"):
        return LoraConfig(
            task_type="CAUSAL_LM",
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=lora_targets(model, cfg.target_modules),
            use_dora=method == "dora",
        )
    if method == "ia3":
        targets, feedforward = ia3_targets(model, cfg.target_modules)
        return IA3Config(task_type="CAUSAL_LM", target_modules=targets, feedforward_modules=feedforward)
    if method == "prompt_tuning":
        return PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB,
        )
    raise ValueError(f"peft_method: unknown method {method!r}")


def quantized_base(path: str, device: torch.device):
    """The base model in 4-bit NF4 (double quantisation, bf16 compute) for QLoRA, prepared for
    k-bit training by peft (norms in fp32, input gradients on)."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=quantization, dtype=torch.bfloat16, device_map={"": device.index or 0}
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def wrap(cfg, model: nn.Module, base_name: str) -> Any:
    """`model` with `cfg.peft_method`'s adapter (a peft model whose saved adapter names
    `base_name` as its base). Only the adapter's parameters require gradients."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, peft_config(cfg, model))
    peft_model.peft_config["default"].base_model_name_or_path = base_name
    return peft_model


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; a 4-bit weight counts as its number of values."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel() * (2 if param.dtype == torch.uint8 else 1)  # bnb packs two 4-bit values a byte
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total


__all__ = ["parameter_counts", "peft_config", "quantized_base", "wrap"]
