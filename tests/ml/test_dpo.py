"""DPO from K-way rankings: the losses on hand cases, and training on a tiny model."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from worker.ml.dpo_losses import dpo_loss

# One 4-item ranking: completion 0 best, 1 and 2 tied, 3 worst -> 5 ordered pairs (the tie gives none).
LEVELS = torch.tensor([[0, 1, 1, 2]])
POLICY = torch.tensor([[-3.0, -5.0, -4.0, -6.5]])
REFERENCE = torch.tensor([[-4.0, -4.5, -4.0, -6.0]])
PAIRS = [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]


def _delta(i: int) -> float:
    return float(POLICY[0, i] - REFERENCE[0, i])  # 1.0, -0.5, 0.0, -0.5


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_sigmoid_dpo_equals_the_hand_computed_mean_over_ordered_pairs(smoothing):
    beta = 0.5
    expected = 0.0
    for i, j in PAIRS:
        m = beta * (_delta(i) - _delta(j))
        expected += -(1 - smoothing) * _log_sigmoid(m) - smoothing * _log_sigmoid(-m)
    expected /= len(PAIRS)
    loss, per_ranking = dpo_loss(POLICY, REFERENCE, LEVELS, beta=beta, label_smoothing=smoothing)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert per_ranking.tolist() == pytest.approx([expected], rel=1e-6)


def test_ipo_equals_the_hand_computed_squared_margin_error():
    beta = 0.25  # target margin 1 / (2 beta) = 2
    # margins delta_i - delta_j: 1.5, 1.0, 1.5, 0.0, 0.5
    expected = ((1.5 - 2) ** 2 + (1.0 - 2) ** 2 + (1.5 - 2) ** 2 + (0.0 - 2) ** 2 + (0.5 - 2) ** 2) / 5
    loss, _ = dpo_loss(POLICY, REFERENCE, LEVELS, beta=beta, loss="ipo")
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["sigmoid", "ipo"])
def test_kwise_loss_equals_the_mean_over_its_pairwise_expansion(kind):
    torch.manual_seed(1)
    policy, reference = torch.randn(3, 5), torch.randn(3, 5)
    levels = torch.tensor([[0, 1, 2, 3, 4], [2, 0, 1, 1, -1], [0, 0, 1, 2, 2]])
    loss, _ = dpo_loss(policy, reference, levels, beta=0.3, loss=kind, label_smoothing=0.05)
    per_ranking = []
    for r in range(3):
        pair_losses = []
        for i, j in itertools.permutations(range(5), 2):
            if levels[r, i] >= 0 and levels[r, j] >= 0 and levels[r, i] < levels[r, j]:
                two = torch.tensor([[0, 1]])
                pair_losses.append(
                    dpo_loss(
                        policy[r, [i, j]][None],
                        reference[r, [i, j]][None],
                        two,
                        beta=0.3,
                        loss=kind,
                        label_smoothing=0.05,
                    )[0]
                )
        per_ranking.append(torch.stack(pair_losses).mean())
    assert loss.item() == pytest.approx(torch.stack(per_ranking).mean().item(), rel=1e-5)


def test_plackett_luce_on_two_completions_is_the_sigmoid_dpo_loss():
    policy, reference = torch.tensor([[-2.0, -3.5], [-1.0, -0.2]]), torch.tensor([[-2.5, -3.0], [-1.5, -1.0]])
    levels = torch.tensor([[0, 1], [1, 0]])
    listwise, _ = dpo_loss(policy, reference, levels, beta=0.7, loss="plackett_luce")
    pairwise, _ = dpo_loss(policy, reference, levels, beta=0.7, loss="sigmoid")
    assert listwise.item() == pytest.approx(pairwise.item(), rel=1e-6)


def test_rankings_without_a_pair_give_zero_and_keep_the_graph():
    policy = torch.zeros(1, 3, requires_grad=True)
    loss, _ = dpo_loss(policy, torch.zeros(1, 3), torch.tensor([[0, 0, -1]]), beta=0.1)
    loss.backward()
    assert loss.item() == 0.0 and policy.grad is not None


def test_an_unknown_loss_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="loss"):
        dpo_loss(POLICY, REFERENCE, LEVELS, beta=0.1, loss="hinge")


# --- training on a tiny model ---------------------------------------------------------------


def _policy(model_dir, **overrides):
    from worker.ml.dpo import DPOConfig, build_policy
    from worker.ml.models import load_tokenizer

    cfg = DPOConfig(model=str(model_dir), device="cpu", autocast=False, **overrides)
    tokenizer = load_tokenizer(str(model_dir), padding_side="right")
    return cfg, tokenizer, build_policy(cfg, str(model_dir), tokenizer, torch.device("cpu"))


def _full_sequence_logps(model, ranking) -> list[float]:
    """Each response's log-prob from its own unpacked forward (prompt + response, no mask tricks)."""
    out = []
    for response in ranking.responses:
        ids = torch.tensor([ranking.prompt + response])
        logits = model(input_ids=ids).logits[0, :-1].float()
        logps = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
        out.append(float(logps[-len(response) :].sum()))
    return out


