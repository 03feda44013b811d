"""What every `python -m worker.ml` subcommand shares: the Command record, progress bars, config
flags derived from a config dataclass (each field's docstring as its help), the default model,
and running a training call with bars and printing its metrics."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm


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


def default_model() -> Path:
    """The bundled SmolLM2, converted under the data dir on first use."""
    from worker.ml.models import convert_default_model

    return convert_default_model(default_data_dir())


def add_start_model(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--model", default=None, help=help_text)


def add_ddp_flags(parser: argparse.ArgumentParser) -> None:
    """--processes N (with --mixed-precision and the run's timeouts): data-parallel with DDP through
    accelerate launch (docs/distributed.md). For the trainers that run DDP only."""
    from worker.ml.distributed import DistributedConfig

    add_config_flags(parser, DistributedConfig, skip=("device", "strategy", "accelerate_config"))


def ddp_config(args: argparse.Namespace, device: str | None):
    """The DistributedConfig the flags of add_ddp_flags name; `processes` 1 means train in-process."""
    from worker.ml.distributed import DistributedConfig

    return config_from_args(DistributedConfig, args, device=device)


def run_with_bars(train: Callable[[ProgressBars], dict[str, Any]]) -> int:
    """`train(on_progress)` with progress bars, then its metrics as JSON on stdout."""
    bars = ProgressBars()
    metrics = train(bars)
    bars.close()
    print(json.dumps(metrics, indent=2))
    return 0
