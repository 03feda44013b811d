"""The round state machine, shared by the web process and the worker (no torch here).

    pending → generating → labeling → training_reward → training_policy → evaluating → generating_next → done
    (an AI-labelled round, labeling.source "judge": generating → judging → training_reward → ...)
    any active status → cancelled;  a running step → failed → (retry) the same step

Every change of status is one conditional UPDATE (`WHERE status IN (...)`), so two requests or two
deliveries of one task cannot both move a round: the second finds nothing to update. Work for a
status is enqueued by `enqueue_step` on the same session, sent only after its commit (queue.py).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, exists, func, select, update
from sqlalchemy.orm import Session

from app.models import (
    ModelKind,
    ModelVersion,
    Project,
    Prompt,
    PromptSplit,
    RankingTask,
    RoundEvent,
    RoundPrompt,
    RoundStatus,
    TaskStatus,
    TrainingRound,
    utcnow,
)
from app.rounds.queue import enqueue_on_commit, settings_of
from worker.celery_app import (
    EVALUATE_QUEUE,
    EVALUATE_ROUND,
    GENERATE_BATCH,
    GENERATE_NEXT,
    GENERATE_QUEUE,
    JUDGE_ROUND,
    TRAIN_POLICY,
    TRAIN_QUEUE,
    TRAIN_REWARD,
    queue_for,
)

S = RoundStatus
RUNNING = (
    S.pending,
    S.generating,
    S.judging,
    S.training_reward,
    S.training_policy,
    S.evaluating,
    S.generating_next,
)
"""A worker step is (or should be) under way."""
ACTIVE = (*RUNNING, S.labeling)
TERMINAL = (S.done, S.failed, S.cancelled)
STEP_TASKS: dict[str, tuple[str, str]] = {  # status (RoundStatus, a str) -> (task name, role)
    # A role is its default queue's name; queue_for adds the GPU class the settings give it.
    # Judge calls (an endpoint, or a small local model): generation-like work, not training.
    S.judging: (JUDGE_ROUND, GENERATE_QUEUE),
    S.training_reward: (TRAIN_REWARD, TRAIN_QUEUE),
    S.training_policy: (TRAIN_POLICY, TRAIN_QUEUE),
    # Loads the policies and the reward model: a queue of its own, which the training workers
    # can serve too (docs/deployment.md).
    S.evaluating: (EVALUATE_ROUND, EVALUATE_QUEUE),
    S.generating_next: (GENERATE_NEXT, GENERATE_QUEUE),
}
BUNDLED_MODEL = "bundled:SmolLM2-135M-Instruct"
"""ModelVersion.base_model of the bundled default; the worker converts it under its data dir."""


def transition(db: Session, *, round_id: int, source: Sequence[str], target: str, **values: Any) -> bool:
    """Move the round to `target` if it is in one of `source`; False when another actor won."""
    values.setdefault("current_step", target)
    values.setdefault("progress", 0.0)
    values.setdefault("eta_seconds", None)
    # A new status is free to be claimed by the task that works on it.
    values.setdefault("claim_token", None)
    values.setdefault("heartbeat_at", None)
    if target in TERMINAL:
        values.setdefault("finished_at", utcnow())
    result = db.execute(
        update(TrainingRound)
        .where(TrainingRound.id == round_id, TrainingRound.status.in_(source))
        .values(status=target, **values)
        .execution_options(synchronize_session=False)
    )
    updated = cast(CursorResult, result).rowcount == 1  # an UPDATE's result (typed as the wider Result)
    if updated:
        row = db.identity_map.get(db.identity_key(TrainingRound, round_id))  # keep a loaded row truthful
        if row is not None:
            db.expire(row)
    return updated


def log_event(
    db: Session,
    *,
    round_id: int,
    message: str = "",
    stage: str = "",
    kind: str = "log",
    step: int | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    db.add(RoundEvent(round_id=round_id, kind=kind, stage=stage, step=step, data=data or {}, message=message))


# ---- what each status needs from a worker -----------------------------------------------------


def pending_batches(db: Session, *, round_id: int) -> list[int]:
    return list(
        db.scalars(
            select(RoundPrompt.batch)
            .where(RoundPrompt.round_id == round_id, RoundPrompt.generated_at.is_(None))
            .distinct()
            .order_by(RoundPrompt.batch)
        )
    )


def enqueue_step(db: Session, *, training_round: TrainingRound) -> list[str]:
    """Enqueue (on commit) the work the round's status calls for; returns the task names.
    Safe to call again: every task checks the status and what is already stored first."""
    # A round's own GPU class (config gpu_class) wins over the deployment's class for the role.
    gpu_class = (training_round.config or {}).get("gpu_class") or None
    if training_round.status in (S.pending, S.generating):
        batches = pending_batches(db, round_id=training_round.id)
        for batch in batches:
            enqueue_on_commit(
                db,
                GENERATE_BATCH,
                training_round.id,
                batch,
                queue=queue_for(GENERATE_QUEUE, settings_of(db), gpu_class=gpu_class),
            )
        return [GENERATE_BATCH] * len(batches)
    if training_round.status in STEP_TASKS:
        name, role = STEP_TASKS[training_round.status]
        enqueue_on_commit(db, name, training_round.id, queue=queue_for(role, settings_of(db), gpu_class=gpu_class))
        return [name]
    return []


# ---- creating rounds --------------------------------------------------------------------------


def unused_prompts(db: Session, *, project_id: int, limit: int | None) -> list[Prompt]:
    """Prompts no round has taken and no ranking task shows yet, oldest first (never the eval set)."""
    query = (
        select(Prompt)
        .where(
            Prompt.project_id == project_id,
            Prompt.split != PromptSplit.eval,
            ~exists().where(RoundPrompt.prompt_id == Prompt.id),
            ~exists().where(RankingTask.prompt_id == Prompt.id),
        )
        .order_by(Prompt.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return list(db.scalars(query))


def create_round(
    db: Session, *, project_id: int, number: int, policy_in_id: int, config: dict[str, Any], prompts: Sequence[Prompt]
) -> TrainingRound:
    """A pending round with its prompts split into generation batches; flushes, does not enqueue."""
    training_round = TrainingRound(
        project_id=project_id,
        number=number,
        status=S.pending,
        config=config,
        policy_in_id=policy_in_id,
        current_step=S.pending,
        progress=0.0,
        metrics={},
    )
    db.add(training_round)
    db.flush()
    _hold_out_validation(prompts, fraction=config["prompts"]["validation_fraction"], seed=config["seed"] + number)
    per_batch = config["generation"]["prompts_per_task"]
    db.add_all(
        RoundPrompt(round_id=training_round.id, prompt_id=p.id, batch=i // per_batch) for i, p in enumerate(prompts)
    )
    db.flush()
    return training_round


def _hold_out_validation(prompts: Sequence[Prompt], *, fraction: float, seed: int) -> None:
    """Mark a share of new prompts `validation`, unless some came with that split already."""
    if fraction <= 0 or len(prompts) < 2 or any(p.split == PromptSplit.validation for p in prompts):
        return
    n_val = min(max(round(len(prompts) * fraction), 1), len(prompts) - 1)
    for prompt in random.Random(seed).sample(list(prompts), n_val):
        prompt.split = PromptSplit.validation


def next_number(db: Session, *, project_id: int) -> int:
    latest = db.scalar(select(func.max(TrainingRound.number)).where(TrainingRound.project_id == project_id))
    return 0 if latest is None else latest + 1


def latest_policy(db: Session, *, project_id: int) -> ModelVersion | None:
    return db.scalar(
        select(ModelVersion)
        .where(ModelVersion.project_id == project_id, ModelVersion.kind == ModelKind.policy)
        .order_by(ModelVersion.id.desc())
        .limit(1)
    )


def base_version(db: Session, *, project_id: int, base_model: str) -> ModelVersion:
    """The project's base ModelVersion for `base_model`, created on first use."""
    row = db.scalar(
        select(ModelVersion)
        .where(
            ModelVersion.project_id == project_id,
            ModelVersion.kind == ModelKind.base,
            ModelVersion.base_model == base_model,
        )
        .limit(1)
    )
    if row is None:
        name = "SmolLM2-135M-Instruct (bundled)" if base_model == BUNDLED_MODEL else base_model.rstrip("/")[-200:]
        row = ModelVersion(
            project_id=project_id,
            kind=ModelKind.base,
            name=name,
            base_model=base_model,
            artifact_path=None if base_model == BUNDLED_MODEL else base_model,
            config={},
            metrics={},
        )
        db.add(row)
        db.flush()
    return row


