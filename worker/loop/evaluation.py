"""evaluating: after PPO, the new policy (and the base and previous policy, once) answers the
project's fixed eval prompts; every eval answer is scored by the round's new reward model; per
version metrics are stored (VersionEval) with the length-controlled reward win rate of the new
policy against the previous one. Then, when configured, a blind human evaluation is launched.

Safe to deliver twice: answers are generated only where missing (eval_answers.py), scores only
where missing, and the VersionEval rows, the round's summary and the move to generating_next are
written in one final transaction (rows of an earlier run of this step are replaced). Maths in
worker/ml/evaluation.py; docs/evaluation-metrics.md.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, update

from app.evaluation.choices import eval_prompts
from app.models import ModelVersion, TrainingRound, VersionEval
from app.rounds import lifecycle
from app.rounds.lifecycle import S
from app.rounds.schemas import EvaluationSettings
from worker.loop import eval_answers, eval_metrics, eval_scores
from worker.loop.configs import VersionRef, root_base, version_path
from worker.loop.runtime import Reporter, db_session, run_claimed_step

PHASES = {"eval answers": (0.0, 0.5), "scoring": (0.5, 0.7), "kl": (0.7, 1.0)}
"""Share of the step's progress bar per phase (the stage name's first words)."""


def run(round_id: int) -> dict[str, Any]:
    return run_claimed_step(round_id, S.evaluating, lambda _token: _evaluate(round_id))


class _Progress(Reporter):
    """One progress bar over the phases."""

    def __init__(self, round_id: int):
        super().__init__(round_id, S.evaluating, overall=self._overall)
        self._phase = (0.0, 1.0)

    def __call__(self, done: int, total: int, stage: str) -> None:
        self._phase = next((span for name, span in PHASES.items() if stage.startswith(name)), (0.0, 1.0))
        super().__call__(done, total, stage)

    def _overall(self, done: int, total: int) -> float:
        start, end = self._phase
        return start + (end - start) * (done / total if total else 1.0)


def _evaluate(round_id: int) -> dict[str, Any]:
    # 1. What to evaluate: the eval prompts, the versions, the round's reward model.
    with db_session(read_only=True) as db:
        training_round = db.get_one(TrainingRound, round_id)
        settings = EvaluationSettings.model_validate(training_round.config.get("evaluation", {}))
        if not settings.metrics:
            return _finish(round_id, None, "eval metrics off: skipped")
        prompts = [p.id for p in eval_prompts(db, project_id=training_round.project_id, limit=settings.max_prompts)]
        if not prompts:
            return _finish(round_id, None, "no eval set: skipped (hold out eval prompts to get eval metrics)")
        if training_round.policy_out_id is None or training_round.policy_in_id is None:
            raise ValueError("policy_out_id: the round has no trained policy; retry from training_policy")
        reward = db.get(ModelVersion, training_round.reward_model_id)
        if reward is None or not reward.artifact_path:
            raise ValueError("reward_model_id: the round has no reward model; retry from training_reward")
        new = VersionRef.of(db.get_one(ModelVersion, training_round.policy_out_id))
        previous_row = db.get_one(ModelVersion, training_round.policy_in_id)
        previous, base = VersionRef.of(previous_row), VersionRef.of(root_base(db, previous_row))
        roles = {"base": base, "previous": previous, "new": new}
        versions = list(dict.fromkeys(ref.id for ref in roles.values()))
        refs = {ref.id: ref for ref in roles.values()}
        sampling = eval_answers.Sampling.of(training_round.config, settings.seed)
        todo = eval_answers.missing(db, version_ids=versions, prompt_ids=prompts, seed=settings.seed)
        project_id, reward_id, reward_path = training_round.project_id, reward.id, reward.artifact_path

    # 2. Answers each version still lacks, then every unscored eval answer of the project.
    reporter = _Progress(round_id)
    reporter.check()
    generated = eval_answers.generate_missing(todo, sampling, reporter, check=reporter.check)
    scored = eval_scores.score_project(project_id, reward_id, reward_path, reporter)
    reporter.check()

    # 3. Metrics per version (KL against the reference the round's PPO used).
    from worker.ml.models import base_of_adapter

    reference = base_of_adapter(new.artifact_path) if new.artifact_path else None
    paths = {ref.id: version_path(ref.kind, ref.base_model, ref.artifact_path, reporter) for ref in refs.values()}
    per_version = eval_metrics.compute(
        refs=refs,
        roles=roles,
        paths=paths,
        reference=reference,
        prompt_ids=prompts,
        sampling=sampling,
        reward_id=reward_id,
        seed=settings.seed,
        on_progress=reporter,
    )
    summary = {
        "reward_model_id": reward_id,
        "prompts": len(prompts),
        "seed": settings.seed,
        "generated": generated,
        "scored": scored,
        "versions": {role: ref.id for role, ref in roles.items()},
        "by_role": {role: per_version[ref.id] for role, ref in roles.items()},
    }
    return _finish(round_id, summary, _message(summary), rows=per_version)


def _message(summary: dict[str, Any]) -> str:
    new = summary["by_role"]["new"]
    lc = new.get("lc_win_rate_vs_previous")
    tail = (
        f"; LC reward win rate vs previous {lc['lc_win_rate']:.0%} "
        f"[{lc['lc_win_rate_ci'][0]:.0%}, {lc['lc_win_rate_ci'][1]:.0%}] (raw {lc['win_rate']:.0%})"
        if lc
        else ""
    )
    return (
        f"eval metrics on {summary['prompts']} prompts: new policy RM score {new['rm_score']:+.3f}, "
        f"{new['mean_tokens']:.1f} tokens, KL {new['kl_to_reference']:.3f}{tail}"
    )


def _finish(
    round_id: int, summary: dict[str, Any] | None, message: str, *, rows: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One transaction: VersionEval rows, the round's summary, evaluating → generating_next, the
    human evaluation when configured, and the next step enqueued."""
    with db_session() as db:
        if not lifecycle.transition(db, round_id=round_id, source=[S.evaluating], target=S.generating_next):
            db.rollback()
            return {"round_id": round_id, "skipped": "the round left evaluating meanwhile"}
        training_round = db.get_one(TrainingRound, round_id)
        if summary is not None and rows is not None:
            reward_id = summary["reward_model_id"]
            db.execute(
                delete(VersionEval).where(
                    VersionEval.version_id.in_(list(rows)), VersionEval.reward_model_id == reward_id
                )
            )
            db.add_all(
                VersionEval(
                    project_id=training_round.project_id,
                    version_id=version_id,
                    reward_model_id=reward_id,
                    round_id=round_id,
                    metrics=metrics,
                    prompts=metrics["prompts"],
                )
                for version_id, metrics in rows.items()
            )
        recorded = summary if summary is not None else {"skipped": message}
        db.execute(
            update(TrainingRound)
            .where(TrainingRound.id == round_id)
            .values(metrics={**(training_round.metrics or {}), "evaluation": recorded})
        )
        lifecycle.log_event(
            db,
            round_id=round_id,
            stage=S.evaluating,
            kind="metric" if summary is not None else "log",
            data=_event_data(summary),
            message=message,
        )
        db.refresh(training_round)
        human = eval_metrics.launch_human(db, training_round)
        lifecycle.enqueue_step(db, training_round=training_round)
    return {"round_id": round_id, "message": message, "human_evaluation": human}


def _event_data(summary: dict[str, Any] | None) -> dict[str, Any]:
    if summary is None:
        return {}
    new = summary["by_role"]["new"]
    lc = new.get("lc_win_rate_vs_previous") or {}
    return {
        "rm_score": new["rm_score"],
        "mean_tokens": new["mean_tokens"],
        "kl_to_reference": new["kl_to_reference"],
        "lc_win_rate": lc.get("lc_win_rate"),
        "win_rate": lc.get("win_rate"),
    }
