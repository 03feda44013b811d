"""Rollouts sampled by vLLM (rollout_engines.py), the parts that are ours, on CPU without vLLM:
`auto` is HF here and an explicit `vllm` is refused by field name before any model loads; the
adapter saved before an iteration holds exactly the policy's LoRA weights at that moment (same
tensors, same sampled tokens through HF) and gets a new LoRA id after each update; the requests
are HF's queries and sampling fields; the Rollout built from token ids equals HF's for the same
ids. The engine call itself never runs here (docs/generation-engines.md)."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from tests.ml.ppo_helpers import CPU, PROMPTS, small_cfg
from worker.ml.formatting import prompt_text
from worker.ml.models import load_causal_lm, read_card
from worker.ml.ppo import PPOConfig, ppo_step, train_policy
from worker.ml.ppo_math import FixedKLController
from worker.ml.ppo_policy import build_policy
from worker.ml.ppo_rollout import encode_prompts, sample_rollout
from worker.ml.rloo import RLOOConfig, train_rloo
from worker.ml.rollout_engines import (
    AdapterSnapshots,
    resolve_rollout_backend,
    rollout_from_token_ids,
    rollout_requests,
    rollout_sampler,
    row_seeds,
)
from worker.ml.special_tokens import stop_tokens
from worker.ml.vllm_engine import VllmSettings, lora_refusal


def test_auto_is_hf_on_cpu_and_an_explicit_vllm_is_refused_by_field(tmp_path):
    assert resolve_rollout_backend("auto", CPU) == "hf"
    assert resolve_rollout_backend("hf", CPU) == "hf"
    with pytest.raises(ValueError, match=r"^rollout_backend: vllm cannot run here: .*not a CUDA GPU"):
        resolve_rollout_backend("vllm", CPU)
    with pytest.raises(ValueError, match=r"rollout_backend: .*2 processes"):
        resolve_rollout_backend("vllm", CPU, world=2)
    for config in (PPOConfig, RLOOConfig):
        assert config().rollout_backend == "auto"
        with pytest.raises(ValueError, match=r"^rollout_backend: must be one of"):
            config(rollout_backend="sglang")
    # refused before any model is loaded: the model folder does not even exist
    missing = str(tmp_path / "no-model")
    with pytest.raises(ValueError, match=r"^rollout_backend: vllm"):
        train_policy(small_cfg(missing, rollout_backend="vllm"), PROMPTS, lambda p, r: torch.zeros(len(r)), tmp_path)
    rloo = RLOOConfig(model=missing, rollout_backend="vllm", device="cpu")
    with pytest.raises(ValueError, match=r"^rollout_backend: vllm"):
        train_rloo(rloo, PROMPTS, lambda p, r: torch.zeros(len(r)), tmp_path)


def test_hf_runs_record_their_rollout_backend(tiny_model_dir, tmp_path):
    metrics = train_policy(small_cfg(tiny_model_dir), PROMPTS, lambda p, r: torch.zeros(len(r)), tmp_path / "p")

    assert read_card(metrics["adapter"])["rollout_backend"] == "hf"


def _reloaded(adapter_path, base_dir):
    """The saved snapshot loaded back with peft on its base, as a second model."""
    return PeftModel.from_pretrained(load_causal_lm(base_dir, device="cpu"), str(adapter_path)).eval()


def test_each_snapshot_holds_the_policy_of_that_moment_under_a_new_lora_id(tiny_model_dir, tmp_path):
    cfg = small_cfg(tiny_model_dir, value_mode="adapter", autocast=False)  # the value adapter must stay out
    torch.manual_seed(cfg.seed)
    policy, tokenizer = build_policy(cfg, CPU)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.learning_rate)
    snapshots = AdapterSnapshots(tmp_path / "snapshots", VllmSettings())

    served = []
    for _iteration in range(2):
        snap = snapshots.save(policy.peft_model)  # before this iteration's rollouts
        assert snap.lora is not None and snap.base == str(tiny_model_dir.resolve())
        assert lora_refusal(snap.lora.path) is None  # only the policy's plain LoRA tensors
        reloaded = _reloaded(snap.lora.path, tiny_model_dir)
        now, again = _lora_tensors(policy.peft_model), _lora_tensors(reloaded)
        assert now.keys() == again.keys() and now
        assert all(torch.equal(now[name], again[name]) for name in now)
        # the same tokens from the reloaded folder as from the policy in memory, same seed
        kwargs = {"max_prompt_tokens": 64, "max_new_tokens": 6, "temperature": 1.0}
        torch.manual_seed(11)
        mine = sample_rollout(policy.peft_model, tokenizer, PROMPTS, **kwargs)
        torch.manual_seed(11)
        theirs = sample_rollout(reloaded, tokenizer, PROMPTS, **kwargs)
        assert torch.equal(mine.response_ids, theirs.response_ids)
        served.append((snap, now))
        ppo_step(policy, tokenizer, optimizer, FixedKLController(cfg.kl_coef), _words_reward, PROMPTS, cfg)

    (first, before), (second, after) = served
    assert first.lora.int_id != second.lora.int_id  # vLLM would otherwise serve the old weights
    assert any(not torch.equal(before[n], after[n]) for n in before)  # the update moved the LoRA
    assert not (tmp_path / "snapshots" / "step-0").exists()  # the stale snapshot is gone


def _lora_tensors(model) -> dict[str, torch.Tensor]:
    """Every LoRA tensor (A and B) of the policy adapter, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n and ".default." in n}


