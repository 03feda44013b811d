"""Data-parallel training across N processes through accelerate (docs/distributed.md).

`launch_reward` / `launch_sft` (and distributed_policy.py's launch_dpo / launch_rloo /
launch_ppo) run `accelerate launch` (torchrun underneath) as a subprocess: N ranks of
`python -m worker.ml.distributed STAGE`, gloo on CPU, NCCL on GPUs; `rank_stages()` maps each
stage to the trainer a rank runs. The parent tails the progress JSONL rank 0 writes, forwards it
to on_progress (and on_step), and returns rank 0's metrics; a rank that fails (or a run past its
time limit) ends every rank and raises DistributedRunError.

Inside a rank, train_reward(..., accelerator=...) builds the same global batches as one process
would, from the same seed; each rank takes a slice of every batch (distributed_reward.py), the
loss is normalised by the global batch's count, and the all-reduced gradient is that of the
whole batch. Rank 0 alone evaluates and saves. train_sft does the same with its planned
token-budget steps (sft.py `_data_parallel_step`; DDP only), train_dpo with its batches of
rankings (distributed_dpo.py); PPO, RLOO and GRPO split each iteration's prompts
(distributed_rl.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from worker.ml.config import RewardConfig, _check, _Config
from worker.ml.data import Ranking, write_jsonl
from worker.ml.models import Progress
from worker.ml.sft_config import SFTConfig

STRATEGIES = ("ddp", "fsdp", "deepspeed2", "deepspeed3")
MIXED_PRECISIONS = ("no", "bf16", "fp16")
FAULT_ENV = "RANKLAB_DISTRIBUTED_FAULT"
"""Fault injection for tests and drills: "RANK:STEP" makes that rank raise after that training
step, "RANK:STEP:stall" makes it hang there (the others then time out in their all-reduce)."""
_REPO_ROOT = Path(__file__).resolve().parents[2]


class DistributedRunError(RuntimeError):
    """A distributed run failed: a rank raised, was killed, or the run passed its time limit."""


@dataclass
class DistributedConfig(_Config):
    processes: int = 1
    """Ranks to start: one per GPU the worker owns (CPU: processes on gloo, for tests)."""
    strategy: str = "ddp"
    """"ddp" (every rank holds the whole model; the default), "fsdp" (parameters, gradients and
    optimizer state sharded, for models that do not fit one GPU), "deepspeed2" / "deepspeed3"
    (ZeRO stage 2 / 3; needs the deepspeed package). Ignored when accelerate_config is given."""
    mixed_precision: str = "no"
    """accelerate's mixed precision: "no", "bf16" or "fp16". RewardConfig.autocast already runs
    bf16 autocast on GPUs, so "no" suits DDP; FSDP and DeepSpeed use it for their own casting."""
    accelerate_config: str | None = None
    """An `accelerate config` YAML file: any setup the flags above do not cover (offload,
    several machines, ...). It replaces strategy and mixed_precision."""
    device: str | None = None
    """"cpu" or "cuda"; None picks CUDA when present."""
    timeout_seconds: float = 24 * 3600
    """Wall-clock limit of the whole run; past it every rank is killed."""
    collective_timeout_seconds: float = 1800
    """How long a rank waits in a collective (all-reduce) for the others before it fails."""

    def __post_init__(self) -> None:
        _check(1 <= self.processes <= 1024, "processes", f"must be between 1 and 1024, got {self.processes}")
        _check(self.strategy in STRATEGIES, "strategy", f"must be one of {STRATEGIES}, got {self.strategy!r}")
        _check(self.mixed_precision in MIXED_PRECISIONS, "mixed_precision", f"must be one of {MIXED_PRECISIONS}")
        _check(self.timeout_seconds > 0, "timeout_seconds", "must be positive")
        _check(self.collective_timeout_seconds > 0, "collective_timeout_seconds", "must be positive")


# --- inside a rank ---------------------------------------------------------------------------


StepHook = Callable[[int, dict[str, float]], None]


class RankReporter:
    """on_progress inside a rank: rank 0 appends {"done", "total", "stage"} lines (and SFT's
    on_step points, {"step", "stats"}) to the progress JSONL the parent tails; every rank checks
    FAULT_ENV at each training step."""

    def __init__(self, path: Path, rank: int):
        self.path, self.rank = path, rank
        fault = os.environ.get(FAULT_ENV, "").split(":")
        self.fault = (int(fault[0]), int(fault[1])) if len(fault) >= 2 else None
        self.stall = fault[2:] == ["stall"]

    def __call__(self, done: int, total: int, stage: str) -> None:
        if self.fault == (self.rank, done) and stage == "train":
            if self.stall:
                time.sleep(24 * 3600)
            raise RuntimeError(f"injected fault ({FAULT_ENV}) on rank {self.rank} at step {done}")
        self._write({"done": done, "total": total, "stage": stage})

    def point(self, step: int, stats: dict[str, float]) -> None:
        self._write({"step": step, "stats": stats})

    def _write(self, event: dict[str, Any]) -> None:
        if self.rank == 0:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(event) + "\n")


RankStage = Callable[[Any, dict[str, Any], Path, RankReporter], dict[str, Any]]
"""One stage inside a rank: (accelerator, the run's spec.json, the run folder, the reporter) ->
metrics (rank 0's are the run's result)."""


def _rank_reward(accelerator, spec: dict[str, Any], run: Path, reporter: RankReporter) -> dict[str, Any]:
    from worker.ml.data import read_rankings
    from worker.ml.reward import train_reward

    cfg = RewardConfig.from_dict(spec["config"])
    _fill_deepspeed_config(accelerator, cfg)
    rankings = read_rankings(run / "data.jsonl")
    return train_reward(cfg, rankings, spec["out_dir"], reporter, accelerator=accelerator)


def _rank_sft(accelerator, spec: dict[str, Any], run: Path, reporter: RankReporter) -> dict[str, Any]:
    from worker.ml.sft import train_sft

    held = read_lines(run / "eval.jsonl") if (run / "eval.jsonl").is_file() else None
    sft, data = SFTConfig.from_dict(spec["config"]), read_lines(run / "data.jsonl")
    return train_sft(sft, data, spec["out_dir"], reporter, held, on_step=reporter.point, accelerator=accelerator)


def rank_stages() -> dict[str, RankStage]:
    from worker.ml.distributed_policy import POLICY_STAGES

    return {"reward": _rank_reward, "sft": _rank_sft, **POLICY_STAGES}


def _rank_main(argv: Sequence[str]) -> int:
    """`python -m worker.ml.distributed STAGE --run-dir D`: one rank, from accelerate launch."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    stages = rank_stages()
    stage, flag, run_dir = argv
    if stage not in stages or flag != "--run-dir":
        raise SystemExit(f"usage: python -m worker.ml.distributed {'|'.join(stages)} --run-dir DIR")
    run = Path(run_dir)
    spec = json.loads((run / "spec.json").read_text())
    accelerator = Accelerator(
        cpu=spec["device"] == "cpu",
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=spec["collective_timeout_seconds"]))],
    )
    reporter = RankReporter(run / "progress.jsonl", accelerator.process_index)
    metrics = stages[stage](accelerator, spec, run, reporter)
    if accelerator.is_main_process:  # what accelerate made of the flags: MULTI_CPU, FSDP, DEEPSPEED, ...
        metrics["distributed_type"] = accelerator.distributed_type.value
        (run / "result.tmp").write_text(json.dumps(metrics, default=str))
        (run / "result.tmp").rename(run / "result.json")
    accelerator.end_training()
    return 0


