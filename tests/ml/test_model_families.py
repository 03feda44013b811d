"""The model coverage matrix: a tiny model of every family in worker/ml/model_zoo.py goes through
the pipeline - special tokens and chat template -> generation that stops at the family's
end of turn -> reward training (shared-prefix and full scoring agree) -> a PPO step against
that reward model -> saved artifacts that reload with plain transformers/peft.
docs/model-coverage.md is the table of what this covers.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
from transformers import GenerationConfig as HFGenerationConfig

from worker.ml.batching import position_ids
from worker.ml.config import GenerationConfig, RewardConfig
from worker.ml.data import group_rankings, split_by_prompt
from worker.ml.formatting import encode_reward_texts, has_chat_template, prompt_text, reward_text
from worker.ml.generate import generate
from worker.ml.model_zoo import FAMILIES, end_of_turn_id, save_family_model
from worker.ml.models import load_causal_lm, load_tokenizer
from worker.ml.ppo import PPOConfig, ppo_step
from worker.ml.ppo_math import FixedKLController
from worker.ml.ppo_policy import build_policy, resolve_reward, save_policy
from worker.ml.reward import train_reward
from worker.ml.scorer import RewardScorer
from worker.ml.special_tokens import stop_tokens
from worker.ml.synthetic import quality_rankings

CPU = torch.device("cpu")
PROMPTS = ["tell a story", "write a poem about the sun", "hello", "say one two three please"]
NO_TEMPLATE = {"gpt2", "gpt-neox"}
PAD = {  # the pad load_tokenizer settles on: the checkpoint's own, else a spare token, else a new one
    "llama3": "<|finetune_right_pad_id|>",
    "qwen2.5": "<|endoftext|>",
    "qwen3": "<|endoftext|>",
    "gemma2": "<pad>",
    "gemma3": "<pad>",
    "mistral": "<unk>",
    "phi3": "<|endoftext|>",
    "gpt2": "<|pad|>",
    "gpt-neox": "<|pad|>",
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory, family) -> Path:
    """The family's tiny model folder; its end-of-turn token is made likely (model_zoo.favour_token)
    so sampled answers end within a few tokens, as a trained model's do."""
    return save_family_model(family, tmp_path_factory.mktemp(family), end_of_turn_strength=1.0)


@pytest.fixture(scope="module")
def reward_runs(tmp_path_factory, family, family_dir) -> dict[bool, tuple[Path, dict]]:
    """{share_prompt_prefix: (artifact folder, metrics)}: the same LoRA reward model trained from
    the same initialisation twice, with and without prompt-prefix sharing."""
    rankings = quality_rankings(16, 4, seed=1, length=(1, 6))
    runs = {}
    for share in (True, False):
        cfg = RewardConfig(
            model=str(family_dir),
            mode="lora",  # lora_targets empty: the family's attention projections
            learning_rate=1e-2,
            batch_rankings=4,
            val_fraction=0.25,
            share_prompt_prefix=share,
            autocast=False,
        )
        out = tmp_path_factory.mktemp(f"rm-{family}-{share}")
        runs[share] = (out, train_reward(cfg, rankings, out))
    return runs


