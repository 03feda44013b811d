"""The simulated team's hidden preference ("gold"): content first, length a minor bounded term.

    gold(prompt, answer) = Σ WEIGHTS[part] · part(prompt, answer)

| part | range | weight | what it measures |
|---|---|---|---|
| correct | 0..1 | +2.0 | the checkable answer is right and not hedged (tasks.correctness) |
| coverage | 0..1 | +0.5 | share of the prompt's subject words the answer mentions |
| finished | 0/1 | +0.5 | the answer ends a sentence (. ! ? possibly before a closing quote) |
| echo | 0..1 | −1.0 | copying the prompt: 2·(share of the answer's trigrams in the prompt − ½), floored at 0 |
| repetition | 0..1 | −1.0 | 1 − distinct/total word trigrams of the answer (filler, loops) |
| length | 0..¼ | +1.0 | ¼·min(words, 10)/10 − ¼·min(1, (words − 80)⁺/80): up to 10 words, down past 80 |

A right, finished one-sentence answer scores about 3.1; no answer 0; the length term can move
gold by at most 0.25, so neither the shortest nor the longest answer nor any fixed template
comes near a good answer (`CONTROLS`, printed by `ranklab simulate --controls-only` and checked
in tests/loop/test_simulation.py). Length-controlled gold is gold without the length term. Gold
reads the prompt's text only (tasks.parse), so the simulation needs no model.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from app.simulation.tasks import Task, correctness, parse, reference, stem, words

PARTS = ("correct", "coverage", "finished", "echo", "repetition", "length")
WEIGHTS = {"correct": 2.0, "coverage": 0.5, "finished": 0.5, "echo": -1.0, "repetition": -1.0, "length": 1.0}
LENGTH_BONUS_WORDS = 10
LENGTH_BUDGET_WORDS = 80
LENGTH_SCALE = 0.25
_FINISHED = re.compile(r"[.!?][\"')\]]*\s*$")


def _trigrams(tokens: list[str]) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)]


def length_term(n_words: int) -> float:
    bonus = min(n_words, LENGTH_BONUS_WORDS) / LENGTH_BONUS_WORDS
    penalty = min(1.0, max(0, n_words - LENGTH_BUDGET_WORDS) / LENGTH_BUDGET_WORDS)
    return LENGTH_SCALE * (bonus - penalty)


def parts(prompt: str | Task, answer: str) -> dict[str, float]:
    task = prompt if isinstance(prompt, Task) else parse(prompt)
    tokens = words(answer)
    key = task.key_terms
    coverage = len(key & {stem(w) for w in tokens}) / len(key) if key and tokens else 0.0
    grams = _trigrams(tokens)
    copied = sum(g in set(_trigrams(words(task.prompt))) for g in grams) / len(grams) if grams else 0.0
    repetition = 1 - len(set(grams)) / len(grams) if len(grams) >= 4 else 0.0
    return {
        "correct": correctness(task, answer),
        "coverage": coverage,
        "finished": 1.0 if _FINISHED.search(answer.strip()) else 0.0,
        "echo": max(0.0, copied - 0.5) * 2,
        "repetition": repetition,
        "length": length_term(len(tokens)),
    }


def combine(values: dict[str, float], weights: dict[str, float] = WEIGHTS) -> float:
    return sum(weights[name] * values[name] for name in PARTS)


def gold_reward(prompt: str | Task, answer: str) -> float:
    return combine(parts(prompt, answer))


def length_controlled(values: dict[str, float]) -> float:
    """Gold with its length term removed."""
    return combine(values) - WEIGHTS["length"] * values["length"]


def _filler(task: Task, max_words: int) -> str:
    return " ".join(["very"] * max_words)


def _prompt_repeated(task: Task, max_words: int) -> str:
    text, out = task.prompt, list[str]()
    while len(" ".join(out + [text]).split()) <= max_words:
        out.append(text)
    return " ".join(out) or text


CONTROLS: dict[str, Callable[[Task, int], str]] = {
    "empty": lambda task, n: "",
    "yes": lambda task, n: "Yes.",
    "no": lambda task, n: "No.",
    "i don't know": lambda task, n: "I don't know.",
    "generic helpful": lambda task, n: "That is a great question! Here is a clear, helpful answer for you.",
    "repeat the prompt once": lambda task, n: task.prompt,
    "repeat the prompt to the cap": _prompt_repeated,
    "filler to the cap": _filler,
    "hedge: every capital": lambda task, n: "It could be Paris, Rome, Tokyo, Berlin or Madrid.",
}
"""Answers that ignore the prompt (or game length); each must score well below `reference`."""


def control_table(prompts: list[str], max_words: int = 40) -> list[tuple[str, float, float]]:
    """(name, mean gold, max gold over the prompts) for the reference answer and every control."""
    tasks = [parse(p) for p in prompts]
    rows = [("reference answer", [gold_reward(t, reference(t)) for t in tasks])]
    rows += [(name, [gold_reward(t, make(t, max_words)) for t in tasks]) for name, make in CONTROLS.items()]
    return [(name, sum(scores) / len(scores), max(scores)) for name, scores in rows]
