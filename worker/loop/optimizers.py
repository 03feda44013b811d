"""The round's policy step, one entry per optimizer a round config may name (`optimizer`).

Each entry turns a PolicyRun (inputs read by worker/loop/policy.py) into a trained policy
adapter in `run.out` by calling one worker.ml stage, and says what to keep: the config it
trained with, a summary for the round's metrics, and one line for the round's log. A new
optimizer is one function and one OPTIMIZERS row here, plus its settings section in
app/rounds/schemas.py and its charts in app/rounds/views.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from worker.loop.configs import dpo_config, ppo_config, rloo_config
from worker.loop.runtime import Reporter

StepHook = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class PolicyRun:
    """What a policy step reads from the database before training (sessions closed by then)."""

    round_id: int
    config: dict[str, Any]
    start: str
    """Folder of the starting policy: a model, an SFT adapter, or an earlier round's policy adapter."""
    reward_path: str | None
    prompts: list[Any]
    """Train-split prompts of this and earlier rounds (PPO, RLOO, GRPO roll out on them)."""
    rankings: list[Any]
    """DPO: train-split rankings of the round's policy line (or of this round only)."""
    held_out: list[Any]
    """DPO: validation-split rankings of the same rounds (the held-out implicit-reward accuracy)."""
    out: Path
    reporter: Reporter
    on_step: StepHook


class Trained(NamedTuple):
    config: dict[str, Any]
    summary: dict[str, Any]
    message: str


@dataclass(frozen=True)
class Optimizer:
    name: str
    label: str
    train: Callable[[PolicyRun], Trained]
    needs_reward_model: bool
    needs_rankings: bool = False


SAMPLED_KEYS = (
    "score",
    "kl",
    "entropy",
    "response_length",
    "kl_coef",
    "policy_loss",
    "clip_fraction",
    "approx_kl",
    "no_eos_fraction",
)
"""Per-step statistics every sampling optimizer (PPO, RLOO, GRPO) reports; their last values are kept."""
PPO_KEYS = (*SAMPLED_KEYS, "value_loss")
GROUP_KEYS = (*SAMPLED_KEYS, "advantage_std", "group_reward_std", "zero_std_groups")
DPO_KEYS = (
    "val_accuracy",
    "val_accuracy_before",
    "val_margin",
    "val_loss",
    "val_loss_before",
    "val_kl_per_token",
    "val_chosen_drift",
    "val_rejected_drift",
    "val_pairs",
    "train_loss_first",
    "train_loss_last",
    "steps",
    "train_rankings",
    "val_rankings",
)


def _sampled_summary(history: dict[str, Any], keys: tuple[str, ...], prompts: int) -> tuple[dict[str, Any], str]:
    summary = {key: round(history[key][-1], 5) for key in keys if history.get(key)}
    summary.update(
        score_first=round(history["score"][0], 5),
        steps=len(history["score"]),
        seconds=round(history["total_seconds"], 2),
        prompts=prompts,
    )
    return summary, f"score {summary['score_first']} → {summary.get('score')}, KL {summary.get('kl')}"


def _rollouts_needed(run: PolicyRun) -> None:
    if not run.prompts:
        raise ValueError("prompts: the rounds so far have no train-split prompts to sample from")


def train_ppo(run: PolicyRun) -> Trained:
    from worker.ml.ppo import train_policy

    _rollouts_needed(run)
    cfg = ppo_config(run.config, model=run.start)
    history = train_policy(cfg, run.prompts, run.reward_path, run.out, run.reporter, on_step=run.on_step)
    return Trained(cfg.to_dict(), *_sampled_summary(history, PPO_KEYS, len(run.prompts)))


def _train_group(estimator: str) -> Callable[[PolicyRun], Trained]:
    def train(run: PolicyRun) -> Trained:
        from worker.ml.rloo import train_rloo

        _rollouts_needed(run)
        cfg = rloo_config(run.config, model=run.start, estimator=estimator)
        history = train_rloo(cfg, run.prompts, run.reward_path, run.out, run.reporter, on_step=run.on_step)
        return Trained(cfg.to_dict(), *_sampled_summary(history, GROUP_KEYS, len(run.prompts)))

    return train


def train_dpo(run: PolicyRun) -> Trained:
    from worker.ml.dpo import train_dpo as train

    if not run.rankings:
        raise ValueError("rankings: the round's policy line has no train-split rankings for DPO")
    cfg = dpo_config(run.config, model=run.start, round_id=run.round_id)
    metrics = train(cfg, run.rankings, run.out, run.reporter, run.on_step, held_out=run.held_out)
    summary = {key: metrics[key] for key in DPO_KEYS if metrics.get(key) is not None}
    summary["seconds"] = metrics["train_seconds"]
    message = (
        f"held-out implicit-reward accuracy {summary.get('val_accuracy_before')} → {summary.get('val_accuracy')}, "
        f"KL per token {summary.get('val_kl_per_token')}, on {summary['train_rankings']} rankings"
    )
    return Trained(cfg.to_dict(), summary, message)


OPTIMIZERS: dict[str, Optimizer] = {
    "ppo": Optimizer("ppo", "PPO", train_ppo, needs_reward_model=True),
    "dpo": Optimizer("dpo", "DPO", train_dpo, needs_reward_model=False, needs_rankings=True),
    "rloo": Optimizer("rloo", "RLOO", _train_group("rloo"), needs_reward_model=True),
    "grpo": Optimizer("grpo", "GRPO", _train_group("grpo"), needs_reward_model=True),
}
"""Round config `optimizer` → its policy step (app/rounds/schemas.Optimizer lists the same names)."""
