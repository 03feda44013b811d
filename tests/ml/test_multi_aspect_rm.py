"""A multi-aspect reward model (RewardConfig.aspects): one score head per aspect on a shared
backbone, trained on per-aspect rankings, scored with weights chosen at load time."""

import json
import random

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from worker.ml.cli import main
from worker.ml.config import RewardConfig
from worker.ml.data import Ranking, group_rankings, split_by_prompt
from worker.ml.feedback import Rated, to_multi_aspect_rankings
from worker.ml.losses import pair_accuracy_counts
from worker.ml.models import read_card
from worker.ml.reward import build_reward_model, train_reward
from worker.ml.reward_sets import encode_sets, forward_sets
from worker.ml.scorer import RewardScorer, sequence_scores
from worker.ml.synthetic import FILLER, PROMPT_WORDS
from worker.ml.tiny import tiny_tokenizer

HELP = ("good", "great", "yes")
SAFE = ("please", "thanks", "hello")
NEUTRAL = tuple(w for w in FILLER if w not in HELP + SAFE)
ASPECTS = ("help", "safe")


def two_aspect_judgments(n: int, k: int = 4, *, seed: int = 0) -> list[Rated]:
    """Each completion has 0-3 "help" words and, independently, 0-3 "safe" words among filler;
    a labeler rates each aspect by its count. The two aspects' rankings agree on half the pairs,
    so one head cannot get both right: only per-aspect heads can."""
    rng = random.Random(seed)
    judgments = []
    for task in range(n):
        prompt = " ".join(rng.choices(PROMPT_WORDS, k=rng.randint(3, 8)))
        helps, safes = rng.sample(range(4), k), rng.sample(range(4), k)
        completions = []
        for h, s in zip(helps, safes, strict=True):
            words = rng.choices(NEUTRAL, k=rng.randint(4, 10)) + rng.choices(HELP, k=h) + rng.choices(SAFE, k=s)
            rng.shuffle(words)
            completions.append(" ".join(words))
        judgments.append(Rated(prompt, completions, {"help": helps, "safe": safes}, f"p{task}"))
    return judgments


def pair_accuracy(scores: torch.Tensor, rankings: list[Ranking], aspect: str) -> float:
    """Pairwise accuracy of per-completion scores (in ranking order) on one aspect's rankings."""
    k = len(rankings[0].completions)
    levels = torch.tensor([r.levels(aspect) for r in rankings])
    right, total = pair_accuracy_counts(scores.reshape(len(rankings), k), levels)
    return float(right.sum() / total.sum())


