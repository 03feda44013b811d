"""Training rounds for admins: launch, start training, cancel, retry, status, model versions.

Keyword-only functions taking the caller's session first; they flush, never commit (the request
owns the commit), and Celery tasks are sent by name only after that commit (queue.py). The state
machine itself lives in lifecycle.py; the worker side in worker/loop.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import FeedbackForm, ModelKind, ModelVersion, Project, RoundEvent, RoundStatus, TrainingRound, User
from app.models.judges import Judge
from app.projects.forms_config import aspects_of
from app.refusals import QUEUE_RETRY_AFTER_SECONDS, Refusal, retry_headers
from app.rounds import lifecycle
from app.rounds.lifecycle import ACTIVE, BUNDLED_MODEL, RUNNING, S
from app.rounds.queue import QueueUnreachable, check_reachable, settings_of
from app.rounds.schemas import RoundConfigIn


class RoundError(Refusal):
    """A request the round cannot take; `field` names what to change."""


class RoundNotFound(RoundError):
    status_code = 404


class RoundConflict(RoundError):
    status_code = 409


class QueueDown(RoundError):
    status_code = 503


def get_round(db: Session, *, round_id: int) -> TrainingRound:
    training_round = db.get(TrainingRound, round_id)
    if training_round is None:
        raise RoundNotFound("round_id", f"no training round {round_id}")
    return training_round


def list_rounds(db: Session, *, project: Project) -> list[TrainingRound]:
    return list(
        db.scalars(
            select(TrainingRound).where(TrainingRound.project_id == project.id).order_by(TrainingRound.number.desc())
        )
    )


def active_round(db: Session, *, project: Project) -> TrainingRound | None:
    return db.scalar(
        select(TrainingRound)
        .where(TrainingRound.project_id == project.id, TrainingRound.status.in_(ACTIVE))
        .order_by(TrainingRound.number.desc())
        .limit(1)
    )


def _ensure_queue(db: Session) -> None:
    try:
        check_reachable(settings_of(db))
    except QueueUnreachable as exc:
        raise QueueDown("queue", str(exc)) from None


def _check_weights(project: Project, config: RoundConfigIn) -> None:
    """reward.weights name a multi-aspect project's aspects, and some aspect weighs more than 0."""
    weights = config.reward.weights
    if not weights:
        return
    if project.feedback_form != FeedbackForm.multi_aspect:
        raise RoundError(
            "reward.weights", f"only a multi-aspect project has aspects; this one's form is {project.feedback_form}"
        )
    names = [aspect.name for aspect in aspects_of(project.form_settings)]
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise RoundError("reward.weights", f"{unknown[0]!r} is not one of the project's aspects ({', '.join(names)})")
    if not any(weights.values()):
        raise RoundError("reward.weights", "give at least one aspect a weight above 0")


def launch_round(db: Session, *, project: Project, config: RoundConfigIn, user: User | None = None) -> TrainingRound:
    """Round N from the project's unused prompts: round 0 starts from `config.model` or the bundled
    SmolLM2; later launches continue from the project's latest policy unless a model is named.
    Nothing is stored (and nothing enqueued) when the broker is down or the request is refused."""
    k = config.k if config.k is not None else project.k_min
    if not project.k_min <= k <= project.k_max:
        raise RoundError("k", f"must be within the project's range {project.k_min}–{project.k_max}, got {k}")
    group = config.rloo.k or k  # RLOO/GRPO sample the round's K per prompt unless told otherwise
    if config.optimizer in ("rloo", "grpo") and group < 2:
        raise RoundError("rloo.k", f"set a group of at least 2 samples per prompt: the round's K is {k}")
    if config.optimizer in ("rloo", "grpo") and config.rloo.minibatch_size > config.rloo.prompts_per_step * group:
        raise RoundError(
            "rloo.minibatch_size",
            f"must be ≤ prompts_per_step × k ({config.rloo.prompts_per_step} × {group}), "
            f"got {config.rloo.minibatch_size}",
        )
    _check_weights(project, config)
    if config.labeling.source == "judge" and db.scalar(select(Judge.id).where(Judge.project_id == project.id)) is None:
        raise RoundError(
            "labeling.source",
            "an AI-labelled round needs the project's AI judge: set one up on the project's Judge page first",
        )
    running = active_round(db, project=project)
    if running is not None:
        raise RoundConflict(
            "project",
            f"round {running.number} is still {running.status}; wait for it, or cancel it, before launching another",
        )
    limit = None if config.prompts.all_unlabeled else config.prompts.count
    prompts = lifecycle.unused_prompts(db, project_id=project.id, limit=limit)
    if not prompts:
        raise RoundError("prompts", "the project has no unused prompts; upload prompts first")
    _ensure_queue(db)

    if config.start_version_id is not None:
        policy_in = _start_version(db, project=project, version_id=config.start_version_id)
    elif config.model:
        policy_in = lifecycle.base_version(db, project_id=project.id, base_model=config.model)
    else:
        policy_in = lifecycle.latest_policy(db, project_id=project.id) or lifecycle.base_version(
            db, project_id=project.id, base_model=BUNDLED_MODEL
        )
    stored = {**config.model_dump(mode="json"), "k": k}
    number = lifecycle.next_number(db, project_id=project.id)
    training_round = lifecycle.create_round(
        db, project_id=project.id, number=number, policy_in_id=policy_in.id, config=stored, prompts=prompts
    )
    who = user.email if user is not None else "an API token"
    lifecycle.log_event(
        db,
        round_id=training_round.id,
        stage=S.pending,
        message=f"round {number} launched by {who}: {len(prompts)} prompts × K={k} "
        f"from {policy_in.kind} “{policy_in.name}”",
    )
    lifecycle.enqueue_step(db, training_round=training_round)
    return training_round


