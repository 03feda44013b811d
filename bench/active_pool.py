"""The pool, labelers and test set of bench/active_learning.py (docs/active-learning.md).

Completions are generated once per part (4 answers per prompt and part, its own sampling seeds)
and cached in --out/pool-<part>.json; the frozen bundled model's feature of each completion is
cached by (prompt, completion) in --out/completion-features.pt, so a pool with more parts reuses
every feature computed before. A prompt's completions are cut into ranking tasks of K (16
answers: 4 tasks of 4, none sharing a completion).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch

from app.simulation.gold import gold_reward, parts
from app.simulation.noise import TARGET_AGREEMENT, Profile, solve_sigma
from app.simulation.tasks import all_prompts, parse
from worker.ml.active import completion_features
from worker.ml.config import GenerationConfig
from worker.ml.generate import generate
from worker.ml.models import convert_default_model

LABELERS = 5


def build_pool(out: Path, data_dir: Path, samples: int, max_new_tokens: int, part: int = 0) -> list[dict]:
    """[{prompt, completions}] for every simulated prompt, cached in out/pool-<part>.json; parts
    differ only in their sampling seeds (two processes can generate two parts at once). Written in
    chunks (pool-<part>.partial.json) so an interrupted run resumes with the same samples."""
    final = out / f"pool-{part}.json"
    if final.is_file():
        return json.loads(final.read_text())
    model_dir = convert_default_model(data_dir)
    partial = out / f"pool-{part}.partial.json"
    pool: list[dict] = json.loads(partial.read_text()) if partial.is_file() else []
    prompts = all_prompts()
    cfg = GenerationConfig(k=samples, temperature=1.0, max_new_tokens=max_new_tokens, batch_size=64, seed=0)
    started = time.time()
    for start in range(len(pool), len(prompts), 16):
        chunk = prompts[start : start + 16]
        cfg.seed = 100_000 * part + start  # each chunk its own fixed seed: resuming gives the same pool
        answers = generate(str(model_dir), chunk, cfg)
        pool += [{"prompt": p, "completions": [c.text for c in a]} for p, a in zip(chunk, answers, strict=True)]
        partial.write_text(json.dumps(pool))
        print(f"  pool {part}: {len(pool)}/{len(prompts)} prompts, {time.time() - started:.0f} s", file=sys.stderr)
    final.write_text(json.dumps(pool, indent=1))
    partial.unlink()
    return pool


def merged_pool(
    out: Path, data_dir: Path, samples: int, max_new_tokens: int, parts: int, available: bool
) -> list[dict]:
    """Every part's samples of a prompt together, part 0 first. available: generate nothing, take
    the prompts every part has so far (a pool still being generated, pool-<part>.partial.json)."""
    if available:
        pools = []
        for part in range(parts):
            final, partial = out / f"pool-{part}.json", out / f"pool-{part}.partial.json"
            pools.append(json.loads((final if final.is_file() else partial).read_text()))
        shortest = min(len(p) for p in pools)
        pools = [p[:shortest] for p in pools]
    else:
        pools = [build_pool(out, data_dir, samples, max_new_tokens, part) for part in range(parts)]
    return [
        {"prompt": entries[0]["prompt"], "completions": [c for e in entries for c in e["completions"]]}
        for entries in zip(*pools, strict=True)
    ]


def pool_features(out: Path, data_dir: Path, pool: list[dict], chunk: int = 16) -> list[torch.Tensor]:
    """Per prompt a (completions, d) tensor of the frozen bundled model's features (what a reward
    head on that backbone reads), cached per (prompt, completion) in out/completion-features.pt
    and saved after every chunk of prompts (an interrupted run loses one chunk at most)."""
    path = out / "completion-features.pt"
    cache: dict[str, torch.Tensor] = torch.load(path) if path.is_file() else {}

    def key(prompt: str, completion: str) -> str:
        return json.dumps([prompt, completion])

    todo = [
        (n, [c for c in dict.fromkeys(e["completions"]) if key(e["prompt"], c) not in cache])
        for n, e in enumerate(pool)
    ]
    todo = [(n, missing) for n, missing in todo if missing]
    model_dir = convert_default_model(data_dir) if todo else None
    started = time.time()
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        items = [(pool[n]["prompt"], missing) for n, missing in part]
        for (prompt, missing), f in zip(
            items, completion_features(model_dir, items, batch_size=32, device="cpu"), strict=True
        ):
            for completion, row in zip(missing, f, strict=True):
                cache[key(prompt, completion)] = row.clone()
        torch.save(cache, path)
        done = start + len(part)
        print(f"  features: {done}/{len(todo)} prompts, {time.time() - started:.0f} s", file=sys.stderr)
    return [torch.stack([cache[key(e["prompt"], c)] for c in e["completions"]]) for e in pool]


class Tasks:
    """Ranking tasks of k completions cut from each prompt's samples (disjoint, in sampling
    order), with every completion's gold value and gold parts; `completions` keeps, per prompt,
    all its samples (the held-out test set scores every pair of them)."""

    def __init__(self, pool: list[dict], features: list[torch.Tensor], k: int):
        self.prompt_of: list[int] = []
        self.features: list[torch.Tensor] = []
        self.parts: list[list[dict[str, float]]] = []
        self.gold: list[list[float]] = []
        self.prompt_features = features
        self.prompt_gold: list[list[float]] = []
        for p, (entry, f) in enumerate(zip(pool, features, strict=True)):
            task = parse(entry["prompt"])
            gold = [gold_reward(task, t) for t in entry["completions"]]
            values = [parts(task, t) for t in entry["completions"]]
            self.prompt_gold.append(gold)
            for start in range(0, len(entry["completions"]) - k + 1, k):
                self.prompt_of.append(p)
                self.features.append(f[start : start + k])
                self.parts.append(values[start : start + k])
                self.gold.append(gold[start : start + k])


class HeldOut:
    """Every pair of a held-out prompt's completions that gold orders (gold ties left out)."""

    def __init__(self, tasks: Tasks, prompts: list[int]):
        rows, first, second, sign = [], [], [], []
        for p in prompts:
            base, gold = sum(len(r) for r in rows), tasks.prompt_gold[p]
            rows.append(tasks.prompt_features[p])
            for i in range(len(gold)):
                for j in range(i + 1, len(gold)):
                    if gold[i] != gold[j]:
                        first.append(base + i)
                        second.append(base + j)
                        sign.append(1.0 if gold[i] > gold[j] else -1.0)
        self.x = torch.cat(rows).float()
        self.first, self.second = torch.tensor(first), torch.tensor(second)
        self.sign = torch.tensor(sign)

    def accuracy(self, head: torch.Tensor) -> float:
        """Share of the pairs a (1, d + 1) head orders like gold; a tied score counts half."""
        scores = self.x @ head[0, :-1] + head[0, -1]
        d = (scores[self.first] - scores[self.second]) * self.sign
        return float(((d > 0).float() + 0.5 * (d == 0).float()).mean())


