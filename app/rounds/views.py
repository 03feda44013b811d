"""Read-only queries behind the round and model-version pages (the rounds service owns changes).

Every function takes the session first and reads only; nothing here flushes or commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, aliased

from app.models import (
    Completion,
    ModelKind,
    ModelVersion,
    Prompt,
    Ranking,
    RankingTask,
    RoundEvent,
    RoundStatus,
    TrainingRound,
)
from app.rounds.charts import Point
from app.rounds.lifecycle import labeled_by_judge

STAGES: list[tuple[str, str]] = [
    (RoundStatus.generating, "Generating"),
    (RoundStatus.labeling, "Labeling"),
    (RoundStatus.training_reward, "Training reward model"),
    (RoundStatus.training_policy, "Training policy"),
    (RoundStatus.evaluating, "Evaluating"),
    (RoundStatus.generating_next, "Generating next"),
    (RoundStatus.done, "Done"),
]
AI_LABELLED_STAGES = [
    (RoundStatus.judging, "AI labeling") if key == RoundStatus.labeling else (key, label) for key, label in STAGES
]
"""An AI-labelled round's row (labeling.source "judge"): the judge's step instead of the team's."""
FINISHED = {RoundStatus.done, RoundStatus.failed, RoundStatus.cancelled}
STATUS_LABELS = {
    **dict(STAGES),
    RoundStatus.judging: "AI labeling",
    RoundStatus.pending: "Queued",
    RoundStatus.failed: "Failed",
    RoundStatus.cancelled: "Cancelled",
}
LOG_LINES = 50


@dataclass(frozen=True)
class ChartSpec:
    """One chart on the round page: the first of `keys` found in a metric event's data is plotted."""

    title: str
    keys: tuple[str, ...]
    stages: tuple[str, ...] = ()
    """Only metric events from these stages (empty: any stage); RM and PPO both log a 'loss'."""
    unit: str = ""


POLICY = (RoundStatus.training_policy,)
REWARD_CHARTS = [ChartSpec("RM validation accuracy", ("val_accuracy",), (RoundStatus.training_reward,))]
SAMPLED_CHARTS = [
    ChartSpec("KL to reference", ("kl",), POLICY),
    ChartSpec("Entropy", ("entropy",), POLICY),
    ChartSpec("Response length", ("response_length",), POLICY, unit=" tokens"),
]
"""What every optimizer that samples answers and scores them (PPO, RLOO, GRPO) logs per step."""
GROUP_CHARTS = [
    ChartSpec("Reward (RM score)", ("score",), POLICY),
    *SAMPLED_CHARTS,
    ChartSpec("Advantage spread (sd)", ("advantage_std",), POLICY),
    ChartSpec("Groups with equal scores (no signal)", ("zero_std_groups",), POLICY),
]
CHARTS_BY_OPTIMIZER: dict[str, list[ChartSpec]] = {
    "ppo": [*REWARD_CHARTS, ChartSpec("PPO reward", ("score", "reward"), POLICY), *SAMPLED_CHARTS],
    "dpo": [
        *REWARD_CHARTS,
        ChartSpec("DPO loss", ("loss",), POLICY),
        ChartSpec("Held-out implicit-reward accuracy", ("val_accuracy",), POLICY),
        ChartSpec("Batch implicit-reward accuracy", ("accuracy",), POLICY),
        ChartSpec("Reward margin", ("margin",), POLICY),
        ChartSpec("Chosen log-prob drift", ("chosen_drift",), POLICY),
        ChartSpec("Rejected log-prob drift", ("rejected_drift",), POLICY),
        ChartSpec("Held-out KL to reference", ("val_kl_per_token",), POLICY, unit=" per token"),
    ],
    "kto": [
        *REWARD_CHARTS,
        ChartSpec("KTO loss", ("loss",), POLICY),
        ChartSpec("Held-out AUC (good above bad)", ("val_auc",), POLICY),
        ChartSpec("Reward of good answers", ("reward_desirable",), POLICY),
        ChartSpec("Reward of bad answers", ("reward_undesirable",), POLICY),
        ChartSpec("KL reference point z0", ("kl",), POLICY),
        ChartSpec("Held-out KL to reference", ("val_kl_per_token",), POLICY, unit=" per token"),
    ],
    "rloo": [*REWARD_CHARTS, *GROUP_CHARTS],
    "grpo": [*REWARD_CHARTS, *GROUP_CHARTS],
}
CHARTS = CHARTS_BY_OPTIMIZER["ppo"]


