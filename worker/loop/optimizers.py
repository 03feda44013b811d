"""The round's policy step, one entry per optimizer a round config may name (`optimizer`).

Each entry turns a PolicyRun (inputs read by worker/loop/policy.py) into a trained policy
adapter in `run.out` by calling one worker.ml stage, and says what to keep: the config it
trained with, a summary for the round's metrics, and one line for the round's log. A new
optimizer is one function and one OPTIMIZERS row here, plus its settings section in
app/rounds/schemas.py and its charts in app/rounds/views.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from worker.loop import data
from worker.loop.configs import distributed_config, dpo_config, kto_config, ppo_config, rloo_config
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
    judgments: list[Any]
    """DPO, KTO: the train-split judgments of the round's policy line (or of this round only)."""
    held_out: list[Any]
    """DPO, KTO: the validation-split judgments of the same rounds (the held-out metrics)."""
    out: Path
    reporter: Reporter
    on_step: StepHook


class Trained(NamedTuple):
    config: dict[str, Any]
    summary: dict[str, Any]
    message: str


class JudgmentReader(NamedTuple):
    """How an optimizer that trains on judgments directly (DPO, KTO) reads them."""

    setting: str
    """The round setting saying which rounds' judgments: "policy_line" or "this_round"."""
    load: Callable[..., list[Any]]
    """(db, *, project_id, round_ids, split, weights) -> worker.ml examples (worker/loop/data.py)."""


@dataclass(frozen=True)
class Optimizer:
    name: str
    label: str
    train: Callable[[PolicyRun], Trained]
    needs_reward_model: bool
    reads: JudgmentReader | None = None


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
KTO_KEYS = (
    "val_auc",
    "val_auc_before",
    "val_accuracy",
    "val_accuracy_before",
    "val_loss",
    "val_loss_before",
    "val_kl_per_token",
    "val_examples",
    "train_loss_first",
    "train_loss_last",
    "steps",
    "train_examples",
    "train_desirable",
)


def _sampled_summary(history: dict[str, Any], keys: tuple[str, ...], prompts: int) -> tuple[dict[str, Any], str]:
    summary = {key: round(history[key][-1], 5) for key in keys if history.get(key)}
    summary.update(
        score_first=round(history["score"][0], 5),
        steps=len(history["score"]),
        seconds=round(history["total_seconds"], 2),
        prompts=prompts,
        processes=history.get("processes", 1),  # > 1: trained data-parallel (worker/ml/distributed_rl.py)
    )
    return summary, f"score {summary['score_first']} → {summary.get('score')}, KL {summary.get('kl')}"


def _rollouts_needed(run: PolicyRun) -> None:
    if not run.prompts:
        raise ValueError("prompts: the rounds so far have no train-split prompts to sample from")


def train_ppo(run: PolicyRun) -> Trained:
    from worker.ml.ppo import train_policy

    _rollouts_needed(run)
    cfg = ppo_config(run.config, model=run.start)
    dist = distributed_config()  # a worker owning N GPUs rolls out and trains on all of them
    if dist is not None:
        from worker.ml.distributed_policy import launch_ppo

        train_policy = functools.partial(launch_ppo, dist=dist)
    history = train_policy(cfg, run.prompts, run.reward_path, run.out, run.reporter, on_step=run.on_step)
    return Trained(cfg.to_dict(), *_sampled_summary(history, PPO_KEYS, len(run.prompts)))


def _train_group(estimator: str) -> Callable[[PolicyRun], Trained]:
    def train(run: PolicyRun) -> Trained:
        from worker.ml.rloo import train_rloo

        _rollouts_needed(run)
        cfg = rloo_config(run.config, model=run.start, estimator=estimator)
        dist = distributed_config()  # a worker owning N GPUs rolls out and trains on all of them
        if dist is not None:
            from worker.ml.distributed_policy import launch_rloo

            train_rloo = functools.partial(launch_rloo, dist=dist)
        history = train_rloo(cfg, run.prompts, run.reward_path, run.out, run.reporter, on_step=run.on_step)
        return Trained(cfg.to_dict(), *_sampled_summary(history, GROUP_KEYS, len(run.prompts)))

    return train


def _train_on_judgments(
    stage: Callable[..., dict[str, Any]], build: Callable[..., Any], keys: tuple[str, ...], what: str
) -> Callable[[PolicyRun], Trained]:
    """A policy step that trains on the round line's judgments (DPO on rankings, KTO on good/bad
    labels) and measures on the held-out ones."""

    def train(run: PolicyRun) -> Trained:
        if not run.judgments:
            raise ValueError(f"{what}: the round's policy line has none on train-split prompts")
        cfg = build(run.config, model=run.start, round_id=run.round_id)
        metrics = stage(cfg, run.judgments, run.out, run.reporter, run.on_step, held_out=run.held_out)
        summary = {key: metrics[key] for key in keys if metrics.get(key) is not None}
        summary["seconds"] = metrics["train_seconds"]
        headline = "val_auc" if "val_auc" in keys else "val_accuracy"
        message = (
            f"held-out {headline} {summary.get(headline + '_before')} → {summary.get(headline)}, "
            f"KL per token {summary.get('val_kl_per_token')}, on {len(run.judgments)} {what}"
        )
        return Trained(cfg.to_dict(), summary, message)

    return train


def train_dpo(run: PolicyRun) -> Trained:
    from worker.ml.dpo import train_dpo as stage

    dist = distributed_config()  # a worker owning N GPUs trains on all of them (DDP)
    if dist is not None:
        from worker.ml.distributed_policy import launch_dpo

        stage = functools.partial(launch_dpo, dist=dist)
    return _train_on_judgments(stage, dpo_config, DPO_KEYS, "rankings")(run)


def train_kto(run: PolicyRun) -> Trained:
    from worker.ml.kto import train_kto as stage

    return _train_on_judgments(stage, kto_config, KTO_KEYS, "good/bad labels")(run)


OPTIMIZERS: dict[str, Optimizer] = {
    "ppo": Optimizer("ppo", "PPO", train_ppo, needs_reward_model=True),
    "dpo": Optimizer("dpo", "DPO", train_dpo, False, JudgmentReader("dpo.rankings_from", data.rankings)),
    "kto": Optimizer("kto", "KTO", train_kto, False, JudgmentReader("kto.labels_from", data.labelled)),
    "rloo": Optimizer("rloo", "RLOO", _train_group("rloo"), needs_reward_model=True),
    "grpo": Optimizer("grpo", "GRPO", _train_group("grpo"), needs_reward_model=True),
}
"""Round config `optimizer` → its policy step (app/rounds/schemas.Optimizer lists the same names)."""
