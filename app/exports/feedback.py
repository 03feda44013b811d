"""Exports of the feedback forms (issue 15) as row iterators, keyset-paged like app/exports/service.py:

- rating pairs: prompt/chosen/rejected derived from Likert, good/bad and multi-aspect judgments
  (app/exports/feedback_pairs.py says how), in the pairs export's columns;
- unpaired rows for KTO: prompt/completion/label, one per completion judged good or bad;
- raw judgments: one row per submitted judgment of a feedback form (a rating form's `feedback`
  row with all its ratings, or a pairwise form's ranking), every stored field kept.

Labelers appear as the same pseudonym as in the other exports, never by email or account id.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.admin.form_agreement import pairwise_category
from app.exports.feedback_pairs import RATING_FORMS, Scoring
from app.exports.service import PairStyle, _pages, _task_context, labeler_pseudonym, plain_prompt
from app.judges.data_filter import labelling_data
from app.labeling import feedback_read
from app.models import OVERALL, Feedback, FeedbackForm, FeedbackRating, Ranking, RankingTask


def iter_rating_pairs(
    db: Session, *, project_id: int, secret: str, style: PairStyle, scoring: Scoring
) -> Iterator[dict[str, Any]]:
    """One row per (judgment, higher-scored completion, lower-scored one), judgments oldest first.
    `score_gap` is the difference of the two scores (feedback_read.scores, in [0, 1])."""
    query = select(Feedback).where(
        Feedback.project_id == project_id, Feedback.form.in_(RATING_FORMS), labelling_data(Feedback)
    )
    for page in _pages(db, query, Feedback.id):
        feedback = [row[0] for row in page]
        ratings = _ratings(db, [f.id for f in feedback])
        context = _task_context(db, {f.task_id for f in feedback})
        for f in feedback:
            task = context[f.task_id]
            try:
                scores = feedback_read.scores(_judgment(f, ratings[f.id], task), scoring.target)
            except KeyError:  # the judgment was given before the chosen aspect existed
                continue
            for chosen_id, rejected_id in feedback_read.pairs_from_scores(scores):
                yield {
                    **_pair_texts(style, task, chosen_id, rejected_id),
                    "rank_gap": None,
                    "task_id": f.task_id,
                    "ranking_id": None,
                    "labeler_id": labeler_pseudonym(secret, f.user_id),
                    "prompt_id": task["prompt"]["prompt_id"],
                    "prompt_external_id": task["prompt"]["prompt_external_id"],
                    "chosen_id": chosen_id,
                    "rejected_id": rejected_id,
                    "source": "ranking",
                    "evaluation_id": None,
                    "form": f.form,
                    "feedback_id": f.id,
                    "score_gap": scores[chosen_id] - scores[rejected_id],
                    "scored_by": scoring.name,
                }


def iter_unpaired(db: Session, *, project_id: int, secret: str, style: PairStyle) -> Iterator[dict[str, Any]]:
    """KTO's unpaired form: one row per completion a good/bad judgment rated, `label` true for
    good. Judgments oldest first, completions in task order."""
    query = select(Feedback).where(
        Feedback.project_id == project_id, Feedback.form == FeedbackForm.good_bad.value, labelling_data(Feedback)
    )
    for page in _pages(db, query, Feedback.id):
        feedback = [row[0] for row in page]
        ratings = _ratings(db, [f.id for f in feedback])
        context = _task_context(db, {f.task_id for f in feedback})
        for f in feedback:
            task = context[f.task_id]
            judgment = _judgment(f, ratings[f.id], task)
            labels = feedback_read.kto_labels(judgment)
            for item in task["completions"]:  # task order
                cid = item["completion_id"]
                if cid not in labels:
                    continue
                text = item["text"]
                yield {
                    "prompt": _prompt_of(style, task),
                    "completion": [{"role": "assistant", "content": text}]
                    if style is PairStyle.conversational
                    else text,
                    "label": labels[cid],
                    "task_id": f.task_id,
                    "feedback_id": f.id,
                    "labeler_id": labeler_pseudonym(secret, f.user_id),
                    "prompt_id": task["prompt"]["prompt_id"],
                    "prompt_external_id": task["prompt"]["prompt_external_id"],
                    "completion_id": cid,
                    "critique": judgment.critiques.get(cid),
                }


def iter_judgments(db: Session, *, project_id: int, secret: str) -> Iterator[dict[str, Any]]:
    """Every submitted judgment of a feedback form: rating forms' feedback rows first, then the
    pairwise form's rankings (a project has one form, so in practice one of the two)."""
    yield from _feedback_judgments(db, project_id, secret)
    yield from _pairwise_judgments(db, project_id, secret)


def _feedback_judgments(db: Session, project_id: int, secret: str) -> Iterator[dict[str, Any]]:
    query = select(Feedback).where(Feedback.project_id == project_id, labelling_data(Feedback))
    for page in _pages(db, query, Feedback.id):
        feedback = [row[0] for row in page]
        ratings = _ratings(db, [f.id for f in feedback])
        context = _task_context(db, {f.task_id for f in feedback})
        for f in feedback:
            task = context[f.task_id]
            yield _judgment_row(
                f,
                task,
                secret,
                feedback_id=f.id,
                ratings=ratings[f.id],
                critiques=[
                    {"completion_id": r["completion_id"], "critique": r["critique"]}
                    for r in ratings[f.id]
                    if r["aspect"] == OVERALL and r["critique"]
                ],
                settings=_settings(f.settings),
            )


