"""One vLLM engine per worker process, adapters served as LoRA requests, memory handed back
to training (docs/generation-engines.md).

- `engine_for(base, ...)` keeps ONE engine per process (one GPU cannot hold two copies of a
  backbone next to training): the same key returns the cached engine, woken if asleep; another
  key frees the old engine first. Building an engine takes tens of seconds (weights, CUDA
  graphs, KV-cache profiling), so rounds reuse it.
- `release_for_training()` puts it to sleep (level 1: weights copied to CPU RAM, KV cache
  dropped) or, without sleep mode, deletes it, so reward/SFT/PPO training on the same GPU gets
  the memory. Without vLLM (CI, CPU workers) it does nothing.
- `served_model(path)` says what the engine loads and which LoRA it applies: a full model folder
  is served as it is; a peft LoRA adapter is served on its base as a LoRA request whose int id
  changes whenever the adapter's weights are re-saved (vLLM caches adapters by id, so a reused
  id after a policy update would serve the stale weights). An adapter trained on top of another
  adapter (a PPO policy on an SFT adapter) gets a merged copy of that base, since vLLM applies
  one LoRA at a time. What vLLM's LoRA cannot serve (DoRA, IA3, prompt tuning, modules_to_save,
  bias, per-module ranks, saved embedding rows) is refused with a ValueError, or with
  RANKLAB_VLLM_ADAPTERS=merge served from a merged copy (`merged_copy`).

Only `engine_for`, the vLLM branches of `release_for_training` and `after_job`, and `lora_request`
need vLLM; everything else is plain Python, tested on CPU (tests/ml/test_vllm_engine.py).
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from worker.ml.models import (
    base_of_adapter,
    is_adapter_dir,
    load_causal_lm,
    load_tokenizer,
    match_embeddings,
    save_artifact,
)

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The max_lora_rank values vLLM accepts (it sizes its LoRA buffers by it)."""
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_LORA_TENSOR_MARKERS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")
_OFF = ("0", "false", "no", "")


@dataclass(frozen=True)
class VllmSettings:
    """Worker-wide engine settings, from the environment (one engine serves every job)."""

    adapters: str = "lora"
    """"lora": adapters as LoRA requests (unsupported kinds refused); "merge": every adapter is
    served from a merged full copy (any mergeable kind, one engine rebuild per policy)."""
    max_lora_rank: int = 64
    """Largest LoRA rank the engine accepts; rounded up to one vLLM allows."""
    gpu_memory_utilization: float = 0.85
    """Share of the GPU vLLM may take for weights + KV cache while awake."""
    sleep: bool = True
    """Sleep (level 1) before training instead of deleting the engine."""
    keep_awake: bool = False
    """Stay awake between generation jobs (a worker that only generates); by default the engine
    sleeps after each job, so whatever GPU work follows in the process (evaluation's reward
    scoring, a training step) finds the memory free."""
    dtype: str = "bfloat16"

    @classmethod
    def from_env(cls) -> VllmSettings:
        env = os.environ
        settings = cls(
            adapters=env.get("RANKLAB_VLLM_ADAPTERS", cls.adapters),
            max_lora_rank=int(env.get("RANKLAB_VLLM_MAX_LORA_RANK", cls.max_lora_rank)),
            gpu_memory_utilization=float(env.get("RANKLAB_VLLM_GPU_MEMORY", cls.gpu_memory_utilization)),
            sleep=env.get("RANKLAB_VLLM_SLEEP", "1") not in _OFF,
            keep_awake=env.get("RANKLAB_VLLM_KEEP_AWAKE", "0") not in _OFF,
            dtype=env.get("RANKLAB_VLLM_DTYPE", cls.dtype),
        )
        if settings.adapters not in ("lora", "merge"):
            raise ValueError(f"RANKLAB_VLLM_ADAPTERS: must be lora or merge, got {settings.adapters!r}")
        return settings


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


# --- what the engine serves (plain Python, no vLLM) -------------------------------------------


