"""KTO on good/bad labels: the loss and z0 on hand cases, batching, and training on a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from worker.ml.kto import Labelled, auc, kl_reference_point, kto_loss
from worker.ml.synthetic import GOOD, quality_rankings

POLICY = torch.tensor([-3.0, -5.0, -4.0, -6.5])
REFERENCE = torch.tensor([-4.0, -4.5, -4.0, -6.0])  # log-ratios 1.0, -0.5, 0.0, -0.5
GOOD_LABEL = torch.tensor([True, False, True, False])


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def labelled(n: int, k: int, seed: int) -> list[Labelled]:
    """Synthetic good/bad data: a completion with "good" words is good, one with "bad" words bad
    (quality 0, neither, is left out so every label is learnable)."""
    out = []
    for r in quality_rankings(n, k, seed=seed, qualities=[-3, -2, -1, 1, 2, 3]):
        for c in r.completions:
            out.append(Labelled(r.prompt, c, any(w in GOOD for w in c.split()), r.prompt_id))
    return out


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.5, 0.5)])
def test_kto_loss_equals_the_hand_computed_mean_over_examples(weights):
    beta, z0, (w_good, w_bad) = 0.5, 0.2, weights
    expected = [
        w_good * (1 - _sigmoid(beta * (1.0 - z0))),
        w_bad * (1 - _sigmoid(beta * (z0 + 0.5))),
        w_good * (1 - _sigmoid(beta * (0.0 - z0))),
        w_bad * (1 - _sigmoid(beta * (z0 + 0.5))),
    ]
    loss, per_example = kto_loss(
        POLICY, REFERENCE, GOOD_LABEL, torch.tensor(z0), beta=beta, desirable_weight=w_good, undesirable_weight=w_bad
    )
    assert per_example.tolist() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(sum(expected) / 4, rel=1e-6)


def test_each_weight_scales_only_its_own_terms():
    z0 = torch.tensor(0.3)
    _, plain = kto_loss(POLICY, REFERENCE, GOOD_LABEL, z0, beta=0.1)
    _, good3 = kto_loss(POLICY, REFERENCE, GOOD_LABEL, z0, beta=0.1, desirable_weight=3.0)
    _, bad2 = kto_loss(POLICY, REFERENCE, GOOD_LABEL, z0, beta=0.1, undesirable_weight=2.0)
    scale_good = torch.where(GOOD_LABEL, 3.0, 1.0)
    scale_bad = torch.where(GOOD_LABEL, 1.0, 2.0)
    assert good3.tolist() == pytest.approx((plain * scale_good).tolist(), rel=1e-6)
    assert bad2.tolist() == pytest.approx((plain * scale_bad).tolist(), rel=1e-6)


def test_the_kl_reference_point_is_a_detached_mean_clamped_at_zero():
    policy = torch.tensor([-2.0, -3.0, -1.0], requires_grad=True)
    z0 = kl_reference_point(policy, torch.tensor([-2.5, -3.5, -2.0]))  # log-ratios 0.5, 0.5, 1.0
    assert z0.item() == pytest.approx(2 / 3) and not z0.requires_grad
    assert kl_reference_point(policy, torch.tensor([0.0, 0.0, 0.0])).item() == 0.0  # mean -2 -> 0
    # the loss's gradient reaches the matched log-probs only, never the mismatched ones
    matched = POLICY.clone().requires_grad_()
    loss, _ = kto_loss(matched, REFERENCE, GOOD_LABEL, kl_reference_point(policy, torch.zeros(3)), beta=0.1)
    loss.backward()
    assert matched.grad is not None and policy.grad is None


def test_auc_counts_ties_half_and_needs_both_labels():
    rewards = torch.tensor([0.5, 0.1, 0.1, -0.2])
    good = torch.tensor([True, True, False, False])
    assert auc(rewards, good) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert auc(rewards, torch.ones(4, dtype=torch.bool)) is None


def test_jsonl_rows_in_trls_unpaired_form_parse_and_bad_rows_name_the_field(tmp_path):
    from worker.ml.kto import read_labelled

    path = tmp_path / "kto.jsonl"
    rows = [
        {"prompt": "hi", "completion": "good", "label": True},
        {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "no"}],
         "label": False, "prompt_id": 7},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = read_labelled(path)
    assert (first.completion, first.label, second.completion, second.label) == ("good", True, "no", False)
    assert second.prompt_id == "7"
    path.write_text(json.dumps({"prompt": "hi", "completion": "x", "label": 1}) + "\n")
    with pytest.raises(ValueError, match="line 1: label"):
        read_labelled(path)


# --- batching and the packed forward on a tiny model ------------------------------------------


def _setup(model_dir, **overrides):
    from worker.ml.dpo import build_policy
    from worker.ml.kto import KTOConfig
    from worker.ml.models import load_tokenizer

    cfg = KTOConfig(model=str(model_dir), device="cpu", autocast=False, max_length=64, **overrides)
    tokenizer = load_tokenizer(str(model_dir), padding_side="right")
    return cfg, tokenizer, build_policy(cfg, str(model_dir), tokenizer, torch.device("cpu"))


def _full_sequence_logps(model, prompt: list[int], responses: list[list[int]]) -> list[float]:
    """Each response's log-prob from its own unpacked forward (prompt + response, no mask tricks)."""
    out = []
    for response in responses:
        ids = torch.tensor([prompt + response])
        logits = model(input_ids=ids).logits[0, :-1].float()
        logps = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
        out.append(float(logps[-len(response) :].sum()))
    return out


