"""The three exports as row iterators, read in keyset-paged batches so memory stays flat.

Every row is a plain dict of JSON types with the same keys in every row (missing values are
null), so JSONL and Parquet carry identical data and `datasets.load_dataset` reads either."""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select, true
from sqlalchemy.orm import Session, aliased

from app.admin.agreement import verdict_agreement, verdict_outcome
from app.exports.consensus import consensus
from app.judges.data_filter import labelling_data
from app.models import Completion, PairwiseComparison, Prompt, Ranking, RankingTask, TaskCompletion

BATCH = 500


class TaskSource(StrEnum):
    """Which tasks' judgments an export holds."""

    ranking = "ranking"
    """Ranking tasks (uploaded or a round's): what the exports always held."""
    evaluation = "evaluation"
    """Blind evaluation tasks (kind pairwise_eval): two versions' answers, one judged better or tied."""
    all = "all"


EVALUATION_KIND = "pairwise_eval"


def _tasks_from(source: TaskSource):
    """The condition on RankingTask that keeps `source`'s tasks."""
    if source is TaskSource.ranking:
        return RankingTask.kind != EVALUATION_KIND
    if source is TaskSource.evaluation:
        return RankingTask.kind == EVALUATION_KIND
    return true()


def _source_of(kind: str) -> str:
    return TaskSource.evaluation.value if kind == EVALUATION_KIND else TaskSource.ranking.value


class PairStyle(StrEnum):
    standard = "standard"
    """prompt, chosen, rejected are strings."""
    conversational = "conversational"
    """prompt is a list of chat messages; chosen and rejected are one assistant message each."""


