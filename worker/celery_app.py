"""The Celery app, configured from ranklab's Settings.

Production: Redis broker. Embedded default (`make run`): kombu's SQLAlchemy transport on a
SQLite file, so no server is needed and the same task code runs in both."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

from celery import Celery
from celery.signals import celeryd_after_setup

from app.settings import GPU_CLASS, Settings, get_settings

# Task names are constants so the web process can enqueue by name without importing torch.
PING = "ranklab.ping"
# The training-round loop (worker/loop, docs/loop.md). Each takes ids only.
GENERATE_BATCH = "ranklab.round.generate_batch"
"""(round_id, batch): K completions for one batch of the round's prompts; the last batch creates the tasks."""
TRAIN_REWARD = "ranklab.round.train_reward"
"""(round_id): reward model on the project's rankings."""
TRAIN_POLICY = "ranklab.round.train_policy"
"""(round_id): PPO from the round's policy against its reward model."""
GENERATE_NEXT = "ranklab.round.generate_next"
"""(round_id): create the next round from the new policy and enqueue its generation."""
EVALUATE_ROUND = "ranklab.round.evaluate"
"""(round_id): eval-set completions and automatic metrics for the new policy (docs/evaluation-metrics.md)."""
GENERATE_EVAL = "ranklab.generate_eval"
"""(evaluation_id): each version's missing eval completions, then the evaluation opens for labeling."""
TRAIN_SFT = "ranklab.job.train_sft"
"""(job_id): supervised fine-tuning on the job's demonstrations (worker/loop/sft.py, docs/sft-stage.md)."""
JUDGE_RUN = "ranklab.judge.run"
"""(run_id): a project's AI judge over its tasks (worker/loop/judging.py)."""
JUDGE_ROUND = "ranklab.round.judge"
"""(round_id): an AI-labelled round's judging step (worker/loop/round_judging.py)."""
REFRESH_PRIORITIES = "ranklab.project.refresh_priorities"
"""(project_id, model_version_id): the handout's active-learning priorities from that reward model
(worker/loop/active_order.py). Enqueued after each reward-model training when the project's
handout order is active, and by an admin's "refresh now"."""
SWEEP_ROUNDS = "ranklab.round.sweep"
"""(): re-enqueue steps and jobs whose worker died; auto-start rounds whose labeling reached the threshold."""
# Queues by role (docs/deployment.md). Training steps run one at a time per GPU worker; generation
# batches can fan out over many. `queue_for` names the queue of a role, with its GPU class if one
# is set; workers of a class listen on `<role>.<class>`.
TRAIN = "train"
"""Reward model, PPO/RLOO and SFT/DPO/KTO jobs: the most GPU memory, one task per GPU."""
GENERATE = "generate"
"""Labeling completions, the next round's set-up, and AI judge runs: inference only."""
EVALUATE = "evaluate"
"""A round's eval-set completions and metrics (loads the policies and the reward model), and a
human evaluation's missing completions."""
ROLES = (TRAIN, GENERATE, EVALUATE)
TASK_ROLES = {
    GENERATE_BATCH: GENERATE,
    GENERATE_NEXT: GENERATE,
    # A judge reads completions and generates verdicts from a local or served model: the same
    # inference work and backend settings (API key included) as generation, and no training.
    JUDGE_RUN: GENERATE,
    JUDGE_ROUND: GENERATE,
    TRAIN_REWARD: TRAIN,
    TRAIN_POLICY: TRAIN,
    TRAIN_SFT: TRAIN,
    EVALUATE_ROUND: EVALUATE,
    GENERATE_EVAL: EVALUATE,
    # Reads the reward model's features of the open tasks: inference with the reward model, as
    # the evaluation step does.
    REFRESH_PRIORITIES: EVALUATE,
}
"""Each task's role, for the docs and tests: enqueue sites pass the role to `queue_for`."""
TRAIN_QUEUE, GENERATE_QUEUE, EVALUATE_QUEUE = ROLES
"""The queues of the default GPU class (none): what the embedded worker listens on."""
DEFAULT_QUEUES = ROLES


