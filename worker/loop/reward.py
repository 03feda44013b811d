"""training_reward: a reward model on all of the project's rankings, validation prompts held out.

Also measures the previous round's reward model on this round's fresh human rankings (completions
of a policy it never saw) — the honest out-of-distribution figure — and stores it on that round.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import select, update

from app.models import ModelKind, ModelVersion, Project, PromptSplit, TrainingRound
from app.projects import priorities
from app.rounds import lifecycle
from app.rounds.lifecycle import S
from worker.loop import artifacts, data
from worker.loop.configs import (
    VersionRef,
    distributed_config,
    reward_aspects,
    reward_backbone,
    reward_config,
    root_base,
    version_path,
)
from worker.loop.runtime import Reporter, db_session, run_claimed_step


class PreviousRewardModel(NamedTuple):
    """The previous round's reward model, measured on this round's fresh rankings."""

    round_id: int
    artifact_path: str


def run(round_id: int) -> dict[str, Any]:
    return run_claimed_step(round_id, S.training_reward, lambda _token: _train(round_id))


def rm_accuracy(path: str, rankings: list, cfg) -> dict[str, Any] | None:
    """Pairwise accuracy (and loss) of the reward model at `path` on `rankings`; None without any."""
    if not rankings:
        return None
    from worker.ml.data import group_rankings
    from worker.ml.reward import evaluate
    from worker.ml.reward_sets import encode_sets
    from worker.ml.scorer import RewardScorer

    scorer = RewardScorer.load(path, device=cfg.device)
    sets = encode_sets(scorer.tokenizer, group_rankings(rankings), cfg.max_length, cfg.aspects)
    result = evaluate(scorer.model, sets, scorer.tokenizer.pad_token_id, scorer.device, cfg)
    return {**result, "rankings": len(rankings)}


def _train(round_id: int) -> dict[str, Any]:
    from worker.ml.distributed import launch_reward
    from worker.ml.reward import train_reward
    from worker.ml.vllm_engine import release_for_training

    # 1. Inputs: rankings by split, this round's fresh rankings, the previous reward model.
    with db_session(read_only=True) as db:
        training_round = db.get_one(TrainingRound, round_id)
        if training_round.policy_in_id is None:
            raise ValueError("policy_in_id: the round's starting policy was deleted")
        policy_in = db.get_one(ModelVersion, training_round.policy_in_id)
        # The reward model starts from the lineage's SFT model by default (InstructGPT), else the base.
        backbone_ref = VersionRef.of(
            reward_backbone(db, policy_in, training_round.config["reward"].get("init_from", "sft"))
        )
        base_model = root_base(db, policy_in).base_model
        project = db.get_one(Project, training_round.project_id)
        # A multi-aspect project's reward model has one head per aspect, combined by the round's weights.
        aspects = reward_aspects(project.feedback_form, project.form_settings, training_round.config)
        weights = aspects or None
        train = data.rankings(db, project_id=project.id, split=PromptSplit.train, weights=weights)
        val = data.rankings(db, project_id=project.id, split=PromptSplit.validation, weights=weights)
        fresh = data.rankings(db, project_id=project.id, round_id=round_id, weights=weights)
        prev = db.scalar(
            select(TrainingRound).where(
                TrainingRound.project_id == training_round.project_id, TrainingRound.number == training_round.number - 1
            )
        )
        prev_rm = db.get(ModelVersion, prev.reward_model_id) if prev is not None and prev.reward_model_id else None
        prev_ref = (
            PreviousRewardModel(prev.id, prev_rm.artifact_path)
            if prev is not None and prev_rm and prev_rm.artifact_path
            else None
        )
        project_id, number, config = training_round.project_id, training_round.number, training_round.config
    out = artifacts.round_dir(project_id, number) / "reward"
    artifacts.prepare(out)  # an unwritable or full artifact disk fails here, before any training
    release_for_training()  # this process's vLLM engine (if any) sleeps: training gets the GPU
    reporter = Reporter(round_id, S.training_reward)
    backbone = version_path(backbone_ref.kind, backbone_ref.base_model, backbone_ref.artifact_path, reporter)
    cfg = reward_config(config, backbone=backbone, round_id=round_id, aspects=aspects)

    # 2. The previous reward model on rankings of completions it never saw.
    ood = rm_accuracy(prev_ref.artifact_path, fresh, cfg) if prev_ref is not None else None
    reporter.check()

    # 3. Train (validation prompts are not in `train`), then measure on the held-out prompts.
    #    The folder appears complete or not at all; a disk fault gets a message naming it.
    with artifacts.writing(out, "the reward model"):
        dist = distributed_config()  # a worker owning N GPUs trains on all of them
        metrics = (
            train_reward(cfg, train, out, reporter) if dist is None else launch_reward(cfg, train, out, dist, reporter)
        )
    held_out = rm_accuracy(str(out), val, cfg)
    summary = {
        "val_accuracy": held_out and held_out["val_accuracy"],
        "val_loss": held_out and held_out["val_loss"],
        "val_pairs": held_out and held_out["val_pairs"],
        "val_rankings": len(val),
        "val_accuracy_by_k": held_out and held_out["val_accuracy_by_k"],
        **({"val_accuracy_by_aspect": held_out and held_out["val_accuracy_by_aspect"]} if aspects else {}),
        "train_rankings": len(train),
        "train_loss_first": metrics["train_loss_first"],
        "train_loss_last": metrics["train_loss_last"],
        "steps": metrics["steps"],
        "train_seconds": metrics["train_seconds"],
        "reward_mean": metrics["reward_mean"],
        "reward_std": metrics["reward_std"],
        "processes": metrics.get("processes", 1),
    }

    # 4. Register the model and move on, in one transaction (only if still training_reward).
    with db_session() as db:
        if not lifecycle.transition(db, round_id=round_id, source=[S.training_reward], target=S.training_policy):
            db.rollback()
            return {"round_id": round_id, "skipped": "the round left training_reward meanwhile"}
        version = ModelVersion(
            project_id=project_id,
            kind=ModelKind.reward,
            name=f"round {number} reward model",
            base_model=base_model,
            parent_id=backbone_ref.id,
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
            .values(reward_model_id=version.id, metrics={**(training_round.metrics or {}), "reward": summary})
        )
        lifecycle.log_event(
            db,
            round_id=round_id,
            stage=S.training_reward,
            kind="metric",
            data=summary,
            message=f"reward model trained on {len(train)} rankings; held-out accuracy {summary['val_accuracy']}",
        )
        if ood is not None and prev_ref is not None:
            _store_ood(db, prev_id=prev_ref.round_id, round_number=number, ood=ood)
        db.refresh(training_round)
        lifecycle.enqueue_step(db, training_round=training_round)
        # The handout's active-learning priorities from this model, if the project's order is active.
        priorities.refresh_after_training(db, project_id=project_id, reward_model_id=version.id)
    return {"round_id": round_id, "reward_model_id": version.id, **summary}


def _store_ood(db, *, prev_id: int, round_number: int, ood: dict[str, Any]) -> None:
    prev = db.get_one(TrainingRound, prev_id)
    figure = {
        "accuracy": ood["val_accuracy"],
        "pairs": ood["val_pairs"],
        "rankings": ood["rankings"],
        "round": round_number,
    }
    db.execute(
        update(TrainingRound)
        .where(TrainingRound.id == prev_id)
        .values(metrics={**(prev.metrics or {}), "reward_next_round": figure})
    )
    lifecycle.log_event(
        db,
        round_id=prev_id,
        stage=S.done,
        kind="metric",
        data=figure,
        message=f"this round's reward model on round {round_number}'s fresh rankings: accuracy {figure['accuracy']}",
    )
