"""DPO from K-way rankings: the losses on hand cases, and training on a tiny model."""

from __future__ import annotations

import itertools
import math

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
