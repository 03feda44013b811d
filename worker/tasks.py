"""Celery tasks: thin wrappers that take ids, load rows, call worker.ml, and write status.

The bodies live in worker/loop (one module per round step). Every task is safe to deliver
twice (acks_late redelivers after a crash): it checks the round's status and what is already
stored before working. Errors mark the round failed and re-raise; see docs/loop.md.
"""

from __future__ import annotations

from celery.signals import worker_ready, worker_shutdown

from worker.celery_app import (
    EVALUATE_ROUND,
    GENERATE_BATCH,
    GENERATE_EVAL,
    GENERATE_NEXT,
    JUDGE_ROUND,
    JUDGE_RUN,
    PING,
    REFRESH_PRIORITIES,
    SWEEP_ROUNDS,
    TRAIN_POLICY,
    TRAIN_REWARD,
    TRAIN_SFT,
    celery_app,
)
from worker.loop import (
    active_order,
    eval_generation,
    evaluation,
    generation,
    judging,
    next_round,
    policy,
    recovery,
    reward,
    round_judging,
    sft,
)


@celery_app.task(name=PING)
def ping(value: str = "pong") -> str:
    """Health check: proves a worker is consuming the queue."""
    return value


@celery_app.task(name=GENERATE_BATCH)
def generate_batch(round_id: int, batch: int) -> dict:
    return generation.run_batch(round_id, batch)


@celery_app.task(name=TRAIN_REWARD)
def train_reward(round_id: int) -> dict:
    return reward.run(round_id)


@celery_app.task(name=TRAIN_POLICY)
def train_policy(round_id: int) -> dict:
    return policy.run(round_id)


@celery_app.task(name=EVALUATE_ROUND)
def evaluate_round(round_id: int) -> dict:
    return evaluation.run(round_id)


@celery_app.task(name=GENERATE_EVAL)
def generate_eval(evaluation_id: int) -> dict:
    return eval_generation.run(evaluation_id)


@celery_app.task(name=GENERATE_NEXT)
def generate_next(round_id: int) -> dict:
    return next_round.run(round_id)


@celery_app.task(name=TRAIN_SFT)
def train_sft(job_id: int) -> dict:
    return sft.run(job_id)


@celery_app.task(name=JUDGE_RUN)
def judge_run(run_id: int) -> dict:
    return judging.run(run_id)


@celery_app.task(name=JUDGE_ROUND)
def judge_round(round_id: int) -> dict:
    return round_judging.run(round_id)


@celery_app.task(name=REFRESH_PRIORITIES)
def refresh_priorities(project_id: int, model_version_id: int, covers_task_id: int | None = None) -> dict:
    return active_order.run(project_id, model_version_id, covers_task_id)


@celery_app.task(name=SWEEP_ROUNDS)
def sweep_rounds() -> dict:
    """Also runs on a timer inside every worker; exposed for celery beat or cron."""
    return recovery.sweep()


_sweeper: recovery.SweepThread | None = None


@worker_ready.connect
def _start_sweeper(**_kwargs) -> None:
    global _sweeper
    _sweeper = recovery.SweepThread()
    _sweeper.start()


@worker_shutdown.connect
def _stop_sweeper(**_kwargs) -> None:
    if _sweeper is not None:
        _sweeper.stopping.set()