# ---- labeling progress and the threshold ------------------------------------------------------


def labeling_progress(db: Session, *, training_round: TrainingRound, overlap: int | None = None) -> dict[str, Any]:
    if overlap is None:
        overlap = db.scalar(select(Project.overlap).where(Project.id == training_round.project_id)) or 1
    # A task's rankings beyond the overlap do not raise coverage.
    capped = (func.min if db.get_bind().dialect.name == "sqlite" else func.least)(RankingTask.rankings_count, overlap)
    tasks, rankings, counted = db.execute(
        select(
            func.count(), func.coalesce(func.sum(RankingTask.rankings_count), 0), func.coalesce(func.sum(capped), 0)
        ).where(RankingTask.round_id == training_round.id, RankingTask.status != TaskStatus.retired)
    ).one()
    wanted = tasks * overlap
    coverage = (counted / wanted) if wanted else 0.0
    threshold = training_round.config.get("labeling", {})
    met = (
        tasks > 0
        and rankings >= threshold.get("min_rankings", 1)
        and coverage >= threshold.get("min_coverage", 1.0) - 1e-9
    )
    return {
        "tasks": tasks,
        "rankings": int(rankings),
        "wanted": wanted,
        "coverage": round(coverage, 4),
        "threshold_met": bool(met),
    }