def charts_for(training_round: TrainingRound) -> list[ChartSpec]:
    """The round page's charts for the round's optimizer (rounds from before the choice: PPO)."""
    return CHARTS_BY_OPTIMIZER.get((training_round.config or {}).get("optimizer", "ppo"), CHARTS)


@dataclass(frozen=True)
class Step:
    key: str
    label: str
    state: str
    """done, current, failed, cancelled or todo."""


def is_finished(status: str) -> bool:
    return status in FINISHED


def stepper(training_round: TrainingRound, *, last_stage: str | None = None) -> list[Step]:
    """The state machine as a row of steps. A failed or cancelled round marks the step it stopped
    in: error_step for failures, else the stage of its latest event."""
    status = training_round.status
    stages = AI_LABELLED_STAGES if labeled_by_judge(training_round.config or {}) else STAGES
    keys = [key for key, _ in stages]
    if status == RoundStatus.done:
        return [Step(key, label, "done") for key, label in stages]
    if status in (RoundStatus.failed, RoundStatus.cancelled):
        stopped_in = training_round.error_step if training_round.error_step in keys else last_stage
        at = keys.index(stopped_in) if stopped_in in keys else -1
        mark = "failed" if status == RoundStatus.failed else "cancelled"
    else:
        at = keys.index(status) if status in keys else -1
        mark = "current"
    return [
        Step(key, label, "done" if i < at else mark if i == at else "todo") for i, (key, label) in enumerate(stages)
    ]


def list_rounds(db: Session, *, project_id: int) -> list[TrainingRound]:
    return list(
        db.scalars(
            select(TrainingRound).where(TrainingRound.project_id == project_id).order_by(TrainingRound.number.desc())
        )
    )


def get_round(db: Session, *, round_id: int) -> TrainingRound | None:
    return db.get(TrainingRound, round_id)


def recent_logs(db: Session, *, round_id: int, limit: int = LOG_LINES) -> list[RoundEvent]:
    """The newest `limit` log lines, oldest first (the way a terminal tail reads)."""
    rows = db.scalars(
        select(RoundEvent)
        .where(RoundEvent.round_id == round_id, RoundEvent.kind == "log")
        .order_by(RoundEvent.id.desc())
        .limit(limit)
    )
    return list(reversed(list(rows)))


def last_stage(db: Session, *, round_id: int) -> str | None:
    return db.scalar(
        select(RoundEvent.stage).where(RoundEvent.round_id == round_id).order_by(RoundEvent.id.desc()).limit(1)
    )


def metric_series(db: Session, *, round_id: int, specs: Sequence[ChartSpec] = CHARTS) -> dict[str, list[Point]]:
    """title → (step, value) points from the round's metric events, in the order they were logged.

    An event without a step is a stage's summary (the reward model logs one when training ends);
    it is placed at the stage's last optimizer step, `data["steps"]`, when it has one."""
    series: dict[str, list[Point]] = {spec.title: [] for spec in specs}
    rows = db.execute(
        select(RoundEvent.stage, RoundEvent.step, RoundEvent.data)
        .where(RoundEvent.round_id == round_id, RoundEvent.kind == "metric")
        .order_by(RoundEvent.id)
    )
    for stage, step, data in rows:
        if not isinstance(data, dict):
            continue
        if step is None:
            step = data.get("steps") if isinstance(data.get("steps"), int) else None
        if step is None:
            continue
        for spec in specs:
            if spec.stages and stage not in spec.stages:
                continue
            value = next((data[key] for key in spec.keys if isinstance(data.get(key), (int, float))), None)
            if value is not None and not isinstance(value, bool):
                series[spec.title].append((step, value))
    return series


def round_versions(db: Session, *, training_round: TrainingRound) -> list[ModelVersion]:
    """The policy it started from and every version it produced, oldest first."""
    ids = {training_round.policy_in_id, training_round.reward_model_id, training_round.policy_out_id} - {None}
    query = select(ModelVersion).where((ModelVersion.round_id == training_round.id) | ModelVersion.id.in_(ids))
    return list(db.scalars(query.order_by(ModelVersion.id)))


# ---- model versions ---------------------------------------------------------------------------


def list_versions(db: Session, *, project_id: int) -> list[ModelVersion]:
    return list(
        db.scalars(select(ModelVersion).where(ModelVersion.project_id == project_id).order_by(ModelVersion.id.desc()))
    )


