"""What samples PPO's and RLOO/GRPO's rollouts (`rollout_backend` of PPOConfig / RLOOConfig):
HF generate on the policy in memory (ppo_rollout.sample_rollout, the default on CPU), or the
process's vLLM engine (vllm_engine.py) serving the policy's LoRA adapter as it stands after the
last update (docs/generation-engines.md, "Rollouts").

The vLLM sampler, before each iteration's rollouts: saves the policy's LoRA adapter (peft
save_pretrained, the value adapter left out) to a new folder `step-<n>` of its own temporary
folder, so its LoRA int id is new (vLLM caches adapters by id; a reused id would serve the
weights of an earlier update); wakes the engine and samples token ids with the same pinned
sampling fields as HF (temperature only, every stop id, one seed per row); puts the engine to
sleep again (release_for_training) so the update that follows has the GPU; and builds the same
`Rollout` the HF path builds from those ids (ppo_rollout.finish_rollout).

Only token ids come back from vLLM. The log-probs PPO's ratio and the KL use are recomputed by
the torch policy's forward pass, as on the HF path: vLLM samples with its own kernels (bf16, its
LoRA kernels, its sampler), so its log-probs differ from the trainer's, and mixing the two would
put that sampler/trainer mismatch into the ratio, which must be 1 on the first minibatch of
fresh samples. What remains is that the samples come from vLLM's slightly different
distribution (TRL corrects for it with truncated importance sampling; not done here, unmeasured).

Plain Python, tested on CPU (tests/ml/test_rollout_engines.py): choosing the backend, the adapter
snapshots and their ids, the requests, the Rollout built from token ids. Only
`VllmRolloutSampler._generate` needs vLLM and CUDA; it has never run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from worker.ml import vllm_engine
from worker.ml.data import Prompt
from worker.ml.formatting import prompt_text
from worker.ml.ppo_config import ROLLOUT_BACKENDS
from worker.ml.ppo_rollout import Rollout, encode_prompts, finish_rollout
from worker.ml.special_tokens import stop_tokens
from worker.ml.vllm_engine import ServedModel, VllmSettings

POLICY_ADAPTER = "default"
"""The peft adapter name of the policy (values.py's value adapter is another name)."""
ROLLOUT_GPU_MEMORY = 0.3
"""The GPU share the engine takes while it samples rollouts (RANKLAB_VLLM_ROLLOUT_GPU_MEMORY):
the policy, its optimizer and the reward model stay on the same GPU meanwhile (TRL's colocate
default)."""


def resolve_rollout_backend(
    backend: str, device: torch.device, world: int = 1, settings: VllmSettings | None = None
) -> str:
    """ "hf" or "vllm": what samples a run's rollouts. "auto" is vLLM only where it can run (the
    vllm package, the policy on a CUDA GPU, a single process, adapters served as LoRA requests),
    so always HF on CPU; an explicit "vllm" that cannot run is refused, naming the field."""
    if backend not in ROLLOUT_BACKENDS:
        raise ValueError(f"rollout_backend: must be one of {ROLLOUT_BACKENDS}, got {backend!r}")
    if backend == "hf":
        return "hf"
    problems = []
    if not vllm_engine.vllm_installed():
        problems.append("the vllm package is not installed")
    if device.type != "cuda" or not torch.cuda.is_available():
        problems.append(f"the policy is on {device.type}, not a CUDA GPU")
    if world > 1:
        problems.append(f"the run has {world} processes (vLLM rollouts need a single one)")
    if not problems and (settings or VllmSettings.from_env()).adapters != "lora":
        problems.append("RANKLAB_VLLM_ADAPTERS=merge (a merged copy and an engine rebuild per update)")
    if not problems:
        return "vllm"
    if backend == "auto":
        return "hf"
    raise ValueError(f"rollout_backend: vllm cannot run here: {'; '.join(problems)}; use rollout_backend hf or auto")


def rollout_settings() -> VllmSettings:
    """The worker's engine settings, at the rollout GPU share (the engine is rebuilt when a
    generation job at the other share comes next: the share is part of its key)."""
    share = float(os.environ.get("RANKLAB_VLLM_ROLLOUT_GPU_MEMORY", ROLLOUT_GPU_MEMORY))
    return replace(VllmSettings.from_env(), gpu_memory_utilization=share)


class AdapterSnapshots:
    """The policy's LoRA adapter saved before each iteration's rollouts, one folder per save
    (`folder/step-<n>`): a new path, so vllm_engine.adapter_key gives it a new LoRA id. The
    previous snapshot is deleted once the next is saved (its id is never asked for again)."""

    def __init__(self, folder: str | os.PathLike, settings: VllmSettings):
        self.folder, self.settings = Path(folder), settings
        self.saved = 0
        self.current: ServedModel | None = None

    def save(self, peft_model) -> ServedModel:
        """Save the policy adapter as it is now; returns what the engine serves for it. Raises
        ValueError, naming rollout_backend, when vLLM's LoRA cannot serve it."""
        path = self.folder / f"step-{self.saved}"
        peft_model.save_pretrained(str(path), selected_adapters=[POLICY_ADAPTER])
        why = vllm_engine.lora_refusal(path, vllm_engine._round_rank(self.settings.max_lora_rank))
        if why is not None:
            shutil.rmtree(path, ignore_errors=True)
            raise ValueError(f"rollout_backend: vLLM cannot serve the policy adapter: {why}; use rollout_backend hf")
        served = vllm_engine.served_model(path, self.settings)
        previous, self.current = self.current, served
        self.saved += 1
        if previous is not None and previous.lora is not None:
            shutil.rmtree(previous.lora.path, ignore_errors=True)
        return served


def row_seeds(rows: int, group_seeds: Sequence[int] | None) -> list[int]:
    """One vLLM seed per row. With `group_seeds` (ppo_rollout.sample_rollout's: equal groups of
    rows, a prompt's copies), row j of group g gets a seed of g's seed and j, so what a group gets
    does not depend on the groups beside it and its copies differ; otherwise seeds are drawn from
    torch's RNG (seeded by the run's seed)."""
    if not group_seeds:
        return torch.randint(0, 1 << 62, (rows,)).tolist()
    size = rows // len(group_seeds)
    return [(group_seeds[row // size] * 1_000_003 + row % size) % (1 << 63) for row in range(rows)]


def rollout_requests(
    query_ids: torch.Tensor, query_mask: torch.Tensor, stop_ids: Sequence[int], cfg, group_seeds=None
) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """(prompt token ids per row, SamplingParams fields per row): the left-padded queries HF
    samples from, padding removed (the same ids, no BOS or template added by vLLM), and HF's
    sampling: temperature only (top_p 1, nothing from generation_config), cfg.max_new_tokens,
    every stop id, one response per row with its own seed."""
    prompt_ids = [row[keep.bool()].tolist() for row, keep in zip(query_ids.cpu(), query_mask.cpu(), strict=True)]
    fields = [
        vllm_engine.sampling_kwargs(
            n=1,
            temperature=cfg.temperature,
            top_p=1.0,
            max_tokens=cfg.max_new_tokens,
            seed=seed,
            stop_ids=list(stop_ids),
        )
        for seed in row_seeds(len(prompt_ids), group_seeds)
    ]
    return prompt_ids, fields


def rollout_from_token_ids(
    tokenizer,
    prompts: Sequence[Prompt],
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    token_ids: Sequence[Sequence[int]],
    stop_ids: Sequence[int],
) -> Rollout:
    """The Rollout of sampled responses given as token id lists (a stop id, when a row has one,
    included as vLLM returns it): right-padded into [B, T] on the queries' device, then masked,
    padded and decoded exactly as the HF path (ppo_rollout.finish_rollout)."""
    width = max(len(tokens) for tokens in token_ids)
    response_ids = torch.full((len(token_ids), width), tokenizer.pad_token_id, dtype=torch.long)
    for row, tokens in enumerate(token_ids):
        response_ids[row, : len(tokens)] = torch.tensor(list(tokens), dtype=torch.long)
    return finish_rollout(tokenizer, prompts, query_ids, query_mask, response_ids.to(query_ids.device), stop_ids)


class VllmRolloutSampler:
    """A ppo_rollout.RolloutSampler on the process's vLLM engine; `close()` deletes the
    snapshots."""

    def __init__(self, settings: VllmSettings | None = None, folder: str | os.PathLike | None = None):
        self.settings = settings or rollout_settings()
        self._own_folder = folder is None
        where = os.environ.get("RANKLAB_VLLM_CACHE_DIR") or None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="ranklab-rollout-adapters-", dir=where))
        self.snapshots = AdapterSnapshots(self.folder, self.settings)

    def __call__(self, model, tokenizer, prompts: Sequence[Prompt], cfg, group_seeds=None) -> Rollout:
        served = self.snapshots.save(model)  # the weights of the latest update
        texts = [prompt_text(tokenizer, p) for p in prompts]  # as sample_rollout
        query_ids, query_mask = encode_prompts(tokenizer, texts, cfg.max_prompt_tokens)  # [B, Lq]
        stops = stop_tokens(tokenizer, model.generation_config)  # the stop ids HF sampling uses
        prompt_ids, fields = rollout_requests(query_ids, query_mask, stops.ids, cfg, group_seeds)
        token_ids = self._generate(served, prompt_ids, fields)
        device = model.device
        return rollout_from_token_ids(
            tokenizer, prompts, query_ids.to(device), query_mask.to(device), token_ids, stops.ids
        )

    def _generate(
        self, served: ServedModel, prompt_ids: list[list[int]], fields: list[dict[str, Any]]
    ) -> list[list[int]]:
        """Token ids per row, in row order (needs vLLM and CUDA: never run so far). The engine
        sleeps again afterwards, whatever happens: the update needs the GPU."""
        from vllm import SamplingParams

        llm = vllm_engine.engine_for(served.base, self.settings, enable_lora=True)
        try:
            outputs = llm.generate(
                [{"prompt_token_ids": ids} for ids in prompt_ids],
                [SamplingParams(**row) for row in fields],
                lora_request=vllm_engine.lora_request(served),
                use_tqdm=False,
            )
        finally:
            vllm_engine.release_for_training()
        return [list(output.outputs[0].token_ids) for output in outputs]

    def close(self) -> None:
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def rollout_sampler(backend: str, asked: str, peft_model) -> VllmRolloutSampler | None:
    """The sampler for `backend` (resolve_rollout_backend's answer to `asked`): None for HF (the
    unchanged sample_rollout path). For vLLM, the starting adapter is saved once to check that
    vLLM's LoRA serves it: if not, "auto" falls back to HF and "vllm" is refused by name."""
    if backend == "hf":
        return None
    sampler = VllmRolloutSampler()
    try:
        sampler.snapshots.save(peft_model)
    except ValueError:
        sampler.close()
        if asked == "auto":
            return None
        raise
    return sampler
