"""RLOO and PPO in 2 real processes (accelerate launch, torchrun, gloo on CPU).

Each rank samples its own share of the prompts, so a 2-process run does not sample what one
process samples from the same seed; equality is tested with keyed rollouts (`rollout_seeds`:
each prompt's samples drawn after seeding by its place in the iteration) and one update
minibatch per iteration. Then rollouts, RLOO's group advantages, PPO's advantage whitening (its
mean and variance all-reduced over both ranks' tokens), the adaptive KL controller and the
token-weighted loss are the same computations, and 2 processes train as one within float
rounding. Measured here (printed with -s): the same sampled tokens (response lengths equal),
per-iteration statistics within ~5e-6 (entropy ~3e-5: float32 sums over the vocabulary), LoRA
weights within ~2e-5 (RLOO) / ~2e-6 (PPO; Adam's first steps amplify rounding where a gradient
is near zero) while training moves LoRA's B matrices (zero at the start) to ~2e-2. Allowed:
1e-4 on statistics and weights. A rank's share lost, whitening over one rank's tokens, or a
loss not weighted by the global token count moves them by 1e-3 or more.
"""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from tests.ml.ppo_helpers import PROMPTS
from worker.ml.config import RewardConfig
from worker.ml.distributed import DistributedConfig
from worker.ml.distributed_policy import launch_ppo, launch_rloo
from worker.ml.ppo import PPOConfig, train_policy
from worker.ml.reward import train_reward
from worker.ml.rloo import RLOOConfig, train_rloo
from worker.ml.synthetic import quality_rankings

STAT_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-4
DIST = DistributedConfig(processes=2, timeout_seconds=240, collective_timeout_seconds=60)


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, tmp_path_factory):
    """A reward model artifact (the ranks load it from its folder): one step is enough for
    scores that differ between responses."""
    path = tmp_path_factory.mktemp("rm") / "rm"
    cfg = RewardConfig(model=str(tiny_model_dir), batch_rankings=8, val_fraction=0.2, autocast=False, norm_samples=8)
    train_reward(cfg, quality_rankings(10, 4, seed=3), path)
    return path


def _compare(one: dict, two: dict, keys: tuple[str, ...], tmp_path, label: str) -> None:
    assert two["processes"] == 2
    gaps = {key: max(abs(a - b) for a, b in zip(one[key], two[key], strict=True)) for key in keys}
    print(f"{label}, 1 vs 2 processes: per-iteration statistic differences {gaps}")
    assert max(gaps.values()) < STAT_TOLERANCE, gaps
    first, second = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("one", "two"))
    assert first.keys() == second.keys()
    gap = max(float((first[k] - second[k]).abs().max()) for k in first)
    moved = max(float(t.abs().max()) for k, t in first.items() if "lora_B" in k)
    print(f"{label}: largest weight difference {gap:.2e}; largest LoRA B weight after training {moved:.2e}")
    assert gap < WEIGHT_TOLERANCE and moved > 50 * WEIGHT_TOLERANCE


def test_rloo_in_two_processes_with_keyed_rollouts_trains_as_one(tiny_model_dir, reward_dir, tmp_path):
    # 4 prompts x k=4 per iteration: each rank rolls out 2 prompts' whole groups
    cfg = RLOOConfig(
        model=str(tiny_model_dir), steps=2, prompts_per_step=4, k=4, minibatch_size=16,
        max_new_tokens=6, learning_rate=1e-2, device="cpu", autocast=False,
    )  # fmt: skip
    one = train_rloo(cfg, PROMPTS, reward_dir, tmp_path / "one", rollout_seeds=True)
    two = launch_rloo(cfg, PROMPTS, reward_dir, tmp_path / "two", dist=DIST, rollout_seeds=True)
    assert max(two["advantage_abs_max"]) > 0  # the groups' scores differ: there was a signal
    keys = ("score", "kl", "policy_loss", "advantage_abs_max", "response_length", "group_reward_std")
    _compare(one, two, keys, tmp_path, "RLOO")


def test_ppo_in_two_processes_with_keyed_rollouts_trains_as_one(tiny_model_dir, reward_dir, tmp_path):
    # adaptive KL: the controller must see the KL of both ranks' samples to take the same beta
    cfg = PPOConfig(
        model=str(tiny_model_dir), steps=2, batch_size=4, minibatch_size=4, ppo_epochs=1, max_new_tokens=6,
        learning_rate=1e-2, device="cpu", autocast=False, adaptive_kl_target=0.01, whiten_rewards=True,
    )  # fmt: skip
    one = train_policy(cfg, PROMPTS, reward_dir, tmp_path / "one", rollout_seeds=True)
    two = launch_ppo(cfg, PROMPTS, reward_dir, tmp_path / "two", dist=DIST, rollout_seeds=True)
    assert two["kl_coef"][1] != two["kl_coef"][0]  # beta adapted after the first iteration
    keys = ("score", "kl", "kl_coef", "policy_loss", "value_loss", "response_length", "entropy")
    _compare(one, two, keys, tmp_path, "PPO")


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tiny_model_dir, reward_dir, tmp_path):
    cfg = RLOOConfig(model=str(tiny_model_dir), prompts_per_step=3, k=2, minibatch_size=6, device="cpu")
    with pytest.raises(ValueError, match="prompts_per_step: 3 does not split over 2 processes"):
        launch_rloo(cfg, PROMPTS, reward_dir, tmp_path / "p", dist=DIST)
