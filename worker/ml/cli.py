"""`python -m worker.ml <command>`: the ML library from a shell, with progress bars.

Commands are registered in COMMANDS (name -> Command); the preference optimisers' live in
cli_policies.py. Config flags are derived from the config dataclasses, with each field's
docstring as its help, so they never drift apart (cli_flags.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from worker.ml.cli_flags import (
    Command,
    ProgressBars,
    add_config_flags,
    add_ddp_flags,
    config_from_args,
    ddp_config,
    default_data_dir,
    default_model,
    run_with_bars,
)
from worker.ml.cli_policies import POLICY_COMMANDS
from worker.ml.config import GenerationConfig, RewardConfig
from worker.ml.ppo_config import PPOConfig

# --- convert-default -------------------------------------------------------------------------


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="where models/ lives (default: $RANKLAB_DATA_DIR or ./data)"
    )


def _convert_run(args: argparse.Namespace) -> int:
    from worker.ml.models import convert_default_model

    bars = ProgressBars()
    path = convert_default_model(args.data_dir or default_data_dir(), on_progress=bars)
    bars.close()
    print(path)
    return 0


# --- generate --------------------------------------------------------------------------------


def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="hub id or folder (default: the converted bundled SmolLM2); not read with --backend openai, "
        "which asks --remote-model at --base-url (API key from the variable named by --api-key-env)",
    )
    parser.add_argument(
        "--prompts", type=Path, required=True, help='JSONL: {"prompt": str | [messages], "prompt_id"?: ...} per line'
    )
    parser.add_argument("--out", type=Path, required=True, help="JSONL written, one line per prompt")
    parser.add_argument("--model-version", default="", help="label stored with each completion")
    parser.add_argument(
        "-k", dest="k", type=int, default=None, help="completions per prompt (1-9; a ranking task wants 4-9)"
    )
    add_config_flags(parser, GenerationConfig, skip=("k",))


def _generate_run(args: argparse.Namespace) -> int:
    from worker.ml.data import read_prompts, write_jsonl
    from worker.ml.generate import generate
    from worker.ml.remote_generate import RemoteGenerationError

    cfg = config_from_args(GenerationConfig, args)
    prompts = read_prompts(args.prompts)
    if cfg.backend == "openai":  # the served model answers; nothing is loaded here
        model, version = "", args.model_version or cfg.remote_model
    else:
        model = args.model or str(default_model())
        version = args.model_version or Path(model).name
    bars = ProgressBars()
    try:
        results = generate(model, [p for _, p in prompts], cfg, on_progress=bars, model_version=version)
    except RemoteGenerationError as error:  # the endpoint refused or stayed down: say so, no traceback
        bars.close()
        print(f"error: {error}", file=sys.stderr)
        return 1
    bars.close()
    write_jsonl(
        args.out,
        (
            {
                "prompt_id": prompt_id,
                "prompt": prompt,
                "completions": [c.text for c in samples],
                "details": [{k: v for k, v in c.to_dict().items() if k != "text"} for c in samples],
            }
            for (prompt_id, prompt), samples in zip(prompts, results, strict=True)
        ),
    )
    print(f"wrote {len(results)} prompts x {cfg.k} completions to {args.out}")
    return 0


# --- train-reward ----------------------------------------------------------------------------


def _train_reward_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="backbone hub id or folder (default: the converted bundled SmolLM2)"
    )
    parser.add_argument(
        "--rankings",
        type=Path,
        required=True,
        help='rankings JSONL (format in worker/ml/data.py); lines may rank per aspect, "aspects": {name: ranking}',
    )
    parser.add_argument("--out", type=Path, required=True, help="artifact folder to write")
    add_config_flags(parser, RewardConfig, skip=("model", "extra", "aspect_weights"))
    parser.add_argument(
        "--aspect-weights",
        dest="aspect_weights",
        type=float,
        nargs="+",
        default=None,
        help="with --aspects: default weights combining the aspects into one reward, one per aspect, "
        "normalised to sum 1, stored with the model (default: equal)",
    )
    from worker.ml.distributed import DistributedConfig

    # --processes N (data-parallel through accelerate launch), --strategy, --mixed-precision, ...
    add_config_flags(parser, DistributedConfig, skip=("device",))


def _train_reward_run(args: argparse.Namespace) -> int:
    from worker.ml.data import read_rankings
    from worker.ml.distributed import DistributedConfig, launch_reward
    from worker.ml.reward import train_reward

    cfg = config_from_args(RewardConfig, args, model=args.model or str(default_model()))
    dist = config_from_args(DistributedConfig, args, device=cfg.device)
    rankings = read_rankings(args.rankings)
    named = sorted({a for r in rankings for a in r.aspect_groups})
    if not cfg.aspects and named and not any(r.groups for r in rankings):
        raise ValueError(
            f"aspects: the rankings rank aspects ({', '.join(named)}) and nothing overall; name the "
            f"score heads to train, e.g. --aspects {' '.join(named)}"
        )
    if dist.processes > 1 or dist.accelerate_config:
        return run_with_bars(lambda bars: launch_reward(cfg, rankings, args.out, dist, on_progress=bars))
    return run_with_bars(lambda bars: train_reward(cfg, rankings, args.out, on_progress=bars))


# --- train-policy ----------------------------------------------------------------------------


def _train_policy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="starting policy: a model folder or an earlier policy adapter (default: the converted bundled SmolLM2)",
    )
    parser.add_argument("--prompts", type=Path, required=True, help='JSONL: {"prompt": str | [messages]} per line')
    parser.add_argument("--reward", type=Path, required=True, help="reward model artifact folder (from train-reward)")
    parser.add_argument("--out", type=Path, required=True, help="policy adapter folder to write")
    add_config_flags(parser, PPOConfig, skip=("model",))
    add_ddp_flags(parser)


def _train_policy_run(args: argparse.Namespace) -> int:
    from worker.ml.data import read_prompts
    from worker.ml.distributed_policy import launch_ppo
    from worker.ml.ppo import train_policy

    cfg = config_from_args(PPOConfig, args, model=args.model or str(default_model()))
    dist = ddp_config(args, cfg.device)
    prompts = [p for _, p in read_prompts(args.prompts)]
    if dist.processes > 1:
        return run_with_bars(lambda bars: launch_ppo(cfg, prompts, args.reward, args.out, bars, dist=dist))
    return run_with_bars(lambda bars: train_policy(cfg, prompts, args.reward, args.out, on_progress=bars))


# --- train-sft -------------------------------------------------------------------------------


def _train_sft_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.ml.sft_config import SFTConfig

    parser.add_argument(
        "--model", default=None, help="model or adapter folder, or hub id (default: the converted bundled SmolLM2)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help='demonstrations JSONL: {"messages": [...]} (last turn the answer) or {"prompt": ..., "completion": ...}',
    )
    parser.add_argument(
        "--eval-data", type=Path, default=None, help="held-out JSONL in the same forms (default: --eval-fraction)"
    )
    parser.add_argument("--out", type=Path, required=True, help="artifact folder to write (adapter or model + card)")
    add_config_flags(parser, SFTConfig, skip=("model", "extra", "padding_free"))
    parser.add_argument(
        "--padding-free",
        dest="padding_free",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="pack examples into rows with a block mask (default: wherever exact; never with prompt tuning)",
    )
    add_ddp_flags(parser)


def _train_sft_run(args: argparse.Namespace) -> int:
    from worker.ml.distributed import launch_sft
    from worker.ml.sft import train_sft
    from worker.ml.sft_config import SFTConfig
    from worker.ml.sft_data import read_examples

    cfg = config_from_args(SFTConfig, args, model=args.model or str(default_model()))
    dist = ddp_config(args, cfg.device)
    data = read_examples(args.data)
    eval_data = read_examples(args.eval_data) if args.eval_data else None
    bars = ProgressBars()
    if dist.processes > 1:
        metrics = launch_sft(cfg, data, args.out, dist, on_progress=bars, eval_data=eval_data)
    else:
        metrics = train_sft(cfg, data, args.out, on_progress=bars, eval_data=eval_data)
    bars.close()
    print(json.dumps({k: v for k, v in metrics.items() if k != "train_loss"}, indent=2))
    return 0


# Registrations. The PPO side adds "train-policy" here: Command(help, add_arguments, run).
COMMANDS: dict[str, Command] = {
    "convert-default": Command(
        "convert the bundled SmolLM2 GGUF to a HF folder (once)", _convert_arguments, _convert_run
    ),
    "generate": Command("sample K completions per prompt", _generate_arguments, _generate_run),
    "train-reward": Command("train a reward model on rankings", _train_reward_arguments, _train_reward_run),
    "train-policy": Command(
        "PPO: train a LoRA policy against a reward model", _train_policy_arguments, _train_policy_run
    ),
    "train-sft": Command(
        "supervised fine-tuning on demonstrations (loss on the answers)", _train_sft_arguments, _train_sft_run
    ),
    **POLICY_COMMANDS,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker.ml", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
