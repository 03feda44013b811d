"""training_policy: the round's policy step, by the optimizer its config names (optimizers.py).

A base or SFT model gets a fresh LoRA adapter; a policy from an earlier round continues its
adapter (whichever optimizer trained it), and the reference stays the model the lineage started
from: the SFT model when the rounds began from one (worker.ml merges its adapter and uses the
merged model), else the base. So the KL reported is the distance from that start across rounds.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import update

from app.models import ModelKind, ModelVersion, Project, PromptSplit, TrainingRound
from app.rounds import lifecycle
from app.rounds.lifecycle import S
from worker.loop import artifacts, data
from worker.loop.configs import VersionRef, reward_aspects, root_base, version_path
from worker.loop.optimizers import OPTIMIZERS, PolicyRun
from worker.loop.runtime import Reporter, db_session, run_claimed_step


def run(round_id: int) -> dict[str, Any]:
    return run_claimed_step(round_id, S.training_policy, lambda _token: _train(round_id))


def _train(round_id: int) -> dict[str, Any]:
    from worker.ml.vllm_engine import release_for_training  # torch: the worker's import only

    # 1. Inputs: the starting policy, the reward model, the prompts, and (DPO, KTO) the judgments.
    with db_session(read_only=True) as db:
        training_round = db.get_one(TrainingRound, round_id)
        optimizer = OPTIMIZERS[training_round.config.get("optimizer", "ppo")]
        if training_round.policy_in_id is None:
            raise ValueError("policy_in_id: the round's starting policy was deleted")
        policy_in = db.get_one(ModelVersion, training_round.policy_in_id)
        reward = db.get(ModelVersion, training_round.reward_model_id)
        reward_path = reward.artifact_path if reward is not None else None
        if optimizer.needs_reward_model and not reward_path:
            raise ValueError("reward_model_id: the round has no reward model; retry from training_reward")
        prompts = data.ppo_prompts(db, training_round=training_round)
        judgments: list = []
        held_out: list = []
        if optimizer.reads is not None:  # DPO, KTO: the judgments themselves, not the reward model
            section, setting = optimizer.reads.setting.split(".")
            line = (
                [round_id]
                if training_round.config[section][setting] == "this_round"
                else data.policy_line_rounds(db, training_round=training_round)
            )
            project = db.get_one(Project, training_round.project_id)
            read = functools.partial(
                optimizer.reads.load,
                db,
                project_id=project.id,
                round_ids=line,
                weights=reward_aspects(project.feedback_form, project.form_settings, training_round.config) or None,
            )
            judgments, held_out = read(split=PromptSplit.train), read(split=PromptSplit.validation)
        base_model = root_base(db, policy_in).base_model
        policy_ref = VersionRef.of(policy_in)
        project_id, number, config = training_round.project_id, training_round.number, training_round.config
    out = artifacts.round_dir(project_id, number) / "policy"
    artifacts.prepare(out)  # an unwritable or full artifact disk fails here, before any training
    release_for_training()  # this process's vLLM engine (if any) sleeps: training gets the GPU
    reporter = Reporter(round_id, S.training_policy)
    policy_run = PolicyRun(
        round_id=round_id,
        config=config,
        start=version_path(policy_ref.kind, policy_ref.base_model, policy_ref.artifact_path, reporter),
        reward_path=reward_path,
        prompts=prompts,
        judgments=judgments,
        held_out=held_out,
        out=out,
        reporter=reporter,
        on_step=lambda step, stats: _metric_point(round_id, step, stats),
    )

    # 2. Train; the artifact folder appears complete or not at all (worker.ml renames it into
    #    place), and a disk fault gets a message naming it. Each step's statistics become a
    #    metric event at once, for the live charts.
    with artifacts.writing(out, "the policy"):
        trained = optimizer.train(policy_run)
    summary = {"optimizer": optimizer.name, **trained.summary}

    # 3. Register the policy and move on, in one transaction (only if still training_policy).
    with db_session() as db:
        if not lifecycle.transition(db, round_id=round_id, source=[S.training_policy], target=S.evaluating):
            db.rollback()
            return {"round_id": round_id, "skipped": "the round left training_policy meanwhile"}
        version = ModelVersion(
            project_id=project_id,
            kind=ModelKind.policy,
            name=f"round {number} policy ({optimizer.label})",
            base_model=base_model,
            parent_id=policy_ref.id,
            round_id=round_id,
            artifact_path=str(out),
            config=trained.config,
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
        message = f"policy trained by {optimizer.label}: {trained.message}"
        lifecycle.log_event(db, round_id=round_id, stage=S.training_policy, message=message)
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
            data={key: float(value) for key, value in stats.items() if isinstance(value, (int, float))},
        )
