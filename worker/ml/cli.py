"""`python -m worker.ml <command>`: the ML library from a shell, with progress bars.

Commands are registered in COMMANDS (name -> Command). Config flags are derived from the
config dataclasses, with each field's docstring as its help, so they never drift apart.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from worker.ml.config import GenerationConfig, RewardConfig
from worker.ml.ppo_config import PPOConfig


@dataclass
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def default_data_dir() -> Path:
    # Same variable the web app's Settings reads (worker.ml must not import app/).
    return Path(os.environ.get("RANKLAB_DATA_DIR", "data"))


class ProgressBars:
    """An on_progress callback drawing one tqdm bar per stage."""

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def __call__(self, done: int, total: int, stage: str) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="step", leave=True)
        bar.total = total
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def field_docs(cls) -> dict[str, str]:
    """{field: docstring} from the string literal written under each dataclass field."""
    node = ast.parse(inspect.getsource(cls)).body[0]
    if not isinstance(node, ast.ClassDef):
        raise TypeError(f"{cls!r} is not a class")
    body = node.body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def add_config_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """--field-name flags for every simple field of a config dataclass."""
    docs = field_docs(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = (docs.get(f.name, "") + f" (default: {default})").replace("%", "%%")
        if isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, default=None, help=help_text, action=argparse.BooleanOptionalAction)
        elif isinstance(default, tuple):
            parser.add_argument(flag, dest=f.name, default=None, nargs="+", help=help_text)
        elif isinstance(default, (int, float, str)) or default is None:
            kind = type(default) if default is not None else str
            parser.add_argument(flag, dest=f.name, default=None, type=kind, help=help_text)


def config_from_args(cls, args: argparse.Namespace, **fixed):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    return cls.from_dict({**values, **fixed})


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
        model = args.model or str(_default_model())
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

    cfg = config_from_args(RewardConfig, args, model=args.model or str(_default_model()))
    dist = config_from_args(DistributedConfig, args, device=cfg.device)
    rankings = read_rankings(args.rankings)
    named = sorted({a for r in rankings for a in r.aspect_groups})
    if not cfg.aspects and named and not any(r.groups for r in rankings):
        raise ValueError(
            f"aspects: the rankings rank aspects ({', '.join(named)}) and nothing overall; name the "
            f"score heads to train, e.g. --aspects {' '.join(named)}"
        )
    bars = ProgressBars()
    if dist.processes > 1 or dist.accelerate_config:
        metrics = launch_reward(cfg, rankings, args.out, dist, on_progress=bars)
    else:
        metrics = train_reward(cfg, rankings, args.out, on_progress=bars)
    bars.close()
    print(json.dumps(metrics, indent=2))
    return 0


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


def _train_policy_run(args: argparse.Namespace) -> int:
    from worker.ml.data import read_prompts
    from worker.ml.ppo import train_policy

    cfg = config_from_args(PPOConfig, args, model=args.model or str(_default_model()))
    prompts = read_prompts(args.prompts)
    bars = ProgressBars()
    metrics = train_policy(cfg, [p for _, p in prompts], args.reward, args.out, on_progress=bars)
    bars.close()
    print(json.dumps(metrics, indent=2))
    return 0


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
    from worker.ml.distributed import DistributedConfig

    # --processes N: data-parallel (DDP) through accelerate launch (docs/distributed.md)
    add_config_flags(parser, DistributedConfig, skip=("device", "strategy", "accelerate_config"))


def _train_sft_run(args: argparse.Namespace) -> int:
    from worker.ml.distributed import DistributedConfig, launch_sft
    from worker.ml.sft import train_sft
    from worker.ml.sft_config import SFTConfig
    from worker.ml.sft_data import read_examples

    cfg = config_from_args(SFTConfig, args, model=args.model or str(_default_model()))
    dist = config_from_args(DistributedConfig, args, device=cfg.device)
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


# --- train-dpo -------------------------------------------------------------------------------


def _train_dpo_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.ml.dpo_config import DPOConfig

    parser.add_argument(
        "--model",
        default=None,
        help="starting policy: model or adapter folder, or hub id (default: the bundled SmolLM2)",
    )
    parser.add_argument("--rankings", type=Path, required=True, help="rankings JSONL (format in worker/ml/data.py)")
    parser.add_argument("--out", type=Path, required=True, help="policy adapter folder to write (with its card)")
    add_config_flags(parser, DPOConfig, skip=("model", "extra"))


def _train_dpo_run(args: argparse.Namespace) -> int:
    from worker.ml.data import read_rankings
    from worker.ml.dpo import train_dpo
    from worker.ml.dpo_config import DPOConfig

    cfg = config_from_args(DPOConfig, args, model=args.model or str(_default_model()))
    rankings = read_rankings(args.rankings)
    bars = ProgressBars()
    metrics = train_dpo(cfg, rankings, args.out, on_progress=bars)
    bars.close()
    print(json.dumps(metrics, indent=2))
    return 0


# --- train-kto -------------------------------------------------------------------------------


def _train_kto_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.ml.kto_config import KTOConfig

    parser.add_argument(
        "--model",
        default=None,
        help="starting policy: model or adapter folder, or hub id (default: the bundled SmolLM2)",
    )
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

    cfg = config_from_args(KTOConfig, args, model=args.model or str(_default_model()))
    examples = read_labelled(args.data)
    held_out = read_labelled(args.eval_data) if args.eval_data else None
    bars = ProgressBars()
    metrics = train_kto(cfg, examples, args.out, on_progress=bars, held_out=held_out)
    bars.close()
    print(json.dumps(metrics, indent=2))
    return 0


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


def _train_rloo_run(args: argparse.Namespace) -> int:
    from worker.ml.data import read_prompts
    from worker.ml.rloo import train_rloo
    from worker.ml.rloo_config import RLOOConfig

    cfg = config_from_args(RLOOConfig, args, model=args.model or str(_default_model()))
    if args.reward is None and cfg.reward_source != "zero":
        raise ValueError("reward: name the reward model folder with --reward (or use --reward-source zero)")
    prompts = read_prompts(args.prompts)
    bars = ProgressBars()
    metrics = train_rloo(cfg, [p for _, p in prompts], args.reward, args.out, on_progress=bars)
    bars.close()
    print(json.dumps(metrics, indent=2))
    return 0


def _default_model() -> Path:
    from worker.ml.models import convert_default_model

    return convert_default_model(default_data_dir())


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
