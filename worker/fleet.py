"""Start a fleet worker: a Celery worker on the queues of some roles and GPU classes.

    python -m worker.fleet --roles train,evaluate --gpu-class a100
    python -m worker.fleet --roles generate --print     # the celery command, to run it yourself

Each machine of a fleet runs one of these against the shared Postgres, Redis and artifact volume
(docs/deployment.md). Celery only here: the tasks import torch when the worker loads them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from worker.celery_app import ROLES, queue_for

DEFAULT_CLASS = "default"
"""`--gpu-class default` means the plain queues (`train`), e.g. `--gpu-class a100,default`."""


def queues(roles: Sequence[str], gpu_classes: Sequence[str] = (DEFAULT_CLASS,)) -> list[str]:
    """`<role>` or `<role>.<class>` for every role and class, in that order."""
    if not roles:
        raise ValueError(f"roles: name at least one of {', '.join(ROLES)}")
    if not gpu_classes:
        raise ValueError(f"gpu_class: name at least one GPU class, or {DEFAULT_CLASS}")
    return [
        queue_for(role, gpu_class="" if gpu_class == DEFAULT_CLASS else gpu_class)
        for gpu_class in gpu_classes
        for role in roles
    ]


def worker_command(
    roles: Sequence[str], gpu_classes: Sequence[str] = (DEFAULT_CLASS,), *, name: str = "", extra: Sequence[str] = ()
) -> list[str]:
    """One task at a time with none reserved ahead, as every ranklab worker: a training step owns
    its GPU, and a long task never holds a second message another idle worker could run."""
    listened = queues(roles, gpu_classes)
    name = name or f"{'-'.join([*roles, *gpu_classes])}@%h"
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--concurrency=1",
        "--prefetch-multiplier=1",
        "-Q",
        ",".join(listened),
        "-n",
        name,
        "--loglevel=INFO",
        *extra,
    ]


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--roles", default=",".join(ROLES), help=f"comma-separated, of {', '.join(ROLES)}")
    parser.add_argument(
        "--gpu-class",
        default=DEFAULT_CLASS,
        help="comma-separated GPU classes whose queues to serve (e.g. a100); 'default' is the plain queues",
    )
    parser.add_argument("--name", default="", help="the worker's node name (default: roles-classes@host)")
    parser.add_argument("--print", action="store_true", help="print the celery command instead of running it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # anything else goes on to celery (e.g. --pool=solo)
    roles = _split(args.roles)
    unknown = [role for role in roles if role not in ROLES]
    if unknown:
        parser.error(f"--roles: {', '.join(unknown)} is not one of {', '.join(ROLES)}")
    try:
        command = worker_command(roles, _split(args.gpu_class), name=args.name, extra=extra)
    except ValueError as exc:
        parser.error(str(exc))
    if args.print:
        print(shlex.join(command))
        return 0
    os.execv(command[0], command)  # the worker replaces this process: signals reach Celery directly


if __name__ == "__main__":
    sys.exit(main())
