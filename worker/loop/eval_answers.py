"""Eval answers: each model version's one completion per eval prompt, sampled with a fixed seed,
generated once and reused by every later metric run and human evaluation with that seed.

A Completion row on an eval prompt with `model_version_id` set, source "model" and
`generation_params` {"purpose": "eval", "seed": ..., temperature, top_p, max_new_tokens}. The
sampling is the round's generation settings (the distribution labelers saw and PPO rolls out
from); a completion is matched by purpose and seed only (as app/evaluation/service.py does), so
one stored answer serves every later round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import insert, select

from app.markdown import html_columns
from app.models import Completion, CompletionSource, ModelVersion, Prompt, utcnow
from worker.loop.configs import VersionRef, version_path
from worker.loop.runtime import db_session

PURPOSE = "eval"


class EvalPrompt(NamedTuple):
    id: int
    prompt: Any
    """The text, or the messages when the prompt is a conversation (worker.ml's Prompt)."""


class Sampling(NamedTuple):
    seed: int
    temperature: float
    top_p: float
    max_new_tokens: int

    @classmethod
    def of(cls, config: dict[str, Any] | None, seed: int) -> Sampling:
        """From a round config's generation section (None: the defaults of a round)."""
        gen = (config or {}).get("generation", {})
        return cls(seed, gen.get("temperature", 0.7), gen.get("top_p", 1.0), gen.get("max_new_tokens", 64))

    def params(self) -> dict[str, Any]:
        return {"purpose": PURPOSE, **self._asdict()}


def eval_prompts(db, *, ids: Sequence[int]) -> list[EvalPrompt]:
    rows = db.execute(select(Prompt.id, Prompt.text, Prompt.messages).where(Prompt.id.in_(list(ids)))).all()
    found = {pid: EvalPrompt(pid, text if text is not None else messages) for pid, text, messages in rows}
    return [found[pid] for pid in ids if pid in found]


def answers(db, *, version_ids: Sequence[int], prompt_ids: Sequence[int], seed: int) -> dict[tuple[int, int], Any]:
    """(version id, prompt id) -> the first eval completion row with `seed` (Completion)."""
    rows = db.scalars(
        select(Completion)
        .where(
            Completion.prompt_id.in_(list(prompt_ids)),
            Completion.model_version_id.in_(list(version_ids)),
            Completion.source == CompletionSource.model,
        )
        .order_by(Completion.id)
    )
    found: dict[tuple[int, int], Any] = {}
    for row in rows:
        params = row.generation_params or {}
        if params.get("purpose") == PURPOSE and params.get("seed") == seed and row.model_version_id is not None:
            found.setdefault((row.model_version_id, row.prompt_id), row)
    return found


def missing(db, *, version_ids: Sequence[int], prompt_ids: Sequence[int], seed: int) -> dict[int, list[int]]:
    """version id -> prompt ids it has no eval answer for yet."""
    have = answers(db, version_ids=version_ids, prompt_ids=prompt_ids, seed=seed)
    out = {v: [p for p in prompt_ids if (v, p) not in have] for v in version_ids}
    return {v: ps for v, ps in out.items() if ps}


def generate_missing(
    todo: dict[int, list[int]],
    sampling: Sampling,
    on_progress: Callable[[int, int, str], None],
    *,
    check: Callable[[], None] = lambda: None,
) -> int:
    """Generate and store every version's missing answers (`todo` from `missing`), one version at a
    time, each stored in its own short transaction. `check` runs between versions (cancel).
    Returns the number of answers stored."""
    from worker.ml.evaluation import answer_config, generate_answers

    stored = 0
    total = sum(len(ids) for ids in todo.values())
    for version_id, prompt_ids in todo.items():
        check()
        with db_session(read_only=True) as db:
            ref = VersionRef.of(db.get_one(ModelVersion, version_id))
            prompts = eval_prompts(db, ids=prompt_ids)
        done_before = stored

        def report(done: int, _n: int, _stage: str, before: int = done_before, name: str = ref.name) -> None:
            on_progress(before + done, total, f"eval answers of {name}")

        model = version_path(ref.kind, ref.base_model, ref.artifact_path, on_progress)
        cfg = answer_config(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_new_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
        )
        results = generate_answers(model, [p.prompt for p in prompts], cfg, report)
        stored += store(ref, [p.id for p in prompts], results, sampling)
    return stored


def store(ref: VersionRef, prompt_ids: Sequence[int], results: Sequence[Any], sampling: Sampling) -> int:
    """Insert the answers that are still missing (another run may have stored some meanwhile: the
    version's row lock on Postgres, the write lock on SQLite, make check-and-insert atomic)."""
    with db_session() as db:
        db.execute(select(ModelVersion.id).where(ModelVersion.id == ref.id).with_for_update())
        have = answers(db, version_ids=[ref.id], prompt_ids=prompt_ids, seed=sampling.seed)
        values = [
            {
                "prompt_id": pid,
                "text": result.text,
                "source": CompletionSource.model,
                "model_name": ref.name,
                "model_version_id": ref.id,
                "generation_params": sampling.params(),
                "token_count": result.token_count,
                "finish_reason": result.finish_reason,
                "created_at": utcnow(),
                **html_columns(result.text),
            }
            for pid, result in zip(prompt_ids, results, strict=True)
            if (ref.id, pid) not in have
        ]
        if values:
            db.execute(insert(Completion), values)
    return len(values)
