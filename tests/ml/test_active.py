"""Active learning's ML core: features are what the reward head reads, the score-head ensemble
puts a constructed ambiguous task first, results repeat given a seed, bad input says which."""

import itertools
from functools import partial

import pytest
import torch

from worker.ml.active import (
    bald,
    completion_features,
    fit_and_rank,
    fit_score_heads,
    head_scores,
    lure_weights,
    pool_information,
    rank_tasks,
    task_uncertainty,
)
from worker.ml.config import RewardConfig
from worker.ml.reward import train_reward
from worker.ml.scorer import RewardScorer
from worker.ml.synthetic import quality_rankings

D = 6


def _labelled(n: int = 40, seed: int = 0) -> tuple[list[torch.Tensor], list[list[list[list[int]]]]]:
    """Tasks of 3 completions. Most are ranked by feature 0; every fourth differs only along
    feature 1, and there the rankings conflict (half by +feature 1, half by -feature 1), so each
    bootstrap resample tips that direction its own way. Features 2.. are small noise; some
    rankings carry a tie."""
    g = torch.Generator().manual_seed(seed)
    features, rankings = [], []
    for t in range(n):
        f = torch.randn(3, D, generator=g) * 0.1
        signal = 1 if t % 4 == 3 else 0
        f[:, signal] = torch.randn(3, generator=g) * 2
        key = -f[:, 1] if t % 8 == 7 else f[:, signal]
        order = key.argsort(descending=True).tolist()
        groups = [[order[0]], [order[1], order[2]]] if t % 5 == 0 else [[i] for i in order]
        features.append(f)
        rankings.append([groups])
    return features, rankings


def _open_tasks() -> list[torch.Tensor]:
    """Clear tasks differ along feature 0; the ambiguous one (index 2) only along feature 1."""
    clear = [torch.zeros(2, D) for _ in range(4)]
    for n, f in enumerate(clear):
        f[0, 0], f[1, 0] = 1.0 + n, -1.0 - n
    ambiguous = torch.zeros(2, D)
    ambiguous[0, 1], ambiguous[1, 1] = 2.0, -2.0
    return [clear[0], clear[1], ambiguous, clear[2], clear[3]]


@pytest.mark.parametrize("method", ["disagreement", "vote", "margin", "bald", "pool_information"])
def test_the_ambiguous_task_is_handed_out_first(method):
    features, rankings = _labelled()
    heads = fit_score_heads(features, rankings, n_heads=5, seed=0)
    assert heads.shape == (5, D + 1)
    order = rank_tasks(heads, _open_tasks(), method=method)
    assert order[0] == 2
    values = task_uncertainty(heads, _open_tasks(), method=method)
    assert values[2] > max(v for n, v in enumerate(values) if n != 2)


def test_heads_agree_on_the_clear_direction_and_split_on_the_conflicting_one():
    features, rankings = _labelled()
    heads = fit_score_heads(features, rankings, n_heads=5, seed=0)
    assert (heads[:, 0] > 0).all()  # every head scores feature 0 up, as the rankings say
    assert (heads[:, 1] > 0).any() and (heads[:, 1] < 0).any()  # the conflicting direction splits them
    clear = head_scores(heads, _open_tasks()[3])
    assert (clear[0] > clear[1]).all()  # a clear task: all heads agree


def test_fitting_repeats_given_the_seed_and_the_seed_changes_the_resamples():
    features, rankings = _labelled()
    a = fit_score_heads(features, rankings, seed=3)
    assert torch.equal(a, fit_score_heads(features, rankings, seed=3))
    assert not torch.equal(a, fit_score_heads(features, rankings, seed=4))
    assert fit_and_rank(features, rankings, _open_tasks(), seed=3) == task_uncertainty(a, _open_tasks())
    plain = fit_score_heads(features, rankings, n_heads=2, seed=3, bootstrap=False)  # every head on all tasks
    assert torch.equal(plain[0], plain[1])
    assert torch.equal(plain, fit_score_heads(features, rankings, n_heads=2, seed=4, bootstrap=False))


def test_tasks_without_a_pair_and_without_rankings():
    features, rankings = _labelled(20)
    # a task nobody ranked yet and a one-group ranking are fine: they just teach nothing
    extra = torch.randn(3, D)
    heads = fit_score_heads([*features, extra], [*rankings, []])
    tied = fit_score_heads([*features, extra], [*rankings, [[[0, 1, 2]]]])
    assert torch.equal(heads, tied)
    assert task_uncertainty(heads, [torch.randn(1, D), _open_tasks()[2]])[0] == 0.0
    assert task_uncertainty(heads, []) == []


