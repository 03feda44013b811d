"""Rankings in and out of JSONL, prompt handling, and the split by prompt.

One JSONL line is one labeler's ranking of one task:

    {"prompt": "text" | [{"role": ..., "content": ...}, ...],
     "completions": ["...", "...", ...],
     "ranking": [[0], [2, 3], [1]],      # groups best-first, indices into completions;
                                          # indices in the same group are ties
     "prompt_id": "optional, used for the train/validation split"}

Completions left out of `ranking` are ignored. Several lines may rank the same task (several
labelers); they become one `RankedSet` so the completions are forwarded once.

A line may also rank the completions per aspect, for a multi-aspect reward model
(RewardConfig.aspects; docs/feedback-training.md):

    {..., "aspects": {"helpfulness": [[1], [0, 2]], "harmlessness": [[0, 1, 2]]}}

each value in the `ranking` format. With "aspects", "ranking" (the overall ranking) may be
left out; a multi-aspect model reads only "aspects", a one-head model only "ranking".
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

Prompt = str | list[dict[str, str]]


@dataclass
class Ranking:
    prompt: Prompt
    completions: list[str]
    groups: list[list[int]]
    """Best-first groups of completion indices; members of a group are tied."""
    prompt_id: str = ""
    aspect_groups: dict[str, list[list[int]]] = field(default_factory=dict)
    """Per aspect, best-first groups as in `groups` (the multi-aspect reward model's data);
    empty for a ranking without aspects. An aspect the labeler did not rank is absent."""

    def levels(self, aspect: str | None = None) -> list[int]:
        """Per completion: its group's position (0 = best), or -1 when it was not ranked; of the
        overall groups, or of `aspect_groups[aspect]` (all -1 when that aspect is absent)."""
        groups = self.groups if aspect is None else self.aspect_groups.get(aspect, [])
        levels = [-1] * len(self.completions)
        for level, group in enumerate(groups):
            for index in group:
                levels[index] = level
        return levels


@dataclass
class RankedSet:
    """The unique (prompt, completions) of one task with every ranking labelers gave it."""

    prompt: Prompt
    completions: list[str]
    prompt_id: str
    levels: list[list[int]] = field(default_factory=list)
    """One row per ranking: `Ranking.levels()`."""
    aspect_levels: dict[str, list[list[int]]] = field(default_factory=dict)
    """Per aspect, one row per ranking that ranked that aspect: `Ranking.levels(aspect)`."""


def prompt_key(prompt: Prompt) -> str:
    """A stable id for a prompt (used when the data carries no prompt_id)."""
    canonical = json.dumps(prompt, sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def parse_prompt(value: Any, where: str) -> Prompt:
    if isinstance(value, str):
        return value
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    ):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise ValueError(f"{where}: prompt must be a string or a non-empty list of {{role, content}} messages")


def parse_ranking(record: Any, where: str) -> Ranking:
    """Validate one decoded JSON record; errors name `where` (e.g. "line 12")."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object")
    required = ("prompt", "completions") if "aspects" in record else ("prompt", "completions", "ranking")
    for key in required:
        if key not in record:
            raise ValueError(f"{where}: missing field {key!r}")
    prompt = parse_prompt(record["prompt"], where)
    completions = record["completions"]
    if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
        raise ValueError(f"{where}: completions must be a list of strings")
    groups = _parse_groups(record.get("ranking", []), len(completions), where, "ranking")
    aspects = record.get("aspects", {})
    if not isinstance(aspects, dict) or not all(isinstance(name, str) and name for name in aspects):
        raise ValueError(f"{where}: aspects must be an object {{aspect name: ranking}}")
    aspect_groups = {
        name: _parse_groups(value, len(completions), where, f"aspects[{name!r}]") for name, value in aspects.items()
    }
    prompt_id = record.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, (str, int)):
        raise ValueError(f"{where}: prompt_id must be a string or integer")
    return Ranking(
        prompt=prompt,
        completions=list(completions),
        groups=groups,
        prompt_id=str(prompt_id) if prompt_id is not None else prompt_key(prompt),
        aspect_groups=aspect_groups,
    )


def _parse_groups(groups: Any, n: int, where: str, name: str) -> list[list[int]]:
    """Best-first groups of distinct completion indices, checked; errors name `where` and `name`."""
    if not isinstance(groups, list) or not all(isinstance(g, list) and g for g in groups):
        raise ValueError(f"{where}: {name} must be a list of non-empty lists of indices")
    seen: set[int] = set()
    for group in groups:
        for index in group:
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
                raise ValueError(f"{where}: {name} index {index!r} is not a completion index (0..{n - 1})")
            if index in seen:
                raise ValueError(f"{where}: completion {index} appears twice in {name}")
            seen.add(index)
    return [list(g) for g in groups]


def read_jsonl(path: str | Path, parse: Callable[[Any, str], T]) -> list[T]:
    """Every non-blank line of a JSONL file through `parse(record, "line N")`; errors name the line."""
    parsed = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"line {number}: invalid JSON ({error.msg})") from None
            parsed.append(parse(record, f"line {number}"))
    return parsed


def read_rankings(path: str | Path) -> list[Ranking]:
    return read_jsonl(path, parse_ranking)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_prompts(path: str | Path) -> list[tuple[str, Prompt]]:
    """(prompt_id, prompt) per line: {"prompt": ..., "prompt_id"?: ...} or a bare JSON string."""
    prompts = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"line {number}: invalid JSON ({error.msg})") from None
            if isinstance(record, str):
                record = {"prompt": record}
            if not isinstance(record, dict) or "prompt" not in record:
                raise ValueError(f'line {number}: expected {{"prompt": ...}} or a JSON string')
            prompt = parse_prompt(record["prompt"], f"line {number}")
            prompts.append((str(record.get("prompt_id") or prompt_key(prompt)), prompt))
    return prompts


def group_rankings(rankings: Sequence[Ranking]) -> list[RankedSet]:
    """Merge rankings of the same (prompt, completions) so each completion is forwarded once."""
    sets: dict[str, RankedSet] = {}
    for ranking in rankings:
        key = json.dumps([ranking.prompt_id, ranking.prompt, ranking.completions], ensure_ascii=False)
        ranked = sets.get(key)
        if ranked is None:
            ranked = sets[key] = RankedSet(ranking.prompt, ranking.completions, ranking.prompt_id)
        ranked.levels.append(ranking.levels())
        for aspect in ranking.aspect_groups:
            ranked.aspect_levels.setdefault(aspect, []).append(ranking.levels(aspect))
    return list(sets.values())


def split_by_prompt(
    sets: Sequence[RankedSet], val_fraction: float, seed: int
) -> tuple[list[RankedSet], list[RankedSet]]:
    """(train, validation): whole prompts go to one side, so validation measures generalisation
    to unseen prompts. With val_fraction > 0 and at least two prompts, validation gets >= 1."""
    prompt_ids = sorted({s.prompt_id for s in sets})
    random.Random(seed).shuffle(prompt_ids)
    n_val = round(len(prompt_ids) * val_fraction)
    if val_fraction > 0 and len(prompt_ids) >= 2:
        n_val = min(max(n_val, 1), len(prompt_ids) - 1)
    val_ids = set(prompt_ids[:n_val])
    return ([s for s in sets if s.prompt_id not in val_ids], [s for s in sets if s.prompt_id in val_ids])