def _start_version(db: Session, *, project: Project, version_id: int) -> ModelVersion:
    """A version of this project that writes answers (an SFT model, a policy, a base)."""
    version = db.get(ModelVersion, version_id)
    if version is None or version.project_id != project.id:
        raise RoundError("start_version_id", f"no model version {version_id} in this project")
    if version.kind not in (ModelKind.base, ModelKind.sft, ModelKind.policy):
        raise RoundError(
            "start_version_id", f"model version {version_id} is a {version.kind} model; start from sft, policy or base"
        )
    if (version.config or {}).get("peft_method") == "prompt_tuning":
        raise RoundError(
            "start_version_id",
            f"model version {version_id} is a prompt-tuning adapter (a soft prompt), which cannot be merged into "
            "its base to train on; run SFT with LoRA, DoRA, IA3 or full fine-tuning to start a round from it",
        )
    return version


def start_training(db: Session, *, training_round: TrainingRound, force: bool = False) -> TrainingRound:
    """labeling → training_reward (an admin's click, or auto_start when the threshold is met)."""
    if training_round.status != S.labeling:
        raise RoundConflict(
            "status", f"round {training_round.number} is {training_round.status}; training starts from labeling"
        )
    progress = lifecycle.labeling_progress(db, training_round=training_round)
    if not (progress["threshold_met"] or force):
        wanted = training_round.config.get("labeling", {})
        raise RoundConflict(
            "labeling",
            f"threshold not reached: {progress['rankings']} rankings "
            f"(need {wanted.get('min_rankings')}), coverage {progress['coverage']:.0%} "
            f"(need {wanted.get('min_coverage', 1.0):.0%}); label more or force the start",
        )
    _ensure_queue(db)
    if not lifecycle.begin_training(
        db,
        training_round=training_round,
        reason="forced by an admin" if force and not progress["threshold_met"] else "started by an admin",
    ):
        raise RoundConflict("status", "the round changed meanwhile; reload it")
    db.refresh(training_round)
    return training_round


def on_rankings_added(db: Session, *, project_id: int) -> list[int]:
    """Hook for the labeling service: auto-start rounds whose threshold a new ranking reached."""
    return lifecycle.auto_start_ready(db, project_id=project_id)


def cancel_round(db: Session, *, training_round: TrainingRound) -> TrainingRound:
    """Stops the round: a running step notices at its next progress report and ends there.
    Rankings already made are kept (they still count for later reward models)."""
    if training_round.status not in ACTIVE:
        raise RoundConflict(
            "status", f"round {training_round.number} is {training_round.status} and cannot be cancelled"
        )
    previous = training_round.status
    if not lifecycle.transition(
        db, round_id=training_round.id, source=ACTIVE, target=S.cancelled, current_step=f"cancelled during {previous}"
    ):
        raise RoundConflict("status", "the round changed meanwhile; reload it")
    lifecycle.log_event(db, round_id=training_round.id, stage=previous, message=f"cancelled during {previous}")
    _cancel_linked(db, training_round=training_round, previous=previous)
    db.refresh(training_round)
    return training_round


def _cancel_linked(db: Session, *, training_round: TrainingRound, previous: str) -> None:
    """Round N in generating_next and the round N+1 it is generating go together."""
    if previous == S.generating_next:
        nxt = _neighbour(db, training_round=training_round, offset=1)
        if nxt is not None and lifecycle.transition(db, round_id=nxt.id, source=ACTIVE, target=S.cancelled):
            lifecycle.log_event(db, round_id=nxt.id, message=f"cancelled with round {training_round.number}")
    elif previous in (S.pending, S.generating):
        prev = _neighbour(db, training_round=training_round, offset=-1)
        if prev is not None and lifecycle.transition(db, round_id=prev.id, source=[S.generating_next], target=S.done):
            lifecycle.log_event(db, round_id=prev.id, message=f"done; round {training_round.number} was cancelled")


