"""Generation of a round: K completions per prompt, one job per batch of prompts, and the final
step (run by whichever job stores the last batch) that turns them into ranking tasks.

Safe to run twice: a batch stores its completions in the same transaction that stamps its
prompts' `generated_at`, and only when none was stamped meanwhile; the final step runs inside the
conditional generating → labeling transition, so ranking tasks are created once.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, func, insert, select, update

from app.markdown import html_columns
from app.models import (
    Completion,
    CompletionSource,
    ModelVersion,
    Project,
    Prompt,
    RankingTask,
    RoundPrompt,
    TaskCompletion,
    TrainingRound,
    utcnow,
)
from app.projects import priorities
from app.rounds import lifecycle
from app.rounds.lifecycle import S
from worker.loop.configs import VersionRef, generation_config, version_path
from worker.loop.runtime import Cancelled, Heartbeat, Reporter, db_session, inject_fault, mark_failed

GENERATING = (S.pending, S.generating)


def run_batch(round_id: int, batch: int) -> dict[str, Any]:
    """The GENERATE_BATCH task body: errors mark the round failed (at `generating`) and re-raise."""
    try:
        return _run_batch(round_id, batch)
    except Cancelled as exc:
        return {"round_id": round_id, "batch": batch, "stopped": str(exc)}
    except Exception as exc:
        mark_failed(round_id, S.generating, exc, statuses=GENERATING)
        raise


def _run_batch(round_id: int, batch: int) -> dict[str, Any]:
    # 1. Load the batch's prompts that still need completions, and what generates them.
    with db_session() as db:
        training_round = db.get(TrainingRound, round_id)
        if training_round is None or training_round.status not in GENERATING:
            return {
                "round_id": round_id,
                "batch": batch,
                "skipped": f"round is {getattr(training_round, 'status', None)}",
            }
        if lifecycle.transition(
            db, round_id=round_id, source=[S.pending], target=S.generating, started_at=utcnow(), heartbeat_at=utcnow()
        ):
            lifecycle.log_event(db, round_id=round_id, stage=S.generating, message="generation started")
        rows = db.execute(
            select(Prompt.id, Prompt.text, Prompt.messages)
            .join(RoundPrompt, RoundPrompt.prompt_id == Prompt.id)
            .where(RoundPrompt.round_id == round_id, RoundPrompt.batch == batch, RoundPrompt.generated_at.is_(None))
            .order_by(Prompt.id)
        ).all()
        total, done_before = db.execute(
            select(func.count(), func.count(RoundPrompt.generated_at)).where(RoundPrompt.round_id == round_id)
        ).one()
        if training_round.policy_in_id is None:
            raise ValueError("policy_in_id: the round's starting policy was deleted")
        policy = db.get_one(ModelVersion, training_round.policy_in_id)
        config, number = training_round.config, training_round.number
        policy_ref = VersionRef.of(policy)
    if rows:
        inject_fault(S.generating)
        with Heartbeat(round_id, statuses=GENERATING):
            generated = _generate(round_id, rows, config, number, batch, policy_ref, total, done_before)
        stored = _store(round_id, batch, rows, generated, config, policy_ref)
    else:
        stored = 0
    finished = finish_if_complete(round_id)
    return {"round_id": round_id, "batch": batch, "completions": stored, "finished": finished}


def _generate(round_id, rows, config, number, batch, policy_ref, total, done_before):
    from worker.ml.generate import generate

    reporter = Reporter(
        round_id, S.generating, statuses=GENERATING, overall=lambda done, _n: (done_before + done) / total
    )
    reporter.check()
    cfg = generation_config(config, batch=batch, number=number)
    # A served model (backend openai) writes the completions: nothing is loaded here.
    model = (
        ""
        if cfg.backend == "openai"
        else version_path(policy_ref.kind, policy_ref.base_model, policy_ref.artifact_path, reporter)
    )
    prompts = [text if text is not None else messages for _pid, text, messages in rows]
    return generate(model, prompts, cfg, reporter, model_version=str(policy_ref.id)), cfg


def _store(round_id, batch, rows, generated, config, policy_ref) -> int:
    """Completions and the prompts' generated_at in one transaction, or nothing at all."""
    results, cfg = generated
    prompt_ids = [row.id for row in rows]
    remote = cfg.backend == "openai"
    # Provenance: a served model's completions name it; the round still trains its starting policy.
    model_name = f"{cfg.remote_model} (served at {cfg.base_url})" if remote else policy_ref.name
    params = {
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_new_tokens": cfg.max_new_tokens,
        "seed": cfg.seed,
        "k": cfg.k,
        "round_id": round_id,
        "batch": batch,
        **({"backend": "openai", "base_url": cfg.base_url, "remote_model": cfg.remote_model} if remote else {}),
    }
    with db_session() as db:
        status = db.scalar(select(TrainingRound.status).where(TrainingRound.id == round_id).with_for_update())
        if status not in GENERATING:
            raise Cancelled(f"round {round_id} is {status}; generated completions discarded")
        stamped = db.execute(
            update(RoundPrompt)
            .where(
                RoundPrompt.round_id == round_id,
                RoundPrompt.prompt_id.in_(prompt_ids),
                RoundPrompt.generated_at.is_(None),
            )
            .values(generated_at=utcnow())
        )
        # An UPDATE gives a CursorResult (Session.execute is typed with the wider Result).
        if cast(CursorResult, stamped).rowcount != len(prompt_ids):  # another delivery of this batch stored it first
            db.rollback()
            return 0
        values = [
            {
                "prompt_id": pid,
                "text": c.text,
                "source": CompletionSource.model,
                "model_name": model_name,
                "model_version_id": policy_ref.id,
                "generation_params": params,
                "token_count": c.token_count,
                "finish_reason": c.finish_reason,
                "created_at": utcnow(),
                **html_columns(c.text),
            }
            for pid, completions in zip(prompt_ids, results, strict=True)
            for c in completions
        ]
        db.execute(insert(Completion), values)
        # This job's heartbeat ends here; a job still running beats again within seconds.
        db.execute(update(TrainingRound).where(TrainingRound.id == round_id).values(heartbeat_at=None))
    return len(values)


