"""Ranking losses against hand-computed values and their pairwise / full-likelihood definitions."""

import itertools
import math

import pytest
import torch

from worker.ml.losses import better_mask, informative, kwise_loss, pair_accuracy_counts, plackett_luce_loss


def nls(x: float) -> float:
    """-log sigmoid(x), written out."""
    return math.log(1 + math.exp(-x))


def test_kwise_loss_matches_hand_computed_value_on_four_items():
    # order: item 2 > item 0 > item 3 > item 1
    scores = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    levels = torch.tensor([[1, 3, 0, 2]])
    r = {0: 0.5, 1: -1.0, 2: 2.0, 3: 0.0}
    order = [2, 0, 3, 1]
    pairs = [(order[a], order[b]) for a in range(4) for b in range(a + 1, 4)]
    expected = sum(nls(r[i] - r[j]) for i, j in pairs) / 6
    # spelled out: 2>0, 2>3, 2>1, 0>3, 0>1, 3>1
    by_hand = (nls(1.5) + nls(2.0) + nls(3.0) + nls(0.5) + nls(1.5) + nls(1.0)) / 6
    loss, per_ranking = kwise_loss(scores, levels)
    assert expected == pytest.approx(by_hand)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert per_ranking.tolist() == pytest.approx([by_hand], rel=1e-6)


def test_kwise_loss_is_the_mean_over_the_pairwise_expansion():
    torch.manual_seed(1)
    k = 9
    scores = torch.randn(5, k)
    levels = torch.stack([torch.randperm(k) for _ in range(5)])
    loss, _ = kwise_loss(scores, levels)
    per_ranking = []
    for r in range(5):
        pair_losses = []
        for i, j in itertools.permutations(range(k), 2):
            if levels[r, i] < levels[r, j]:
                pair_losses.append(-torch.nn.functional.logsigmoid(scores[r, i] - scores[r, j]))
        assert len(pair_losses) == 36  # C(9, 2)
        per_ranking.append(torch.stack(pair_losses).mean())
    assert loss.item() == pytest.approx(torch.stack(per_ranking).mean().item(), rel=1e-6)


def test_ties_give_no_pairs_and_all_tied_rankings_are_skipped():
    levels = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [0, -1, 1, -1]])
    better = better_mask(levels)
    assert better[0].sum() == 4  # {0,1} x {2,3}, nothing inside a group
    assert not better[0, 0, 1] and not better[0, 1, 0]
    assert better[1].sum() == 0
    assert better[2].sum() == 1 and better[2, 0, 2]  # unranked slots never pair
    assert informative(levels).tolist() == [True, False, True]

    scores = torch.tensor([[1.0, 3.0, 0.0, -2.0], [5.0, -5.0, 0.0, 0.0], [1.0, 99.0, 0.0, -99.0]])
    loss, per_ranking = kwise_loss(scores, levels)
    first = (nls(1.0) + nls(3.0) + nls(3.0) + nls(5.0)) / 4
    third = nls(1.0)
    assert per_ranking.tolist() == pytest.approx([first, 0.0, third], rel=1e-6)
    assert loss.item() == pytest.approx((first + third) / 2, rel=1e-6)


def test_loss_without_any_preference_is_zero_and_differentiable():
    scores = torch.randn(2, 4, requires_grad=True)
    levels = torch.zeros(2, 4, dtype=torch.long)
    for fn in (kwise_loss, plackett_luce_loss):
        loss, _ = fn(scores, levels)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.all(scores.grad == 0)


def test_plackett_luce_matches_hand_computed_value_without_ties():
    # order 1 > 2 > 0: P = e^r1/(e^r0+e^r1+e^r2) * e^r2/(e^r0+e^r2) * 1
    r0, r1, r2 = 0.2, 1.0, -0.5
    scores = torch.tensor([[r0, r1, r2]])
    levels = torch.tensor([[2, 0, 1]])
    term1 = math.log(math.exp(r0) + math.exp(r1) + math.exp(r2)) - r1
    term2 = math.log(math.exp(r0) + math.exp(r2)) - r2
    loss, _ = plackett_luce_loss(scores, levels)
    assert loss.item() == pytest.approx((term1 + term2) / 2, rel=1e-6)


def test_plackett_luce_ties_use_breslow_risk_sets():
    # groups: {0, 1} > {2} > {3}: 0 and 1 are each chosen from {0,1,2,3}; 2 from {2,3};
    # the last group adds no term.
    r = [0.3, -0.2, 1.1, 0.4]
    scores = torch.tensor([r])
    levels = torch.tensor([[0, 0, 1, 2]])
    lse = lambda idx: math.log(sum(math.exp(r[i]) for i in idx))  # noqa: E731
    terms = [lse([0, 1, 2, 3]) - r[0], lse([0, 1, 2, 3]) - r[1], lse([2, 3]) - r[2]]
    loss, _ = plackett_luce_loss(scores, levels)
    assert loss.item() == pytest.approx(sum(terms) / 3, rel=1e-6)


def test_padding_slots_change_nothing_and_keep_gradients_finite():
    scores = torch.tensor([[0.1, 0.7, -0.3, 5.0, -7.0]], requires_grad=True)
    levels = torch.tensor([[1, 0, 2, -1, -1]])
    for fn in (kwise_loss, plackett_luce_loss):
        padded, _ = fn(scores, levels)
        unpadded, _ = fn(scores[:, :3].detach(), levels[:, :3])
        assert padded.item() == pytest.approx(unpadded.item(), rel=1e-6)
        (grad,) = torch.autograd.grad(padded, scores)
        assert torch.isfinite(grad).all() and grad[0, 3:].abs().sum() == 0


def test_pair_accuracy_counts_half_for_exact_score_ties():
    scores = torch.tensor([[3.0, 1.0, 1.0, 2.0]])
    levels = torch.tensor([[0, 1, 2, 3]])
    correct, total = pair_accuracy_counts(scores, levels)
    # pairs: 0>1 ok, 0>2 ok, 0>3 ok, 1>2 tie (0.5), 1>3 wrong, 2>3 wrong
    assert total.item() == 6 and correct.item() == 3.5
