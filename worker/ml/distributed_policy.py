"""The policy trainers across N data-parallel ranks: launchers for the parent, and the stages
each rank runs (worker/ml/distributed.py's rank_stages; docs/distributed.md).

DPO: every rank takes a slice of every global batch (distributed_dpo.py); N processes train as
one within float rounding. PPO, RLOO, GRPO: every rank rolls out its share of each iteration's
prompts (distributed_rl.py); they train as one process only with `rollout_seeds`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from worker.ml.data import Prompt, Ranking, read_rankings
from worker.ml.distributed import (
    DistributedConfig,
    RankReporter,
    RankStage,
    StepHook,
    launch_stage,
    ranking_record,
    read_lines,
)
from worker.ml.distributed_rl import check_divides
from worker.ml.dpo_config import DPOConfig
from worker.ml.models import Progress
from worker.ml.ppo_config import PPOConfig
from worker.ml.rloo_config import RLOOConfig


def _ddp_only(dist: DistributedConfig, what: str) -> None:
    # the policy steps' LoRA adapters are small; sharding them buys nothing, and their
    # rank-0-only evaluation forwards the unwrapped model, which a sharded one cannot do
    if dist.strategy != "ddp" or dist.accelerate_config:
        raise ValueError(f"strategy: {what} runs data-parallel with DDP only (docs/distributed.md)")


def launch_dpo(
    cfg: DPOConfig,
    rankings: Sequence[Ranking],
    out_dir: str | Path,
    on_progress: Progress | None = None,
    on_step: StepHook | None = None,
    *,
    held_out: Sequence[Ranking] | None = None,
    dist: DistributedConfig,
) -> dict[str, Any]:
    """dpo.train_dpo across `dist.processes` ranks (DDP), called as train_dpo is; returns rank
    0's metrics (as train_dpo's)."""
    _ddp_only(dist, "DPO")
    records = [ranking_record(r) for r in rankings]
    held = None if held_out is None else [ranking_record(r) for r in held_out]
    return launch_stage("dpo", cfg.to_dict(), cfg.device, records, held, out_dir, dist, on_progress, on_step)


def _rank_dpo(accelerator, spec: dict[str, Any], run: Path, reporter: RankReporter) -> dict[str, Any]:
    from worker.ml.dpo import train_dpo

    held = read_rankings(run / "eval.jsonl") if (run / "eval.jsonl").is_file() else None
    cfg, rankings = DPOConfig.from_dict(spec["config"]), read_rankings(run / "data.jsonl")
    return train_dpo(cfg, rankings, spec["out_dir"], reporter, reporter.point, held_out=held, accelerator=accelerator)


def launch_rloo(
    cfg: RLOOConfig,
    prompts: Sequence[Prompt],
    reward_model: str | os.PathLike | None,
    out_dir: str | Path,
    on_progress: Progress | None = None,
    *,
    on_step: StepHook | None = None,
    dist: DistributedConfig,
    rollout_seeds: bool = False,
) -> dict[str, Any]:
    """rloo.train_rloo (RLOO or GRPO) across `dist.processes` ranks, called as train_rloo is but
    with the reward as an artifact folder (None with reward_source "zero"); rank 0's metrics."""
    return _launch_sampled("rloo", cfg, prompts, reward_model, out_dir, on_progress, on_step, dist, rollout_seeds)


def launch_ppo(
    cfg: PPOConfig,
    prompts: Sequence[Prompt],
    reward_model: str | os.PathLike | None,
    out_dir: str | Path,
    on_progress: Progress | None = None,
    *,
    on_step: StepHook | None = None,
    dist: DistributedConfig,
    rollout_seeds: bool = False,
) -> dict[str, Any]:
    """ppo.train_policy across `dist.processes` ranks, as launch_rloo."""
    return _launch_sampled("ppo", cfg, prompts, reward_model, out_dir, on_progress, on_step, dist, rollout_seeds)


def _launch_sampled(
    stage: str, cfg, prompts, reward_model, out_dir, on_progress, on_step, dist, rollout_seeds
) -> dict[str, Any]:
    _ddp_only(dist, stage.upper())
    per_step = {"prompts_per_step": cfg.prompts_per_step} if stage == "rloo" else {"batch_size": cfg.batch_size}
    check_divides(dist.processes, **per_step, minibatch_size=cfg.minibatch_size)  # before starting any rank
    if reward_model is not None and not isinstance(reward_model, (str, os.PathLike)):
        raise ValueError("reward_model: a distributed run loads the reward from its artifact folder; pass the path")
    reward = None if reward_model is None else str(Path(reward_model).resolve())
    extra = {"reward_model": reward, "rollout_seeds": rollout_seeds}
    return launch_stage(
        stage, cfg.to_dict(), cfg.device, list(prompts), None, out_dir, dist, on_progress, on_step, extra
    )


def _rank_sampled(train: Callable[..., dict[str, Any]], config: Any) -> RankStage:
    def run(accelerator, spec: dict[str, Any], run_dir: Path, reporter: RankReporter) -> dict[str, Any]:
        cfg, prompts = config.from_dict(spec["config"]), read_lines(run_dir / "data.jsonl")
        return train(
            cfg, prompts, spec["reward_model"], spec["out_dir"], reporter,
            on_step=reporter.point, accelerator=accelerator, rollout_seeds=spec["rollout_seeds"],
        )  # fmt: skip

    return run


def _rank_rloo(accelerator, spec: dict[str, Any], run: Path, reporter: RankReporter) -> dict[str, Any]:
    from worker.ml.rloo import train_rloo

    return _rank_sampled(train_rloo, RLOOConfig)(accelerator, spec, run, reporter)


def _rank_ppo(accelerator, spec: dict[str, Any], run: Path, reporter: RankReporter) -> dict[str, Any]:
    from worker.ml.ppo import train_policy

    return _rank_sampled(train_policy, PPOConfig)(accelerator, spec, run, reporter)


POLICY_STAGES: dict[str, RankStage] = {"dpo": _rank_dpo, "rloo": _rank_rloo, "ppo": _rank_ppo}