class Team:
    """The simulation's labelers (noise.py) without the HTTP: σ solved on the pool's pairs."""

    def __init__(self, tasks: Tasks, pool_tasks: list[int], seed: int, agreement: float = TARGET_AGREEMENT):
        rng = random.Random(seed)
        self.profiles = [Profile.draw(rng) for _ in range(LABELERS)]
        self.rng = random.Random(rng.random())
        gaps = []
        for t in rng.sample(pool_tasks, min(len(pool_tasks), 200)):
            utilities = [[p.utility(v) for p in self.profiles] for v in tasks.parts[t]]
            for i in range(len(utilities)):
                for j in range(i + 1, len(utilities)):
                    gaps.append([a - b for a, b in zip(utilities[i], utilities[j], strict=True)])
        self.sigma = solve_sigma(gaps, self.profiles, agreement)
        self.tasks = tasks

    def rank(self, t: int) -> list[list[int]]:
        """One labeler's strict best-first ranking of task t, shown in a random order."""
        profile = self.rng.choice(self.profiles)
        shown = list(range(len(self.tasks.parts[t])))
        self.rng.shuffle(shown)
        perceived = profile.perceive([profile.utility(self.tasks.parts[t][i]) for i in shown], self.sigma, self.rng)
        return [[i] for _, i in sorted(zip(perceived, shown, strict=True), reverse=True)]