def queue_for(role: str, settings: Settings | None = None, *, gpu_class: str | None = None) -> str:
    """The queue a task of `role` goes to: `role` itself, or `role.<class>` when `gpu_class` (or
    else the settings' class for that role, e.g. RANKLAB_TRAIN_GPU_CLASS) names one. The web and
    every worker must share these settings: both enqueue round steps."""
    if role not in ROLES:
        raise ValueError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    if gpu_class is None:
        gpu_class = getattr(settings or get_settings(), f"{role}_gpu_class")
    elif not re.fullmatch(GPU_CLASS, gpu_class):
        raise ValueError(f"gpu_class: {gpu_class!r} is not lower-case letters, digits, - and _ (e.g. a100)")
    return f"{role}.{gpu_class}" if gpu_class else role


def unserved_evaluate(queues: Iterable[str]) -> list[str]:
    """The evaluate queues a worker started the old way (`-Q train,generate`, before evaluation had
    a queue of its own) leaves out: of each GPU class whose train and generate queues it serves."""
    roles_by_class: dict[str, set[str]] = {}
    for queue in queues:
        role, _, gpu_class = queue.partition(".")
        roles_by_class.setdefault(gpu_class, set()).add(role)
    return [
        queue_for(EVALUATE, gpu_class=gpu_class)
        for gpu_class, roles in roles_by_class.items()
        if {TRAIN, GENERATE} <= roles and EVALUATE not in roles
    ]


@celeryd_after_setup.connect
def _warn_unserved_evaluate(sender, instance, **_kwargs) -> None:
    consumed = instance.app.amqp.queues.consume_from  # None: no -Q given
    missing = unserved_evaluate(consumed or ())
    if missing:
        logging.getLogger(__name__).warning(
            "%s serves train and generate but not %s: unless another worker does, rounds wait at "
            "'evaluating' (add it to -Q; docs/deployment.md, 'Upgrading')",
            sender,
            ", ".join(missing),
        )


def solo_worker_command(*extra: str, settings: Settings | None = None) -> list[str]:
    """The one-process worker `ranklab serve` starts beside the web server (and the loop tests
    start): one task at a time, no gossip between workers, every default queue and every queue the
    settings route a role to, so it alone runs everything. `extra` is appended."""
    queues = dict.fromkeys([*DEFAULT_QUEUES, *(queue_for(role, settings) for role in ROLES)])
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "--prefetch-multiplier=1",
        "-Q",
        ",".join(queues),
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        *extra,
    ]


def broker_url(settings: Settings) -> str:
    if settings.broker_url:
        return settings.broker_url
    return f"sqla+sqlite:///{settings.data_dir / 'broker.sqlite'}"


def result_backend(settings: Settings) -> str:
    if settings.result_backend:
        return settings.result_backend
    if settings.broker_url.startswith("redis"):
        return settings.broker_url
    return f"db+sqlite:///{settings.data_dir / 'results.sqlite'}"


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("ranklab", broker=broker_url(settings), backend=result_backend(settings))
    app.conf.update(
        task_acks_late=True,  # a worker killed mid-task leaves the message for the next one
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=TRAIN_QUEUE,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        # A worker outlives any broker outage (Celery's default gives up after 100 tries, ~45 min
        # without Redis); the round's claim and heartbeat make a late start safe.
        broker_connection_max_retries=None,
        broker_connection_timeout=3,
        result_extended=True,
        imports=["worker.tasks"],
    )
    if app.conf.broker_url.startswith("sqla+"):
        # kombu's SQLAlchemy transport passes transport options on to create_engine (a
        # polling_interval there crashes the worker), so the interval is set on the transport
        # class instead (docs/measured-facts.md, "Celery without a server").
        from kombu.transport import sqlalchemy as sqla_transport

        sqla_transport.Transport.polling_interval = 0.5
    return app


celery_app = make_celery()