def get_version(db: Session, *, version_id: int) -> ModelVersion | None:
    return db.get(ModelVersion, version_id)


def lineage(db: Session, *, version: ModelVersion, limit: int = 100) -> list[ModelVersion]:
    """The version, its parent, the parent's parent, … (stops on a cycle or after `limit`)."""
    chain, seen = [version], {version.id}
    while chain[-1].parent_id is not None and len(chain) < limit:
        parent = db.get(ModelVersion, chain[-1].parent_id)
        if parent is None or parent.id in seen:
            break
        chain.append(parent)
        seen.add(parent.id)
    return chain


def per_step_metrics(metrics: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """Metrics recorded as one number per step (PPO's history: score, kl, ...) as (step, value) points."""
    series = {}
    for key, values in sorted(metrics.items()):
        if (
            isinstance(values, list)
            and values
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            series[key] = list(enumerate(values, start=1))
    return series


def round_numbers(db: Session, *, round_ids: Sequence[int | None]) -> dict[int, int]:
    """round id → its number within the project (for 'produced by round 3' links)."""
    ids = {i for i in round_ids if i is not None}
    if not ids:
        return {}
    return dict(db.execute(select(TrainingRound.id, TrainingRound.number).where(TrainingRound.id.in_(ids))).all())


def rankings_behind(db: Session, *, version: ModelVersion) -> dict[str, int] | None:
    """For a reward model: the rankings on its project's tasks up to its round (generated by that or
    earlier rounds, or uploaded), the tasks they cover and how many labelers wrote them. Counted now,
    so rankings added after training are included; the version's own metrics record what it saw."""
    if version.kind != ModelKind.reward or version.project_id is None:
        return None
    query = select(
        func.count(Ranking.id), func.count(func.distinct(Ranking.task_id)), func.count(func.distinct(Ranking.user_id))
    ).join(RankingTask, Ranking.task_id == RankingTask.id)
    query = query.where(RankingTask.project_id == version.project_id)
    if version.round_id is not None:
        earlier = select(TrainingRound.id).where(
            TrainingRound.project_id == version.project_id,
            TrainingRound.number
            <= select(TrainingRound.number).where(TrainingRound.id == version.round_id).scalar_subquery(),
        )
        query = query.where(RankingTask.round_id.is_(None) | RankingTask.round_id.in_(earlier))
    rankings, tasks, labelers = db.execute(query).one()
    return {"rankings": rankings, "tasks": tasks, "labelers": labelers}


def shared_prompts(db: Session, *, a_id: int, b_id: int, limit: int = 10) -> list[Prompt]:
    """Prompts both versions wrote completions for (oldest prompts first)."""
    from_a, from_b = aliased(Completion), aliased(Completion)
    query = (
        select(Prompt)
        .where(
            exists().where(from_a.prompt_id == Prompt.id, from_a.model_version_id == a_id),
            exists().where(from_b.prompt_id == Prompt.id, from_b.model_version_id == b_id),
        )
        .order_by(Prompt.id)
        .limit(limit)
    )
    return list(db.scalars(query))


def side_by_side(db: Session, *, a_id: int, b_id: int, limit: int = 10) -> list[dict[str, Any]]:
    """For each shared prompt: the prompt and each version's completions for it."""
    prompts = shared_prompts(db, a_id=a_id, b_id=b_id, limit=limit)
    if not prompts:
        return []
    rows = db.scalars(
        select(Completion)
        .where(Completion.prompt_id.in_([p.id for p in prompts]), Completion.model_version_id.in_([a_id, b_id]))
        .order_by(Completion.id)
    )
    grouped: dict[tuple[int, int | None], list[Completion]] = {}
    for completion in rows:
        grouped.setdefault((completion.prompt_id, completion.model_version_id), []).append(completion)
    return [{"prompt": p, "a": grouped.get((p.id, a_id), []), "b": grouped.get((p.id, b_id), [])} for p in prompts]


def completion_counts(db: Session, *, version_ids: Sequence[int]) -> dict[int, int]:
    if not version_ids:
        return {}
    rows = db.execute(
        select(Completion.model_version_id, func.count())
        .where(Completion.model_version_id.in_(list(version_ids)))
        .group_by(Completion.model_version_id)
    ).all()
    return {version_id: count for version_id, count in rows if version_id is not None}  # in_() leaves NULL out
