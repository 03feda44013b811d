"""Prompt families with checkable answers, built from templates and parsed back from their text.

Gold (app/simulation/gold.py) scores an answer from the prompt's *text* alone: `parse` recovers the
family and its parameters (the sum asked for, the country, the category, ...), so a labeler judges
what it is shown and never needs to know where a prompt or an answer came from.

Families: arithmetic ("What is 7 plus 5?"), capitals, yes/no questions with known answers,
"name three <category>", and open questions about a topic (judged by on-topic vocabulary).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from app.simulation.facts import CAPITALS, CATEGORIES, NUMBER_WORDS, TOPICS, YES_NO

_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"\d+")
STOP = frozenset(
    "a an the is are was were be of to in on at for and or but with about what which who why how do does did "
    "can could would should will me my you your it its this that these those there their than then as by from "
    "tell explain name list three answer yes no child interesting city important please give".split()
)
"""Words that are no prompt's subject: grammar and the templates' own instructions."""

ARITHMETIC = re.compile(r"^What is (\d+) (plus|minus|times) (\d+)\?$")
CAPITAL = re.compile(r"^(?:What is|Which city is) the capital of (.+)\?$")
YES_NO_Q = re.compile(r"^Answer yes or no: (.+)$")
LIST = re.compile(r"^(?:Name|List) three (.+)\.$")
OPEN = (
    re.compile(r"^Tell me about (.+)\.$"),
    re.compile(r"^Explain (.+) to a child\.$"),
    re.compile(r"^What is interesting about (.+)\?$"),
)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def stem(word: str) -> str:
    """Crude singular: enough to match "fruits" with "fruit" and "bees" with "bee"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "oes", "sses", "zes", "buses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def stems(text: str) -> set[str]:
    return {stem(w) for w in words(text)}


@dataclass(frozen=True)
class Task:
    family: str
    """arithmetic, capital, yes_no, list, open; "other" for a prompt no template made."""
    prompt: str
    subject: str = ""
    """The country, question, category or topic; for arithmetic the operation."""
    numbers: tuple[int, ...] = ()
    """Arithmetic: the operands and the result."""

    @property
    def key_terms(self) -> frozenset[str]:
        """The prompt's subject words (stemmed), which a good answer mentions."""
        return frozenset(stem(w) for w in words(self.prompt) if w not in STOP and not w.isdigit())


def parse(prompt: str) -> Task:
    text = prompt.strip()
    if m := ARITHMETIC.match(text):
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        result = a + b if op == "plus" else a - b if op == "minus" else a * b
        return Task("arithmetic", text, op, (a, b, result))
    if (m := CAPITAL.match(text)) and m.group(1) in CAPITALS:
        return Task("capital", text, m.group(1))
    if (m := YES_NO_Q.match(text)) and m.group(1) in YES_NO:
        return Task("yes_no", text, m.group(1))
    if (m := LIST.match(text)) and m.group(1) in CATEGORIES:
        return Task("list", text, m.group(1))
    for pattern in OPEN:
        if (m := pattern.match(text)) and m.group(1) in TOPICS:
            return Task("open", text, m.group(1))
    return Task("other", text)


def _numbers(answer: str) -> set[int]:
    found = {int(n) for n in _NUMBER.findall(answer)}
    return found | {NUMBER_WORDS[w] for w in words(answer) if w in NUMBER_WORDS}


def _has_phrase(answer_words: list[str], phrase: str) -> bool:
    target = words(phrase)
    return any(answer_words[i : i + len(target)] == target for i in range(len(answer_words) - len(target) + 1))


def _first_sentence(answer: str) -> str:
    return re.split(r"[.!?\n]", answer.strip(), maxsplit=1)[0]


def correctness(task: Task, answer: str) -> float:
    """1 for a right answer, 0 for a wrong, missing or hedged one (partial for lists and topics).

    Hedging never pays: an answer naming several capitals, saying both yes and no, or giving
    numbers besides the operands and the result scores 0 even when the right one is among them."""
    answer_words = words(answer)
    if task.family == "arithmetic":
        a, b, result = task.numbers
        found = _numbers(answer)
        return float(result in found and found <= {a, b, result})
    if task.family == "capital":
        right = CAPITALS[task.subject]
        named = {city for city in CAPITALS.values() if _has_phrase(answer_words, city)}
        if right == "New Delhi" and _has_phrase(answer_words, "delhi"):
            named.add(right)
        return float(named == {right})
    if task.family == "yes_no":
        first = set(words(_first_sentence(answer)))
        said_yes, said_no = "yes" in first, "no" in first
        return float(said_yes != said_no and said_yes == YES_NO[task.subject])
    if task.family == "list":
        members = {stem(w) for w in CATEGORIES[task.subject].split()}
        named = {stem(w) for w in answer_words} & members
        return min(len(named), 3) / 3 if len(named) <= 5 else 0.5
    if task.family == "open":
        lexicon = {stem(w) for w in TOPICS[task.subject].split()} - stems(task.prompt)
        return min(len({stem(w) for w in answer_words} & lexicon), 3) / 3
    return 0.0


def reference(task: Task) -> str:
    """A good answer: right, on the subject, finished, a sentence long."""
    if task.family == "arithmetic":
        a, b, result = task.numbers
        return f"{a} {task.subject} {b} is {result}."
    if task.family == "capital":
        return f"The capital of {task.subject} is {CAPITALS[task.subject]}."
    if task.family == "yes_no":
        verdict = "yes" if YES_NO[task.subject] else "no"
        return f'{verdict.capitalize()}, the answer to "{task.subject}" is {verdict}.'
    if task.family == "list":
        seen: list[str] = []
        for member in CATEGORIES[task.subject].split():
            if stem(member) not in {stem(s) for s in seen}:
                seen.append(member)
        return f"Three {task.subject} are {seen[0]}, {seen[1]} and {seen[2]}."
    if task.family == "open":
        own = stems(task.prompt)
        lexicon = [w for w in dict.fromkeys(stem(w) for w in TOPICS[task.subject].split()) if w not in own]
        return f"When you think of {task.subject}, think of {lexicon[0]}, {lexicon[1]} and {lexicon[2]}."
    return ""


def all_prompts() -> list[str]:
    """Every prompt of every family, in a fixed order (about 330)."""
    rng = random.Random(20261206)
    arithmetic: set[str] = set()
    while len(arithmetic) < 60:
        op = rng.choice(("plus", "minus", "times"))
        a, b = (rng.randint(2, 12), rng.randint(2, 9)) if op == "times" else (rng.randint(3, 30), rng.randint(2, 20))
        if op == "minus" and b >= a:
            a, b = b + 1, a
        if op == "minus" and a == 2 * b:  # the result would be an operand: echoing would be "right"
            continue
        arithmetic.add(f"What is {a} {op} {b}?")
    out = sorted(arithmetic)
    for country in CAPITALS:
        out += [f"What is the capital of {country}?", f"Which city is the capital of {country}?"]
    out += [f"Answer yes or no: {question}" for question in YES_NO]
    for category in CATEGORIES:
        out += [f"Name three {category}.", f"List three {category}."]
    for topic in TOPICS:
        out += [f"Tell me about {topic}.", f"Explain {topic} to a child.", f"What is interesting about {topic}?"]
    return out


def draw_prompts(count: int, seed: int, *, exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """`count` distinct prompts, shuffled by `seed`, none in `exclude`."""
    pool = [p for p in all_prompts() if p not in exclude]
    random.Random(seed).shuffle(pool)
    if count > len(pool):
        raise ValueError(f"{count} prompts wanted; the templates make {len(pool)}")
    return pool[:count]
