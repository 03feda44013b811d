"""A scripted labeling team working through ranklab's real HTTP API, one account per labeler.

Labelers take turns one task at a time (like people working side by side), rank by their noisy
view of the gold reward, and the team remembers what it saw and submitted, which is what the
report's gold rewards and agreement figures are computed from.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import httpx

from app.simulation.gold import agreement_with_gold, gold_reward, mean, pair_gaps, pairwise_agreement, solve_sigma

_CSRF = re.compile(r'"X-CSRF-Token": "([^"]+)"')


class Labeler:
    def __init__(self, base_url: str, email: str, password: str, rng: random.Random):
        self.email, self.rng = email, rng
        self.http = httpx.Client(base_url=base_url, timeout=60, follow_redirects=False)
        response = self.http.post("/login", data={"email": email, "password": password})
        if response.status_code != 303:
            raise RuntimeError(f"login as {email} failed: HTTP {response.status_code}")
        page = self.http.get("/")
        match = _CSRF.search(page.text)
        if match is None:
            raise RuntimeError(f"no CSRF token on the page served to {email}")
        self.headers = {"X-CSRF-Token": match.group(1)}

    def next_task(self, project_id: int) -> dict | None:
        response = self.http.get(f"/api/v1/labeling/projects/{project_id}/next")
        response.raise_for_status()
        return response.json()["task"]

    def submit(self, project_id: int, task: dict, order: list[int]) -> dict | None:
        response = self.http.post(
            f"/api/v1/labeling/projects/{project_id}/assignments/{task['assignment_id']}/ranking",
            json={"ranking": [[cid] for cid in order]},
            headers=self.headers,
        )
        if response.status_code != 200:
            raise RuntimeError(f"{self.email}: ranking refused: HTTP {response.status_code} {response.text}")
        return response.json()["next"]

    def close(self) -> None:
        self.http.close()


@dataclass
class RoundRecord:
    """What the team saw and did in one round."""

    gold: dict[int, float] = field(default_factory=dict)
    """completion id → gold reward."""
    words: dict[int, int] = field(default_factory=dict)
    orders: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    """task id → labeler email → the submitted order (best first)."""

    def gold_mean(self) -> float:
        return mean(self.gold.values())

    def words_mean(self) -> float:
        return mean(self.words.values())

    def agreement(self) -> tuple[float, int]:
        """Pairwise agreement between labelers who ranked the same task, and the pairs compared."""
        agree = total = 0
        for by_labeler in self.orders.values():
            orders = list(by_labeler.values())
            for i in range(len(orders)):
                for j in range(i + 1, len(orders)):
                    a, t = pairwise_agreement(orders[i], orders[j])
                    agree, total = agree + a, total + t
        return (agree / total if total else float("nan")), total

    def gold_agreement(self) -> tuple[float, int]:
        """Share of submitted pairs ordered like gold: the accuracy a perfect reward model would
        score against these noisy labels (the ceiling under the injected noise)."""
        agree, total = 0.0, 0
        for by_labeler in self.orders.values():
            for order in by_labeler.values():
                a, t = agreement_with_gold(order, self.gold)
                agree, total = agree + a, total + t
        return (agree / total if total else float("nan")), total


class Team:
    def __init__(self, base_url: str, accounts: list[tuple[str, str]], *, seed: int, target: float):
        rng = random.Random(seed)
        self.labelers = [
            Labeler(base_url, email, password, random.Random(rng.random())) for email, password in accounts
        ]
        self.target = target
        self.gaps: list[float] = []
        """Gold gaps of every pair seen so far; σ is re-solved on them before each ranking."""
        self.sigma = 0.0

    def label_round(self, project_id: int) -> RoundRecord:
        record = RoundRecord()
        waiting = {labeler.email: labeler.next_task(project_id) for labeler in self.labelers}
        while any(task is not None for task in waiting.values()):
            for labeler in self.labelers:
                task = waiting[labeler.email]
                if task is None:
                    continue
                order = self._rank(labeler, task, record)
                record.orders.setdefault(task["task_id"], {})[labeler.email] = order
                waiting[labeler.email] = labeler.submit(project_id, task, order)
        return record

    def _rank(self, labeler: Labeler, task: dict, record: RoundRecord) -> list[int]:
        completions = task["completions"]
        scores = {c["id"]: gold_reward(c["text"]) for c in completions}
        if completions[0]["id"] not in record.gold:
            self.gaps.extend(pair_gaps(list(scores.values())))
        for c in completions:
            record.gold[c["id"]] = scores[c["id"]]
            record.words[c["id"]] = len(c["text"].split())
        self.sigma = solve_sigma(self.gaps, self.target)
        perceived = {cid: score + labeler.rng.gauss(0.0, self.sigma) for cid, score in scores.items()}
        return sorted(perceived, key=perceived.__getitem__, reverse=True)

    def close(self) -> None:
        for labeler in self.labelers:
            labeler.close()