def test_bald_is_the_committees_information_about_the_pair():
    """Heads that each call the pair surely but split on who wins: log 2 (a label settles it).
    Heads that agree, whether sure or all calling a coin flip: nothing a label would change."""
    split = torch.tensor([[20.0, -20.0], [0.0, 0.0]])  # (K=2, heads=2): head 0 says 0 wins, head 1 says 1
    assert bald(split) == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)
    assert bald(torch.tensor([[3.0, 3.0], [0.0, 0.0]])) == pytest.approx(0.0, abs=1e-9)
    assert bald(torch.zeros(2, 5)) == pytest.approx(0.0, abs=1e-9)
    lean = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])  # same winner, different confidence: a little
    assert 0 < bald(lean) < bald(split)


def test_pool_information_prefers_uncertainty_the_pool_shares_to_an_outliers():
    """Ten tasks whose heads disagree the same way (heads 0, 1 against 2, 3) and one outlier
    that disagrees more, but in a pattern no other task has (heads 0, 2 against 1, 3):
    disagreement and BALD hand the outlier out first; pool_information a shared one, since its
    ranking also tells the committee about the other nine."""
    shared = torch.tensor([1.0, 1.0, -1.0, -1.0])
    own = torch.tensor([1.0, -1.0, 1.0, -1.0])
    tasks = [torch.stack([(0.8 + 0.01 * n) * shared, torch.zeros(4)]) for n in range(10)]
    tasks.append(torch.stack([1.0 * own, torch.zeros(4)]))
    tasks.append(torch.zeros(1, 4))  # one completion: no pair, 0.0
    values = pool_information(tasks)
    assert values[-1] == 0.0
    assert max(range(11), key=lambda t: values[t]) < 10
    assert values[10] < min(values[:10])
    assert bald(tasks[10]) > max(bald(t) for t in tasks[:10])
    assert pool_information([torch.zeros(1, 4)]) == [0.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rankings": [[[[0], [1]]]]}, r"rankings: 1 tasks, but features has 2"),
        ({"rankings": [[[[0], [3]]], []]}, r"rankings\[0\]\[0\]: completion index 3 outside 0..1"),
        ({"rankings": [[[[0], [0]]], []]}, r"rankings\[0\]\[0\]: completion 0 appears twice"),
        ({"rankings": [[[[0], []]], []]}, r"rankings\[0\]\[0\]: empty group at position 1"),
        ({"rankings": [[[[0, 1]]], []]}, r"rankings: no ranking orders two completions"),
        ({"features": [torch.zeros(2, 3), torch.zeros(2, 4)]}, r"features\[1\]: hidden size 4, but earlier"),
        ({"features": [torch.zeros(2, 3), torch.zeros(3)]}, r"features\[1\]: expected a \(K, d\) tensor"),
        ({"features": []}, r"features: no tasks"),
        ({"n_heads": 0}, r"n_heads: must be at least 1"),
        ({"weights": [1.0]}, r"weights: expected 2 finite values >= 0, one per task"),
        ({"weights": [1.0, -1.0]}, r"weights: expected 2 finite values >= 0"),
        ({"weights": [float("nan"), 1.0]}, r"weights: expected 2 finite values >= 0"),
    ],
)
def test_bad_fit_input_names_the_field(kwargs, message):
    args = {"features": [torch.zeros(2, 3), torch.zeros(2, 3)], "rankings": [[[[0], [1]]], []], **kwargs}
    with pytest.raises(ValueError, match=message):
        fit_score_heads(**args)


def test_bad_uncertainty_input_names_the_field():
    heads = torch.zeros(5, D + 1)
    every = "disagreement, vote, margin, bald, pool_information"
    with pytest.raises(ValueError, match=rf"method: 'entropy' is not one of {every}$"):
        task_uncertainty(heads, _open_tasks(), method="entropy")
    with pytest.raises(ValueError, match=r"heads: 5 columns, but features have hidden size 6"):
        task_uncertainty(torch.zeros(5, 5), _open_tasks())
    with pytest.raises(ValueError, match=r"heads: expected an \(n_heads, d \+ 1\) tensor"):
        task_uncertainty(torch.zeros(D + 1), _open_tasks())