def test_batches_pair_each_prompts_completions_with_the_next_prompt_and_count_every_label(tiny_model_dir):
    import random

    from worker.ml.kto import group_labelled, make_batches

    cfg, tokenizer, _ = _setup(tiny_model_dir, batch_prompts=2)
    examples = labelled(5, 3, seed=2)
    examples.append(Labelled(examples[0].prompt, examples[0].completion, not examples[0].label, "again"))
    sets = group_labelled(examples)
    assert len(sets) == 5 and len(sets[0].labels) == 4 and len(sets[0].completions) == 3
    batches = make_batches(tokenizer, sets, cfg, random.Random(0))
    assert [len(b.groups) for b in batches] == [2, 3]  # the lone fifth prompt joins the batch before
    assert sum(len(b.label) for b in batches) == len(examples)
    for b in batches:
        n = len(b.groups)
        for j in range(n):
            assert b.kl_groups[j].prompt == b.groups[j].prompt
            assert b.kl_groups[j].responses == b.groups[j - 1].responses  # another prompt's completions
        assert int(b.index.max()) < sum(len(g.responses) for g in b.groups)


def test_cached_reference_equals_fresh_for_matched_and_mismatched_pairs(tiny_model_dir):
    from worker.ml.dpo import response_logps
    from worker.ml.kto import cache_reference, group_labelled, make_batches
    from worker.ml.models import load_causal_lm

    cfg, tokenizer, model = _setup(tiny_model_dir, batch_prompts=3)
    batches = make_batches(tokenizer, group_labelled(labelled(3, 3, seed=3)), cfg, None)
    cache_reference(model, batches, tokenizer.pad_token_id, torch.device("cpu"), cfg)
    (batch,) = batches
    with torch.no_grad():
        base = load_causal_lm(str(tiny_model_dir), device="cpu", dtype=torch.float32)
        fresh = [x for g in batch.groups for x in _full_sequence_logps(base, g.prompt, g.responses)]
        fresh_kl = [x for g in batch.kl_groups for x in _full_sequence_logps(base, g.prompt, g.responses)]
        for name, param in model.named_parameters():  # move the policy away from the reference
            if "lora_B" in name:
                param.normal_(0, 0.5)
        policy = response_logps(model, batch.groups, tokenizer.pad_token_id, torch.device("cpu"))
    assert batch.reference.tolist() == pytest.approx(fresh, abs=1e-4)
    assert batch.kl_reference.tolist() == pytest.approx(fresh_kl, abs=1e-4)
    assert batch.kl_reference.tolist() != pytest.approx(fresh, abs=1e-3)  # mismatched pairs score differently
    assert policy.tolist() != pytest.approx(fresh, abs=1e-2)


# --- training ---------------------------------------------------------------------------------


