"""The policy trainers across N data-parallel ranks: launchers for the parent, and the stages
each rank runs (worker/ml/distributed.py's rank_stages; docs/distributed.md).

DPO: every rank takes a slice of every global batch (distributed_dpo.py); N processes train as
one within float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.ml.data import Ranking, read_rankings
from worker.ml.distributed import DistributedConfig, RankReporter, RankStage, StepHook, launch_stage, ranking_record
from worker.ml.dpo_config import DPOConfig
from worker.ml.models import Progress


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


POLICY_STAGES: dict[str, RankStage] = {"dpo": _rank_dpo}