def test_a_multi_aspect_reward_model_learns_two_synthetic_aspects_and_reports_each_accuracy(tiny_model_dir, tmp_path):
    rankings = to_multi_aspect_rankings(two_aspect_judgments(300), ASPECTS)
    assert len(rankings) == 300 and all(r.groups == [] and len(r.aspect_groups) == 2 for r in rankings)
    cfg = RewardConfig(
        model=str(tiny_model_dir),
        mode="lora",
        aspects=ASPECTS,
        aspect_weights=(3.0, 1.0),
        learning_rate=1e-2,
        batch_rankings=8,
        epochs=2,  # two heads to fit: one epoch reached 0.85-0.96 per aspect over seeds 0-2, two 0.92-0.98
        val_fraction=0.2,
        warmup_fraction=0.03,
        autocast=False,
    )
    metrics = train_reward(cfg, rankings, tmp_path / "rm")

    by_aspect = metrics["val_accuracy_by_aspect"]
    assert set(by_aspect) == set(ASPECTS)
    assert by_aspect["help"] > 0.85 and by_aspect["safe"] > 0.85, by_aspect
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    # 60 validation tasks x 2 aspects x C(4, 2) pairs
    assert metrics["val_pairs"] == 60 * 2 * 6 and metrics["aspect_rankings"] == {"help": 300, "safe": 300}
    card = read_card(tmp_path / "rm")
    assert card["aspects"] == ["help", "safe"] and card["aspect_weights"] == {"help": 0.75, "safe": 0.25}
    assert card["config"]["aspects"] == ["help", "safe"] and card["config"]["aspect_weights"] == [3.0, 1.0]
    assert card["metrics"]["val_accuracy_by_aspect"] == by_aspect

    # Reloaded: each head ranks its own aspect and is blind to the other's.
    _, val_sets = split_by_prompt(group_rankings(rankings), cfg.val_fraction, cfg.seed)
    val = [r for r in rankings if r.prompt_id in {s.prompt_id for s in val_sets}]
    prompts = [r.prompt for r in val for _ in r.completions]
    completions = [c for r in val for c in r.completions]
    scorer = RewardScorer.load(tmp_path / "rm", device="cpu", use_autocast=False)
    per_aspect = scorer.score_aspects(prompts, completions)  # (N, 2)
    assert pair_accuracy(per_aspect[:, 0], val, "help") == pytest.approx(by_aspect["help"], abs=1e-4)
    assert pair_accuracy(per_aspect[:, 1], val, "safe") == pytest.approx(by_aspect["safe"], abs=1e-4)
    assert 0.3 < pair_accuracy(per_aspect[:, 0], val, "safe") < 0.7
    assert 0.3 < pair_accuracy(per_aspect[:, 1], val, "help") < 0.7

    # The stored weights (3:1) are the default; the combined reward follows whichever weighs more.
    assert scorer.weights == {"help": 0.75, "safe": 0.25}
    combined = scorer.score(prompts, completions)
    assert pair_accuracy(combined, val, "help") > pair_accuracy(combined, val, "safe")
    safe_first = RewardScorer.load(tmp_path / "rm", device="cpu", use_autocast=False, weights={"safe": 1.0})
    assert safe_first.weights == {"help": 0.0, "safe": 1.0}
    # one aspect alone: the reward is that aspect's normalised score
    assert torch.allclose(safe_first.score(prompts, completions), per_aspect[:, 1], atol=1e-5)

    # Normalised with the stored statistics, the default combination has mean 0 and std 1 on the
    # training completions (all of them were sampled: norm_samples > 240 x 4).
    train = [r for r in rankings if r not in val]
    train_prompts = [r.prompt for r in train for _ in r.completions]
    train_completions = [c for r in train for c in r.completions]
    for weights in ({"help": 3.0, "safe": 1.0}, {"help": 1.0, "safe": 1.0}):
        scorer.set_weights(weights)
        reward = scorer.score(train_prompts, train_completions)
        assert abs(reward.mean().item()) < 1e-3 and reward.std().item() == pytest.approx(1.0, rel=1e-3)
    raw = scorer.score(train_prompts[:1], train_completions[:1], normalize=False)
    raw_heads = scorer.score_aspects(train_prompts[:1], train_completions[:1], normalize=False)
    assert raw.item() == pytest.approx(raw_heads.mean().item(), abs=1e-5)  # equal weights: the mean

    # Two hand-made answers: helpful-only against polite-only; the weights decide which wins.
    pair = ["good great yes the cat", "please thanks hello the cat"]
    scorer.set_weights({"help": 1.0})
    help_first = scorer.score(["tell a story"] * 2, pair)
    scorer.set_weights({"safe": 1.0})
    polite_first = scorer.score(["tell a story"] * 2, pair)
    assert help_first[0] > help_first[1] and polite_first[1] > polite_first[0]


@pytest.mark.parametrize(("share", "packed"), [(True, True), (True, False), (False, False)])
def test_each_aspect_ranking_is_one_row_read_by_its_aspects_head(tiny_model_dir, share, packed):
    """Two labelers; the second ranked only "safe": three rows, heads [help, safe, safe]; the
    first labeler's overall ranking is not read by a multi-aspect model. The shared-prompt
    forwards (packed rows, key/value cache) give every head as full sequences do."""
    completions = ["good cat", "bad dog", "the sun"]
    rankings = [
        Ranking("hello", completions, [[2], [0, 1]], "p1", aspect_groups={"help": [[0], [2]], "safe": [[1], [0, 2]]}),
        Ranking("hello", completions, [], "p1", aspect_groups={"safe": [[2], [0], [1]]}),
    ]
    tokenizer = tiny_tokenizer()
    (encoded,) = encode_sets(tokenizer, group_rankings(rankings), 64, ASPECTS)
    assert encoded.heads.tolist() == [0, 1, 1] and encoded.n_rankings == 2
    assert encoded.levels.tolist() == [[0, -1, 1], [1, 0, 1], [1, 2, 0]]
    cfg = RewardConfig(model=str(tiny_model_dir), mode="full", aspects=ASPECTS)
    model = build_reward_model(cfg, tokenizer, torch.device("cpu"))
    with torch.no_grad():
        model.score.weight.normal_()  # two different heads
        scores, levels = forward_sets(
            model, [encoded], tokenizer.pad_token_id, torch.device("cpu"), share, packed=packed
        )
        flat = sequence_scores(model, encoded.sequences, tokenizer.pad_token_id, torch.device("cpu"), all_heads=True)
    assert flat.shape == (3, 2)
    assert torch.allclose(scores, torch.stack([flat[:, 0], flat[:, 1], flat[:, 1]]), atol=1e-5)
    assert torch.equal(levels, encoded.levels)
    # a one-head model reads the overall rankings only
    (overall,) = encode_sets(tokenizer, group_rankings(rankings), 64)
    assert overall.levels.tolist() == [[1, 1, 0], [-1, -1, -1]] and overall.heads.tolist() == [0, 0]