def test_cached_reference_equals_fresh_and_packed_equals_each_sequence_alone(tiny_model_dir):
    from worker.ml.data import group_rankings
    from worker.ml.dpo import encode_rankings, reference_logps, response_logps
    from worker.ml.models import load_causal_lm
    from worker.ml.synthetic import quality_rankings

    cfg, tokenizer, model = _policy(tiny_model_dir, batch_rankings=2)
    rankings = encode_rankings(tokenizer, group_rankings(quality_rankings(3, 4, seed=3)), cfg.max_length)
    cached = reference_logps(model, rankings, tokenizer.pad_token_id, torch.device("cpu"), cfg)
    with torch.no_grad():  # move the adapter away from the reference (fresh LoRA starts at B = 0)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
        policy = response_logps(model, rankings, tokenizer.pad_token_id, torch.device("cpu"))
        base = load_causal_lm(str(tiny_model_dir), device="cpu", dtype=torch.float32)
        fresh = [_full_sequence_logps(base, r) for r in rankings]
        moved = [_full_sequence_logps(model, r) for r in rankings]
    for got, want in zip(cached, fresh, strict=True):
        assert got.tolist() == pytest.approx(want, abs=1e-4)
    assert policy.tolist() == pytest.approx([x for m in moved for x in m], abs=1e-4)
    assert policy.tolist() != pytest.approx([x for f in fresh for x in f], abs=1e-2)


def test_dpo_raises_held_out_implicit_reward_accuracy_and_reloads_with_plain_peft(tiny_model_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM

    from worker.ml.dpo import DPOConfig, train_dpo
    from worker.ml.models import read_card
    from worker.ml.synthetic import quality_rankings

    cfg = DPOConfig(
        model=str(tiny_model_dir), beta=0.1, learning_rate=3e-3, epochs=3, batch_rankings=8,
        val_fraction=0.25, device="cpu", autocast=False, max_length=64,
    )  # fmt: skip
    steps: list[tuple[int, dict]] = []
    metrics = train_dpo(
        cfg, quality_rankings(64, 4, seed=1), tmp_path / "dpo", on_step=lambda s, x: steps.append((s, x))
    )
    assert metrics["val_accuracy_before"] == pytest.approx(0.5, abs=0.15)
    assert metrics["val_accuracy"] >= metrics["val_accuracy_before"] + 0.15, metrics
    assert metrics["val_margin"] > 0 and metrics["val_kl_per_token"] > 0
    assert metrics["steps"] == 3 * math.ceil(metrics["train_tasks"] / 8)
    assert steps[0][0] == 0 and steps[0][1]["val_accuracy"] == metrics["val_accuracy_before"]  # before training
    assert {"loss", "accuracy", "margin", "chosen_drift", "rejected_drift"} <= set(steps[1][1])
    assert read_card(tmp_path / "dpo")["kind"] == "policy"
    reloaded = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "dpo"))
    assert any("lora_B" in name for name, _ in reloaded.named_parameters())


