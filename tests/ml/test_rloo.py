"""RLOO and GRPO: the group advantages by hand, a toy reward going up on a tiny random-weight
Llama under each estimator, the reference surviving a continued run (also into PPO), the config
checks and the `train-rloo` command."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tests.ml.ppo_helpers import CPU, PROMPTS, lora_weights, small_cfg, toy_reward
from worker.ml.models import load_causal_lm, load_tokenizer, read_card, save_artifact
from worker.ml.ppo import train_policy
from worker.ml.ppo_policy import load_lora_policy
from worker.ml.rloo import RLOOConfig, group_advantages, group_spread, rloo_step, sequence_advantages, train_rloo
from worker.ml.tiny import tiny_causal_lm, tiny_tokenizer
from worker.ml.values import LoraPolicy

# Two groups of k=4: spread scores, then two ties (0, 0, 1, 1).
SCORES = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory):
    """A tiny Llama with 10x embeddings: peaked next-token distributions (entropy ~1 nat), like
    a trained LM, so a LoRA policy can move probability mass within a few steps (as test_ppo)."""
    path = tmp_path_factory.mktemp("sharp-tiny")
    model, tokenizer = tiny_causal_lm(tiny_tokenizer())
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def rloo_cfg(model_dir, **overrides) -> RLOOConfig:
    values = {
        "model": str(model_dir),
        "steps": 1,
        "prompts_per_step": 2,
        "k": 4,
        "minibatch_size": 8,
        "max_new_tokens": 6,
        "learning_rate": 1e-2,
        "device": "cpu",
    }
    return RLOOConfig(**{**values, **overrides})


# --- advantages by hand ----------------------------------------------------------------------


def test_rloo_baseline_is_the_mean_of_the_other_responses():
    # Group 1: response 0 scores 1, the others average (2+3+6)/3 = 11/3 -> 1 - 11/3 = -8/3.
    # Group 2: sum 2; baseline of a 0 is 2/3, of a 1 is 1/3.
    expected = torch.tensor([-8 / 3, 2 - 10 / 3, 3 - 3, 6 - 2, -2 / 3, -2 / 3, 2 / 3, 2 / 3])
    advantages = group_advantages(SCORES, 4, "rloo")
    torch.testing.assert_close(advantages, expected)
    # Leave-one-out advantages sum to 0 within each group, so the batch mean is 0 too.
    torch.testing.assert_close(advantages.view(2, 4).sum(1), torch.zeros(2), atol=1e-6, rtol=0)


def test_grpo_normalises_each_group_by_its_mean_and_std():
    # Group 1: mean 3, sample std sqrt((4+1+0+9)/3); group 2: mean 0.5, std sqrt(4 * 0.25 / 3).
    std1, std2 = math.sqrt(14 / 3), math.sqrt(1 / 3)
    expected = torch.tensor([-2, -1, 0, 3, -0.5, -0.5, 0.5, 0.5])
    expected = expected / torch.tensor([std1 + 1e-4] * 4 + [std2 + 1e-4] * 4)
    torch.testing.assert_close(group_advantages(SCORES, 4, "grpo"), expected)
    # Per group: mean 0, std 1 (up to the 1e-4 guard).
    grouped = group_advantages(SCORES, 4, "grpo").view(2, 4)
    torch.testing.assert_close(grouped.std(1), torch.ones(2), atol=1e-3, rtol=0)


def test_kl_in_reward_subtracts_the_sequence_kl_before_the_baseline():
    scores = torch.ones(4)  # all tied: only the KL tells the responses apart
    seq_kl = torch.tensor([0.0, 1.0, 2.0, 3.0])
    advantages, rewards = sequence_advantages(scores, seq_kl, k=4, estimator="rloo", kl_coef=0.5, kl_in="reward")
    torch.testing.assert_close(rewards, torch.tensor([1.0, 0.5, 0.0, -0.5]))
    # rewards sum 1; baseline_i = (1 - r_i) / 3.
    torch.testing.assert_close(advantages, torch.tensor([1.0, 0.5 - 0.5 / 3, -1 / 3, -0.5 - 1.5 / 3]))

    # kl_in "loss": the scores are used as they are (the KL acts in the loss instead).
    advantages, rewards = sequence_advantages(scores, seq_kl, k=4, estimator="rloo", kl_coef=0.5, kl_in="loss")
    assert torch.equal(rewards, scores) and torch.equal(advantages, torch.zeros(4))


@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_a_group_with_equal_scores_gets_exactly_zero_advantage(estimator):
    # 0.1 three times does not sum to exactly 0.3: the tie must not leave a residue / 1e-4.
    scores = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.2, 0.9])
    advantages = group_advantages(scores, 3, estimator)
    assert torch.equal(advantages[:3], torch.zeros(3))
    assert (advantages[3:] != 0).all()
    spread, tied_share = group_spread(scores, 3)
    assert tied_share == 0.5 and spread == pytest.approx(float(torch.tensor([0.7, 0.2, 0.9]).std()) / 2)


def test_group_advantages_refuse_what_they_cannot_group():
    with pytest.raises(ValueError, match="estimator"):
        group_advantages(SCORES, 4, "ppo")
    with pytest.raises(ValueError, match="k=3"):
        group_advantages(SCORES, 3, "rloo")


# --- training on tiny models -----------------------------------------------------------------


@pytest.mark.parametrize(("estimator", "kl_in"), [("rloo", "reward"), ("grpo", "loss")])
def test_each_estimator_raises_a_toy_reward(sharp_model_dir, tmp_path, estimator, kl_in):
    cfg = RLOOConfig(
        model=str(sharp_model_dir),
        estimator=estimator,
        kl_in=kl_in,
        steps=12,
        prompts_per_step=4,
        k=4,
        minibatch_size=16,
        max_new_tokens=12,
        learning_rate=5e-3,
        kl_coef=0.01,
        temperature=1.0,
        device="cpu",
    )
    progress, live = [], []
    metrics = train_rloo(
        cfg,
        PROMPTS,
        toy_reward,
        tmp_path / "policy",
        on_progress=lambda *args: progress.append(args),
        on_step=lambda step, stats: live.append((step, stats["score"])),
    )

    for key in (
        *("score", "kl", "entropy", "response_length", "policy_loss", "clip_fraction", "approx_kl"),
        *("no_eos_fraction", "kl_coef", "seconds", "rollout_seconds", "advantage_mean", "advantage_std"),
        *("advantage_abs_max", "group_reward_std", "zero_std_groups"),
    ):
        assert len(metrics[key]) == cfg.steps, key
    scores = metrics["score"]
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.3, scores
    assert metrics["kl"][0] == pytest.approx(0.0, abs=1e-4)  # LoRA starts as the identity
    assert all(math.isfinite(kl) for kl in metrics["kl"]) and metrics["kl"][-1] > 0
    # One minibatch, one epoch: the update is plain REINFORCE, its ratio exactly 1.
    assert metrics["clip_fraction"] == [0.0] * cfg.steps and max(metrics["approx_kl"]) < 1e-10
    assert ("kl_loss" in metrics) == (kl_in == "loss")
    assert all(0 <= share <= 1 for share in metrics["zero_std_groups"])
    assert progress == [(i, cfg.steps, "rloo") for i in range(1, cfg.steps + 1)]
    assert live == list(enumerate(scores, start=1))
    assert metrics["samples_per_second"] > 0 and metrics["adapter"] == str(tmp_path / "policy")
    card = read_card(tmp_path / "policy")
    assert card["kind"] == "policy" and card["optimizer"] == estimator and card["format"] == "peft-adapter"
    assert card["config"]["k"] == 4 and card["metrics"]["score"] == scores[-1]


def test_samples_come_in_groups_of_k_and_extra_epochs_reuse_them_clipped(tiny_model_dir):
    seen: list[list[str]] = []

    def recording_reward(prompts, responses):
        seen.append(list(prompts))
        return toy_reward(prompts, responses) + torch.arange(len(responses)) * 0.01  # no tied groups

    cfg = rloo_cfg(tiny_model_dir, update_epochs=3, minibatch_size=4, autocast=False)
    peft_model, tokenizer = load_lora_policy(cfg, CPU)
    policy = LoraPolicy(peft_model)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.learning_rate)
    stats = rloo_step(policy, tokenizer, optimizer, recording_reward, PROMPTS[:2], cfg)

    assert seen == [[PROMPTS[0]] * 4 + [PROMPTS[1]] * 4]
    assert stats["advantage_mean"] == pytest.approx(0.0, abs=1e-6)  # leave-one-out sums to 0
    assert stats["zero_std_groups"] == 0.0 and stats["advantage_abs_max"] > 0
    assert stats["approx_kl"] > 0  # later minibatches see a policy that moved since the rollout
    assert any(w.abs().sum() > 0 for w in lora_weights(peft_model).values())
    assert not hasattr(policy, "value_head")


def test_a_zero_reward_control_run_has_no_advantage_and_loads_no_reward(tiny_model_dir, tmp_path):
    metrics = train_rloo(rloo_cfg(tiny_model_dir, reward_source="zero"), PROMPTS, None, tmp_path / "p")
    assert metrics["score"] == [0.0] and metrics["zero_std_groups"] == [1.0]
    assert metrics["advantage_abs_max"] == [0.0]


def test_a_continued_rloo_policy_keeps_its_start_as_reference_and_ppo_can_continue_it(sharp_model_dir, tmp_path):
    first = train_rloo(
        rloo_cfg(sharp_model_dir, steps=4, max_new_tokens=10, temperature=1.0), PROMPTS, toy_reward, tmp_path / "r0"
    )
    saved = lora_weights(load_causal_lm(first["adapter"], device="cpu", merge_adapter=False))

    # The continued run starts from the saved adapter, and the reference is still the base.
    cfg = rloo_cfg(first["adapter"], estimator="grpo", max_new_tokens=10, temperature=1.0)
    peft_model, tokenizer = load_lora_policy(cfg, CPU)
    continued = lora_weights(peft_model)
    assert saved.keys() == continued.keys() and all(torch.equal(saved[k], continued[k]) for k in saved)
    batch = tokenizer(["hello world"], return_tensors="pt")
    with torch.no_grad(), peft_model.disable_adapter():
        reference = peft_model(**batch).logits
    assert torch.equal(reference, load_causal_lm(sharp_model_dir, device="cpu")(**batch).logits)

    second = train_rloo(cfg, PROMPTS, toy_reward, tmp_path / "r1")
    assert second["kl"][0] > 0.05  # already away from the reference at its first step
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(tmp_path / "r1").base_model_name_or_path == str(sharp_model_dir)
    assert read_card(tmp_path / "r1")["optimizer"] == "grpo"

    ppo_cfg = small_cfg(first["adapter"], max_new_tokens=10, temperature=1.0)
    ppo = train_policy(ppo_cfg, PROMPTS, toy_reward, tmp_path / "p")
    assert ppo["kl"][0] > 0.05
    assert PeftConfig.from_pretrained(tmp_path / "p").base_model_name_or_path == str(sharp_model_dir)


# --- config and command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"k": 1}, "k"),
        ({"prompts_per_step": 2, "k": 3, "minibatch_size": 7}, "minibatch_size"),
        ({"estimator": "x"}, "estimator"),
        ({"kl_in": "x"}, "kl_in"),
        ({"update_epochs": 0}, "update_epochs"),
        ({"reward_source": "x"}, "reward_source"),
    ],
)
def test_bad_config_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        RLOOConfig(**overrides)


def test_config_defaults_and_unknown_fields():
    cfg = RLOOConfig()
    assert (cfg.estimator, cfg.kl_in, cfg.k, cfg.batch_size) == ("rloo", "reward", 4, 16)
    with pytest.raises(ValueError, match="unknown RLOOConfig field"):
        RLOOConfig.from_dict({"num_generations": 4})
    assert RLOOConfig.from_dict(cfg.to_dict()) == cfg


def test_train_rloo_command(tiny_model_dir, tmp_path, capsys):
    from worker.ml.cli import main

    with pytest.raises(SystemExit) as help_exit:
        main(["train-rloo", "--help"])
    assert help_exit.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--estimator", "--k ", "--prompts-per-step", "--update-epochs", "--kl-in", "--reward"):
        assert flag in help_text, flag

    (tmp_path / "prompts.jsonl").write_text('{"prompt": "say cat"}\n"hello world"\n')
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    save_artifact(reward_model, load_tokenizer(tiny_model_dir), tmp_path / "rm", {"kind": "reward_model"})
    args = [
        *("train-rloo", "--model", str(tiny_model_dir), "--prompts", str(tmp_path / "prompts.jsonl")),
        *("--out", str(tmp_path / "policy"), "--steps", "1", "--prompts-per-step", "2", "--k", "2"),
        *("--minibatch-size", "4", "--max-new-tokens", "4", "--estimator", "grpo", "--device", "cpu"),
    ]
    assert main([*args, "--reward", str(tmp_path / "rm")]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["adapter"] == str(tmp_path / "policy")
    assert (tmp_path / "policy" / "adapter_config.json").is_file()
    card = read_card(tmp_path / "policy")
    assert card["optimizer"] == "grpo" and card["config"]["k"] == 2
    assert main([*args, "--reward", str(tmp_path / "missing")]) == 2
    assert "reward:" in capsys.readouterr().err
    assert main(args) == 2  # no --reward and a reward model source
    assert "--reward" in capsys.readouterr().err
    assert main([*args, "--k", "1"]) == 2
    assert "k:" in capsys.readouterr().err
