"""How the bundled SmolLM2-135M-Instruct does as a local judge (worker/ml/judge.py LocalJudge) on
12 hand-written items whose order is not in doubt: a correct answer, a wrong one, an off-topic
one and a non-answer. Two ways to judge: pointwise (each answer asked about alone, scored by
log p(Yes) - log p(No)), and with --ranking also the ranking prompt in the given and reversed
orders (slow: ~7 minutes on one busy CPU thread). Prints top-1 accuracy and pairwise agreement
with the known order (chance: 25% and 50%); for the ranking prompt also how often the first
shown answer is ranked first (position bias) and how many tasks the combination leaves tied.
With --forms also the rating-form judges (worker/ml/judge_forms.py) on the same 48 answers, where
only the right answer is good: good/bad accuracy and the mean 5-point Likert rating of each kind
of answer, from the pointwise score (p(Yes) bins; good when p(Yes) > 0.5) and from the `local`
judge answering the form's template constrained to its answers. The model is deterministic, so
one run is the measure (no seeds to vary).
A smoke measure of a weak judge on easy items, not a benchmark of judging quality.

    nice -n 5 .venv/bin/python bench/judge_bundled.py [--ranking] [--forms]
"""

from __future__ import annotations

import sys
import time

import torch

from app.admin.agreement import compare_rankings
from app.settings import get_settings
from worker.ml import judge_forms
from worker.ml.judge import (
    DEFAULT_TEMPLATE,
    LocalJudge,
    combine_orders,
    groups_by_score,
    presentation_orders,
    render_prompt,
)
from worker.ml.models import convert_default_model

ITEMS = [
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Berlin."),
    ("How many legs does a spider have?", "A spider has eight legs.", "A spider has six legs."),
    ("What is 7 times 8?", "7 times 8 is 56.", "7 times 8 is 54."),
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue.", "On a clear day the sky is green."),
    ("Which planet is closest to the Sun?", "Mercury is the closest planet to the Sun.", "Jupiter is the closest."),
    ("What do bees make?", "Bees make honey (and wax).", "Bees make milk."),
    ("How many days are in a week?", "A week has seven days.", "A week has ten days."),
    ("What is the boiling point of water at sea level?", "100 °C (212 °F).", "50 °C."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote it.", "Charles Dickens wrote it."),
    ("What is the largest ocean?", "The Pacific Ocean is the largest.", "The Indian Ocean is the largest."),
    ("What gas do plants take in for photosynthesis?", "Carbon dioxide.", "Helium."),
    ("How many continents are there?", "There are seven continents.", "There are three continents."),
]
OFF_TOPIC = "I enjoy long walks and my favourite food is pasta."
NON_ANSWER = "..."


TEXTS_AND_GOLD = ([3], [1], [0], [2])
"""Each item's answers are listed [off-topic, wrong, non-answer, right]: the right one last."""


def _report(name: str, results: list[list[list[int]]], seconds: float) -> None:
    gold = list(TEXTS_AND_GOLD)
    n = len(results)
    top1 = sum(groups[0] == [3] for groups in results)
    compared = [compare_rankings(groups, gold) for groups in results]
    agree = sum(c.agreeing for c in compared) / sum(c.pairs for c in compared)
    print(
        f"{name}: {n} items in {seconds:.0f} s; the right answer alone on top {top1}/{n} = {100 * top1 / n:.0f}% "
        f"(chance 25%); pairwise agreement with the known order {100 * agree:.1f}% (chance 50%; ties disagree)"
    )


def main() -> None:
    torch.set_num_threads(1)
    judge = LocalJudge.load(convert_default_model(get_settings().data_dir))
    items = [(question, [OFF_TOPIC, wrong, NON_ANSWER, right]) for question, right, wrong in ITEMS]

    started = time.perf_counter()
    scores = [judge.scores(q, texts) for q, texts in items]
    _report("pointwise", [groups_by_score(s) for s in scores], time.perf_counter() - started)
    if "--forms" in sys.argv:
        _forms(judge, items, scores)
    if "--ranking" not in sys.argv:
        return
    started, first_wins, results = time.perf_counter(), 0, []
    for question, texts in items:
        answers = []
        for shown in presentation_orders(4, 2):
            rendered = render_prompt(DEFAULT_TEMPLATE, prompt=question, completions=[texts[i] for i in shown])
            order = judge.rank(rendered, 4)
            first_wins += order[0] == 0
            answers.append([shown[i] for i in order])
        results.append(combine_orders(answers, 4))
    _report("ranking prompt, given + reversed", results, time.perf_counter() - started)
    n = len(items)
    print(
        f"  first shown answer ranked first in {first_wins}/{2 * n} single orders (chance 25%); "
        f"tasks left fully tied (stored as nothing): {sum(len(g) == 1 for g in results)}/{n}"
    )


KINDS = ("off-topic", "wrong", "non-answer", "right")


def _forms(judge: LocalJudge, items: list[tuple[str, list[str]]], scores: list[list[float]]) -> None:
    settings = {"likert_points": 5}
    likert, good_bad = judge_forms.RATING_FORMS["likert"], judge_forms.RATING_FORMS["good_bad"]
    pointwise = {
        "likert": [[likert.from_score(s, settings) for s in row] for row in scores],
        "good_bad": [[good_bad.from_score(s, settings) for s in row] for row in scores],
    }
    started = time.perf_counter()
    constrained: dict[str, list[list[int]]] = {"likert": [], "good_bad": []}
    for name, form in (("likert", likert), ("good_bad", good_bad)):
        options = form.options(settings)
        for question, texts in items:
            row = []
            for text in texts:
                rendered = judge_forms.render_rating_prompt(
                    form.template, form, settings, prompt=question, completion=text
                )
                row.append(options[judge.choose(rendered, [o for o, _ in options], form.answer_prefix)][1])
            constrained[name].append(row)
    seconds = time.perf_counter() - started
    for how, values in (("pointwise", pointwise), (f"constrained template ({seconds:.0f} s)", constrained)):
        right = sum(row[i] == int(i == 3) for row in values["good_bad"] for i in range(4))
        means = [sum(row[i] for row in values["likert"]) / len(items) for i in range(4)]
        print(
            f"{how}: good/bad accuracy {right}/{4 * len(items)} = {100 * right / (4 * len(items)):.0f}% "
            f"(all 'bad' scores 75%); mean Likert (1-5) "
            + ", ".join(f"{kind} {mean:.2f}" for kind, mean in zip(KINDS, means, strict=True))
        )


if __name__ == "__main__":
    main()
