"""generating_next: round N's new policy writes the completions of round N+1.

Creates round N+1 (same settings but an AI-labelled run's countdown, lifecycle.next_round_config;
policy_in = round N's policy, the next unused prompts) and
enqueues its generation; when that finishes (generation.finish_if_complete) round N+1 opens for
labeling and round N is done. With no unused prompts left, round N is simply done.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.models import TrainingRound
from app.rounds import lifecycle
from app.rounds.lifecycle import S
from worker.loop.runtime import db_session, inject_fault, mark_failed


def run(round_id: int) -> dict[str, Any]:
    try:
        inject_fault(S.generating_next)
        return _spawn(round_id)
    except IntegrityError:  # another delivery created round N+1 first: just make sure it runs
        return _spawn(round_id)
    except Exception as exc:
        mark_failed(round_id, S.generating_next, exc)
        raise


def _spawn(round_id: int) -> dict[str, Any]:
    with db_session() as db:
        training_round = db.get(TrainingRound, round_id)
        if training_round is None or training_round.status != S.generating_next:
            return {"round_id": round_id, "skipped": f"round is {getattr(training_round, 'status', None)}"}
        nxt = db.scalar(
            select(TrainingRound).where(
                TrainingRound.project_id == training_round.project_id, TrainingRound.number == training_round.number + 1
            )
        )
        if nxt is not None:
            lifecycle.enqueue_step(db, training_round=nxt)
            return {"round_id": round_id, "next_round_id": nxt.id, "existing": True}
        selection = training_round.config["prompts"]
        prompts = lifecycle.unused_prompts(
            db, project_id=training_round.project_id, limit=None if selection["all_unlabeled"] else selection["count"]
        )
        if not prompts:
            lifecycle.transition(db, round_id=round_id, source=[S.generating_next], target=S.done)
            lifecycle.log_event(
                db,
                round_id=round_id,
                stage=S.done,
                message="done; no unused prompts are left for a next round — upload more prompts "
                "and launch a round to continue from this policy",
            )
            return {"round_id": round_id, "next_round_id": None}
        if training_round.policy_out_id is None:
            raise ValueError("policy_out_id: the round's trained policy was deleted")
        nxt = lifecycle.create_round(
            db,
            project_id=training_round.project_id,
            number=training_round.number + 1,
            policy_in_id=training_round.policy_out_id,
            config=lifecycle.next_round_config(training_round.config),
            prompts=prompts,
        )
        lifecycle.log_event(
            db,
            round_id=nxt.id,
            stage=S.pending,
            message=(
                f"round {nxt.number} created by round {training_round.number}: "
                f"{len(prompts)} prompts from the new policy"
            ),
        )
        lifecycle.log_event(
            db,
            round_id=round_id,
            stage=S.generating_next,
            message=f"generating round {nxt.number} ({len(prompts)} prompts)",
        )
        lifecycle.enqueue_step(db, training_round=nxt)
        return {"round_id": round_id, "next_round_id": nxt.id}