def test_kto_raises_held_out_auc_and_sign_accuracy_and_reloads_with_plain_peft(tiny_model_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM

    from worker.ml.kto import KTOConfig, train_kto
    from worker.ml.models import read_card

    cfg = KTOConfig(
        model=str(tiny_model_dir), beta=0.1, learning_rate=3e-3, epochs=3, batch_prompts=8,
        val_fraction=0.25, device="cpu", autocast=False, max_length=64,
    )  # fmt: skip
    steps: list[tuple[int, dict]] = []
    metrics = train_kto(cfg, labelled(64, 4, seed=1), tmp_path / "kto", on_step=lambda s, x: steps.append((s, x)))
    # policy == reference before training: every reward is 0, so AUC and sign accuracy are 1/2
    # and each example's loss is 1 - sigmoid(0)
    assert (metrics["val_auc_before"], metrics["val_accuracy_before"], metrics["val_loss_before"]) == (0.5, 0.5, 0.5)
    assert metrics["val_auc"] >= 0.75, metrics
    assert metrics["val_accuracy"] >= 0.65 and metrics["val_loss"] < 0.5
    assert metrics["val_chosen_drift"] > metrics["val_rejected_drift"] and metrics["val_kl_per_token"] > 0
    assert metrics["train_prompts"] == 48 and metrics["steps"] == 3 * 6  # 6 batches of 8 prompts
    assert steps[0][0] == 0 and steps[0][1]["val_auc"] == 0.5
    assert {"loss", "kl", "reward_desirable", "reward_undesirable", "chosen_drift", "accuracy"} <= set(steps[1][1])
    assert all(s["kl"] >= 0 for _, s in steps if "kl" in s)
    card = read_card(tmp_path / "kto")
    assert (card["kind"], card["optimizer"]) == ("policy", "kto")
    reloaded = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "kto"))
    assert any("lora_B" in name for name, _ in reloaded.named_parameters())


def test_a_policy_adapter_trains_on_against_the_start_it_was_trained_from(tiny_model_dir, tmp_path):
    """The second run continues the first one's adapter (its held-out loss starts where the first
    ended, below 1/2, the value where policy == reference) and the reference is still the first
    run's starting model, which the saved adapter names as its base. `held_out` replaces the split."""
    from worker.ml.kto import KTOConfig, train_kto

    data = labelled(16, 4, seed=5)
    train, held = data[:48], data[48:]
    cfg = KTOConfig(
        model=str(tiny_model_dir), beta=0.1, learning_rate=3e-3, epochs=3, batch_prompts=4,
        device="cpu", autocast=False, max_length=64,
    )  # fmt: skip
    first = train_kto(cfg, train, tmp_path / "first", held_out=held)
    assert (first["train_prompts"], first["val_prompts"]) == (12, 4)
    assert first["val_loss_before"] == pytest.approx(0.5, abs=1e-6) and first["val_loss"] < 0.5
    second = train_kto(
        KTOConfig(**{**cfg.to_dict(), "model": str(tmp_path / "first")}), train, tmp_path / "second", held_out=held
    )
    assert second["val_loss_before"] == pytest.approx(first["val_loss"], abs=1e-4)
    adapter = json.loads((tmp_path / "second" / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]).resolve() == Path(tiny_model_dir).resolve()


@pytest.mark.parametrize(
    ("values", "field"),
    [({"beta": 0}, "beta"), ({"desirable_weight": 0}, "desirable_weight"),
     ({"undesirable_weight": -1}, "undesirable_weight"), ({"batch_prompts": 1}, "batch_prompts"),
     ({"max_length": 4}, "max_length"), ({"val_fraction": 1.0}, "val_fraction")],
)  # fmt: skip
def test_bad_configs_are_refused_naming_the_field(values, field):
    from worker.ml.kto import KTOConfig

    with pytest.raises(ValueError, match=f"^{field}:"):
        KTOConfig(**values)


def test_one_training_prompt_is_refused_naming_the_data(tiny_model_dir, tmp_path):
    from worker.ml.kto import KTOConfig, train_kto

    one = [Labelled("hello", "good", True), Labelled("hello", "bad", False)]
    with pytest.raises(ValueError, match="^examples: .*two training prompts"):
        train_kto(KTOConfig(model=str(tiny_model_dir), device="cpu"), one, tmp_path / "x", held_out=[])


def test_cli_train_kto_trains_from_unpaired_jsonl_and_names_a_bad_flag(tiny_model_dir, tmp_path, capsys):
    from worker.ml.cli import main

    data = tmp_path / "kto.jsonl"
    rows = [{"prompt": x.prompt, "completion": x.completion, "label": x.label} for x in labelled(12, 3, seed=2)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["train-kto", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "out")]
    assert main([*args, "--beta", "0.5", "--batch-prompts", "4", "--val-fraction", "0.25", "--device", "cpu",
                 "--no-autocast", "--desirable-weight", "1.2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("{") :])
    assert metrics["val_examples"] > 0 and metrics["val_auc"] is not None
    assert (tmp_path / "out" / "adapter_config.json").is_file()
    assert main([*args, "--batch-prompts", "1"]) == 2
    assert "batch_prompts" in capsys.readouterr().err
