"""GENERATE_EVAL: an evaluation's versions answer its eval prompts (only the answers they lack),
then the evaluation opens for labeling (app/evaluation/service.py open_for_labeling).

Sampling: the evaluation's config["sampling"] when it names one, else the generation settings of
the project's latest round (the distribution its labelers saw), else a round's defaults; the seed
is the evaluation's. Safe to deliver twice: answers are stored only where missing
(eval_answers.store) and opening for labeling is idempotent. Progress goes to
Evaluation.progress; a failure marks the evaluation failed with the message and re-raises.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import select, update

from app.models import Evaluation, EvaluationStatus, TrainingRound, utcnow
from worker.loop import eval_answers
from worker.loop.runtime import PROGRESS_SECONDS, Cancelled, db_session

log = logging.getLogger(__name__)
E = EvaluationStatus


def run(evaluation_id: int) -> dict[str, Any]:
    try:
        return _run(evaluation_id)
    except Cancelled as exc:
        return {"evaluation_id": evaluation_id, "stopped": str(exc)}
    except Exception as exc:
        _mark_failed(evaluation_id, exc)
        raise


def _run(evaluation_id: int) -> dict[str, Any]:
    from app.evaluation import service

    with db_session(read_only=True) as db:
        evaluation = db.get(Evaluation, evaluation_id)
        if evaluation is None or evaluation.status != E.generating:
            return {"evaluation_id": evaluation_id, "skipped": f"evaluation is {getattr(evaluation, 'status', None)}"}
        todo = service.missing_completions(db, evaluation=evaluation)
        sampling = _sampling(db, evaluation)
    progress = _Progress(evaluation_id)
    generated = eval_answers.generate_missing(todo, sampling, progress, check=progress.check)
    with db_session() as db:
        evaluation = db.get_one(Evaluation, evaluation_id)
        if evaluation.status not in service.ACTIVE:
            return {"evaluation_id": evaluation_id, "stopped": f"evaluation is {evaluation.status}"}
        tasks = service.open_for_labeling(db, evaluation)
        db.execute(update(Evaluation).where(Evaluation.id == evaluation_id).values(progress=1.0))
    return {"evaluation_id": evaluation_id, "generated": generated, "tasks": tasks}


def _sampling(db, evaluation: Evaluation) -> eval_answers.Sampling:
    seed = int(evaluation.config.get("seed", 0))
    if isinstance(evaluation.config.get("sampling"), dict):
        return eval_answers.Sampling.of({"generation": evaluation.config["sampling"]}, seed)
    latest = db.scalar(
        select(TrainingRound.config)
        .where(TrainingRound.project_id == evaluation.project_id)
        .order_by(TrainingRound.number.desc())
        .limit(1)
    )
    return eval_answers.Sampling.of(latest, seed)


class _Progress:
    """on_progress for the generation: Evaluation.progress at most every PROGRESS_SECONDS, and
    Cancelled once the evaluation left `generating` (an admin cancelled it)."""

    def __init__(self, evaluation_id: int):
        self.evaluation_id, self._last = evaluation_id, 0.0

    def __call__(self, done: int, total: int, stage: str) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_SECONDS and done < total:
            return
        self._last = now
        with db_session() as db:
            moved = db.execute(
                update(Evaluation)
                .where(Evaluation.id == self.evaluation_id, Evaluation.status == E.generating)
                .values(progress=round(min(done / total, 1.0) if total else 0.0, 4))
            )
        if getattr(moved, "rowcount", 1) == 0:
            raise Cancelled(f"evaluation {self.evaluation_id} left generating; {stage} stops here")

    def check(self) -> None:
        with db_session(read_only=True) as db:
            status = db.scalar(select(Evaluation.status).where(Evaluation.id == self.evaluation_id))
        if status != E.generating:
            raise Cancelled(f"evaluation {self.evaluation_id} is {status}")


def _mark_failed(evaluation_id: int, exc: BaseException) -> None:
    message = f"{type(exc).__name__}: {exc}"[:4000]
    log.error("evaluation %s failed: %s", evaluation_id, message)
    with db_session() as db:
        db.execute(
            update(Evaluation)
            .where(Evaluation.id == evaluation_id, Evaluation.status.in_([E.generating, E.labeling]))
            .values(status=E.failed, error_message=message, finished_at=utcnow())
        )