def _neighbour(db: Session, *, training_round: TrainingRound, offset: int) -> TrainingRound | None:
    return db.scalar(
        select(TrainingRound).where(
            TrainingRound.project_id == training_round.project_id,
            TrainingRound.number == training_round.number + offset,
        )
    )


def retry_round(db: Session, *, training_round: TrainingRound) -> TrainingRound:
    """A failed round resumes at the step that failed; a running one has its step enqueued again
    (harmless: a task checks what is stored before it works)."""
    if training_round.status == S.failed:
        step = training_round.error_step or S.pending
        if step not in RUNNING:
            raise RoundConflict("status", f"cannot resume at step {step!r}")
        _ensure_queue(db)
        lifecycle.transition(
            db,
            round_id=training_round.id,
            source=[S.failed],
            target=step,
            error_message=None,
            error_step=None,
            finished_at=None,
            claim_token=None,
            heartbeat_at=None,
        )
        lifecycle.log_event(db, round_id=training_round.id, stage=step, message=f"retry: resuming at {step}")
        _retry_linked(db, training_round=training_round, step=step)
    elif training_round.status in RUNNING:
        _ensure_queue(db)
        lifecycle.log_event(
            db, round_id=training_round.id, stage=training_round.status, message="retry: step enqueued again"
        )
    else:
        raise RoundConflict(
            "status",
            f"round {training_round.number} is {training_round.status}; only a failed or running round can be retried",
        )
    db.refresh(training_round)
    lifecycle.enqueue_step(db, training_round=training_round)
    return training_round


def _retry_linked(db: Session, *, training_round: TrainingRound, step: str) -> None:
    """A failure while generating round N+1 also failed round N's generating_next: revive both."""
    if step in (S.pending, S.generating):
        prev = _neighbour(db, training_round=training_round, offset=-1)
        if prev is not None and prev.status == S.failed and prev.error_step == S.generating_next:
            lifecycle.transition(
                db,
                round_id=prev.id,
                source=[S.failed],
                target=S.generating_next,
                error_message=None,
                error_step=None,
                finished_at=None,
            )
    elif step == S.generating_next:
        nxt = _neighbour(db, training_round=training_round, offset=1)
        if nxt is not None and nxt.status == S.failed:
            lifecycle.transition(
                db,
                round_id=nxt.id,
                source=[S.failed],
                target=nxt.error_step or S.generating,
                error_message=None,
                error_step=None,
                finished_at=None,
            )


def round_events(
    db: Session, *, round_id: int, after_id: int = 0, kind: str | None = None, limit: int = 500
) -> list[RoundEvent]:
    query = select(RoundEvent).where(RoundEvent.round_id == round_id, RoundEvent.id > after_id)
    if kind is not None:
        query = query.where(RoundEvent.kind == kind)
    return list(db.scalars(query.order_by(RoundEvent.id).limit(limit)))


def round_status(
    db: Session, *, round_id: int, events_after: int | None = None, event_limit: int = 200
) -> dict[str, Any]:
    """Everything the round page shows, as plain data (schemas.RoundOut). Events are included
    when `events_after` is given: those with a larger id, oldest first."""
    training_round = get_round(db, round_id=round_id)
    data = {
        column: getattr(training_round, column)
        for column in (
            "id",
            "project_id",
            "number",
            "status",
            "current_step",
            "progress",
            "eta_seconds",
            "error_message",
            "error_step",
            "policy_in_id",
            "reward_model_id",
            "policy_out_id",
            "config",
            "metrics",
            "created_at",
            "started_at",
            "finished_at",
        )
    }
    data["labeling"] = lifecycle.labeling_progress(db, training_round=training_round)
    data["events"] = (
        [] if events_after is None else round_events(db, round_id=round_id, after_id=events_after, limit=event_limit)
    )
    return data


def list_model_versions(db: Session, *, project: Project) -> list[ModelVersion]:
    """Newest first; follow parent_id for the lineage (base → policy r0 → policy r1 ...)."""
    return list(
        db.scalars(select(ModelVersion).where(ModelVersion.project_id == project.id).order_by(ModelVersion.id.desc()))
    )


__all__ = [
    "QUEUE_RETRY_AFTER_SECONDS",
    "QueueDown",
    "RoundConflict",
    "RoundError",
    "RoundNotFound",
    "RoundStatus",
    "active_round",
    "cancel_round",
    "get_round",
    "launch_round",
    "list_model_versions",
    "list_rounds",
    "on_rankings_added",
    "retry_headers",
    "retry_round",
    "round_events",
    "round_status",
    "start_training",
]