def finish_if_complete(round_id: int) -> bool:
    """When every prompt of the round has its completions: ranking tasks, generating → labeling
    (judging, with the judge's step enqueued, in an AI-labelled round), and round N-1 (in
    generating_next) → done. Runs once, inside the conditional transition."""
    with db_session() as db:
        remaining = db.scalar(
            select(func.count())
            .select_from(RoundPrompt)
            .where(RoundPrompt.round_id == round_id, RoundPrompt.generated_at.is_(None))
        )
        if remaining:
            return False
        config = db.scalar(select(TrainingRound.config).where(TrainingRound.id == round_id)) or {}
        by_judge = lifecycle.labeled_by_judge(config)
        target = S.judging if by_judge else S.labeling
        if not lifecycle.transition(db, round_id=round_id, source=GENERATING, target=target):
            return False
        training_round = db.get_one(TrainingRound, round_id)
        summary = _create_tasks(db, training_round=training_round)
        db.execute(
            update(TrainingRound)
            .where(TrainingRound.id == round_id)
            .values(metrics={**(training_round.metrics or {}), "generation": summary})
        )
        lifecycle.log_event(
            db,
            round_id=round_id,
            stage=target,
            kind="metric",
            data=summary,
            message=f"{summary['tasks']} {summary['form'].replace('_', ' ')} tasks "
            + ("for the AI judge to label" if by_judge else "open for labeling"),
        )
        if by_judge:
            lifecycle.enqueue_step(db, training_round=training_round)
        else:  # under an active handout order the new tasks get scored, not queued behind the old
            priorities.refresh_after_new_tasks(db, project_id=training_round.project_id)
        prev = db.scalar(
            select(TrainingRound).where(
                TrainingRound.project_id == training_round.project_id, TrainingRound.number == training_round.number - 1
            )
        )
        if prev is not None and lifecycle.transition(db, round_id=prev.id, source=[S.generating_next], target=S.done):
            lifecycle.log_event(
                db, round_id=prev.id, stage=S.done, message=f"done: round {training_round.number} is open for labeling"
            )
        lifecycle.auto_start_ready(db, project_id=training_round.project_id)
    return True


def _create_tasks(db, *, training_round: TrainingRound) -> dict[str, Any]:
    rows = db.execute(
        select(Completion.id, Completion.prompt_id, Completion.token_count, Completion.finish_reason)
        .join(RoundPrompt, RoundPrompt.prompt_id == Completion.prompt_id)
        .where(RoundPrompt.round_id == training_round.id, Completion.model_version_id == training_round.policy_in_id)
        .order_by(Completion.prompt_id, Completion.id)
    ).all()
    # Tasks take the project's feedback form (ranking, pairwise, Likert, ...): one kind per project.
    kind = db.scalar(select(Project.feedback_form).where(Project.id == training_round.project_id))
    by_prompt: dict[int, list[int]] = {}
    for completion_id, prompt_id, _tokens, _reason in rows:
        by_prompt.setdefault(prompt_id, []).append(completion_id)
    for prompt_id, completion_ids in by_prompt.items():
        task_id = db.scalar(
            insert(RankingTask)
            .values(
                project_id=training_round.project_id,
                prompt_id=prompt_id,
                round_id=training_round.id,
                kind=kind,
                created_at=utcnow(),
            )
            .returning(RankingTask.id)
        )
        db.execute(
            insert(TaskCompletion),
            [{"task_id": task_id, "completion_id": cid, "position": i} for i, cid in enumerate(completion_ids)],
        )
    tokens = [r.token_count or 0 for r in rows]
    return {
        "form": kind,
        "tasks": len(by_prompt),
        "completions": len(rows),
        "mean_tokens": round(sum(tokens) / len(tokens), 2) if tokens else 0.0,
        "eos_fraction": round(sum(r.finish_reason == "eos" for r in rows) / len(rows), 4) if rows else 0.0,
    }
