"""The parts of vLLM generation that are ours, on CPU without vLLM: which folder the engine
loads and which LoRA it applies (real peft adapters saved from tiny models), LoRA ids that change
exactly when an adapter is re-saved, adapters vLLM cannot serve refused by name, the merged copy
(HF loads it, same logits as the adapter), every EOS id in SamplingParams, `auto` picking HF on
CPU, and release_for_training() doing nothing without vLLM. The engine itself never runs here
(docs/generation-engines.md says what that leaves unverified)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from peft import IA3Config, LoraConfig, PeftModel, PromptTuningConfig, get_peft_model
from transformers import AutoModelForCausalLM

from tests.ml.ppo_helpers import one_step, small_cfg
from worker.ml import vllm_engine
from worker.ml.config import GenerationConfig
from worker.ml.generate import generate, resolve_backend, vllm_sampling_kwargs
from worker.ml.models import load_causal_lm, load_tokenizer, save_artifact
from worker.ml.ppo_policy import save_policy
from worker.ml.tiny import tiny_causal_lm, tiny_tokenizer
from worker.ml.vllm_engine import VllmSettings, adapter_key, can_serve, merged_copy, served_model

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"], "task_type": "CAUSAL_LM"}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """A tiny Llama whose generation_config names three stop ids, as Qwen's does (eos plus
    `<|endoftext|>`), one of which the tokenizer does not know as eos."""
    path = tmp_path_factory.mktemp("base")
    model, tokenizer = tiny_causal_lm(tiny_tokenizer())
    model.generation_config.eos_token_id = [
        tokenizer.eos_token_id,
        tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        tokenizer.convert_tokens_to_ids("zebra"),
    ]
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _adapter(base: Path, out: Path, config, *, seed: int = 0) -> Path:
    """A peft adapter on `base` saved as the product saves policies (save_artifact), with random
    B (init_lora_weights=False) so it changes the model."""
    model = load_causal_lm(base, device="cpu", dtype=torch.float32)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = str(base)
    return save_artifact(peft_model, load_tokenizer(base), out, {"kind": "policy"})


def _lora(**extra) -> LoraConfig:
    return LoraConfig(**{**LORA, "init_lora_weights": False, **extra})


def test_lora_request_id_is_stable_and_changes_when_the_adapter_is_resaved(base_dir, tmp_path):
    adapter = _adapter(base_dir, tmp_path / "policy", _lora())
    first, again = served_model(adapter), served_model(adapter)
    assert first.base == str(base_dir.resolve()) and first.generation_config_from == first.base
    assert first.lora is not None and first.lora.path == str(adapter.resolve()) and first.lora.rank == 4
    assert first == again and 1 <= first.lora.int_id < 2**31
    assert can_serve(adapter)  # so `auto` would pick vLLM for it on a GPU machine with vLLM

    _adapter(base_dir, tmp_path / "policy", _lora(), seed=1)  # the next policy update, same folder
    updated = served_model(adapter)
    assert updated.lora is not None and updated.lora.int_id != first.lora.int_id
    assert updated.lora.name != first.lora.name and updated.base == first.base
    other = _adapter(base_dir, tmp_path / "other", _lora())
    assert adapter_key(other) not in (first.lora.int_id, updated.lora.int_id)


@pytest.mark.parametrize("value_mode", ["shared", "adapter"])
def test_the_policy_a_ppo_step_saves_is_served_as_a_lora_request(base_dir, tmp_path, value_mode):
    """What a round actually hands generation from round 1 on: the adapter save_policy writes
    after PPO (its value adapter dropped) is plain LoRA, served on the base it names."""
    policy, tokenizer, _stats = one_step(small_cfg(base_dir, value_mode=value_mode, lora_r=8))
    written = save_policy(policy, tokenizer, tmp_path / "policy", {"kind": "policy"}, merge=False)
    served = served_model(written["adapter"])
    assert served.base == str(base_dir.resolve()) and can_serve(written["adapter"])
    assert served.lora is not None and served.lora.rank == 8


def test_a_full_model_folder_is_served_as_it_is(base_dir, tmp_path):
    served = served_model(base_dir)
    assert served.base == str(base_dir.resolve()) and served.lora is None
    assert can_serve(base_dir) and can_serve("HuggingFaceTB/SmolLM2-135M-Instruct")  # a hub id
    assert not can_serve(tmp_path)  # a folder with neither config.json nor adapter_config.json


def test_a_policy_on_an_sft_adapter_gets_its_base_merged(base_dir, tmp_path):
    """PPO names the SFT adapter as its policy's base (ppo_policy.load_lora_policy); vLLM applies
    one LoRA per request, so the SFT adapter is merged into a full folder under the policy."""
    sft = _adapter(base_dir, tmp_path / "sft", _lora())
    policy_base = load_causal_lm(sft, device="cpu", dtype=torch.float32)  # merged, as PPO loads it
    policy = get_peft_model(policy_base, _lora())
    policy.peft_config["default"].base_model_name_or_path = str(sft)
    save_artifact(policy, load_tokenizer(sft), tmp_path / "policy", {"kind": "policy"})

    served = served_model(tmp_path / "policy", cache_dir=tmp_path / "cache")
    assert served.lora is not None and served.lora.path == str((tmp_path / "policy").resolve())
    merged = Path(served.base)
    assert merged.parent == tmp_path / "cache" and (merged / "config.json").is_file()
    assert merged.name == f"sft-{adapter_key(sft):x}"
    assert served.generation_config_from == str(base_dir.resolve())  # the EOS ids' source


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (_lora(use_dora=True), "DoRA"),
        (_lora(modules_to_save=["lm_head"]), "modules_to_save"),
        (_lora(bias="lora_only"), "trained biases"),
        (_lora(rank_pattern={"v_proj": 2}), "rank_pattern"),
        (_lora(r=72), "rank 72 above max_lora_rank 64"),
        (IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]), "IA3 adapter"),
        (PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2), "PROMPT_TUNING adapter"),
    ],
    ids=["dora", "modules_to_save", "bias", "rank_pattern", "rank", "ia3", "prompt_tuning"],
)
def test_adapters_vllm_lora_cannot_serve_are_refused_by_name(base_dir, tmp_path, config, named):
    adapter = _adapter(base_dir, tmp_path / "adapter", config)
    with pytest.raises(ValueError, match=r"^model: vLLM cannot serve the adapter .*(backend hf).*merge") as error:
        served_model(adapter)
    assert named in str(error.value)
    assert not can_serve(adapter)
    merge = VllmSettings(adapters="merge")
    assert can_serve(adapter, merge) == (not isinstance(config, PromptTuningConfig))


def test_the_merged_copy_loads_with_hf_and_gives_the_adapters_logits(base_dir, tmp_path):
    """RANKLAB_VLLM_ADAPTERS=merge serves DoRA (which vLLM's LoRA refuses) from a merged copy:
    plain transformers loads it, its logits are the adapter model's, HF generate from it writes
    what generating from the adapter writes, and a second request reuses the copy."""
    adapter = _adapter(base_dir, tmp_path / "dora", _lora(use_dora=True))
    served = served_model(adapter, VllmSettings(adapters="merge"), cache_dir=tmp_path / "cache")
    assert served.lora is None and Path(served.base).parent == tmp_path / "cache"
    merged = AutoModelForCausalLM.from_pretrained(served.base).eval()
    assert merged.dtype == torch.float32  # the base's own dtype
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    reference = PeftModel.from_pretrained(base, str(adapter)).eval()
    ids = torch.tensor([[1, 5, 9, 12, 7, 3]])
    with torch.no_grad():
        expected, got = reference(ids).logits, merged(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad(), reference.disable_adapter():
        assert not torch.allclose(reference(ids).logits, expected, atol=1e-3)  # the adapter matters

    cfg = GenerationConfig(k=2, max_new_tokens=5, temperature=1e-4, backend="hf", device="cpu", autocast=False)
    from_copy = generate(served.base, ["hello world"], cfg)
    from_adapter = generate(str(adapter), ["hello world"], cfg)
    assert [c.text for c in from_copy[0]] == [c.text for c in from_adapter[0]]

    written = (Path(served.base) / "config.json").stat().st_mtime_ns
    assert merged_copy(adapter, tmp_path / "cache") == Path(served.base)
    assert (Path(served.base) / "config.json").stat().st_mtime_ns == written  # reused, not rewritten
    assert json.loads((Path(served.base) / "ranklab_card.json").read_text())["kind"] == "vllm-merged-copy"


@pytest.mark.parametrize("target", ["base", "adapter"])
def test_every_eos_id_reaches_the_sampling_params(base_dir, tmp_path, target):
    """The adapter folder has no generation_config.json: its stop ids come from the full model
    under it, so the third stop id (zebra, known only to generation_config) is not lost."""
    path = base_dir if target == "base" else _adapter(base_dir, tmp_path / "policy", _lora())
    tokenizer = load_tokenizer(vllm_engine.tokenizer_folder(path))
    cfg = GenerationConfig(k=3, temperature=0.7, top_p=0.9, max_new_tokens=11, seed=5)
    kwargs = vllm_sampling_kwargs(served_model(path), tokenizer, cfg)
    expected = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>", "zebra")]
    assert kwargs["stop_token_ids"] == expected
    assert {k: kwargs[k] for k in ("n", "temperature", "top_p", "max_tokens", "seed")} == {
        "n": 3,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 11,
        "seed": 5,
    }
    # nothing else shapes the distribution: no top-k, min-p or penalties
    assert (kwargs["top_k"], kwargs["min_p"], kwargs["repetition_penalty"]) == (-1, 0.0, 1.0)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="checks the machine without vLLM")
def test_without_vllm_auto_picks_hf_and_release_does_nothing(base_dir, tmp_path):
    adapter = _adapter(base_dir, tmp_path / "policy", _lora())
    assert resolve_backend("auto", str(base_dir)) == "hf"
    assert resolve_backend("auto", str(adapter)) == "hf"
    assert resolve_backend("hf", str(adapter)) == "hf"
    with pytest.raises(ValueError, match="^backend: vllm needs"):
        resolve_backend("vllm", str(adapter))
    assert vllm_engine.release_for_training() == "none"
    assert vllm_engine.release_for_training() == "none"  # and again: still nothing to release
    assert vllm_engine.after_job(VllmSettings()) == "none"


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RANKLAB_VLLM_ADAPTERS", "merge")
    monkeypatch.setenv("RANKLAB_VLLM_MAX_LORA_RANK", "20")
    monkeypatch.setenv("RANKLAB_VLLM_SLEEP", "0")
    monkeypatch.setenv("RANKLAB_VLLM_KEEP_AWAKE", "1")
    settings = VllmSettings.from_env()
    assert (settings.adapters, settings.max_lora_rank, settings.sleep, settings.keep_awake) == (
        "merge",
        20,
        False,
        True,
    )
    assert VllmSettings() == VllmSettings(adapters="lora", max_lora_rank=64, sleep=True, keep_awake=False)
    monkeypatch.setenv("RANKLAB_VLLM_ADAPTERS", "stack")
    with pytest.raises(ValueError, match="^RANKLAB_VLLM_ADAPTERS: must be lora or merge"):
        VllmSettings.from_env()
