"""An AI judge for ranking tasks: the prompt, parsing its answer, combining orders, and a local
model that answers by constrained scoring. A plain library (torch/transformers only).

The judge sees the prompt and the completions numbered 1..K and answers with an order such as
"Ranking: 3 > 1 > 4 > 2". LLM judges prefer some positions (often the first), so every task is
judged in more than one presentation order (`presentation_orders`: the given order and its
reverse) and the answers are combined by mean place (`combine_orders`): a judge that only ever
said "1 > 2 > ... > K" ranks the given order first and its reverse first, and the two cancel into
a full tie, which the caller stores as no judgment at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the web process imports the prompt and parsing helpers, never torch
    import torch

DEFAULT_TEMPLATE = """You are judging answers written by AI assistants.

## The user's request
{prompt}

## The answers
{completions}

Rank all {k} answers from best to worst by how helpful, correct and harmless each one is.
Judge only the content: ignore the order the answers are listed in and their length.
Reply with one line and nothing else, listing every number from 1 to {k} exactly once:
Ranking: <best> > <next> > ... > <worst>"""
"""The default prompt template. Placeholders: {prompt}, {completions} (numbered blocks), {k}."""

POINTWISE_TEMPLATE = """Question: {prompt}
Answer: {completion}

Is this answer correct and helpful? Reply Yes or No."""
"""The local pointwise judge's question about one answer (LocalJudge.score)."""

PLACEHOLDERS = ("{prompt}", "{completions}", "{k}")
ANSWER_PREFIX = "Ranking:"
"""What the default template asks the answer to start with; the local judge is given it."""


class TemplateError(ValueError):
    """An admin's template cannot be used (says which placeholder is missing or broken)."""


def check_template(template: str) -> None:
    """Raises TemplateError unless the template names {prompt} and {completions} and renders."""
    for needed in PLACEHOLDERS[:2]:
        if needed not in template:
            raise TemplateError(f"the template must contain {needed}")
    try:
        template.format(prompt="", completions="", k=4)
    except (KeyError, IndexError, ValueError) as exc:
        raise TemplateError(
            f"the template has a placeholder other than {', '.join(PLACEHOLDERS)} "
            f"or an unmatched brace ({exc!r}); write a literal brace as {{{{ or }}}}"
        ) from None


def render_prompt(template: str, *, prompt: str, completions: Sequence[str]) -> str:
    """The judge's prompt with the completions numbered 1..K in the order given."""
    blocks = "\n\n".join(f"### Answer {i}\n{text}" for i, text in enumerate(completions, start=1))
    return template.format(prompt=prompt, completions=blocks, k=len(completions))


_NUMBER = re.compile(r"(?<![\d.])(\d+)(?![\d.])")


def parse_ranking(answer: str, k: int) -> list[int] | None:
    """The 0-based indices best first, or None when the answer names no complete order.

    Robust to chatter: reads the last line that mentions "ranking" (or, failing that, the last
    line naming every number), takes the numbers in order of appearance, ignores repeats, and
    accepts an answer that leaves out only the worst one; a line naming a number outside 1..k
    (or a decimal) is no order. Anything else is None: the caller
    asks again or skips the task, and counts it."""
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    marked = [line for line in lines if "rank" in line.lower()]
    for line in reversed(marked or lines):
        text = line.split(":", 1)[1] if ":" in line and "rank" in line.lower() else line
        numbers = [int(match.group(1)) for match in _NUMBER.finditer(text)]
        if any(not 1 <= number <= k for number in numbers):
            continue  # names an answer that does not exist: a confused line, not an order
        order: list[int] = []
        for number in numbers:
            if number - 1 not in order:
                order.append(number - 1)
        if len(order) == k - 1:
            order.append(next(i for i in range(k) if i not in order))
        if len(order) == k:
            return order
    return None


def presentation_orders(k: int, orders: int = 2) -> list[list[int]]:
    """The orders the completions are shown in: the given one, its reverse, then rotations of the
    given one (for orders > 2), each a list of 0-based indices into the task's completions."""
    given = list(range(k))
    shown = [given, given[::-1]]
    shown += [given[r:] + given[:r] for r in range(1, k)]
    unique: list[list[int]] = []
    for order in shown:
        if order not in unique:
            unique.append(order)
    return unique[: max(1, orders)]


def to_task_order(answer: Sequence[int], shown: Sequence[int]) -> list[int]:
    """An answer about the numbers as shown (0-based, best first) as task indices, best first."""
    return [shown[i] for i in answer]


def groups_by_score(scores: Sequence[float]) -> list[list[int]]:
    """Indices grouped by equal score (rounded to 1e-6), highest first."""
    groups: dict[float, list[int]] = {}
    for index, score in enumerate(scores):
        groups.setdefault(round(score, 6), []).append(index)
    return [groups[score] for score in sorted(groups, reverse=True)]