def test_tokenizer_and_template_reproduce_the_family_layout(family, family_dir):
    spec, tokenizer = FAMILIES[family], load_tokenizer(family_dir)
    assert (tokenizer.bos_token, tokenizer.eos_token) == (spec.bos, spec.eos)
    assert tokenizer.pad_token == PAD[family]
    end = end_of_turn_id(tokenizer, family)
    assert tokenizer.pad_token_id != end
    saved = HFGenerationConfig.from_pretrained(family_dir)
    assert saved.eos_token_id == (tokenizer.convert_tokens_to_ids(list(spec.generation_eos)) or tokenizer.eos_token_id)
    stops = stop_tokens(tokenizer, saved)  # the one EOS rule generation, PPO and the RM share
    assert stops.end_of_turn == end and end in stops.ids

    text = reward_text(tokenizer, "tell a story", " the cat is good .")
    (ids,) = encode_reward_texts(tokenizer, ["tell a story"], [" the cat is good ."], 64)
    # The reward is read at the last token: the end of turn (not Gemma's newline or Phi-3's eos after it).
    assert tokenizer.convert_ids_to_tokens(ids[-1]) == spec.end_of_turn
    prompt = prompt_text(tokenizer, "tell a story")
    if family in NO_TEMPLATE:  # the documented fallback: the prompt is continued as is
        assert not has_chat_template(tokenizer)
        assert prompt == "tell a story" and text == "tell a story the cat is good .<|endoftext|>"
    elif family == "qwen3":  # the template adds an empty think block the policy did not write
        assert text.startswith(prompt + "<think>\n\n</think>\n\n the cat is good .")
    else:
        assert text.startswith(prompt) and "the cat is good ." in text[len(prompt) :]


def test_generation_stops_at_the_end_of_turn(family, family_dir):
    cfg = GenerationConfig(k=4, max_new_tokens=24, temperature=1.0, top_p=1.0, backend="hf", device="cpu")
    samples = [c for per_prompt in generate(str(family_dir), PROMPTS[:3], cfg) for c in per_prompt]
    assert len(samples) == 12
    assert all(c.finish_reason == "eos" and c.token_count < 24 for c in samples)
    assert any(c.token_count > 0 for c in samples)
    tokenizer = load_tokenizer(family_dir)
    special = set(tokenizer.all_special_tokens)
    assert not any(token in c.text for c in samples for token in special)


def test_reward_training_with_and_without_prefix_sharing_agrees(reward_runs):
    shared, full = reward_runs[True][1], reward_runs[False][1]
    assert shared["steps"] == full["steps"] == 3
    for key in ("train_loss_first", "train_loss_last", "val_loss", "reward_std"):
        assert shared[key] == pytest.approx(full[key], abs=1e-4), key
    # The K-wise loss only sees score differences, so the direction that shifts every score alike
    # has a zero gradient up to float rounding, and Adam normalises that rounding noise into
    # learning-rate-sized steps: the two runs' mean score may drift apart by a constant (3.9e-4
    # on the Qwen families with transformers 5.25, while losses and spread agree to 1e-7). Scores
    # at fixed weights are compared exactly in tests/ml/test_reward.py.
    assert shared["reward_mean"] == pytest.approx(full["reward_mean"], abs=5e-3)


def test_saved_reward_model_reloads_with_plain_peft_and_scores_the_same(reward_runs):
    folder = reward_runs[True][0]
    train_sets, _ = split_by_prompt(group_rankings(quality_rankings(16, 4, seed=1, length=(1, 6))), 0.25, 0)
    prompts = [s.prompt for s in train_sets[:2] for _ in s.completions]
    completions = [c for s in train_sets[:2] for c in s.completions]
    scorer = RewardScorer.load(folder, device="cpu", use_autocast=False)
    tokenizer = load_tokenizer(folder)
    plain = AutoPeftModelForSequenceClassification.from_pretrained(folder, num_labels=1).eval()
    with torch.no_grad():
        one_by_one = [
            plain(input_ids=torch.tensor([ids])).logits[0, 0].item()
            for ids in encode_reward_texts(tokenizer, prompts, completions, 512)
        ]
    assert scorer.score(prompts, completions, normalize=False).tolist() == pytest.approx(one_by_one, abs=1e-4)


