"""Sample K completions per prompt, many prompts per forward pass.

Prompts are sorted by token length and packed `cfg.prompts_per_batch` at a time into one
left-padded batch; `generate(num_return_sequences=K)` then decodes prompts x K rows together,
one forward per new token for the whole batch. vLLM is used instead when it is installed and
CUDA is present (or when asked for explicitly); backend "openai" asks a served model over HTTP
instead (remote_generate.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import GenerationConfig as HFGenerationConfig

from worker.ml import vllm_engine
from worker.ml.batching import pad_token_ids
from worker.ml.config import GenerationConfig
from worker.ml.data import Prompt
from worker.ml.formatting import encode_texts, prompt_text
from worker.ml.models import Progress, autocast, load_causal_lm, load_tokenizer, match_embeddings
from worker.ml.sampling import sample, sampling_config
from worker.ml.special_tokens import stop_tokens


@dataclass
class Completion:
    text: str
    """Decoded completion, special tokens removed, EOS not included."""
    token_count: int
    """Generated tokens, not counting the final EOS."""
    finish_reason: str
    """"eos" (the model ended its turn) or "length" (hit max_new_tokens)."""
    model_version: str
    """The label of the policy that wrote it (e.g. "base" or a round's artifact id)."""

    def to_dict(self) -> dict:
        return asdict(self)


def vllm_usable() -> bool:
    return vllm_engine.vllm_installed() and torch.cuda.is_available()


def resolve_backend(backend: str, model: object) -> str:
    """The local backend that runs: "auto" is vLLM only where it is known to work (the vllm
    package, CUDA, and a model folder or hub id vLLM can serve: a full model, or an adapter
    vllm_engine can serve as a LoRA request or, with RANKLAB_VLLM_ADAPTERS=merge, merged),
    else HF generate. An explicit "vllm" that cannot run is refused."""
    is_path = isinstance(model, (str, os.PathLike))
    if backend == "vllm" and not (is_path and vllm_usable()):
        raise ValueError("backend: vllm needs the vllm package, a CUDA GPU and a model folder")
    if backend == "auto":
        usable = is_path and vllm_usable()
        return "vllm" if usable and vllm_engine.can_serve(str(model), vllm_engine.VllmSettings.from_env()) else "hf"
    return backend


def generate(
    model: str | os.PathLike | torch.nn.Module,
    prompts: Sequence[Prompt],
    cfg: GenerationConfig,
    on_progress: Progress | None = None,
    *,
    tokenizer=None,
    model_version: str = "",
) -> list[list[Completion]]:
    """K completions for each prompt, in prompt order.

    `model` is a folder / hub id (loaded here) or an already loaded causal LM, in which case pass
    its `tokenizer` too (otherwise it is loaded from the model's own folder). With backend
    "openai", `model` is not read: the server at `cfg.base_url` serves `cfg.remote_model`.
    """
    if not prompts:
        return []
    if cfg.backend == "openai":
        from worker.ml.remote_generate import generate_remote  # imports this module

        return generate_remote(prompts, cfg, on_progress, model_version=model_version)
    backend = resolve_backend(cfg.backend, model)
    if backend == "vllm":
        return _generate_vllm(str(model), prompts, cfg, on_progress, model_version)

    if isinstance(model, (str, os.PathLike)):
        tokenizer = tokenizer or load_tokenizer(model)
        model = load_causal_lm(model, device=cfg.device)
        match_embeddings(model, tokenizer)  # a pad token load_tokenizer had to add needs a row
    elif tokenizer is None:
        loaded: Any = model  # a transformers / peft model: it knows the folder it came from
        tokenizer = load_tokenizer(loaded.config._name_or_path)
    return _generate_hf(model, tokenizer, prompts, cfg, on_progress, model_version)


@torch.no_grad()
def _generate_hf(
    model, tokenizer, prompts: Sequence[Prompt], cfg: GenerationConfig, on_progress: Progress | None, model_version: str
) -> list[list[Completion]]:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    prompt_ids = encode_texts(tokenizer, [prompt_text(tokenizer, p) for p in prompts], cfg.max_prompt_tokens)
    eos_ids = list(stop_tokens(tokenizer, model.generation_config).ids)  # the one rule: special_tokens.py
    # Exactly temperature + top-p, whatever the checkpoint's generation_config says (sampling.py).
    hf_config = sampling_config(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        num_return_sequences=cfg.k,
        stop_ids=eos_ids,
        pad_id=tokenizer.pad_token_id,
    )
    # Similar lengths together: less padding, fewer wasted positions per forward.
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
    results: list[list[Completion]] = [[] for _ in prompts]
    done = 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        for start in range(0, len(order), cfg.prompts_per_batch):
            batch = order[start : start + cfg.prompts_per_batch]
            input_ids, attention_mask = pad_token_ids(
                [prompt_ids[i] for i in batch], tokenizer.pad_token_id, side="left", device=device
            )
            with autocast(device, cfg.autocast):
                output = sample(model, input_ids, attention_mask, hf_config)
            new_tokens = output[:, input_ids.shape[1] :].cpu()  # (len(batch) * K, <= max_new)
            for row, tokens in enumerate(new_tokens.tolist()):
                prompt_index = batch[row // cfg.k]
                results[prompt_index].append(_completion(tokens, eos_ids, tokenizer, cfg, model_version))
            done += len(batch)
            if on_progress is not None:
                on_progress(done, len(prompts), "generate")
    model.train(was_training)
    return results


def _completion(
    tokens: list[int], eos_ids: list[int], tokenizer, cfg: GenerationConfig, model_version: str
) -> Completion:
    end = next((i for i, t in enumerate(tokens) if t in eos_ids), None)
    if end is None:
        # no EOS: the row ran to max_new_tokens (rows shorter than that end in EOS + padding)
        content, reason = tokens[: cfg.max_new_tokens], "length"
    else:
        content, reason = tokens[:end], "eos"
    text = tokenizer.decode(content, skip_special_tokens=True)
    return Completion(text=text, token_count=len(content), finish_reason=reason, model_version=model_version)


def _generate_vllm(
    model_path: str, prompts: Sequence[Prompt], cfg: GenerationConfig, on_progress: Progress | None, model_version: str
) -> list[list[Completion]]:
    """vLLM schedules all prompts itself (continuous batching); we hand it token ids so the
    chat template is applied exactly as in the HF path. The process's one engine is reused
    (vllm_engine.engine_for); an adapter policy is applied as a LoRA request."""
    from vllm import SamplingParams

    settings = vllm_engine.VllmSettings.from_env()
    served = vllm_engine.served_model(model_path, settings)
    tokenizer = load_tokenizer(vllm_engine.tokenizer_folder(model_path))
    prompt_ids = encode_texts(tokenizer, [prompt_text(tokenizer, p) for p in prompts], cfg.max_prompt_tokens)
    llm = vllm_engine.engine_for(served.base, settings, enable_lora=settings.adapters == "lora")
    request = vllm_engine.lora_request(served)  # None for a full model
    params = SamplingParams(**vllm_sampling_kwargs(served, tokenizer, cfg))
    try:
        outputs = llm.generate(
            [{"prompt_token_ids": ids} for ids in prompt_ids], params, lora_request=request, use_tqdm=False
        )
    finally:
        vllm_engine.after_job(settings)  # asleep between jobs unless RANKLAB_VLLM_KEEP_AWAKE
    results: list[list[Completion]] = []
    for output in outputs:
        results.append(
            [
                Completion(
                    text=sample.text,
                    token_count=len(sample.token_ids) - (sample.finish_reason == "stop"),
                    finish_reason="length" if sample.finish_reason == "length" else "eos",
                    model_version=model_version,
                )
                for sample in output.outputs
            ]
        )
    if on_progress is not None:
        on_progress(len(prompts), len(prompts), "generate")
    return results


def vllm_sampling_kwargs(served: vllm_engine.ServedModel, tokenizer, cfg: GenerationConfig) -> dict[str, Any]:
    """SamplingParams fields for `cfg`; the stop ids are the tokenizer's and the checkpoint's
    generation_config's (read from the full model under any adapters: an adapter folder has no
    generation_config.json), by the one rule in special_tokens.py."""
    generation_config = _saved_generation_config(served.generation_config_from or served.base)
    return vllm_engine.sampling_kwargs(
        n=cfg.k,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        stop_ids=list(stop_tokens(tokenizer, generation_config).ids),
    )


def _saved_generation_config(model_path: str) -> HFGenerationConfig | None:
    try:
        return HFGenerationConfig.from_pretrained(model_path)
    except OSError:  # the folder has no generation_config.json
        return None
