"""Read-only queries behind the round page's Evaluation card: the evaluating step's summary
(TrainingRound.metrics["evaluation"], written by worker/loop/evaluation.py), the new policy's
metrics across the project's rounds, and the human evaluations a round launched."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Evaluation, TrainingRound
from app.rounds.charts import Point

EVAL_ROWS: list[tuple[str, str, str]] = [
    # (metric key, label, format)
    ("rm_score", "Reward (this round's RM)", "score"),
    ("own_rm_score", "Reward (the RM it was trained on)", "score"),
    ("mean_tokens", "Mean length", "tokens"),
    ("eos_share", "Ended by itself", "percent"),
    ("kl_to_reference", "KL to the PPO reference", "nats"),
    ("distinct_1", "distinct-1", "ratio"),
    ("distinct_2", "distinct-2", "ratio"),
]
"""The eval metrics table on the round page, one row per metric (docs/evaluation-metrics.md)."""
EVAL_HISTORY = [
    ("LC reward win rate vs previous", "lc_win_rate", ""),
    ("Eval reward (round's RM)", "rm_score", ""),
    ("Eval answer length", "mean_tokens", " tokens"),
]
"""Charts across the project's rounds: (title, key of the new policy's metrics, unit)."""


def round_evaluation(training_round: TrainingRound) -> dict[str, Any] | None:
    """The evaluating step's summary for the page: {"skipped": why} or the columns (base,
    previous, new policy, each once) with their metrics and the new policy's win rates."""
    summary = (training_round.metrics or {}).get("evaluation")
    if not isinstance(summary, dict):
        return None
    if "by_role" not in summary:
        return {"skipped": str(summary.get("skipped", "not evaluated"))}
    columns, seen = [], set()
    for role in ("base", "previous", "new"):
        metrics = summary["by_role"].get(role)
        version_id = summary.get("versions", {}).get(role)
        if not isinstance(metrics, dict) or version_id in seen:
            continue
        seen.add(version_id)
        columns.append({"version_id": version_id, "roles": metrics.get("roles", [role]), "metrics": metrics})
    new = summary["by_role"].get("new") or {}
    return {
        "prompts": summary.get("prompts"),
        "seed": summary.get("seed"),
        "reward_model_id": summary.get("reward_model_id"),
        "columns": columns,
        "vs_previous": new.get("lc_win_rate_vs_previous"),
        "vs_base": new.get("lc_win_rate_vs_base"),
        "samples": new.get("samples") or [],
    }


def evaluation_history(db: Session, *, project_id: int) -> dict[str, list[Point]]:
    """title → (round number, the new policy's value) over the project's evaluated rounds."""
    series: dict[str, list[Point]] = {title: [] for title, _, _ in EVAL_HISTORY}
    rows = db.execute(
        select(TrainingRound.number, TrainingRound.metrics)
        .where(TrainingRound.project_id == project_id)
        .order_by(TrainingRound.number)
    )
    for number, metrics in rows:
        new = ((metrics or {}).get("evaluation") or {}).get("by_role", {}).get("new")
        if not isinstance(new, dict):
            continue
        values = {**new, "lc_win_rate": (new.get("lc_win_rate_vs_previous") or {}).get("lc_win_rate")}
        for title, key, _unit in EVAL_HISTORY:
            value = values.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                series[title].append((number, value))
    return series


def round_evaluations(db: Session, *, round_id: int) -> list[Evaluation]:
    """Human evaluations the round launched."""
    return list(db.scalars(select(Evaluation).where(Evaluation.round_id == round_id).order_by(Evaluation.id)))
