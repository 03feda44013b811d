"""training_policy: PPO from the round's policy against the round's reward model.

A base or SFT model gets a fresh LoRA adapter; a policy from an earlier round continues its
adapter, and the reference (for the KL penalty) stays the model the lineage started from: the SFT
model when the rounds began from one (worker.ml merges its adapter and uses the merged model), else
the base. So the KL reported is the distance from that start across rounds.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from app.models import ModelKind, ModelVersion, TrainingRound
from app.rounds import lifecycle
from app.rounds.lifecycle import S
from worker.loop import artifacts, data
from worker.loop.configs import VersionRef, ppo_config, root_base, version_path
from worker.loop.runtime import Reporter, db_session, run_claimed_step

SUMMARY_KEYS = (
    "score",
    "kl",
    "entropy",
    "response_length",
    "kl_coef",
    "policy_loss",
    "value_loss",
    "clip_fraction",
    "approx_kl",
    "no_eos_fraction",
)


def run(round_id: int) -> dict[str, Any]:
    return run_claimed_step(round_id, S.training_policy, lambda _token: _train(round_id))


def _train(round_id: int) -> dict[str, Any]:
    from worker.ml.ppo import train_policy

    # 1. Inputs: the starting policy, the reward model, the prompts.
    with db_session(read_only=True) as db:
        training_round = db.get_one(TrainingRound, round_id)
        if training_round.policy_in_id is None:
            raise ValueError("policy_in_id: the round's starting policy was deleted")
        policy_in = db.get_one(ModelVersion, training_round.policy_in_id)
        reward = db.get(ModelVersion, training_round.reward_model_id)
        if reward is None or not reward.artifact_path:
            raise ValueError("reward_model_id: the round has no reward model; retry from training_reward")
        prompts = data.ppo_prompts(db, training_round=training_round)
        base_model = root_base(db, policy_in).base_model
        policy_ref = VersionRef.of(policy_in)
        project_id, number, config, reward_path = (
            training_round.project_id,
            training_round.number,
            training_round.config,
            reward.artifact_path,
        )
    if not prompts:
        raise ValueError("prompts: the rounds so far have no train-split prompts for PPO")
    out = artifacts.round_dir(project_id, number) / "policy"
    artifacts.prepare(out)  # an unwritable or full artifact disk fails here, before any PPO
    reporter = Reporter(round_id, S.training_policy)
    start = version_path(policy_ref.kind, policy_ref.base_model, policy_ref.artifact_path, reporter)
    cfg = ppo_config(config, model=start)

    # 2. PPO; the artifact folder appears complete or not at all (worker.ml renames it into place),
    #    and a disk fault gets a message naming it. Each iteration's statistics become a metric
    #    event at once, for the live charts.
    with artifacts.writing(out, "the policy"):
        history = train_policy(
            cfg, prompts, reward_path, out, reporter, on_step=lambda step, stats: _metric_point(round_id, step, stats)
        )
    summary = {key: round(history[key][-1], 5) for key in SUMMARY_KEYS if history.get(key)}
    summary.update(
        score_first=round(history["score"][0], 5),
        steps=len(history["score"]),
        seconds=round(history["total_seconds"], 2),
        prompts=len(prompts),
    )

    # 3. Register the policy and move on, in one transaction (only if still training_policy).
    with db_session() as db:
        if not lifecycle.transition(db, round_id=round_id, source=[S.training_policy], target=S.evaluating):
            db.rollback()
            return {"round_id": round_id, "skipped": "the round left training_policy meanwhile"}
        version = ModelVersion(
            project_id=project_id,
            kind=ModelKind.policy,
            name=f"round {number} policy",
            base_model=base_model,
            parent_id=policy_ref.id,
            round_id=round_id,
            artifact_path=str(out),
            config=cfg.to_dict(),
            metrics=summary,
        )
        db.add(version)
        db.flush()
        training_round = db.get_one(TrainingRound, round_id)
        db.execute(
            update(TrainingRound)
            .where(TrainingRound.id == round_id)
            .values(policy_out_id=version.id, metrics={**(training_round.metrics or {}), "policy": summary})
        )
        lifecycle.log_event(
            db,
            round_id=round_id,
            stage=S.training_policy,
            message=f"policy trained: score {summary['score_first']} → {summary.get('score')}, KL {summary.get('kl')}",
        )
        db.refresh(training_round)
        lifecycle.enqueue_step(db, training_round=training_round)
    return {"round_id": round_id, "policy_id": version.id, **summary}


def _metric_point(round_id: int, step: int, stats: dict[str, float]) -> None:
    with db_session() as db:
        lifecycle.log_event(
            db,
            round_id=round_id,
            stage=S.training_policy,
            kind="metric",
            step=step,
            data={key: float(stats[key]) for key in SUMMARY_KEYS if key in stats},
        )