def _fill_deepspeed_config(accelerator, cfg: RewardConfig) -> None:
    """DeepSpeed reads a micro-batch size from a DataLoader we do not have (the value is nominal:
    our batches are our own) and clips by its own config: give it ours."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    if plugin.is_auto("train_micro_batch_size_per_gpu"):
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1
    if plugin.is_auto("gradient_clipping"):
        plugin.deepspeed_config["gradient_clipping"] = cfg.max_grad_norm


# --- the parent: launch, tail progress, read the result ---------------------------------------


def launch_reward(
    cfg: RewardConfig,
    rankings: Sequence[Ranking],
    out_dir: str | Path,
    dist: DistributedConfig,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """train_reward across `dist.processes` ranks; returns rank 0's metrics (as train_reward's)."""
    records = [ranking_record(r) for r in rankings]
    return launch_stage("reward", cfg.to_dict(), cfg.device, records, None, out_dir, dist, on_progress, None)


def launch_sft(
    cfg: SFTConfig,
    data: Sequence[Any],
    out_dir: str | Path,
    dist: DistributedConfig,
    on_progress: Progress | None = None,
    eval_data: Sequence[Any] | None = None,
    *,
    on_step: StepHook | None = None,
) -> dict[str, Any]:
    """train_sft across `dist.processes` ranks (DDP); returns rank 0's metrics (as train_sft's).
    `data` / `eval_data` as train_sft takes them (JSON values: dicts or message lists)."""
    if dist.strategy != "ddp" or dist.accelerate_config:
        raise ValueError("strategy: SFT runs data-parallel with DDP only (docs/distributed.md)")
    return launch_stage("sft", cfg.to_dict(), cfg.device, list(data), eval_data, out_dir, dist, on_progress, on_step)


def launch_stage(
    stage: str,
    config: dict[str, Any],
    config_device: str | None,
    records: list[Any],
    eval_records: Sequence[Any] | None,
    out_dir: str | Path,
    dist: DistributedConfig,
    on_progress: Progress | None,
    on_step: StepHook | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run `stage` (a rank_stages() entry) on `dist.processes` ranks: its config, records (the
    data.jsonl lines), eval records and `extra` reach the ranks through the run folder."""
    device = dist.device or config_device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="ranklab-distributed-") as tmp:
        run = Path(tmp)
        write_jsonl(run / "data.jsonl", records)
        if eval_records is not None:
            write_jsonl(run / "eval.jsonl", eval_records)
        kind = "cpu" if device.startswith("cpu") else "cuda"
        spec = {
            "config": config,
            "out_dir": str(Path(out_dir).resolve()),
            "device": kind,
            "collective_timeout_seconds": dist.collective_timeout_seconds,
            **(extra or {}),
        }
        (run / "spec.json").write_text(json.dumps(spec))
        command = [*accelerate_command(dist, kind), "-m", "worker.ml.distributed", stage]
        _run(command + ["--run-dir", str(run)], run, stage, dist, on_progress, on_step)
        return json.loads((run / "result.json").read_text())


