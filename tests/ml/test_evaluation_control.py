"""The zero-reward control (PPOConfig.reward_source "zero"): PPO runs on the KL penalty alone and
never consults the reward it was given."""

from __future__ import annotations

import pytest

from tests.ml.ppo_helpers import PROMPTS, small_cfg
from worker.ml.ppo import train_policy


def test_zero_reward_control_trains_on_kl_alone(tiny_model_dir, tmp_path):
    def never(prompts, responses):
        raise AssertionError("the zero-reward control must not score with the reward model")

    cfg = small_cfg(tiny_model_dir, steps=2, reward_source="zero", kl_coef=0.1)
    history = train_policy(cfg, PROMPTS, never, tmp_path / "policy")
    assert history["score"] == [0.0, 0.0]
    assert (tmp_path / "policy" / "adapter_config.json").is_file()
    with pytest.raises(ValueError, match="^reward_source:"):
        small_cfg(tiny_model_dir, reward_source="random")