def labeled_by_judge(config: dict[str, Any]) -> bool:
    """An AI-labelled round (RLAIF): the project's judge ranks its tasks; no human is waited for."""
    return (config.get("labeling") or {}).get("source") == "judge"


def next_round_config(config: dict[str, Any]) -> dict[str, Any]:
    """Round N+1's settings: round N's, except that an AI-labelled run of rounds counts down
    (labeling.judge_rounds) and hands over to the labeling team after its last round."""
    if not labeled_by_judge(config):
        return config
    labeling = dict(config["labeling"])
    remaining = int(labeling.get("judge_rounds", 1)) - 1
    if remaining >= 1:
        labeling["judge_rounds"] = remaining
    else:
        labeling.update(source="humans", judge_rounds=1)
    return {**config, "labeling": labeling}


def begin_training(
    db: Session, *, training_round: TrainingRound, reason: str, source: Sequence[str] = (S.labeling,)
) -> bool:
    """labeling (or judging) → training_reward, and enqueue the reward model; False when the
    round is no longer in `source`."""
    if not transition(db, round_id=training_round.id, source=source, target=S.training_reward, started_at=utcnow()):
        return False
    db.refresh(training_round)
    log_event(db, round_id=training_round.id, stage=S.training_reward, message=f"training started ({reason})")
    enqueue_step(db, training_round=training_round)
    return True


def auto_start_ready(db: Session, *, project_id: int | None = None) -> list[int]:
    """Start training on labeling rounds with auto_start whose threshold is met; returns their ids."""
    query = select(TrainingRound).where(TrainingRound.status == S.labeling)
    if project_id is not None:
        query = query.where(TrainingRound.project_id == project_id)
    started = []
    for training_round in db.scalars(query).all():
        if not training_round.config.get("labeling", {}).get("auto_start"):
            continue
        if labeling_progress(db, training_round=training_round)["threshold_met"] and begin_training(
            db, training_round=training_round, reason="labeling threshold reached"
        ):
            started.append(training_round.id)
    return started