@pytest.mark.parametrize("value_mode", ["shared", "adapter"])
def test_default_lora_targets_adapt_attention_and_mlp_on_every_family(family, family_dir, value_mode):
    """Phi-3 fuses q/k/v (qkv_proj), GPT-2 and NeoX name theirs c_attn / query_key_value: with
    the Llama names as PPO's default, peft adapted Phi-3's o_proj and down_proj alone and
    refused GPT-2/NeoX. The empty default adapts each family's own projections, in every layer."""
    cfg = PPOConfig(model=str(family_dir), value_mode=value_mode, device="cpu", autocast=False)
    policy, _ = build_policy(cfg, CPU)
    adapted = {
        name.split(".lora_A.")[0]
        for name, param in policy.peft_model.named_parameters()
        if ".lora_A.default." in name and param.requires_grad
    }
    layers = policy.causal_lm.config.num_hidden_layers
    for target in FAMILIES[family].lora_targets:  # the attention projections
        assert sum(name.endswith(f".{target}") for name in adapted) == layers, (target, sorted(adapted))
    mlp = {"gate_proj", "up_proj", "down_proj", "gate_up_proj", "c_fc", "mlp.c_proj", "dense_h_to_4h"}
    assert any(name.endswith(f".{t}") for name in adapted for t in mlp)
    if value_mode == "adapter":
        value_adapted = {
            n.split(".lora_A.")[0] for n, _ in policy.peft_model.named_parameters() if ".lora_A.value." in n
        }
        assert value_adapted == adapted


def test_lora_targets_that_name_no_module_are_refused_in_ppo(tmp_path):
    model_dir = save_family_model("gpt2", tmp_path / "gpt2")
    cfg = PPOConfig(model=str(model_dir), lora_targets=("q_proj", "c_attn"), device="cpu", autocast=False)
    with pytest.raises(ValueError, match=r"lora_targets: q_proj name no module of GPT2LMHeadModel.*c_attn"):
        build_policy(cfg, CPU)


def test_ppo_logprobs_are_those_of_the_model_on_every_family(family, family_dir):
    """PPO recomputes logprobs from lm_head(last hidden) / T; they must be the model's own
    (Gemma 2 soft-caps its logits: refused before, as if it were unsupported)."""
    cfg = PPOConfig(model=str(family_dir), device="cpu", autocast=False)
    policy, tokenizer = build_policy(cfg, CPU)
    texts = [prompt_text(tokenizer, p) + " the cat" for p in PROMPTS[:2]]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)  # left-padded
    n_context = batch["input_ids"].shape[1] - 2
    with torch.no_grad():
        ours, _ = policy(batch["input_ids"], batch["attention_mask"], n_context, 0.7)
        own = policy.peft_model(**batch, position_ids=position_ids(batch["attention_mask"])).logits
    assert torch.allclose(ours, own[:, n_context - 1 : -1] / 0.7, atol=1e-5)


def test_a_ppo_step_against_the_reward_model_and_the_policy_reloads(family, family_dir, reward_runs, tmp_path):
    cfg = PPOConfig(
        model=str(family_dir),
        steps=1,
        batch_size=4,
        minibatch_size=2,
        ppo_epochs=1,
        max_new_tokens=12,
        learning_rate=1e-2,
        device="cpu",
        autocast=False,
    )
    torch.manual_seed(0)
    policy, tokenizer = build_policy(cfg, CPU)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.learning_rate)
    reward_fn = resolve_reward(reward_runs[True][0], CPU)
    stats = ppo_step(policy, tokenizer, optimizer, FixedKLController(cfg.kl_coef), reward_fn, PROMPTS, cfg)
    assert all(math.isfinite(value) for value in stats.values())
    assert stats["no_eos_fraction"] == 0.0  # every response ended its turn

    probe = tokenizer([prompt_text(tokenizer, "tell a story")], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        trained = policy.peft_model(**probe).logits
    save_policy(policy, tokenizer, tmp_path / "policy", {"kind": "policy"}, merge=False)
    with torch.no_grad():
        plain = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "policy").eval()(**probe).logits
        merged = load_causal_lm(tmp_path / "policy", device="cpu")(**probe).logits
    assert torch.allclose(plain, trained, atol=1e-5)
    assert torch.allclose(merged, trained, atol=1e-4)
