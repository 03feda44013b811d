"""Hand-checked cases for the pure PPO pieces (no model involved)."""

from __future__ import annotations

import math

import pytest
import torch

from worker.ml import ppo_math as pm


def test_gae_matches_hand_computed_case():
    # Row 0: three real tokens, score 1 on the last one. Row 1: two real tokens, then padding
    # whose reward/value (5, 9) must be ignored.
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 0.2, 0.1], [1.0, 1.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])

    advantages, returns = pm.gae(rewards, values, mask, gamma=1.0, lam=0.95)

    # Row 0, backwards: d2 = 1 - 0.1 = 0.9; d1 = 0.1 - 0.2 = -0.1 -> A1 = -0.1 + 0.95*0.9 = 0.755;
    # d0 = 0.2 - 0.5 = -0.3 -> A0 = -0.3 + 0.95*0.755 = 0.41725.
    # Row 1: bootstrap after the last real token is 0: d1 = 2 - 1 = 1; d0 = 1 - 1 = 0 -> 0.95.
    expected_adv = torch.tensor([[0.41725, 0.755, 0.9], [0.95, 1.0, 0.0]])
    torch.testing.assert_close(advantages, expected_adv)
    torch.testing.assert_close(returns, torch.tensor([[0.91725, 0.955, 1.0], [1.95, 2.0, 0.0]]))


def test_gae_with_discount_and_no_lambda_smoothing_is_discounted_td():
    rewards = torch.tensor([[1.0, 1.0]])
    values = torch.tensor([[0.0, 0.0]])
    mask = torch.ones(1, 2)
    advantages, _ = pm.gae(rewards, values, mask, gamma=0.5, lam=1.0)
    # lam=1 and zero values: advantage = discounted return = [1 + 0.5*1, 1].
    torch.testing.assert_close(advantages, torch.tensor([[1.5, 1.0]]))


def test_whitening_uses_only_masked_positions():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])

    whitened = pm.masked_whiten(values, mask)

    # Over {1, 2, 3, 4}: mean 2.5, unbiased variance 5/3.
    std = math.sqrt(5 / 3)
    expected = torch.tensor([[-1.5 / std, -0.5 / std, 0.0], [0.5 / std, 1.5 / std, 0.0]])
    torch.testing.assert_close(whitened, expected, atol=1e-6, rtol=1e-6)
    kept = whitened[mask.bool()]
    assert abs(kept.mean().item()) < 1e-6
    assert abs(kept.std().item() - 1.0) < 1e-5


def test_whitening_without_mean_shift_keeps_the_mean():
    values = torch.tensor([[2.0, 4.0, 6.0]])
    mask = torch.ones(1, 3)
    whitened = pm.masked_whiten(values, mask, shift_mean=False)
    assert whitened.mean().item() == pytest.approx(4.0, abs=1e-6)
    assert whitened.std().item() == pytest.approx(1.0, abs=1e-5)


def test_clipped_policy_loss_hand_check_and_zero_gradient_when_clipped():
    # Ratios 1.5, 0.5, 1.0 and 0.5 with advantages +1, +1, -1, -1 and clip 0.2:
    #   1.5,+1: max(-1.5, -1.2) = -1.2 (clipped)   0.5,+1: max(-0.5, -0.8) = -0.5
    #   1.0,-1: 1.0                                0.5,-1: max(0.5, 0.8) = 0.8 (clipped)
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.0, 0.5]])).requires_grad_()
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4)

    loss, stats = pm.clipped_policy_loss(new, old, advantages, mask, clip_range=0.2)

    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.0 + 0.8) / 4)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    expected_kl = 0.5 * (math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 4
    assert stats["approx_kl"].item() == pytest.approx(expected_kl, rel=1e-5)
    loss.backward()
    # d/dlogp of -A*exp(logp)/4 on unclipped tokens; clipped tokens get no gradient.
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, -0.5 / 4, 1.0 / 4, 0.0]]))


def test_clipped_policy_loss_ignores_padding():
    old = torch.zeros(1, 2)
    new = torch.tensor([[0.0, 5.0]])
    loss, stats = pm.clipped_policy_loss(
        new, old, torch.tensor([[2.0, 1.0]]), torch.tensor([[1.0, 0.0]]), clip_range=0.2
    )
    assert loss.item() == pytest.approx(-2.0)
    assert stats["clip_fraction"].item() == 0.0


def test_clipped_value_loss_hand_check():
    # Token 0: v=1 moved 1.0 from v_old=0 -> clipped to 0.2; errors 1.0 vs 3.24 -> 3.24.
    # Token 1: unchanged, error 0.25 either way (not counted as clipped).
    loss, stats = pm.clipped_value_loss(
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.0, 0.0]]),
        torch.tensor([[2.0, 0.5]]),
        torch.ones(1, 2),
        clip_range=0.2,
    )
    assert loss.item() == pytest.approx(0.5 * (3.24 + 0.25) / 2)
    assert stats["value_clip_fraction"].item() == pytest.approx(0.5)


def test_per_token_rewards_put_the_score_on_the_last_real_token():
    scores = torch.tensor([1.0, 2.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rewards = pm.per_token_rewards(scores, kl, mask, kl_coef=0.1)
    torch.testing.assert_close(rewards, torch.tensor([[-0.01, -0.02, 0.97], [1.95, 0.0, 0.0]]))


def test_kl_estimators_agree_with_exact_kl_on_samples():
    torch.manual_seed(0)
    p = torch.distributions.Categorical(logits=torch.tensor([2.0, 0.5, -1.0, 0.0]))
    q = torch.distributions.Categorical(logits=torch.tensor([1.0, 1.0, 0.0, -0.5]))
    exact = torch.distributions.kl_divergence(p, q).item()
    samples = p.sample((200_000,))
    logp, logq = p.log_prob(samples), q.log_prob(samples)

    k3 = pm.kl_estimate(logp, logq, "k3")
    assert (k3 >= 0).all()
    assert pm.kl_estimate(logp, logq, "k1").mean().item() == pytest.approx(exact, rel=0.03)
    assert k3.mean().item() == pytest.approx(exact, rel=0.03)
    with pytest.raises(ValueError, match="k1, k2, k3"):
        pm.kl_estimate(logp, logq, "k4")


def test_logprobs_and_entropy_from_logits():
    logits = torch.randn(2, 3, 7)
    labels = torch.randint(0, 7, (2, 3))
    expected = torch.distributions.Categorical(logits=logits).log_prob(labels)
    torch.testing.assert_close(pm.logprobs_of_labels(logits, labels), expected)
    uniform = torch.zeros(1, 1, 8)
    assert pm.entropy_from_logits(uniform).item() == pytest.approx(math.log(8))


def test_masked_mean_per_row_and_empty_row():
    values = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(pm.masked_mean(values, mask, dim=1), torch.tensor([2.0, 0.0]))


def test_adaptive_kl_controller_moves_towards_target_with_clipped_error():
    ctl = pm.AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    ctl.update(current_kl=12.0, n_samples=64)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.2 * (1 + 0.2 * 64 / 10_000))
    ctl = pm.AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    ctl.update(current_kl=5.4, n_samples=100)  # error -0.1
    assert ctl.value == pytest.approx(0.2 * (1 - 0.1 * 100 / 10_000))
    fixed = pm.FixedKLController(0.05)
    fixed.update(100.0, 64)
    assert fixed.value == 0.05