def _pairwise_judgments(db: Session, project_id: int, secret: str) -> Iterator[dict[str, Any]]:
    query = (
        select(Ranking)
        .join(RankingTask, RankingTask.id == Ranking.task_id)
        .where(Ranking.project_id == project_id, RankingTask.kind == FeedbackForm.pairwise.value, labelling_data())
    )
    for page in _pages(db, query, Ranking.id):
        rankings = [row[0] for row in page]
        context = _task_context(db, {r.task_id for r in rankings})
        for r in rankings:
            task = context[r.task_id]
            first_id = task["completions"][0]["completion_id"]
            yield _judgment_row(
                r,
                task,
                secret,
                form=FeedbackForm.pairwise.value,
                ranking_id=r.id,
                verdict=pairwise_category(r.groups, none_acceptable=r.none_acceptable, first_id=first_id),
                ranking=r.groups,
                none_acceptable=r.none_acceptable,
                flags=[
                    {"completion_id": int(cid), "flags": list(names)}
                    for cid, names in sorted(r.flags.items(), key=lambda kv: int(kv[0]))
                    if names
                ],
                critiques=[
                    {"completion_id": int(cid), "critique": text}
                    for cid, text in sorted((r.critiques or {}).items(), key=lambda kv: int(kv[0]))
                    if text
                ],
            )


def _judgment_row(judgment: Feedback | Ranking, task: dict[str, Any], secret: str, **fields) -> dict[str, Any]:
    """The columns every judgment has, and None for the other kind's (formats.JUDGMENTS)."""
    return {
        "feedback_id": None,
        "ranking_id": None,
        "task_id": judgment.task_id,
        "form": getattr(judgment, "form", None),
        **task["prompt"],
        "labeler_id": labeler_pseudonym(secret, judgment.user_id),
        "completions": task["completions"],
        "display_order": judgment.display_order,
        "ratings": None,
        "settings": None,
        "verdict": None,
        "ranking": None,
        "none_acceptable": None,
        "flags": None,
        "critiques": [],
        "time_spent_ms": judgment.time_spent_ms,
        "comment": judgment.comment,
        "late": judgment.late,
        "submitted_at": judgment.created_at.isoformat(),
        **fields,
    }


def _settings(stored: dict[str, Any] | None) -> dict[str, Any]:
    """The form settings a judgment was given under, with the same keys in every row (so the JSON
    and Parquet columns match): missing ones null."""
    stored = stored or {}
    aspects = stored.get("aspects")
    return {
        "likert_points": stored.get("likert_points"),
        "likert_labels": stored.get("likert_labels"),
        "aspects": None
        if aspects is None
        else [{"name": a.get("name"), "label": a.get("label"), "scale": a.get("scale")} for a in aspects],
        "overall_ranking": stored.get("overall_ranking"),
    }


def _ratings(db: Session, feedback_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """feedback id -> its ratings as stored, {completion_id, aspect, value, critique}, in id order."""
    ratings: dict[int, list[dict[str, Any]]] = defaultdict(list)
    rows = db.execute(
        select(
            FeedbackRating.feedback_id,
            FeedbackRating.completion_id,
            FeedbackRating.aspect,
            FeedbackRating.value,
            FeedbackRating.critique,
        )
        .where(FeedbackRating.feedback_id.in_(feedback_ids))
        .order_by(FeedbackRating.id)
    )
    for fid, cid, aspect, value, critique in rows:
        ratings[fid].append({"completion_id": cid, "aspect": aspect, "value": value, "critique": critique})
    return ratings


def _judgment(f: Feedback, ratings: list[dict[str, Any]], task: dict[str, Any]) -> feedback_read.RatingJudgment:
    """One page's feedback row as the shared reader's RatingJudgment (feedback_read.load_feedback
    reads a whole project at once; the exports page through it instead)."""
    values: dict[str, dict[int, int | None]] = defaultdict(dict)
    for r in ratings:
        values[r["aspect"]][r["completion_id"]] = r["value"]
    return feedback_read.RatingJudgment(
        feedback_id=f.id,
        task_id=f.task_id,
        prompt_id=task["prompt"]["prompt_id"],
        user_id=f.user_id,
        form=f.form,
        settings=f.settings or {},
        display_order=list(f.display_order),
        values=dict(values),
        critiques={r["completion_id"]: r["critique"] for r in ratings if r["aspect"] == OVERALL and r["critique"]},
        comment=f.comment,
        time_spent_ms=f.time_spent_ms,
        late=f.late,
        created_at=f.created_at,
    )


def _prompt_of(style: PairStyle, task: dict[str, Any]) -> Any:
    text, messages = task["prompt"]["prompt_text"], task["prompt"]["prompt_messages"]
    if style is PairStyle.conversational:
        return messages or [{"role": "user", "content": text}]
    return plain_prompt(text, messages)


def _pair_texts(style: PairStyle, task: dict[str, Any], chosen_id: int, rejected_id: int) -> dict[str, Any]:
    """prompt/chosen/rejected as the ranking pairs have them (service.iter_pairs)."""
    chosen, rejected = task["texts"][chosen_id], task["texts"][rejected_id]
    if style is PairStyle.conversational:
        chosen_value: Any = [{"role": "assistant", "content": chosen}]
        rejected_value: Any = [{"role": "assistant", "content": rejected}]
    else:
        chosen_value, rejected_value = chosen, rejected
    return {"prompt": _prompt_of(style, task), "chosen": chosen_value, "rejected": rejected_value}