def test_a_saved_full_multi_aspect_model_names_its_heads_and_reloads_through_the_scorer(tiny_model_dir, tmp_path):
    rankings = to_multi_aspect_rankings(two_aspect_judgments(16, seed=3), ASPECTS)
    cfg = RewardConfig(
        model=str(tiny_model_dir), mode="full", aspects=ASPECTS, val_fraction=0.25, autocast=False, learning_rate=3e-3
    )
    metrics = train_reward(cfg, rankings, tmp_path / "rm")
    assert set(metrics["val_accuracy_by_aspect"]) == set(ASPECTS)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    assert plain.config.num_labels == 2 and plain.config.id2label == {0: "help", 1: "safe"}
    scorer = RewardScorer.load(tmp_path / "rm", device="cpu", use_autocast=False, weights={"help": 2, "safe": 2})
    assert scorer.weights == {"help": 0.5, "safe": 0.5}
    prompts, answers = ["tell a story", "hello"], ["good cat", "please dog"]
    z = scorer.score_aspects(prompts, answers)
    c = scorer.correlation[0, 1]
    expected = (0.5 * z[:, 0] + 0.5 * z[:, 1]) / torch.sqrt(0.25 + 0.25 + 2 * 0.25 * c)
    assert torch.allclose(scorer.score(prompts, answers), expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"weights: honesty not among the model's aspects \(help, safe\)"):
        RewardScorer.load(tmp_path / "rm", device="cpu", weights={"honesty": 1.0})
    with pytest.raises(ValueError, match="at least one aspect needs a weight above 0"):
        scorer.set_weights({"help": 0.0})


def test_cli_train_reward_reads_aspect_rankings_and_stores_the_weights(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "rankings.jsonl"
    rankings = to_multi_aspect_rankings(two_aspect_judgments(12, seed=4), ASPECTS)
    records = [
        {"prompt": r.prompt, "completions": r.completions, "aspects": r.aspect_groups, "prompt_id": r.prompt_id}
        for r in rankings
    ]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    args = ["train-reward", "--model", str(tiny_model_dir), "--rankings", str(path), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "none")]) == 2
    assert "aspects: the rankings rank aspects (help, safe) and nothing overall" in capsys.readouterr().err
    out = str(tmp_path / "rm")
    assert main([*args, "--out", out, "--aspects", "help", "safe", "--aspect-weights", "1", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["val_accuracy_by_aspect"]) == {"help", "safe"}
    card = read_card(out)
    assert card["aspects"] == ["help", "safe"] and card["aspect_weights"] == {"help": 0.25, "safe": 0.75}
    assert main([*args, "--out", out, "--aspects", "help", "safe", "--aspect-weights", "1"]) == 2
    assert "aspect_weights: needs one weight per aspect (2), got 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"aspects": ("help", "help")}, "aspects: names repeat"),
        ({"aspects": ("help", "")}, "aspects: an aspect name is empty"),
        ({"aspect_weights": (1.0,)}, r"aspect_weights: needs one weight per aspect \(0\)"),
        ({"aspects": ("a", "b"), "aspect_weights": (1.0, -1.0)}, "aspect_weights: must be finite numbers >= 0"),
        ({"aspects": ("a", "b"), "aspect_weights": (0.0, 0.0)}, "not all 0"),
    ],
)
def test_aspect_settings_are_checked_when_the_config_is_built(fields, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(model="m", **fields)
    assert RewardConfig(model="m", aspects=("a", "b")).default_weights() == {"a": 0.5, "b": 0.5}


def test_a_lora_multi_aspect_model_on_an_sft_adapter_reloads_with_its_heads(tiny_model_dir, tmp_path):
    """The reward model of a round started from an SFT adapter: the scorer merges the SFT adapter,
    builds a two-output head and loads the reward LoRA on it, scoring as after training."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from worker.ml.models import load_tokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    sft.save_pretrained(tmp_path / "sft")
    load_tokenizer(tiny_model_dir).save_pretrained(tmp_path / "sft")
    rankings = to_multi_aspect_rankings(two_aspect_judgments(8, seed=5), ASPECTS)
    cfg = RewardConfig(
        model=str(tmp_path / "sft"), mode="lora", aspects=ASPECTS, val_fraction=0.0, autocast=False, norm_samples=1000
    )
    metrics = train_reward(cfg, rankings, tmp_path / "rm")
    scorer = RewardScorer.load(tmp_path / "rm", device="cpu", use_autocast=False)
    assert scorer.aspects == ASPECTS and scorer.weights == {"help": 0.5, "safe": 0.5}
    prompts = [r.prompt for r in rankings for _ in r.completions]
    completions = [c for r in rankings for c in r.completions]
    raw = scorer.score(prompts, completions, normalize=False)
    # every training completion was sampled for the statistics: the same mean as in training
    assert float(raw.mean()) == pytest.approx(metrics["reward_mean"], abs=1e-4)
    assert float(raw.std()) == pytest.approx(metrics["reward_std"], rel=1e-3)
