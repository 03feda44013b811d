"""Reward-model training on tiny random-weight Llamas: it learns, it saves, it reloads."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from worker.ml.config import RewardConfig
from worker.ml.data import Ranking, group_rankings, split_by_prompt
from worker.ml.formatting import encode_reward_texts, reward_text
from worker.ml.model_zoo import FAMILIES, save_family_model
from worker.ml.models import load_tokenizer, read_card
from worker.ml.reward import build_reward_model, train_reward
from worker.ml.reward_sets import encode_sets, forward_sets
from worker.ml.scorer import RewardScorer, score_sequences, sequence_scores
from worker.ml.shared_prefix import supports_packing
from worker.ml.synthetic import quality_rankings
from worker.ml.tiny import tiny_tokenizer


@pytest.mark.parametrize(("loss", "mode", "lr"), [("kwise", "full", 3e-3), ("plackett_luce", "lora", 1e-2)])
def test_reward_model_learns_a_synthetic_preference(tiny_model_dir, tmp_path, loss, mode, lr):
    rankings = quality_rankings(300, 4, qualities=range(-2, 3), seed=1)
    # one warmup step of the 30, the schedule these learning rates were chosen with
    cfg = RewardConfig(
        model=str(tiny_model_dir),
        mode=mode,
        loss=loss,
        learning_rate=lr,
        batch_rankings=8,
        val_fraction=0.2,
        warmup_fraction=0.03,
    )
    stages = []
    metrics = train_reward(cfg, rankings, tmp_path / "rm", on_progress=lambda d, t, s: stages.append(s))

    assert metrics["val_accuracy"] > 0.9
    assert metrics["val_accuracy_by_k"]["4"] == metrics["val_accuracy"]
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    assert metrics["val_prompts"] == 60 and metrics["train_prompts"] == 240
    assert metrics["steps"] == 30 and "train" in stages and stages[-1] == "saved"
    card = read_card(tmp_path / "rm")
    assert card["kind"] == "reward_model" and card["base_model"] == str(tiny_model_dir)
    assert card["config"]["loss"] == loss and card["config"]["mode"] == mode
    assert card["data"]["train_rankings"] + card["data"]["val_rankings"] == 300
    assert card["metrics"]["val_accuracy"] == metrics["val_accuracy"]
    assert card["format"] == ("peft-adapter" if mode == "lora" else "transformers")
    # Normalised rewards of training completions are centred with unit spread.
    assert abs(card["reward_normalization"]["mean"] - metrics["reward_mean"]) < 1e-9


def test_a_short_run_still_warms_up_and_a_one_step_run_still_trains(tiny_model_dir, tmp_path):
    # 5% of 12 steps rounded down was no warmup at all: the first step ran at the peak rate.
    rankings = quality_rankings(16, 4, seed=2)
    common = dict(model=str(tiny_model_dir), mode="lora", val_fraction=0.25, norm_samples=0, warmup_fraction=0.05)
    metrics = train_reward(RewardConfig(**common, batch_rankings=1), rankings, tmp_path / "short")
    assert metrics["steps"] == 12 and metrics["warmup_steps"] == 1
    one = train_reward(RewardConfig(**common, batch_rankings=12), rankings, tmp_path / "one")
    assert one["steps"] == 1 and one["warmup_steps"] == 0


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_saved_reward_model_reloads_with_plain_libraries_and_scores_the_same(tiny_model_dir, tmp_path, mode):
    rankings = quality_rankings(40, 4, qualities=range(-2, 3), seed=2)
    cfg = RewardConfig(
        model=str(tiny_model_dir),
        mode=mode,
        learning_rate=3e-3,
        batch_rankings=8,
        val_fraction=0.25,
        autocast=False,
        norm_samples=10_000,
    )
    metrics = train_reward(cfg, rankings, tmp_path / "rm")

    # The training completions, exactly as train_reward split them.
    train_sets, _ = split_by_prompt(group_rankings(rankings), cfg.val_fraction, cfg.seed)
    prompts = [s.prompt for s in train_sets for _ in s.completions]
    completions = [c for s in train_sets for c in s.completions]

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "rm")
    if mode == "full":
        plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    else:
        from peft import AutoPeftModelForSequenceClassification

        plain = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "rm", num_labels=1)
    plain.eval()
    with torch.no_grad():
        raw = torch.cat(
            [
                plain(**tokenizer(reward_text(tokenizer, p, c), return_tensors="pt", add_special_tokens=False)).logits[
                    :, 0
                ]
                for p, c in zip(prompts, completions, strict=True)
            ]
        )
    # Same mean/std as the in-memory model measured on these completions right after training.
    assert raw.mean().item() == pytest.approx(metrics["reward_mean"], abs=1e-4)
    assert raw.std().item() == pytest.approx(metrics["reward_std"], rel=1e-3)

    scorer = RewardScorer.load(tmp_path / "rm", device="cpu", use_autocast=False)
    assert torch.allclose(scorer.score(prompts, completions, normalize=False), raw, atol=1e-4)
    normalised = scorer.score(prompts, completions)
    assert normalised.mean().abs().item() < 1e-3
    assert normalised.std().item() == pytest.approx(1.0, rel=1e-3)


def test_reward_is_read_at_the_end_of_turn_token(tiny_model_dir):
    tokenizer = tiny_tokenizer()
    text = reward_text(tokenizer, "tell a story", "the cat sat")
    assert text.endswith("<|im_end|>")
    cfg = RewardConfig(model=str(tiny_model_dir), mode="full")
    model = build_reward_model(cfg, tokenizer, torch.device("cpu")).eval()
    short, long = encode_reward_texts(tokenizer, ["hi", "tell a story"], ["yes", "the cat is good ."], 64)
    assert short[-1] == long[-1] == tokenizer.eos_token_id != tokenizer.pad_token_id
    with torch.no_grad():
        batched = sequence_scores(model, [short, long], tokenizer.pad_token_id, torch.device("cpu"))
        hidden = model.model(input_ids=torch.tensor([short])).last_hidden_state[0, -1]
        by_hand = model.score(hidden)[0]
    # the padded row scores exactly as if it were alone, read at its <|im_end|>
    assert batched[0].item() == pytest.approx(by_hand.item(), abs=1e-5)


def test_labelers_rankings_of_one_task_share_one_forward(tiny_model_dir):
    completions = ["good cat", "bad dog", "the sun", "no"]
    rankings = [
        Ranking("hello", completions, groups, "p1")
        for groups in ([[0], [2], [3], [1]], [[0, 2], [1, 3]], [[2], [0], [1]])
    ]
    sets = group_rankings(rankings)
    assert len(sets) == 1 and len(sets[0].levels) == 3
    tokenizer = tiny_tokenizer()
    encoded = encode_sets(tokenizer, sets, 64)
    model = build_reward_model(RewardConfig(model=str(tiny_model_dir), mode="full"), tokenizer, torch.device("cpu"))
    forwarded = []
    model.model.register_forward_pre_hook(
        lambda mod, args, kwargs: forwarded.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    scores, levels = forward_sets(model, encoded, tokenizer.pad_token_id, torch.device("cpu"))
    # one packed row for three rankings: the prompt once, then each completion's own tokens
    (s,) = encoded
    assert forwarded == [(1, s.prefix_len + sum(len(q) - s.prefix_len for q in s.sequences))]
    forwarded.clear()
    forward_sets(model, encoded, tokenizer.pad_token_id, torch.device("cpu"), packed=False)
    assert [rows for rows, _ in forwarded] == [1, 4]  # cache path: the prompt once, then K completions
    assert scores.shape == (3, 4) and torch.equal(scores[0], scores[2])
    assert levels.tolist() == [[0, 3, 1, 2], [0, 1, 0, 1], [1, 2, 0, -1]]


def test_training_on_ties_only_is_refused(tiny_model_dir, tmp_path):
    rankings = [Ranking(f"p {i}", ["a", "b", "c", "d"], [[0, 1, 2, 3]], f"p{i}") for i in range(5)]
    with pytest.raises(ValueError, match="rankings: no training ranking orders two completions"):
        train_reward(RewardConfig(model=str(tiny_model_dir)), rankings, tmp_path / "rm")
    assert not (tmp_path / "rm").exists()


def test_card_is_plain_json_next_to_the_weights(tiny_model_dir, tmp_path):
    rankings = quality_rankings(12, 4, seed=3)
    train_reward(RewardConfig(model=str(tiny_model_dir), mode="lora", val_fraction=0.25), rankings, tmp_path / "rm")
    files = {p.name for p in (tmp_path / "rm").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "ranklab_card.json", "tokenizer.json"} <= files
    card = json.loads((tmp_path / "rm" / "ranklab_card.json").read_text())
    assert card["versions"]["torch"] == torch.__version__
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_sharing_the_prompt_prefix_gives_the_same_scores_and_gradients(tiny_model_dir, mode):
    tokenizer = tiny_tokenizer()
    rankings = quality_rankings(5, 4, seed=4, length=(1, 9))
    encoded = encode_sets(tokenizer, group_rankings(rankings), 64)
    assert all(s.prefix_len > 5 for s in encoded)
    model = build_reward_model(RewardConfig(model=str(tiny_model_dir), mode=mode), tokenizer, torch.device("cpu"))
    with torch.no_grad():  # move LoRA B / the head away from their zero-ish init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    results = []
    for share in (True, False):
        model.zero_grad()
        scores, levels = forward_sets(model, encoded, tokenizer.pad_token_id, torch.device("cpu"), share)
        scores.sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((scores.detach(), levels, grads))
    (shared, levels_a, grads_a), (full, levels_b, grads_b) = results
    assert torch.equal(levels_a, levels_b)
    assert torch.allclose(shared, full, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-4), name


def perturbed_reward_model(model_dir, tokenizer, mode: str = "full"):
    """A tiny reward model whose head and LoRA weights are moved away from their (near-)zero init."""
    model = build_reward_model(RewardConfig(model=str(model_dir), mode=mode), tokenizer, torch.device("cpu"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "kv-cache"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_shared_prefix_training_and_serving_score_alike_on_every_family(tmp_path, family, packed):
    """Training scores with the shared prefix (packed rows with a block mask, or a key/value
    cache of left-padded prompts), serving with full right-padded sequences: both must agree,
    also on absolute-position models (GPT-2)."""
    model_dir = save_family_model(family, tmp_path / family)
    tokenizer = load_tokenizer(model_dir, padding_side="right")
    encoded = encode_sets(tokenizer, group_rankings(quality_rankings(4, 4, seed=4, length=(1, 9))), 64)
    assert len({s.prefix_len for s in encoded}) > 1  # unequal prompts: the prefix pass pads
    model = perturbed_reward_model(model_dir, tokenizer)
    pad, cpu = tokenizer.pad_token_id, torch.device("cpu")
    results = []
    if packed:
        assert supports_packing(model, max(s.longest for s in encoded))  # the packed path runs
    for share in (True, False):
        model.zero_grad()
        scores, _ = forward_sets(model, encoded, pad, cpu, share, packed=packed)
        scores.sum().backward()
        results.append(
            (scores.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    (shared, grads_shared), (full, grads_full) = results
    assert torch.allclose(shared, full, atol=1e-5), (shared - full).abs().max()
    for name, grad in grads_shared.items():
        assert torch.allclose(grad, grads_full[name], atol=1e-4), name
    # What RewardScorer and the reward normalisation use: one batch, sorted by length.
    served = score_sequences(model.eval(), [seq for s in encoded for seq in s.sequences], pad, cpu, use_autocast=False)
    assert torch.allclose(served, full.flatten(), atol=1e-5)


def test_full_scoring_is_the_same_with_left_or_right_padding_on_absolute_positions(tmp_path):
    model_dir = save_family_model("gpt2", tmp_path / "gpt2")
    tokenizer = load_tokenizer(model_dir, padding_side="right")
    model = perturbed_reward_model(model_dir, tokenizer).eval()
    short, long = encode_reward_texts(
        tokenizer, ["hi", "tell a story about the sun"], [" yes", " the cat is good ."], 64
    )
    cpu = torch.device("cpu")
    with torch.no_grad():
        alone = [sequence_scores(model, [seq], tokenizer.pad_token_id, cpu).item() for seq in (short, long)]
        for side in ("right", "left"):
            batched = sequence_scores(model, [short, long], tokenizer.pad_token_id, cpu, side=side)
            assert batched.tolist() == pytest.approx(alone, abs=1e-5), side


def test_gradient_checkpointing_with_a_shared_prefix_is_refused_when_the_config_is_built():
    # Under checkpointing transformers drops the key/value cache the shared prefix relies on
    # (it crashed mid-training with "size of tensor a (12) must match b (22)").
    with pytest.raises(ValueError, match="gradient_checkpointing.*share_prompt_prefix"):
        RewardConfig(model="m", gradient_checkpointing=True)
    RewardConfig(model="m", gradient_checkpointing=True, share_prompt_prefix=False)


def test_scoring_with_a_shared_prefix_under_checkpointing_says_why_it_cannot(tiny_model_dir):
    tokenizer = tiny_tokenizer()
    cfg = RewardConfig(model=str(tiny_model_dir), mode="full", gradient_checkpointing=True, share_prompt_prefix=False)
    model = build_reward_model(cfg, tokenizer, torch.device("cpu")).train()
    encoded = encode_sets(tokenizer, group_rankings(quality_rankings(2, 4, seed=5)), 64)
    cpu = torch.device("cpu")
    with pytest.raises(RuntimeError, match="drops under gradient checkpointing"):
        forward_sets(model, encoded, tokenizer.pad_token_id, cpu, share_prefix=True, packed=False)
    # Packed rows need no cache: the shared prompt works under checkpointing and scores as full.
    packed, _ = forward_sets(model, encoded, tokenizer.pad_token_id, cpu, share_prefix=True)
    full, _ = forward_sets(model, encoded, tokenizer.pad_token_id, cpu, share_prefix=False)
    assert torch.allclose(packed, full, atol=1e-5)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_gradient_checkpointing_trains_exactly_like_plain_training(tiny_model_dir, tmp_path, mode):
    rankings = quality_rankings(12, 4, seed=3)
    runs = [
        train_reward(
            RewardConfig(
                model=str(tiny_model_dir),
                mode=mode,
                share_prompt_prefix=False,
                gradient_checkpointing=checkpointing,
                batch_rankings=4,
                val_fraction=0.25,
                autocast=False,
            ),
            rankings,
            tmp_path / f"rm-{checkpointing}",
        )
        for checkpointing in (False, True)
    ]
    for key in ("train_loss_first", "train_loss_last", "val_loss", "reward_mean"):
        assert runs[1][key] == pytest.approx(runs[0][key], abs=1e-6), key


def test_reward_training_runs_without_dropout(tmp_path):
    """GPT-2 ships dropout 0.1: left on, the K completions of a ranking would each see another
    network (and shared-prefix training would no longer equal full training)."""
    model_dir = save_family_model("gpt2", tmp_path / "gpt2")
    tokenizer = load_tokenizer(model_dir, padding_side="right")
    model = build_reward_model(RewardConfig(model=str(model_dir), mode="full"), tokenizer, torch.device("cpu"))
    model.train()
    (ids,) = encode_reward_texts(tokenizer, ["tell a story"], [" the cat is good ."], 64)
    first, second = (model(input_ids=torch.tensor([ids])).logits for _ in range(2))
    assert torch.equal(first, second)


def test_lora_targets_must_all_name_modules_of_the_architecture(tmp_path):
    """Phi-3 fuses q/k/v into qkv_proj: with the Llama names peft adapted o_proj alone, silently.
    Named targets must all exist; the empty default adapts Phi-3's own attention projections."""
    model_dir = save_family_model("phi3", tmp_path / "phi3")
    tokenizer = load_tokenizer(model_dir, padding_side="right")
    named = RewardConfig(model=str(model_dir), lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"))
    with pytest.raises(ValueError, match=r"lora_targets: q_proj, k_proj, v_proj name no module of Phi3.*qkv_proj"):
        build_reward_model(named, tokenizer, torch.device("cpu"))
    model = build_reward_model(RewardConfig(model=str(model_dir)), tokenizer, torch.device("cpu"))
    assert sorted(model.peft_config["default"].target_modules) == ["o_proj", "qkv_proj"]


def test_reward_training_and_scoring_refuse_a_pad_equal_to_the_end_of_turn(tiny_model_dir):
    """A tokenizer built in memory (not by load_tokenizer) with pad == end of turn: the head would
    read each reward one token early. Training and scoring refuse it, naming the token."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = "<|im_end|>"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    sets = group_rankings(quality_rankings(2, 4, seed=5))
    message = r"pad token <\|im_end\|> is the end-of-turn token"
    with pytest.raises(ValueError, match=message):
        RewardScorer(model, tokenizer, use_autocast=False)
    with pytest.raises(ValueError, match=message):
        encode_sets(tokenizer, sets, 64)
    with pytest.raises(ValueError, match=message):
        build_reward_model(RewardConfig(model=str(tiny_model_dir)), tokenizer, torch.device("cpu"))


def test_reward_scorer_reads_the_reward_at_the_end_of_turn_whatever_the_model_config_pad(tiny_model_dir):
    """A model passed in memory whose config pad is the end-of-turn id (SmolLM2's GGUF layout):
    the head read every padded row at its last pad column. RewardScorer makes the model's pad
    the tokenizer's, as RewardScorer.load does."""
    tokenizer = load_tokenizer(tiny_model_dir, padding_side="right")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).eval()
    model.config.pad_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompts, completions = ["tell a story", "hello"], [" the cat is good and the dog is good .", " ok"]
    scorer = RewardScorer(model, tokenizer, use_autocast=False)
    with torch.no_grad():
        one_by_one = [
            model(input_ids=torch.tensor([ids])).logits[0, 0].item()
            for ids in encode_reward_texts(tokenizer, prompts, completions, 64)
        ]
    assert scorer.score(prompts, completions, normalize=False).tolist() == pytest.approx(one_by_one, abs=1e-5)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_a_reward_model_on_an_sft_adapter_starts_from_the_sft_model(tiny_model_dir, tmp_path, mode):
    """A round started from an SFT adapter folder trains its reward model on that folder. The
    backbone was the pre-SFT base with LoRA (transformers loaded the adapter unmerged and the
    reward LoRA dropped it) and had nothing to train in full mode. It is the merged SFT model
    now, and the saved reward model scores as it did in training."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from worker.ml.models import load_causal_lm

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    sft.save_pretrained(tmp_path / "sft")
    load_tokenizer(tiny_model_dir).save_pretrained(tmp_path / "sft")
    tokenizer = load_tokenizer(tmp_path / "sft", padding_side="right")
    batch = tokenizer(["hello world cat"], return_tensors="pt")
    with torch.no_grad():
        sft_hidden = load_causal_lm(tmp_path / "sft", device="cpu").model(**batch).last_hidden_state

    cfg = RewardConfig(model=str(tmp_path / "sft"), mode=mode, val_fraction=0.0, autocast=False)
    model = build_reward_model(cfg, tokenizer, torch.device("cpu")).eval()
    backbone = model.get_base_model().model if mode == "lora" else model.model
    with torch.no_grad():
        torch.testing.assert_close(backbone(**batch).last_hidden_state, sft_hidden, atol=1e-5, rtol=1e-5)
    assert any(p.requires_grad for name, p in model.named_parameters() if "score" not in name)

    rankings = quality_rankings(8, 4, seed=2)
    metrics = train_reward(cfg, rankings, tmp_path / "rm")
    sets = group_rankings(rankings)
    prompts = [s.prompt for s in sets for _ in s.completions]
    completions = [c for s in sets for c in s.completions]
    scores = RewardScorer.load(tmp_path / "rm", device="cpu", use_autocast=False).score(
        prompts, completions, normalize=False
    )
    assert float(scores.mean()) == pytest.approx(metrics["reward_mean"], abs=1e-4)
