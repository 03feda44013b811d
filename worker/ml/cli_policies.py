"""`python -m worker.ml` subcommands of the preference optimisers beside PPO: train-dpo (rankings),
train-kto (good/bad labels) and train-rloo (RLOO / GRPO against a reward model). Registered in
cli.py's COMMANDS."""

from __future__ import annotations

import argparse
from pathlib import Path

from worker.ml.cli_flags import (
    Command,
    add_config_flags,
    add_ddp_flags,
    add_start_model,
    config_from_args,
    ddp_config,
    default_model,
    run_with_bars,
)

START_HELP = "starting policy: model or adapter folder, or hub id (default: the bundled SmolLM2)"


# --- train-dpo -------------------------------------------------------------------------------


def _train_dpo_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.ml.dpo_config import DPOConfig

    add_start_model(parser, START_HELP)
    parser.add_argument("--rankings", type=Path, required=True, help="rankings JSONL (format in worker/ml/data.py)")
    parser.add_argument("--out", type=Path, required=True, help="policy adapter folder to write (with its card)")
    add_config_flags(parser, DPOConfig, skip=("model", "extra"))
    add_ddp_flags(parser)


def _train_dpo_run(args: argparse.Namespace) -> int:
    from worker.ml.data import read_rankings
    from worker.ml.distributed_policy import launch_dpo
    from worker.ml.dpo import train_dpo
    from worker.ml.dpo_config import DPOConfig

    cfg = config_from_args(DPOConfig, args, model=args.model or str(default_model()))
    dist = ddp_config(args, cfg.device)
    rankings = read_rankings(args.rankings)
    if dist.processes > 1:
        return run_with_bars(lambda bars: launch_dpo(cfg, rankings, args.out, bars, dist=dist))
    return run_with_bars(lambda bars: train_dpo(cfg, rankings, args.out, on_progress=bars))


# --- train-kto -------------------------------------------------------------------------------


def _train_kto_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.ml.kto_config import KTOConfig

    add_start_model(parser, START_HELP)
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help='good/bad JSONL (TRL unpaired form): {"prompt": ..., "completion": ..., "label": true|false} per line',
    )
    parser.add_argument(
        "--eval-data", type=Path, default=None, help="held-out JSONL in the same form (default: --val-fraction)"
    )
    parser.add_argument("--out", type=Path, required=True, help="policy adapter folder to write (with its card)")
    add_config_flags(parser, KTOConfig, skip=("model", "extra"))


def _train_kto_run(args: argparse.Namespace) -> int:
    from worker.ml.kto import read_labelled, train_kto
    from worker.ml.kto_config import KTOConfig

    cfg = config_from_args(KTOConfig, args, model=args.model or str(default_model()))
    examples = read_labelled(args.data)
    held_out = read_labelled(args.eval_data) if args.eval_data else None
    return run_with_bars(lambda bars: train_kto(cfg, examples, args.out, on_progress=bars, held_out=held_out))


# --- train-rloo ------------------------------------------------------------------------------


def _train_rloo_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.ml.rloo_config import RLOOConfig

    parser.add_argument(
        "--model",
        default=None,
        help="starting policy: a model folder, an SFT adapter or an earlier policy adapter "
        "(default: the converted bundled SmolLM2)",
    )
    parser.add_argument("--prompts", type=Path, required=True, help='JSONL: {"prompt": str | [messages]} per line')
    parser.add_argument(
        "--reward",
        type=Path,
        default=None,
        help="reward model artifact folder (from train-reward); not needed with --reward-source zero",
    )
    parser.add_argument("--out", type=Path, required=True, help="policy adapter folder to write")
    add_config_flags(parser, RLOOConfig, skip=("model",))
    add_ddp_flags(parser)


def _train_rloo_run(args: argparse.Namespace) -> int:
    from worker.ml.data import read_prompts
    from worker.ml.distributed_policy import launch_rloo
    from worker.ml.rloo import train_rloo
    from worker.ml.rloo_config import RLOOConfig

    cfg = config_from_args(RLOOConfig, args, model=args.model or str(default_model()))
    dist = ddp_config(args, cfg.device)
    if args.reward is None and cfg.reward_source != "zero":
        raise ValueError("reward: name the reward model folder with --reward (or use --reward-source zero)")
    prompts = [p for _, p in read_prompts(args.prompts)]
    if dist.processes > 1:
        return run_with_bars(lambda bars: launch_rloo(cfg, prompts, args.reward, args.out, bars, dist=dist))
    return run_with_bars(lambda bars: train_rloo(cfg, prompts, args.reward, args.out, on_progress=bars))


POLICY_COMMANDS: dict[str, Command] = {
    "train-dpo": Command(
        "DPO: train a LoRA policy directly on rankings (no reward model)", _train_dpo_arguments, _train_dpo_run
    ),
    "train-kto": Command(
        "KTO: train a LoRA policy on good/bad labels of single completions (no pairs)",
        _train_kto_arguments,
        _train_kto_run,
    ),
    "train-rloo": Command(
        "RLOO / GRPO: train a LoRA policy against a reward model, K samples per prompt, no value head",
        _train_rloo_arguments,
        _train_rloo_run,
    ),
}