def labeler_pseudonym(secret: str, user_id: int) -> str:
    """A stable id per labeler that reveals neither email nor account number (HMAC of the id)."""
    digest = hmac.new(secret.encode(), f"labeler:{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"labeler-{digest[:16]}"


def iter_rankings(
    db: Session, *, project_id: int, secret: str, source: TaskSource = TaskSource.ranking
) -> Iterator[dict[str, Any]]:
    """Every submitted ranking, oldest first, with its ties, texts, flags and timing."""
    query = (
        select(Ranking)
        .join(RankingTask, RankingTask.id == Ranking.task_id)
        .where(Ranking.project_id == project_id, _tasks_from(source), labelling_data())
    )
    for page in _pages(db, query, Ranking.id):
        rankings = [row[0] for row in page]
        tasks = _task_context(db, {r.task_id for r in rankings})
        for ranking in rankings:
            task = tasks[ranking.task_id]
            texts = task["texts"]
            yield {
                "ranking_id": ranking.id,
                "task_id": ranking.task_id,
                **task["prompt"],
                "labeler_id": labeler_pseudonym(secret, ranking.user_id),
                "ranking": ranking.groups,
                "ranking_texts": [[texts[c] for c in group] for group in ranking.groups],
                "completions": task["completions"],
                "display_order": ranking.display_order,
                "flags": [
                    {"completion_id": int(cid), "flags": list(names)}
                    for cid, names in sorted(ranking.flags.items(), key=lambda kv: int(kv[0]))
                    if names
                ],
                "none_acceptable": ranking.none_acceptable,
                "critiques": [
                    {"completion_id": int(cid), "critique": text}
                    for cid, text in sorted((ranking.critiques or {}).items(), key=lambda kv: int(kv[0]))
                    if text
                ],
                "time_spent_ms": ranking.time_spent_ms,
                "comment": ranking.comment,
                "late": ranking.late,
                "submitted_at": ranking.created_at.isoformat(),
                "source": task["source"],
                "evaluation_id": task["evaluation_id"],
            }


def iter_consensus(
    db: Session, *, project_id: int, source: TaskSource = TaskSource.ranking
) -> Iterator[dict[str, Any]]:
    """One row per task with at least one ranking: the mean-rank consensus and agreement stats.

    Agreement is measured per kind of task, as on the admin agreement page: a ranking task gets
    Kendall's W and mean tau-b (rank measures), an evaluation task `verdict_agreement` instead (the
    share of labeler pairs that gave the same verdict, compared by completion since each labeler
    saw the sides in their own order); the other kind's columns are null. W and tau-b on two
    completions would call a tie against a win "anti-correlated" and leave two ties undefined."""
    query = select(RankingTask.id, RankingTask.status, RankingTask.kind).where(
        RankingTask.project_id == project_id, RankingTask.rankings_count > 0, _tasks_from(source)
    )
    for tasks in _pages(db, query, RankingTask.id):
        by_task: dict[int, list[Ranking]] = defaultdict(list)
        for ranking in db.scalars(
            select(Ranking).where(Ranking.task_id.in_([t.id for t in tasks]), labelling_data()).order_by(Ranking.id)
        ):
            by_task[ranking.task_id].append(ranking)
        context = _task_context(db, set(by_task))
        for task in tasks:
            rankings = by_task.get(task.id)
            if not rankings:  # rankings_count and the rows disagree only if a ranking was deleted
                continue
            texts = context[task.id]["texts"]
            result = consensus([r.groups for r in rankings])
            evaluation = task.kind == EVALUATION_KIND
            verdicts = _verdict_agreement(task.id, rankings) if evaluation else None
            flag_counts: dict[int, Counter] = defaultdict(Counter)
            for ranking in rankings:
                for cid, names in ranking.flags.items():
                    flag_counts[int(cid)].update(names)
            yield {
                "task_id": task.id,
                **context[task.id]["prompt"],
                "status": task.status,
                "n_rankings": result.n_rankings,
                "consensus": result.groups,
                "consensus_texts": [[texts[c] for c in group] for group in result.groups],
                "completions": [
                    {
                        **item,
                        "mean_rank": result.mean_rank.get(item["completion_id"]),
                        "flags": [
                            {"flag": f, "count": n} for f, n in sorted(flag_counts[item["completion_id"]].items())
                        ],
                    }
                    for item in context[task.id]["completions"]
                ],
                "none_acceptable_votes": sum(r.none_acceptable for r in rankings),
                "kendall_w": None if evaluation else result.kendall_w,
                "mean_kendall_tau_b": None if evaluation else result.mean_kendall_tau_b,
                "verdict_agreement": None if verdicts is None else verdicts.agreement,
                "verdict_pairs": None if verdicts is None else verdicts.comparisons,
                "source": context[task.id]["source"],
                "evaluation_id": context[task.id]["evaluation_id"],
            }


@dataclass(frozen=True)
class _Verdicts:
    comparisons: int
    """Pairs of labelers who both judged the task."""
    agreement: float | None
    """Share of those pairs that gave the same verdict (0..1); None with fewer than two judgments."""


def _verdict_agreement(task_id: int, rankings: Sequence[Ranking]) -> _Verdicts:
    """The admin page's verdict agreement (app/admin/agreement.py) for one evaluation task."""
    outcomes = {r.user_id: verdict_outcome(r.groups, none_acceptable=r.none_acceptable) for r in rankings}
    summary = verdict_agreement({task_id: outcomes}).overall
    pct = summary.agreement_pct
    return _Verdicts(comparisons=summary.comparisons, agreement=None if pct is None else pct / 100)


def iter_pairs(
    db: Session, *, project_id: int, secret: str, style: PairStyle, source: TaskSource = TaskSource.ranking
) -> Iterator[dict[str, Any]]:
    """Preference pairs in TRL's prompt/chosen/rejected form, one per PairwiseComparison row
    (ties, and an evaluation's tie or "both bad", gave no row). `rank_gap` (groups apart) is not
    named `margin` on purpose: TRL's RewardTrainer would add a column of that name to its loss.
    `source` says whether a row came from a ranking or an evaluation task."""
    chosen, rejected = aliased(Completion), aliased(Completion)
    query = (
        select(
            PairwiseComparison.id,
            PairwiseComparison.task_id,
            PairwiseComparison.ranking_id,
            PairwiseComparison.margin,
            Ranking.user_id,
            Prompt.id,
            Prompt.external_id,
            Prompt.text,
            Prompt.messages,
            chosen.id,
            chosen.text,
            rejected.id,
            rejected.text,
            RankingTask.kind,
            RankingTask.evaluation_id,
        )
        .join(Ranking, Ranking.id == PairwiseComparison.ranking_id)
        .join(RankingTask, RankingTask.id == PairwiseComparison.task_id)
        .join(Prompt, Prompt.id == RankingTask.prompt_id)
        .join(chosen, chosen.id == PairwiseComparison.chosen_id)
        .join(rejected, rejected.id == PairwiseComparison.rejected_id)
        .where(Ranking.project_id == project_id, _tasks_from(source), labelling_data())
    )
    for rows in _pages(db, query, PairwiseComparison.id):
        for (
            _pid,
            task_id,
            ranking_id,
            gap,
            user_id,
            prompt_id,
            external_id,
            text,
            messages,
            chosen_id,
            chosen_text,
            rejected_id,
            rejected_text,
            kind,
            evaluation_id,
        ) in rows:
            if style is PairStyle.conversational:
                prompt: Any = messages or [{"role": "user", "content": text}]
                chosen_value: Any = [{"role": "assistant", "content": chosen_text}]
                rejected_value: Any = [{"role": "assistant", "content": rejected_text}]
            else:
                prompt, chosen_value, rejected_value = plain_prompt(text, messages), chosen_text, rejected_text
            yield {
                "prompt": prompt,
                "chosen": chosen_value,
                "rejected": rejected_value,
                "rank_gap": gap,
                "task_id": task_id,
                "ranking_id": ranking_id,
                "labeler_id": labeler_pseudonym(secret, user_id),
                "prompt_id": prompt_id,
                "prompt_external_id": external_id,
                "chosen_id": chosen_id,
                "rejected_id": rejected_id,
                "source": _source_of(kind),
                "evaluation_id": evaluation_id,
                "form": kind,
                "feedback_id": None,
                "score_gap": None,
                "scored_by": None,
            }


def plain_prompt(text: str | None, messages: list[dict[str, str]] | None) -> str:
    """A text prompt as is; a chat prompt as its one user turn, or as 'Role: content' paragraphs
    when it has several turns (use the conversational style to keep the turns)."""
    if text is not None:
        return text
    if messages is None:
        raise ValueError("a prompt has neither text nor messages")
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def _pages(db: Session, query, key) -> Iterator[Sequence[Any]]:
    """Rows of `query` in pages ordered by `key`, its first column (or the first entity's id)."""
    last = 0
    while True:
        rows = db.execute(query.where(key > last).order_by(key).limit(BATCH)).all()
        if not rows:
            return
        first = rows[-1][0]
        last = first if isinstance(first, int) else first.id
        yield rows
        db.expunge_all()  # what was yielded is done with; keep the identity map small


def _task_context(db: Session, task_ids: set[int]) -> dict[int, dict[str, Any]]:
    """Per task: prompt columns, its completions in task order, and completion id -> text."""
    context: dict[int, dict[str, Any]] = {}
    rows = db.execute(
        select(
            RankingTask.id,
            Prompt.id,
            Prompt.external_id,
            Prompt.text,
            Prompt.messages,
            RankingTask.kind,
            RankingTask.evaluation_id,
        )
        .join(Prompt, Prompt.id == RankingTask.prompt_id)
        .where(RankingTask.id.in_(task_ids))
    )
    for task_id, prompt_id, external_id, text, messages, kind, evaluation_id in rows:
        context[task_id] = {
            "prompt": {
                "prompt_id": prompt_id,
                "prompt_external_id": external_id,
                "prompt_text": text,
                "prompt_messages": messages,
            },
            "completions": [],
            "texts": {},
            "source": _source_of(kind),
            "evaluation_id": evaluation_id,
        }
    items = db.execute(
        select(TaskCompletion.task_id, TaskCompletion.position, Completion.id, Completion.text, Completion.model_name)
        .join(Completion, Completion.id == TaskCompletion.completion_id)
        .where(TaskCompletion.task_id.in_(task_ids))
        .order_by(TaskCompletion.task_id, TaskCompletion.position)
    )
    for task_id, position, completion_id, text, model in items:
        context[task_id]["completions"].append(
            {"completion_id": completion_id, "position": position, "text": text, "model": model}
        )
        context[task_id]["texts"][completion_id] = text
    return context