def accelerate_command(dist: DistributedConfig, device: str) -> list[str]:
    """The `accelerate launch` argv (before the script) for this config on one machine."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(dist.processes)]
    command += ["--num_machines", "1", "--main_process_port", str(_free_port()), "--dynamo_backend", "no"]
    if dist.accelerate_config:
        return [*command, "--config_file", dist.accelerate_config]
    command += ["--mixed_precision", dist.mixed_precision]
    if dist.strategy != "ddp" and device == "cpu":
        # accelerate (1.16) applies FSDP only to GPU-like process groups and skips DeepSpeed on
        # CPU ranks: both would silently run plain DDP here (docs/distributed.md, measured)
        raise ValueError(f"strategy: {dist.strategy!r} needs GPUs; on CPU only 'ddp' (gloo) runs")
    if dist.strategy == "fsdp":
        # use_orig_params: LoRA mixes frozen and trainable weights in one wrapped layer;
        # FULL_STATE_DICT: rank 0 gathers the whole model to evaluate and save it
        command += ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_use_orig_params", "true"]
        command += ["--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT"]
    elif dist.strategy.startswith("deepspeed"):
        if importlib.util.find_spec("deepspeed") is None:
            raise ValueError(f"strategy: {dist.strategy!r} needs the deepspeed package (pip install deepspeed)")
        stage = dist.strategy.removeprefix("deepspeed")
        command += ["--use_deepspeed", "--zero_stage", stage, "--gradient_accumulation_steps", "1"]
        command += ["--zero3_save_16bit_model", "true"] if stage == "3" else []
    elif dist.processes > 1:
        command += ["--multi_gpu"]  # torchrun; the ranks pick gloo on CPU, NCCL on GPUs
    return command


def _run(
    command: list[str],
    run: Path,
    stage: str,
    dist: DistributedConfig,
    on_progress: Progress | None,
    on_step: StepHook | None,
) -> None:
    """Start the launcher in its own process group, forward progress until it exits; a failed
    rank, a timeout or an on_progress exception (a cancelled job) ends every rank."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    log_path, progress = run / "launch.log", run / "progress.jsonl"
    deadline, seen = time.monotonic() + dist.timeout_seconds, 0
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            while True:
                finished = process.poll() is not None
                seen = _forward_progress(progress, seen, on_progress, on_step)
                if finished:
                    break
                if time.monotonic() > deadline:
                    raise DistributedRunError(f"the run passed its time limit ({dist.timeout_seconds:g} s)")
                time.sleep(0.2)
        finally:
            _stop(process)
    if process.returncode != 0 or not (run / "result.json").is_file():
        output = log_path.read_text(errors="replace")
        raise DistributedRunError(_failure_message(stage, process.returncode, output, dist))


def _forward_progress(path: Path, seen: int, on_progress: Progress | None, on_step: StepHook | None) -> int:
    """Pass the complete lines past the first `seen` to on_progress / on_step; returns lines seen."""
    if not path.is_file():
        return seen
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    complete = [line for line in lines[seen:] if line.endswith("\n")]
    for line in complete:
        event = json.loads(line)
        if "step" in event and on_step is not None:
            on_step(event["step"], event["stats"])
        elif "stage" in event and on_progress is not None:
            on_progress(event["done"], event["total"], event["stage"])
    return seen + len(complete)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the launcher's whole process group (the agent and its ranks), then SIGKILL."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)
            return


def _failure_message(stage: str, code: int | None, log: str, dist: DistributedConfig) -> str:
    """The ranks' first error line, then the log's tail (torchrun names the failed rank)."""
    lines = log.splitlines()
    errors = [line for line in lines if "Error: " in line or "Exception: " in line]
    first = errors[0].strip() if errors else "no error line in the log"
    tail = "\n".join(lines[-40:])
    return f"{stage} training on {dist.processes} processes failed (exit {code}): {first}\n--- log tail ---\n{tail}"


def ranking_record(ranking: Ranking) -> dict[str, Any]:
    """A Ranking as a line of the rankings JSONL (worker/ml/data.py reads it back)."""
    record: dict[str, Any] = {
        "prompt": ranking.prompt,
        "completions": ranking.completions,
        "ranking": ranking.groups,
        "prompt_id": ranking.prompt_id,
    }
    if ranking.aspect_groups:
        record["aspects"] = ranking.aspect_groups
    return record


def read_lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1:]))
