"""The Celery app, configured from ranklab's Settings.

Production: Redis broker. Embedded default (`make run`): kombu's SQLAlchemy transport on a
SQLite file, so no server is needed and the same task code runs in both."""

from __future__ import annotations

import sys

from celery import Celery

from app.settings import Settings, get_settings

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
"""(evaluation_id): each version's missing eval completions, then the evaluation opens for labeling.
Enqueued on GENERATE_QUEUE, like GENERATE_BATCH."""
TRAIN_SFT = "ranklab.job.train_sft"
"""(job_id): supervised fine-tuning on the job's demonstrations (worker/loop/sft.py, docs/sft-stage.md)."""
JUDGE_RUN = "ranklab.judge.run"
"""(run_id): a project's AI judge over its tasks (worker/loop/judging.py). Enqueued on GENERATE_QUEUE."""
SWEEP_ROUNDS = "ranklab.round.sweep"
"""(): re-enqueue steps and jobs whose worker died; auto-start rounds whose labeling reached the threshold."""
# Queues: training steps run one at a time per GPU worker; generation batches can fan out.
TRAIN_QUEUE = "train"
GENERATE_QUEUE = "generate"


def solo_worker_command(*extra: str) -> list[str]:
    """The one-process worker `ranklab serve` starts beside the web server (and the loop tests
    start): one task at a time, both queues, no gossip between workers. `extra` is appended."""
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
        f"{TRAIN_QUEUE},{GENERATE_QUEUE}",
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