def test_features_are_what_a_lora_reward_model_head_reads(tiny_model_dir, tmp_path):
    """The trained RM's own score head applied to the features gives its raw scores: features
    are its last-token hidden state, with its formatting, adapter merged."""
    rankings = quality_rankings(12, 3, seed=1)
    cfg = RewardConfig(model=str(tiny_model_dir), mode="lora", val_fraction=0.25, norm_samples=0, autocast=False)
    train_reward(cfg, rankings, tmp_path / "rm")
    items = [(r.prompt, r.completions) for r in rankings[:5]]
    items.append(("one more", ["only one completion"]))
    # fp32 on both sides: bf16 (autocast, on CPUs that have it) moves scores by ~2e-4 here
    features = completion_features(tmp_path / "rm", items, batch_size=3, device="cpu", use_autocast=False)
    scorer = RewardScorer.load(tmp_path / "rm", device="cpu", use_autocast=False)
    d = scorer.model.config.hidden_size
    assert [tuple(f.shape) for f in features] == [(3, d)] * 5 + [(1, d)]
    own_head = torch.cat([scorer.model.score.weight, torch.zeros(1, 1)], dim=1)  # the RM's head, no bias
    prompts = [p for p, cs in items for _ in cs]
    completions = [c for _, cs in items for c in cs]
    expected = scorer.score(prompts, completions, normalize=False)
    got = torch.cat([head_scores(own_head, f)[:, 0] for f in features])
    assert torch.allclose(got, expected, atol=1e-4)
    with pytest.raises(ValueError, match=r"items\[0\]: a task needs at least one completion"):
        completion_features(tmp_path / "rm", [("p", [])], device="cpu")


def test_a_tasks_weight_counts_like_that_many_copies_of_its_rankings():
    """Weights multiply a task's rankings in the loss: weight 2 fits as the task twice, weight 0
    as the task left out."""
    a, b, c = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.eye(2)
    first, second = [[[0], [1]]], [[[1], [0]]]
    fit = partial(fit_score_heads, n_heads=1, bootstrap=False, l2=0.1)
    twice = fit([a, b, c], [first, first + first, second])
    assert torch.allclose(fit([a, b, c], [first, first, second], weights=[1, 2, 1]), twice, atol=1e-4)
    left_out = fit([a, c], [first, second])
    assert torch.allclose(fit([a, b, c], [first, first, second], weights=[1, 0, 1]), left_out, atol=1e-4)
    assert torch.equal(fit([a, b], [first, second], weights=[1, 1]), fit([a, b], [first, second]))


def test_lure_weights_make_a_biased_draw_estimate_the_pools_mean_loss():
    """Farquhar et al.'s LURE: over every way to draw 2 of 4 tasks one at a time in proportion to
    fixed scores, the expected weighted mean of the drawn tasks' losses is the pool's mean loss
    exactly (the unweighted one is not); a uniform draw weighs 1."""
    losses, scores = [4.0, 3.0, 1.0, 0.5], [1.0, 2.0, 3.0, 4.0]  # high scores, low losses
    weighted = unweighted = 0.0
    for first, second in itertools.permutations(range(4), 2):
        q1 = scores[first] / sum(scores)
        q2 = scores[second] / (sum(scores) - scores[first])
        v1, v2 = lure_weights([q1, q2], 4)
        weighted += q1 * q2 * (v1 * losses[first] + v2 * losses[second]) / 2
        unweighted += q1 * q2 * (losses[first] + losses[second]) / 2
    assert weighted == pytest.approx(sum(losses) / 4, abs=1e-12)
    assert unweighted < sum(losses) / 4 - 0.3
    assert lure_weights([1 / 4, 1 / 3, 1 / 2], 4) == pytest.approx([1.0, 1.0, 1.0])
    assert lure_weights([0.5, 1.0], 2) == pytest.approx([1.0, 1.0])  # the whole pool: no correction
    with pytest.raises(ValueError, match=r"chances: expected at most pool_size=2 values in \(0, 1\]"):
        lure_weights([0.5, 0.5, 1.0], 2)
    with pytest.raises(ValueError, match=r"chances: expected at most pool_size=3"):
        lure_weights([0.0], 3)
