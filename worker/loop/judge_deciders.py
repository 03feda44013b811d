"""What a judge concludes about one task, per judge kind and feedback form (worker/loop/judging.py
stores it). The project's form picks the strategy from a table: the ranking forms (ranking, and
pairwise as a ranking of two) are ranked in presentation orders or scored pointwise; each rating
form of worker/ml/judge_forms.RATING_FORMS is rated one completion at a time. No DB here."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from app.judges.store import STORED, UNDECIDED, UNPARSEABLE
from app.models.judges import JudgeKind
from worker.loop.judge_endpoint import EndpointJudge
from worker.ml import judge as judge_ml
from worker.ml import judge_forms
from worker.ml.judge_forms import FormJudge

if TYPE_CHECKING:
    from worker.loop.judging import JudgeSettings


class Decision(NamedTuple):
    """A judge's conclusion about one task, in task indices (0..K-1, the task's own order)."""

    outcome: str
    shown: list[int]
    """The first presentation order."""
    orders: list[list[int]]
    """Ranking forms: each order's answer, best first (position-bias analysis)."""
    groups: list[list[int]] | None = None
    """Ranking forms: the combined ranking, best first (None when nothing is stored)."""
    values: list[dict[str, int]] | None = None
    """Rating forms: each completion's value per aspect ("" for its own rating)."""

    def stored_as(self, ids: list[int]) -> dict[str, Any]:
        """record_verdict's groups / ratings / orders, in completion ids."""
        if self.values is not None:
            ratings = dict(zip(ids, self.values, strict=True))
            return {"ratings": ratings, "orders": judge_forms.values_text(ratings)}
        groups = None if self.groups is None else [[ids[i] for i in group] for group in self.groups]
        return {"groups": groups, "orders": ";".join(",".join(str(ids[i]) for i in order) for order in self.orders)}


Decide = Callable[[str, list[str]], Decision]
Ask = Callable[[str], str]
"""An endpoint's reply to one rendered prompt."""


# ---- ranking forms --------------------------------------------------------------------------------


def by_orders(ask: Callable[[str, int], list[int] | None], cfg: JudgeSettings) -> Decide:
    """The ranking prompt in each presentation order, the answers combined by mean place."""

    def decide(prompt: str, texts: list[str]) -> Decision:
        k = len(texts)
        answers: list[list[int]] = []
        shown_orders = judge_ml.presentation_orders(k, cfg.orders)
        for shown in shown_orders:
            rendered = judge_ml.render_prompt(cfg.template, prompt=prompt, completions=[texts[i] for i in shown])
            answer = ask(rendered, k)
            if answer is None:  # nothing of the task is stored, not even the orders that parsed
                return Decision(UNPARSEABLE, shown_orders[0], answers)
            answers.append(judge_ml.to_task_order(answer, shown))
        groups = judge_ml.combine_orders(answers, k)
        return Decision(UNDECIDED if len(groups) == 1 else STORED, shown_orders[0], answers, groups)

    return decide


def pointwise(local: judge_ml.LocalJudge) -> Decide:
    """Each completion scored alone (LocalJudge.scores): order-free, one pass per completion."""

    def decide(prompt: str, texts: list[str]) -> Decision:
        groups = judge_ml.groups_by_score(local.scores(prompt, texts))
        given = list(range(len(texts)))
        outcome = UNDECIDED if len(groups) == 1 else STORED
        return Decision(outcome, given, [[i for g in groups for i in g]], groups)

    return decide


# ---- rating forms ---------------------------------------------------------------------------------


def rate_each(value_of: Callable[[str], int | None], form: FormJudge, cfg: JudgeSettings) -> Decide:
    """Each completion asked about alone (on each aspect alone) with the form's template; one
    that gets no value (an endpoint's answers never parsed) makes the task unparseable, and
    nothing of it is stored."""
    aspects = form.aspects(cfg.form_settings)

    def decide(prompt: str, texts: list[str]) -> Decision:
        given = list(range(len(texts)))
        values: list[dict[str, int]] = []
        for text in texts:
            mine: dict[str, int] = {}
            for name, label in aspects:
                rendered = judge_forms.render_rating_prompt(
                    cfg.template, form, cfg.form_settings, prompt=prompt, completion=text, aspect=label
                )
                value = value_of(rendered)
                if value is None:
                    return Decision(UNPARSEABLE, given, [])
                mine[name] = value
            values.append(mine)
        return Decision(STORED, given, [], values=values)

    return decide


def rate_pointwise(local: judge_ml.LocalJudge, form: FormJudge, cfg: JudgeSettings) -> Decide:
    """The pointwise Yes/No score mapped to the form's value (judge_forms: p(Yes) bins / > 0.5).
    Its question names no aspect, so every aspect of a completion gets the same value."""
    aspects = form.aspects(cfg.form_settings)

    def decide(prompt: str, texts: list[str]) -> Decision:
        values = []
        for score in local.scores(prompt, texts):
            value = form.from_score(score, cfg.form_settings)
            values.append({name: value for name, _label in aspects})
        return Decision(STORED, list(range(len(texts))), [], values=values)

    return decide


# ---- the judge of a run -------------------------------------------------------------------------------


def make_judge(cfg: JudgeSettings, backoff_seconds: float) -> tuple[Decide, Callable[[], None], EndpointJudge | None]:
    """(decide(prompt, texts), close(), the endpoint client if any)."""
    form = judge_forms.RATING_FORMS.get(cfg.form)  # None: a ranking form
    if cfg.kind == JudgeKind.endpoint:
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        client = EndpointJudge(
            url=cfg.endpoint_url,
            model=cfg.endpoint_model,
            api_key=key,
            max_attempts=cfg.max_attempts,
            requests_per_minute=cfg.requests_per_minute,
            backoff_seconds=backoff_seconds,
        )

        def parsed(read: Callable[[str], Any]) -> Callable[[str], Any]:
            # An answer that does not parse is asked for again (the endpoint may sample), then skipped.
            def ask(rendered: str) -> Any:
                for _ in range(cfg.max_attempts):
                    value = read(client.ask(rendered))
                    if value is not None:
                        return value
                return None

            return ask

        if form is not None:
            rating = parsed(lambda answer: form.parse(answer, cfg.form_settings))
            return rate_each(rating, form, cfg), client.close, client

        def order(rendered: str, k: int) -> list[int] | None:
            return parsed(lambda answer: judge_ml.parse_ranking(answer, k))(rendered)

        return by_orders(order, cfg), client.close, client
    from app.rounds.lifecycle import BUNDLED_MODEL
    from worker.loop.configs import base_model_path

    local = judge_ml.LocalJudge.load(base_model_path(cfg.model_path or BUNDLED_MODEL))
    if form is not None:
        if cfg.kind == JudgeKind.local_pointwise:
            return rate_pointwise(local, form, cfg), lambda: None, None
        options = form.options(cfg.form_settings)

        def choose(rendered: str) -> int:
            return options[local.choose(rendered, [text for text, _ in options], form.answer_prefix)][1]

        return rate_each(choose, form, cfg), lambda: None, None
    decide = pointwise(local) if cfg.kind == JudgeKind.local_pointwise else by_orders(local.rank, cfg)
    return decide, lambda: None, None
