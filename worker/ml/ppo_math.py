"""Pure tensor pieces of PPO for language models, kept apart so each can be hand-checked.

Shapes: B = sequences in the (mini)batch, T = response tokens. ``mask`` is a [B, T] tensor of
1.0 for real response tokens (up to and including the first EOS) and 0.0 for padding after it.
Nothing here touches a model; ``ppo.py`` wires these together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# --- masked statistics -------------------------------------------------------------------------


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (values * mask).sum() if dim is None else (values * mask).sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over the positions where mask is 1 (a fully masked row divides by 1, not 0)."""
    if dim is None:
        return masked_sum(values, mask) / mask.sum().clamp(min=1)
    return masked_sum(values, mask, dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        # Bessel's correction over the counted positions only.
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Scale to unit variance over the masked positions; padding comes back as 0.

    ``shift_mean=False`` keeps the mean (used for rewards, whose sign carries meaning).
    """
    mean, variance = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


# --- log-probabilities and entropy -------------------------------------------------------------


def logprobs_of_labels(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) under ``logits``: [B, T, V], [B, T] -> [B, T] (float32 for stable sums)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return torch.gather(logp, 2, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: [B, T, V] -> [B, T]."""
    logits = logits.float()
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


# --- KL between policy and reference (on samples from the policy) --------------------------------


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from tokens sampled by the policy.

    k1 = log p - log q: unbiased, can be negative per token (what lm-human-preferences uses).
    k2 = (log p - log q)^2 / 2: biased, low variance, always >= 0.
    k3 = (r - 1) - log r with r = q / p: unbiased and always >= 0 (Schulman, "Approximating KL").
    """
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator must be one of k1, k2, k3, got {kind!r}")


def per_token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Reward at every response token: -kl_coef * KL, plus the sequence score on its last token.

    scores [B], kl [B, T], mask [B, T] -> rewards [B, T]. The last token is the last masked-in
    position (the EOS when there is one, else the final sampled token).
    """
    rewards = -kl_coef * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)  # [B]
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


# --- advantages --------------------------------------------------------------------------------


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens.

    rewards, values, mask [B, T] -> (advantages [B, T], returns [B, T]). Padding positions have
    value and reward 0, so the bootstrap value after the last real token is 0 (episode ends).
    """
    rewards, values = rewards * mask, values * mask
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


# --- clipped losses ----------------------------------------------------------------------------


def clipped_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, averaged over real tokens. Returns (loss, stats)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean((clipped > unclipped).float(), mask),
            # 0.5 * E[(log ratio)^2]: how far this minibatch moved from the rollout policy.
            "approx_kl": 0.5 * masked_mean(log_ratio**2, mask),
        }
    return loss, stats


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """0.5 * max((v - R)^2, (clip(v, v_old +- eps) - R)^2), averaged over real tokens."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask)
    with torch.no_grad():
        stats = {"value_clip_fraction": masked_mean((clipped_err > unclipped_err).float(), mask)}
    return loss, stats


# --- KL coefficient controllers ----------------------------------------------------------------


class FixedKLController:
    """A constant KL coefficient (beta)."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_samples: int) -> None:
        return None


class AdaptiveKLController:
    """Ziegler et al. (2019): move beta so the observed KL tracks ``target``.

    The proportional error is clipped to +-20% and scaled by how many samples the step saw
    relative to ``horizon`` (in samples), so beta changes smoothly: beta *= 1 + e * n / horizon.
    """

    def __init__(self, kl_coef: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError("adaptive KL needs target > 0 and horizon > 0")
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, current_kl: float, n_samples: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.horizon