@pytest.mark.parametrize(
    ("values", "field"),
    [({"beta": 0}, "beta"), ({"loss": "kto"}, "loss"), ({"label_smoothing": 0.1, "loss": "ipo"}, "label_smoothing"),
     ({"batch_rankings": 0}, "batch_rankings"), ({"max_length": 4}, "max_length")],
)  # fmt: skip
def test_bad_configs_are_refused_naming_the_field(values, field):
    from worker.ml.dpo import DPOConfig

    with pytest.raises(ValueError, match=f"^{field}:"):
        DPOConfig(**values)


def test_cli_train_dpo_trains_from_rankings_jsonl_and_names_a_bad_flag(tiny_model_dir, tmp_path, capsys):
    import json

    from worker.ml.cli import main
    from worker.ml.synthetic import quality_rankings

    data = tmp_path / "rankings.jsonl"
    lines = [
        {"prompt": r.prompt, "completions": r.completions, "ranking": r.groups, "prompt_id": r.prompt_id}
        for r in quality_rankings(12, 3, seed=2)
    ]
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = ["train-dpo", "--model", str(tiny_model_dir), "--rankings", str(data), "--out", str(tmp_path / "out")]
    assert main([*args, "--loss", "ipo", "--beta", "0.5", "--device", "cpu", "--no-autocast"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["val_pairs"] > 0
    assert (tmp_path / "out" / "adapter_config.json").is_file()
    assert main([*args, "--label-smoothing", "0.2", "--loss", "ipo"]) == 2
    assert "label_smoothing" in capsys.readouterr().err


def test_each_labelers_ranking_of_a_task_counts_and_shares_the_forward(tiny_model_dir):
    from worker.ml.data import group_rankings
    from worker.ml.dpo import assemble, encode_rankings
    from worker.ml.synthetic import quality_rankings

    cfg, tokenizer, _ = _policy(tiny_model_dir)
    twice = quality_rankings(2, 3, seed=4, labelers=2)
    twice[1].groups = [[g for group in twice[1].groups for g in group]]  # the second labeler: all tied
    encoded = encode_rankings(tokenizer, group_rankings(twice), cfg.max_length)
    assert [r.n_rankings for r in encoded] == [2, 2] and [len(r.responses) for r in encoded] == [3, 3]
    values, levels = assemble(torch.arange(6.0), encoded)
    assert values.tolist() == [[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]]
    loss, per_ranking = dpo_loss(values, torch.zeros(4, 3), levels, beta=1.0)
    assert per_ranking[1] == 0 and loss.item() == pytest.approx(per_ranking[[0, 2, 3]].mean().item())


def test_a_policy_adapter_trains_on_against_the_start_it_was_trained_from(tiny_model_dir, tmp_path):
    """Iterative DPO across rounds: the second run continues the first one's adapter (its
    held-out loss starts below log 2, the value where policy == reference) and the reference is
    still the first run's starting model, which the saved adapter names as its base. `held_out`
    replaces the random split: every training ranking trains."""
    import json

    from worker.ml.dpo import DPOConfig, train_dpo
    from worker.ml.synthetic import quality_rankings

    data = quality_rankings(16, 4, seed=5)
    train, held = data[:12], data[12:]
    cfg = DPOConfig(
        model=str(tiny_model_dir), beta=0.1, learning_rate=3e-3, epochs=3, batch_rankings=4,
        device="cpu", autocast=False, max_length=64,
    )  # fmt: skip
    first = train_dpo(cfg, train, tmp_path / "first", held_out=held)
    assert (first["train_tasks"], first["val_tasks"]) == (12, 4)
    assert first["val_loss_before"] == pytest.approx(math.log(2), abs=1e-5)
    second = train_dpo(
        DPOConfig(**{**cfg.to_dict(), "model": str(tmp_path / "first")}), train, tmp_path / "second", held_out=held
    )
    assert second["val_loss_before"] == pytest.approx(first["val_loss"], abs=1e-4)
    adapter = json.loads((tmp_path / "second" / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]).resolve() == Path(tiny_model_dir).resolve()
