"""PPO end to end on tiny random-weight Llamas: it learns a toy reward, the reference is the
untouched base (or the SFT model a round starts from), adaptive KL tracks its target, artifacts
reload. Rollout sampling: test_ppo_rollout.py."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from tests.ml.ppo_helpers import CPU, PROMPTS, lora_weights, one_step, small_cfg, toy_reward
from worker.ml.config import GenerationConfig
from worker.ml.generate import generate
from worker.ml.models import load_causal_lm, load_tokenizer, read_card, save_artifact
from worker.ml.ppo import PPOConfig, kl_controller, ppo_step, train_policy
from worker.ml.ppo_math import FixedKLController
from worker.ml.ppo_policy import build_policy, resolve_reward, save_policy
from worker.ml.scorer import RewardScorer
from worker.ml.tiny import tiny_causal_lm, tiny_tokenizer


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory):
    """A tiny Llama with 10x embeddings: peaked next-token distributions (entropy ~1 nat), like
    a trained LM, so a LoRA policy can move probability mass within a few steps."""
    path = tmp_path_factory.mktemp("sharp-tiny")
    model, tokenizer = tiny_causal_lm(tiny_tokenizer())
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_ppo_raises_a_toy_reward_with_finite_kl(sharp_model_dir, tmp_path):
    cfg = PPOConfig(
        model=str(sharp_model_dir),
        steps=12,
        batch_size=16,
        minibatch_size=4,
        max_new_tokens=12,
        learning_rate=5e-3,
        kl_coef=0.01,
        temperature=1.0,
        missing_eos_penalty=0.0,
        device="cpu",
    )
    progress, live = [], []
    metrics = train_policy(
        cfg,
        PROMPTS,
        toy_reward,
        tmp_path / "policy",
        on_progress=lambda *args: progress.append(args),
        on_step=lambda step, stats: live.append((step, stats["score"])),
    )

    for key in (
        "score",
        "kl",
        "entropy",
        "clip_fraction",
        "approx_kl",
        "value_loss",
        "policy_loss",
        "response_length",
        "kl_coef",
        "no_eos_fraction",
    ):
        assert len(metrics[key]) == cfg.steps, key
    scores = metrics["score"]
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.15, scores
    assert all(math.isfinite(kl) for kl in metrics["kl"]) and metrics["kl"][-1] > 0
    assert metrics["kl"][0] == pytest.approx(0.0, abs=1e-4)  # LoRA starts as the identity
    assert all(0 <= c <= 1 for c in metrics["clip_fraction"])
    assert progress == [(i, cfg.steps, "ppo") for i in range(1, cfg.steps + 1)]
    assert live == list(enumerate(scores, start=1))
    card = read_card(tmp_path / "policy")
    assert card["kind"] == "policy" and card["format"] == "peft-adapter"
    assert card["config"]["steps"] == 12 and card["metrics"]["score"] == scores[-1]


def test_reference_is_the_base_model_and_the_saved_adapter_reloads(tiny_model_dir, tmp_path):
    policy, tokenizer, _ = one_step(small_cfg(tiny_model_dir, autocast=False))
    assert any(w.abs().sum() > 0 for w in lora_weights(policy.peft_model).values())

    batch = tokenizer(["hello world cat", "a"], return_tensors="pt", padding=True)
    base = load_causal_lm(tiny_model_dir, device="cpu")
    with torch.no_grad():
        with policy.peft_model.disable_adapter():
            reference = policy.peft_model(**batch).logits
        trained = policy.peft_model(**batch).logits
        expected = base(**batch).logits
    assert torch.equal(reference, expected)  # no second copy needed
    assert not torch.allclose(trained, expected)

    # generate.py accepts the in-memory peft model as well as the saved folder (below).
    in_memory = generate(
        policy.peft_model,
        ["say cat"],
        GenerationConfig(k=4, max_new_tokens=4, device="cpu", autocast=False),
        tokenizer=tokenizer,
    )
    assert len(in_memory[0]) == 4

    written = save_policy(policy, tokenizer, tmp_path / "policy", {"kind": "policy"}, merge=True)
    from peft import PeftModel

    reloaded = PeftModel.from_pretrained(load_causal_lm(tiny_model_dir, device="cpu"), written["adapter"]).eval()
    merged = AutoModelForCausalLM.from_pretrained(written["merged"]).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, trained)
        torch.testing.assert_close(merged(**batch).logits, trained, atol=1e-5, rtol=1e-5)
    assert read_card(written["merged"])["format"] == "transformers"

    # The next cycle generates from the adapter folder (generate.py loads it via peft).
    completions = generate(
        written["adapter"], ["say cat"], GenerationConfig(k=4, max_new_tokens=4, device="cpu", autocast=False)
    )
    assert len(completions[0]) == 4


def test_training_continues_from_a_saved_policy_adapter_with_the_base_as_reference(tiny_model_dir, tmp_path):
    first = train_policy(small_cfg(tiny_model_dir), PROMPTS, toy_reward, tmp_path / "cycle1")
    saved = lora_weights(load_causal_lm(first["adapter"], device="cpu", merge_adapter=False))

    policy, tokenizer = build_policy(small_cfg(first["adapter"]), CPU)
    continued = lora_weights(policy.peft_model)
    assert saved.keys() == continued.keys() and all(torch.equal(saved[k], continued[k]) for k in saved)
    assert all(p.requires_grad for n, p in policy.peft_model.named_parameters() if "lora_" in n)
    batch = tokenizer(["hello world"], return_tensors="pt")
    with torch.no_grad(), policy.peft_model.disable_adapter():
        reference = policy.peft_model(**batch).logits
    assert torch.equal(reference, load_causal_lm(tiny_model_dir, device="cpu")(**batch).logits)

    train_policy(small_cfg(first["adapter"]), PROMPTS, toy_reward, tmp_path / "cycle2")
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(tmp_path / "cycle2").base_model_name_or_path == str(tiny_model_dir)


def test_a_round_started_from_an_sft_adapter_keeps_the_sft_model_as_its_reference(tiny_model_dir, tmp_path):
    """An SFT adapter folder (here one with no ranklab card, as TRL writes it) is the model the
    round starts from, so it is the KL reference, not the pre-SFT base; the saved policy reloads
    on top of it, and a later round continuing that policy keeps the same reference."""
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    sft.save_pretrained(tmp_path / "sft")
    load_tokenizer(tiny_model_dir).save_pretrained(tmp_path / "sft")
    batch = load_tokenizer(tiny_model_dir)(["hello world cat", "a"], return_tensors="pt", padding=True)

    def reference_logits(policy):
        with torch.no_grad(), policy.peft_model.disable_adapter():
            return policy.peft_model(**batch).logits

    with torch.no_grad():
        sft_logits = load_causal_lm(tmp_path / "sft", device="cpu")(**batch).logits
        base_logits = load_causal_lm(tiny_model_dir, device="cpu")(**batch).logits
    assert not torch.allclose(sft_logits, base_logits, atol=1e-3)

    cfg = small_cfg(tmp_path / "sft", autocast=False)
    policy, tokenizer = build_policy(cfg, CPU)
    torch.testing.assert_close(reference_logits(policy), sft_logits, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a fresh LoRA: the policy starts as the SFT model
        torch.testing.assert_close(policy.peft_model(**batch).logits, sft_logits, atol=1e-5, rtol=1e-5)

    written = train_policy(cfg, PROMPTS, toy_reward, tmp_path / "round0")
    trained = load_causal_lm(written["adapter"], device="cpu")  # base + SFT + policy adapter
    with torch.no_grad():
        assert not torch.allclose(trained(**batch).logits, sft_logits, atol=1e-4)
    following, _ = build_policy(small_cfg(written["adapter"], autocast=False), CPU)
    torch.testing.assert_close(reference_logits(following), sft_logits, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(following.peft_model(**batch).logits, trained(**batch).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["shared", "adapter"])
def test_value_gradients_reach_the_policy_adapter_only_in_shared_mode(tiny_model_dir, mode):
    policy, tokenizer = build_policy(small_cfg(tiny_model_dir, value_mode=mode), CPU)
    with torch.no_grad():  # give the LoRA B matrices some weight so gradients flow through A too
        for name, param in policy.peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
        policy.value_head.score.weight.normal_(0, 0.1)
    batch = tokenizer(["hello world cat dog"], return_tensors="pt")
    policy.values(batch["input_ids"], batch["attention_mask"], 2).sum().backward()

    def has_grad(adapter):
        return any(
            p.grad is not None and p.grad.abs().sum() > 0
            for n, p in policy.peft_model.named_parameters()
            if f".{adapter}." in n
        )

    assert has_grad("default") == (mode == "shared")
    assert has_grad("value") == (mode == "adapter")
    assert policy.value_head.score.weight.grad.abs().sum() > 0


def test_value_adapter_mode_trains_both_adapters_and_saves_only_the_policy(tiny_model_dir, tmp_path):
    cfg = small_cfg(tiny_model_dir, value_mode="adapter")
    policy, tokenizer = build_policy(cfg, CPU)
    head_before = policy.value_head.score.weight.detach().clone()
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.learning_rate)
    stats = ppo_step(policy, tokenizer, optimizer, FixedKLController(cfg.kl_coef), toy_reward, PROMPTS, cfg)
    assert math.isfinite(stats["value_loss"])
    for adapter in ("default", "value"):
        assert any(w.abs().sum() > 0 for w in lora_weights(policy.peft_model, adapter).values())
    assert not torch.equal(policy.value_head.score.weight, head_before)

    written = save_policy(policy, tokenizer, tmp_path / "policy", {"kind": "policy"}, merge=False)
    assert not (tmp_path / "policy" / "value").exists() and "merged" not in written
    assert load_causal_lm(written["adapter"], device="cpu") is not None


def test_reward_artifact_folder_is_loaded_frozen_and_adaptive_kl_moves_beta(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(tiny_model_dir)
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    save_artifact(
        reward_model,
        tokenizer,
        tmp_path / "rm",
        {"kind": "reward_model", "reward_normalization": {"mean": 0.1, "std": 2.0}},
    )

    reward_fn = resolve_reward(tmp_path / "rm", CPU)
    assert not any(p.requires_grad for p in reward_fn.__self__.model.parameters())
    expected = RewardScorer.load(tmp_path / "rm", device="cpu").score(PROMPTS, ["a", "b", "c", "d"])
    torch.testing.assert_close(reward_fn(PROMPTS, ["a", "b", "c", "d"]), expected)

    cfg = small_cfg(tiny_model_dir, steps=2, adaptive_kl_target=6.0)
    metrics = train_policy(cfg, PROMPTS, tmp_path / "rm", tmp_path / "policy")
    assert all(math.isfinite(s) for s in metrics["score"])
    # First-step KL is 0, far below the target: beta shrinks by the clipped 20% / 2 steps.
    assert metrics["kl_coef"][1] == pytest.approx(cfg.kl_coef * (1 - 0.2 / 2))


def test_adaptive_beta_carries_over_to_the_next_round_of_the_policy_line(tiny_model_dir, tmp_path):
    """beta restarted at kl_coef every round, so an adaptive target could move it only within
    one round's few steps. The next round (continuing the policy adapter) starts where the last
    one ended; a fixed-beta run is unaffected."""
    first = train_policy(
        small_cfg(tiny_model_dir, steps=2, adaptive_kl_target=6.0), PROMPTS, toy_reward, tmp_path / "r0"
    )
    carried = first["kl_coef_next"]
    assert carried < first["kl_coef"][-1] < 0.05  # KL far below the target: beta shrank each step
    assert read_card(tmp_path / "r0")["kl_coef_next"] == carried
    second = train_policy(small_cfg(tmp_path / "r0", adaptive_kl_target=6.0), PROMPTS, toy_reward, tmp_path / "r1")
    assert second["kl_coef"][0] == pytest.approx(carried)
    fixed = train_policy(small_cfg(tmp_path / "r0"), PROMPTS, toy_reward, tmp_path / "r2")
    assert fixed["kl_coef"] == [0.05] and "kl_coef_next" not in fixed


@pytest.mark.parametrize(("kl", "factor"), [(12.0, 1.1**8), (6.6, 1.05**8), (6.0, 1.0), (3.0, 0.9**8)])
def test_adaptive_kl_tracks_its_target_within_a_default_round(kl, factor):
    """Ziegler et al.'s controller with the default horizon, over a round's default 8 steps of 8
    rollouts: KL held 20% or more above the target doubles beta (x2.14), below it more than
    halves it (x0.43). With the old 10,000-sample horizon it moved 1% in a round."""
    cfg = PPOConfig(adaptive_kl_target=6.0)
    assert (cfg.steps, cfg.batch_size) == (8, 8)
    ctl = kl_controller(cfg)
    for _ in range(cfg.steps):
        ctl.update(kl, cfg.batch_size)
    assert ctl.value == pytest.approx(cfg.kl_coef * factor)
    assert isinstance(kl_controller(PPOConfig()), FixedKLController)


def test_bad_config_and_inputs_name_the_problem(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="minibatch_size"):
        PPOConfig(batch_size=4, minibatch_size=8)
    with pytest.raises(ValueError, match="value_mode"):
        PPOConfig(value_mode="separate")
    with pytest.raises(ValueError, match="unknown PPOConfig field"):
        PPOConfig.from_dict({"lr": 1e-4})
    with pytest.raises(ValueError, match="prompts"):
        train_policy(small_cfg(tiny_model_dir), [], toy_reward, tmp_path / "p")
    with pytest.raises(TypeError, match="reward"):
        resolve_reward(42, CPU)
    with pytest.raises(ValueError, match="non-finite"):
        one_step(small_cfg(tiny_model_dir), reward_fn=lambda p, r: torch.full((len(r),), math.nan))


@pytest.mark.smollm2
def test_ppo_step_on_the_real_smollm2(smollm2_dir, tmp_path):
    cfg = PPOConfig(
        model=str(smollm2_dir), steps=1, batch_size=2, minibatch_size=2, ppo_epochs=1, max_new_tokens=8, device="cpu"
    )
    metrics = train_policy(
        cfg,
        ["Name a colour.", "Say hello."],
        lambda p, r: torch.tensor([min(len(x.split()), 8) / 8 for x in r]),
        tmp_path / "policy",
    )
    assert math.isfinite(metrics["kl"][0]) and math.isfinite(metrics["value_loss"][0])
    assert 1 <= metrics["response_length"][0] <= 8
    assert read_card(tmp_path / "policy")["config"]["model"] == str(smollm2_dir)


def test_train_policy_command(tiny_model_dir, tmp_path, capsys):
    from worker.ml.cli import main

    (tmp_path / "prompts.jsonl").write_text('{"prompt": "say cat"}\n"hello world"\n')
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    save_artifact(reward_model, load_tokenizer(tiny_model_dir), tmp_path / "rm", {"kind": "reward_model"})
    args = [
        "train-policy",
        "--model",
        str(tiny_model_dir),
        "--prompts",
        str(tmp_path / "prompts.jsonl"),
        "--out",
        str(tmp_path / "policy"),
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--minibatch-size",
        "1",
        "--max-new-tokens",
        "4",
        "--device",
        "cpu",
    ]
    assert main([*args, "--reward", str(tmp_path / "rm")]) == 0
    assert read_card(tmp_path / "policy")["config"]["minibatch_size"] == 1
    assert main([*args, "--reward", str(tmp_path / "missing")]) == 2
    assert "reward:" in capsys.readouterr().err