def _words_reward(prompts, responses):
    return torch.tensor([float(len(r.split())) for r in responses])


def test_the_sampler_checks_vllm_can_serve_the_policy_and_auto_falls_back(tiny_model_dir, monkeypatch):
    policy, _ = build_policy(small_cfg(tiny_model_dir, lora_r=16), CPU)
    sampler = rollout_sampler("vllm", "vllm", policy.peft_model)  # saved and checked, no engine yet
    assert sampler is not None and sampler.snapshots.current is not None
    folder = sampler.folder
    sampler.close()
    assert not folder.exists()

    monkeypatch.setenv("RANKLAB_VLLM_MAX_LORA_RANK", "8")
    assert rollout_sampler("vllm", "auto", policy.peft_model) is None  # HF instead
    with pytest.raises(ValueError, match=r"^rollout_backend: vLLM cannot serve the policy adapter: .*rank 16"):
        rollout_sampler("vllm", "vllm", policy.peft_model)
    assert rollout_sampler("hf", "hf", policy.peft_model) is None


def test_requests_are_the_hf_queries_with_the_pinned_sampling_fields(tiny_model_dir):
    cfg = small_cfg(tiny_model_dir, temperature=0.9, max_new_tokens=5)
    policy, tokenizer = build_policy(cfg, CPU)
    texts = [prompt_text(tokenizer, p) for p in PROMPTS]
    query_ids, query_mask = encode_prompts(tokenizer, texts, cfg.max_prompt_tokens)
    stops = stop_tokens(tokenizer, policy.peft_model.generation_config)
    prompt_ids, fields = rollout_requests(query_ids, query_mask, stops.ids, cfg)

    assert query_mask[0].tolist() != query_mask[-1].tolist()  # left padding to remove
    for ids, row, keep in zip(prompt_ids, query_ids, query_mask, strict=True):
        assert ids == row[keep.bool()].tolist() and ids[-1] == row[-1]
    for field in fields:
        assert field["n"] == 1 and field["temperature"] == 0.9 and field["max_tokens"] == 5
        assert field["top_p"] == 1.0 and field["top_k"] == -1 and field["min_p"] == 0.0
        assert field["stop_token_ids"] == list(stops.ids)
    assert len({field["seed"] for field in fields}) == len(fields)


def test_group_seeds_give_each_copy_its_own_seed_independent_of_the_other_groups():
    seeds = row_seeds(6, [10, 20])  # two prompts, three copies each
    assert len(set(seeds)) == 6
    assert row_seeds(3, [20]) == seeds[3:]  # group 20 alone gets what it got beside group 10
    torch.manual_seed(5)
    drawn = row_seeds(4, None)
    torch.manual_seed(5)
    assert row_seeds(4, None) == drawn and len(set(drawn)) == 4


def test_the_rollout_from_token_ids_equals_the_hf_rollout(tiny_model_dir):
    cfg = small_cfg(tiny_model_dir, autocast=False, max_new_tokens=8)
    policy, tokenizer = build_policy(cfg, CPU)
    model = policy.peft_model
    # a few frequent words as extra stop ids, so some rows end early and others run out
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids(["a", "the"])]
    prompts = PROMPTS * 3
    torch.manual_seed(3)
    hf = sample_rollout(model, tokenizer, prompts, max_prompt_tokens=64, max_new_tokens=8, temperature=1.0)
    assert hf.has_eos.any() and not hf.has_eos.all(), hf.has_eos

    # what vLLM returns per row: the tokens up to and including the first stop id
    token_ids = [row[keep.bool()].tolist() for row, keep in zip(hf.response_ids, hf.response_mask, strict=True)]
    stops = stop_tokens(tokenizer, model.generation_config)
    built = rollout_from_token_ids(tokenizer, prompts, hf.query_ids, hf.query_mask, token_ids, stops.ids)

    assert built.responses == hf.responses and built.prompts == hf.prompts
    for name in ("query_ids", "query_mask", "response_ids", "response_mask", "has_eos"):
        assert torch.equal(getattr(built, name), getattr(hf, name)), name
        assert getattr(built, name).dtype == getattr(hf, name).dtype, name