@dataclass(frozen=True)
class LoraSpec:
    """What a vLLM LoRARequest needs: a unique name and int id (>= 1), the folder, the rank."""

    name: str
    int_id: int
    path: str
    rank: int


@dataclass(frozen=True)
class ServedModel:
    base: str
    """The full model folder (or hub id) the engine loads."""
    lora: LoraSpec | None = None
    """The adapter applied per request, or None for the base itself."""
    generation_config_from: str = field(default="", compare=False)
    """The full model folder whose generation_config.json holds the checkpoint's EOS ids."""


def adapter_key(path: str | os.PathLike) -> int:
    """A LoRA int id in [1, 2^31): the same for the same saved adapter, new after a re-save (its
    resolved path plus the weights file's mtime in ns and size; save_artifact replaces the whole
    folder, so a re-save always writes a new file)."""
    folder = Path(path).resolve()
    weights = next((folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        raise ValueError(f"model: {path} has adapter_config.json but no {' or '.join(ADAPTER_WEIGHTS)}")
    stat = weights.stat()
    digest = hashlib.sha256(f"{folder}|{stat.st_mtime_ns}|{stat.st_size}".encode()).digest()
    return 1 + int.from_bytes(digest[:8], "big") % (2**31 - 2)


def _adapter_config(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(path) / "adapter_config.json").read_text())


def _tensor_names(path: Path) -> list[str]:
    safetensors = path / "adapter_model.safetensors"
    if safetensors.is_file():
        from safetensors import safe_open

        with safe_open(str(safetensors), framework="pt") as handle:
            return list(handle.keys())
    return list(torch.load(path / "adapter_model.bin", map_location="cpu", weights_only=True).keys())


def lora_refusal(path: str | os.PathLike, max_lora_rank: int = VLLM_LORA_RANKS[-1]) -> str | None:
    """Why vLLM's LoRA cannot serve this adapter folder (None: it can). vLLM applies plain LoRA
    deltas B·A·alpha/r (rsLoRA too) on linear layers; it refuses DoRA and modules_to_save
    (vllm/lora/peft_helper.py) and ignores per-module rank/alpha patterns."""
    config = _adapter_config(path)
    kind = config.get("peft_type", "?")
    if kind != "LORA":
        return f"it is a {kind} adapter (vLLM serves LoRA adapters only)"
    problems = []
    if config.get("use_dora"):
        problems.append("DoRA (use_dora)")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {config['modules_to_save']}")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        problems.append("trained biases")
    for name in ("rank_pattern", "alpha_pattern"):
        if config.get(name):
            problems.append(f"per-module {name}")
    for name in ("layer_replication", "target_parameters"):
        if config.get(name):
            problems.append(name)
    extra = [n for n in _tensor_names(Path(path)) if not any(m in n for m in _LORA_TENSOR_MARKERS)]
    if extra:
        problems.append(f"full tensors besides the LoRA ones (e.g. {extra[0]}: resized embeddings?)")
    if int(config.get("r", 0)) > max_lora_rank:
        problems.append(f"rank {config['r']} above max_lora_rank {max_lora_rank} (RANKLAB_VLLM_MAX_LORA_RANK)")
    return f"it uses {', '.join(problems)}" if problems else None


def _resolved(name_or_path: str) -> str:
    """A folder as an absolute path (the engine key and vLLM must not depend on the cwd); a hub
    id as it is."""
    return str(Path(name_or_path).resolve()) if Path(name_or_path).exists() else name_or_path


def full_model_of(path: str) -> str:
    """The full model folder under a chain of adapters (where generation_config.json lives)."""
    while is_adapter_dir(path):
        path = _resolved(base_of_adapter(path))
    return path


def tokenizer_folder(path: str | os.PathLike) -> str:
    """Where `path`'s tokenizer is: the adapter folder when it saved one (save_artifact does),
    else the full model under it."""
    path = _resolved(str(path))
    return path if Path(path, "tokenizer_config.json").is_file() else full_model_of(path)


def served_model(
    model_path: str | os.PathLike, settings: VllmSettings | None = None, *, cache_dir: str | os.PathLike | None = None
) -> ServedModel:
    """What the engine loads for `model_path` and which LoRA it applies. Adapter bases are found
    as models.load_causal_lm finds them (adapter_config's base_model_name_or_path; a base that is
    itself an adapter is merged). Raises ValueError, naming the fix, for an adapter vLLM's LoRA
    cannot serve in "lora" mode."""
    settings = settings or VllmSettings()
    path = _resolved(str(model_path))
    root = full_model_of(path)
    if not is_adapter_dir(path):
        return ServedModel(base=path, generation_config_from=root)
    if settings.adapters == "merge":
        return ServedModel(base=str(merged_copy(path, cache_dir)), generation_config_from=root)
    why = lora_refusal(path, _round_rank(settings.max_lora_rank))
    if why is not None:
        raise ValueError(
            f"model: vLLM cannot serve the adapter {path} as a LoRA request: {why}; "
            "use generation backend hf, or set RANKLAB_VLLM_ADAPTERS=merge to serve a merged copy"
        )
    base = _resolved(base_of_adapter(path))
    if is_adapter_dir(base):  # vLLM applies one LoRA per request: the SFT adapter under it is merged
        base = str(merged_copy(base, cache_dir))
    key = adapter_key(path)
    rank = int(_adapter_config(path)["r"])
    return ServedModel(base, LoraSpec(f"{Path(path).name}-{key:x}", key, path, rank), root)


def can_serve(model_path: str | os.PathLike, settings: VllmSettings | None = None) -> bool:
    """Whether `served_model` would succeed without writing anything (backend "auto" asks)."""
    settings = settings or VllmSettings()
    path = _resolved(str(model_path))
    if not is_adapter_dir(path):
        return Path(path, "config.json").is_file() or not Path(path).exists()  # a folder or a hub id
    if settings.adapters == "merge":
        return _adapter_config(path).get("peft_type") != "PROMPT_TUNING"
    return lora_refusal(path, _round_rank(settings.max_lora_rank)) is None


def _round_rank(rank: int) -> int:
    allowed = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not allowed:
        raise ValueError(f"RANKLAB_VLLM_MAX_LORA_RANK: at most {VLLM_LORA_RANKS[-1]}, got {rank}")
    return allowed[0]


def merged_copy(adapter_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A full model folder equal to the adapter merged into its base (peft merge_and_unload, via
    models.load_causal_lm), written once per saved adapter to
    `cache_dir/<adapter name>-<adapter_key>` (default: a `vllm-merged` folder beside the adapter,
    so it is deleted with the round's artifacts). Saved in the base's own dtype."""
    from transformers import AutoConfig

    path = Path(_resolved(str(adapter_path)))
    folder = Path(cache_dir or os.environ.get("RANKLAB_VLLM_CACHE_DIR") or path.parent / "vllm-merged")
    target = folder / f"{path.name}-{adapter_key(path):x}"
    if (target / "config.json").is_file():
        return target
    if _adapter_config(path).get("peft_type") == "PROMPT_TUNING":
        raise ValueError(f"model: {path} is a prompt-tuning adapter, which cannot be merged; use backend hf")
    saved_dtype = getattr(AutoConfig.from_pretrained(full_model_of(str(path))), "dtype", None)
    dtype = saved_dtype if isinstance(saved_dtype, torch.dtype) else torch.float32
    # merged in fp32 (no rounding of W + BA), then stored as the base was
    model: Any = load_causal_lm(path, device="cpu", dtype=torch.float32)
    tokenizer = load_tokenizer(tokenizer_folder(path))
    match_embeddings(model, tokenizer)
    model.to(dtype=dtype)
    # atomic (temp sibling, then rename): a half-written copy never has the final name
    save_artifact(model, tokenizer, target, {"kind": "vllm-merged-copy", "merged_from": str(path)})
    return target


# --- sampling (plain Python) ------------------------------------------------------------------


def sampling_kwargs(
    *, n: int, temperature: float, top_p: float, max_tokens: int, seed: int | None, stop_ids: list[int]
) -> dict[str, Any]:
    """vLLM SamplingParams fields, every one that shapes the distribution named (as sampling.py
    does for HF generate), and every stop id (special_tokens.stop_tokens) as stop_token_ids, so
    vLLM ends a completion where the HF path does."""
    return {
        "n": n,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": -1,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "min_tokens": 0,
        "max_tokens": max_tokens,
        "seed": seed,
        "stop_token_ids": list(stop_ids),
        "skip_special_tokens": True,
    }


# --- the engine (needs vLLM and CUDA) ---------------------------------------------------------


@dataclass
class _Cached:
    key: tuple
    llm: Any
    sleep_mode: bool
    asleep: bool = False


_engine: _Cached | None = None


def engine_for(base: str, settings: VllmSettings | None = None, *, enable_lora: bool = True) -> Any:
    """The process's vLLM engine for `base` (created on first use, woken if asleep). A different
    base or setting frees the current engine first: one backbone per GPU."""
    global _engine
    settings = settings or VllmSettings()
    rank = _round_rank(settings.max_lora_rank)
    key = (base, settings.dtype, enable_lora, rank, settings.gpu_memory_utilization, settings.sleep)
    if _engine is not None and _engine.key != key:
        _free()
    _empty_cuda_cache()  # what training left cached in torch's allocator goes back to the GPU first
    if _engine is None:
        from vllm import LLM

        lora = {"enable_lora": True, "max_lora_rank": rank, "max_loras": 1} if enable_lora else {}
        llm = LLM(
            model=base,
            dtype=settings.dtype,
            seed=0,  # per-request seeds come with SamplingParams
            gpu_memory_utilization=settings.gpu_memory_utilization,
            enable_sleep_mode=settings.sleep,
            **lora,
        )
        _engine = _Cached(key, llm, settings.sleep)
    elif _engine.asleep:
        _engine.llm.wake_up()
        _engine.asleep = False
    return _engine.llm


def lora_request(served: ServedModel) -> Any:
    """The vllm LoRARequest for `served`'s adapter, or None for a full model."""
    if served.lora is None:
        return None
    from vllm.lora.request import LoRARequest

    return LoRARequest(served.lora.name, served.lora.int_id, served.lora.path)


def lora_request_for(model_path: str | os.PathLike, settings: VllmSettings | None = None) -> tuple[str, Any]:
    """(base folder for `engine_for`, vllm LoRARequest or None) for a model or adapter folder."""
    served = served_model(model_path, settings)
    return served.base, lora_request(served)


def release_for_training() -> str:
    """Give the GPU memory of this process's engine to training: "slept" (level 1), "freed"
    (deleted: no sleep mode) or "none" (no engine, e.g. no vLLM installed). Call before any
    training step on the worker's GPU."""
    if _engine is None:
        return "none"
    if _engine.asleep:
        return "slept"
    if _engine.sleep_mode:
        _engine.llm.sleep(level=1)
        _engine.asleep = True
        _empty_cuda_cache()
        return "slept"
    _free()
    return "freed"


def after_job(settings: VllmSettings) -> str:
    """After a generation job: the engine sleeps unless `keep_awake` (or sleep mode is off, when
    it stays awake until `release_for_training`). Returns what release_for_training returns, or
    "awake"."""
    if _engine is None:
        return "none"
    if settings.keep_awake or not _engine.sleep_mode:
        return "awake"
    return release_for_training()


def _free() -> None:
    global _engine
    if _engine is None:
        return
    engine, _engine = _engine, None
    del engine.llm  # the engine core (a subprocess in vLLM V1) shuts down with its last reference
    try:  # best effort: vLLM's own process groups, where this version has them
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except (ImportError, AssertionError, RuntimeError):
        pass
    _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
