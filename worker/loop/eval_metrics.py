"""Per-version eval metrics from stored answers and scores (worker/ml/evaluation.py does the
maths), and the blind human evaluation a round launches after its metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Evaluation, ModelVersion, TrainingRound
from app.rounds import lifecycle
from app.rounds.lifecycle import S
from app.rounds.schemas import EvaluationSettings
from worker.loop import eval_answers, eval_scores
from worker.loop.configs import VersionRef
from worker.loop.runtime import db_session

log = logging.getLogger(__name__)
SAMPLE_PAIRS = 3
"""Prompts whose previous and new answers are stored with the metrics, for the round page."""


class Answer(NamedTuple):
    prompt_id: int
    completion_id: int
    text: str
    tokens: int
    ended: bool
    score: float | None
    own_score: float | None


def _load(
    *, refs: dict[int, VersionRef], prompt_ids: Sequence[int], seed: int, reward_id: int
) -> tuple[dict[int, Any], dict[int, list[Answer]], dict[int, int | None]]:
    with db_session(read_only=True) as db:
        prompts = {p.id: p.prompt for p in eval_answers.eval_prompts(db, ids=prompt_ids)}
        rows = eval_answers.answers(db, version_ids=list(refs), prompt_ids=prompt_ids, seed=seed)
        ids = [row.id for row in rows.values()]
        scores = eval_scores.scores_of(db, completion_ids=ids, reward_id=reward_id)
        # The reward model each version was trained against (its round's), when it scored them.
        own_rm: dict[int, int | None] = {}
        for version_id in refs:
            round_id = db.scalar(select(ModelVersion.round_id).where(ModelVersion.id == version_id))
            own_rm[version_id] = (
                db.scalar(select(TrainingRound.reward_model_id).where(TrainingRound.id == round_id))
                if round_id is not None
                else None
            )
        own = {rm: eval_scores.scores_of(db, completion_ids=ids, reward_id=rm) for rm in set(own_rm.values()) if rm}
        answers: dict[int, list[Answer]] = {v: [] for v in refs}
        for pid in prompt_ids:
            for version_id in refs:
                row = rows.get((version_id, pid))
                if row is None:
                    continue
                rm = own_rm[version_id]
                answers[version_id].append(
                    Answer(
                        pid,
                        row.id,
                        row.text,
                        row.token_count or 0,
                        row.finish_reason == "eos",
                        scores.get(row.id),
                        own[rm].get(row.id) if rm else None,
                    )
                )
    return prompts, answers, own_rm


def compute(
    *,
    refs: dict[int, VersionRef],
    roles: dict[str, VersionRef],
    paths: dict[int, str],
    reference: str | None,
    prompt_ids: Sequence[int],
    sampling: eval_answers.Sampling,
    reward_id: int,
    seed: int,
    on_progress: Callable[[int, int, str], None],
) -> dict[int, dict[str, Any]]:
    """version id -> its metrics dict (what a VersionEval row stores)."""
    from worker.ml.evaluation import kl_to_reference_many, lc_win_rate, mean_sd, text_metrics

    prompts, answers, own_rm = _load(refs=refs, prompt_ids=prompt_ids, seed=seed, reward_id=reward_id)
    on_progress(0, 1, "kl to the reference")
    kls: dict[int, list[float]] = (
        kl_to_reference_many(
            {v: paths[v] for v in answers},
            {
                v: ([prompts[a.prompt_id] for a in rows], [a.text for a in rows], [a.ended for a in rows])
                for v, rows in answers.items()
            },
            reference,
            temperature=sampling.temperature,
        )
        if reference is not None
        else {}
    )
    on_progress(1, 1, "kl to the reference")
    out: dict[int, dict[str, Any]] = {}
    for version_id, rows in answers.items():
        scored = [a.score for a in rows if a.score is not None]
        own = [a.own_score for a in rows if a.own_score is not None]
        kl = kls.get(version_id, [])
        rm_mean, rm_sd = mean_sd(scored)
        kl_mean, kl_sd = mean_sd(kl)
        out[version_id] = {
            "roles": [role for role, ref in roles.items() if ref.id == version_id],
            "name": refs[version_id].name,
            "prompts": len(rows),
            "rm_score": rm_mean,
            "rm_score_sd": rm_sd,
            "own_reward_model_id": own_rm[version_id],
            "own_rm_score": mean_sd(own)[0] if own else None,
            **text_metrics([a.text for a in rows], [a.tokens for a in rows], [_reason(a) for a in rows]),
            "kl_to_reference": kl_mean if kl else None,
            "kl_to_reference_sd": kl_sd if kl else None,
        }

    new, previous, base = roles["new"].id, roles["previous"].id, roles["base"].id
    if previous != new:
        out[new]["lc_win_rate_vs_previous"] = _versus(
            answers[previous], answers[new], seed=seed, lc_win_rate=lc_win_rate
        )
    if base not in (new, previous):  # round 0's previous policy is the base: said once
        out[new]["lc_win_rate_vs_base"] = _versus(answers[base], answers[new], seed=seed, lc_win_rate=lc_win_rate)
    if previous != new:
        out[new]["samples"] = _samples(prompts, answers[previous], answers[new])
    return out


def _reason(answer: Answer) -> str:
    return "eos" if answer.ended else "length"


def _paired(a: list[Answer], b: list[Answer]) -> list[tuple[Answer, Answer]]:
    by_prompt = {x.prompt_id: x for x in a if x.score is not None}
    return [(by_prompt[y.prompt_id], y) for y in b if y.score is not None and y.prompt_id in by_prompt]


def _versus(a: list[Answer], b: list[Answer], *, seed: int, lc_win_rate) -> dict[str, Any] | None:
    pairs = _paired(a, b)
    if not pairs:
        return None
    result = lc_win_rate(
        [x.score for x, _ in pairs],
        [y.score for _, y in pairs],
        [x.tokens for x, _ in pairs],
        [y.tokens for _, y in pairs],
        seed=seed,
    )
    return {**result, "labels": "hard (ties 0.5)"}


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


def _samples(prompts: dict[int, Any], previous: list[Answer], new: list[Answer]) -> list[dict[str, Any]]:
    return [
        {
            "prompt_id": old.prompt_id,
            "prompt": _prompt_text(prompts[old.prompt_id])[:2000],
            "previous": old.text[:4000],
            "previous_score": old.score,
            "new": fresh.text[:4000],
            "new_score": fresh.score,
        }
        for old, fresh in _paired(previous, new)[:SAMPLE_PAIRS]
    ]


def launch_human(db: Session, training_round: TrainingRound) -> int | None:
    """When the round asks for it, launch (once) the blind human evaluation of its new policy
    against `human_against`; the answers exist for the metric prompts, so it opens for labeling
    at once (GENERATE_EVAL, enqueued by launch, writes any it lacks and opens it then). A refusal
    (no opponent, no eval set) is logged, never fails the round. Returns the evaluation id."""
    from app.evaluation import service

    settings = EvaluationSettings.model_validate(training_round.config.get("evaluation", {}))
    if not settings.human:
        return None
    existing = db.scalar(select(Evaluation.id).where(Evaluation.round_id == training_round.id).limit(1))
    if existing is not None:
        return existing
    comparisons = service.versions_for_round(db, training_round, settings.human_against)
    try:
        if not comparisons:
            raise service.EvaluationError("human_against", f"no {' / '.join(settings.human_against)} version exists")
        evaluation = service.launch(
            db,
            project_id=training_round.project_id,
            version_ids=list(dict.fromkeys(v for pair in comparisons for v in pair)),
            comparisons=comparisons,
            prompts=settings.human_prompts,
            seed=settings.seed,
            round_id=training_round.id,
            name=f"round {training_round.number}: policy vs {', '.join(settings.human_against)}",
            check_queue=False,
        )
        if not service.missing_completions(db, evaluation=evaluation):
            service.open_for_labeling(db, evaluation)
    except service.EvaluationError as exc:
        lifecycle.log_event(
            db, round_id=training_round.id, stage=S.evaluating, message=f"human evaluation not launched: {exc}"
        )
        return None
    lifecycle.log_event(
        db,
        round_id=training_round.id,
        stage=S.evaluating,
        message=f"human evaluation {evaluation.id} launched ({evaluation.status})",
    )
    return evaluation.id