def combine_orders(rankings: Sequence[Sequence[int]], k: int) -> list[list[int]]:
    """Rankings (task indices, best first) → groups of task indices by mean place, best first;
    equal means are tied. All in one group means the orders cancelled out (no preference)."""
    places = [0.0] * k
    for ranking in rankings:
        for place, index in enumerate(ranking):
            places[index] += place / len(rankings)
    groups: dict[float, list[int]] = {}
    for index in range(k):
        groups.setdefault(round(places[index], 9), []).append(index)
    return [groups[place] for place in sorted(groups)]


@dataclass
class LocalJudge:
    """A causal LM in a folder (transformers) that answers the ranking prompt by constrained
    scoring: after "Ranking:", it picks the next number among those not yet named by the highest
    log-probability, K-1 times. Its answer is always a complete order, so it never needs parsing;
    how good it is depends on the model (the bundled 135M model is a weak judge)."""

    model: Any
    """A transformers causal LM, in eval mode."""
    tokenizer: Any
    max_prompt_tokens: int = 1536
    """Longer prompts keep their end (the answers and the instruction); the start is cut."""

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> LocalJudge:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        return cls(model=model, tokenizer=tokenizer, **kwargs)

    def _context_ids(self, rendered: str, answer_prefix: str = ANSWER_PREFIX) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                [{"role": "user", "content": rendered}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = rendered + "\n"
        ids = tok(text + answer_prefix, add_special_tokens=False)["input_ids"]
        return ids[-self.max_prompt_tokens :]

    def scores(self, prompt: str, completions: Sequence[str]) -> list[float]:
        """Pointwise judging: each completion asked about alone (POINTWISE_TEMPLATE), scored by
        log p(Yes) - log p(No) as the reply's first token. No answer sees another, so the order
        they are listed in cannot matter. On small models this is the better local judge: the
        bundled 135M model answers the ranking prompt with "1 > 2 > 3 > 4" whatever it is shown
        (docs/ai-judges.md, bench/judge_bundled.py)."""
        import torch

        tok = self.tokenizer
        yes, no = (tok(word, add_special_tokens=False)["input_ids"][0] for word in ("Yes", "No"))
        out = []
        with torch.no_grad():
            for completion in completions:
                rendered = POINTWISE_TEMPLATE.format(prompt=prompt, completion=completion)
                ids = torch.tensor([self._context_ids(rendered, answer_prefix="")])  # [1, L]
                logprobs = torch.log_softmax(self.model(input_ids=ids).logits[0, -1].float(), dim=-1)  # [V]
                out.append(float(logprobs[yes] - logprobs[no]))
        return out

    def choose(self, rendered: str, options: Sequence[str], answer_prefix: str) -> int:
        """The index of the option the model finds likeliest after `answer_prefix` (a rating
        form's " 1".." N" or " Good" / " Bad", worker/ml/judge_forms.py): always an answer."""
        import torch

        tok = self.tokenizer
        with torch.no_grad():
            context = self._context_ids(rendered, answer_prefix)
            ids = [tok(option, add_special_tokens=False)["input_ids"] for option in options]
            return int(torch.argmax(self._continuation_logprobs(context, ids, torch)))

    def rank(self, rendered: str, k: int) -> list[int]:
        """0-based indices of the shown completions, best first."""
        import torch

        with torch.no_grad():
            return self._rank(rendered, k, torch)

    def _rank(self, rendered: str, k: int, torch) -> list[int]:
        tok = self.tokenizer
        answer_ids = list(self._context_ids(rendered))
        remaining = list(range(k))
        order: list[int] = []
        while len(remaining) > 1:
            sep = " > " if order else " "
            options = [tok(f"{sep}{i + 1}", add_special_tokens=False)["input_ids"] for i in remaining]
            scores = self._continuation_logprobs(answer_ids, options, torch)  # [len(remaining)]
            best = int(torch.argmax(scores))
            order.append(remaining.pop(best))
            answer_ids += options[best]
        return order + remaining

    def _continuation_logprobs(self, context: list[int], options: list[list[int]], torch) -> torch.Tensor:
        """Sum of log p(option tokens | context) for each option, in one right-padded batch."""
        longest = max(map(len, options))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        rows = [context + o + [pad] * (longest - len(o)) for o in options]
        mask = [[1] * (len(context) + len(o)) + [0] * (longest - len(o)) for o in options]
        input_ids = torch.tensor(rows)  # [n, L]
        logits = self.model(input_ids=input_ids, attention_mask=torch.tensor(mask)).logits  # [n, L, V]
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts tokens 1..L-1
        totals = torch.zeros(len(options))
        for n, option in enumerate(options):
            for j, token in enumerate(option):
                totals[n] += logprobs[n, len(context) + j - 1, token]
        return totals
