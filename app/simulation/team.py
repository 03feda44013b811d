"""A scripted labeling team working through ranklab's real HTTP API, one account per labeler.

Labelers take turns one task at a time (like people working side by side). A ranking task is
ranked by the labeler's perception of gold (noise.py: its own weights, a position bias, noise);
an evaluation task (kind "pairwise_eval") is judged A / B / tie / both bad the same way, from the
prompt and the two texts as shown, never knowing which model wrote which. In the shuffled
control (`shuffled=True`) rankings are random permutations; evaluation judgments stay honest,
since the evaluation measures the policy that control trained.

The team remembers what it saw and submitted; the report's gold figures and agreement come
from that record.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import httpx

from app.simulation.gold import gold_reward, length_controlled, parts
from app.simulation.noise import POSITION_LOGIT, Profile, agreement_with_gold, mean, pairwise_agreement, solve_sigma
from app.simulation.tasks import parse, words

_CSRF = re.compile(r'"X-CSRF-Token": "([^"]+)"')
TIE_MARGIN = 0.15
"""|perceived A − perceived B| below this (gold units) is judged a tie."""
BAD_BELOW = 0.5
"""Both perceived below this (an empty or prompt-ignoring answer scores about 0.6 or less): both bad."""


def _key(completion: dict) -> int | str:
    """A completion's id; on a blind evaluation task, which has none, its label ("A", "B")."""
    return completion["id"] if completion.get("id") is not None else completion["label"]


class Labeler:
    def __init__(self, base_url: str, email: str, password: str, rng: random.Random, profile: Profile):
        self.email, self.rng, self.profile = email, rng, profile
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

    def submit(self, project_id: int, task: dict, body: dict) -> dict | None:
        response = self.http.post(
            f"/api/v1/labeling/projects/{project_id}/assignments/{task['assignment_id']}/ranking",
            json=body,
            headers=self.headers,
        )
        if response.status_code != 200:
            raise RuntimeError(f"{self.email}: submission refused: HTTP {response.status_code} {response.text}")
        return response.json()["next"]

    def close(self) -> None:
        self.http.close()


@dataclass
class RoundRecord:
    """What the team saw and did in one round."""

    gold: dict[int, float] = field(default_factory=dict)
    """completion id → gold reward."""
    lc_gold: dict[int, float] = field(default_factory=dict)
    """completion id → gold without its length term."""
    words: dict[int, int] = field(default_factory=dict)
    orders: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    """task id → labeler email → the submitted order (best first)."""
    verdicts: list[dict] = field(default_factory=list)
    """Evaluation judgments: task, labeler, the sides shown ("A", "B"; the API names no ids there),
    verdict, their gold."""

    def gold_mean(self) -> float:
        return mean(self.gold.values())

    def lc_gold_mean(self) -> float:
        return mean(self.lc_gold.values())

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
    def __init__(
        self,
        base_url: str,
        accounts: list[tuple[str, str]],
        *,
        seed: int,
        target: float,
        shuffled: bool = False,
        position_logit: float = POSITION_LOGIT,
    ):
        rng = random.Random(seed)
        self.labelers = []
        for email, password in accounts:
            profile = Profile.draw(rng, position_logit=position_logit)
            self.labelers.append(Labeler(base_url, email, password, random.Random(rng.random()), profile))
        self.profiles = [labeler.profile for labeler in self.labelers]
        self.target, self.shuffled = target, shuffled
        self.gaps: list[list[float]] = []
        """Per pair seen, every labeler's utility gap; σ is solved on them."""
        self.sigma = 1.0
        self._solved_at = 0

    def label(self, project_id: int, record: RoundRecord | None = None) -> RoundRecord:
        """Work until no labeler gets a task: ranking and evaluation tasks alike."""
        record = record or RoundRecord()
        waiting = {labeler.email: labeler.next_task(project_id) for labeler in self.labelers}
        while any(task is not None for task in waiting.values()):
            for labeler in self.labelers:
                task = waiting[labeler.email]
                if task is None:
                    continue
                if task.get("kind", "ranking") == "pairwise_eval":
                    body = self._judge(labeler, task, record)
                else:
                    order = self._rank(labeler, task, record)
                    record.orders.setdefault(task["task_id"], {})[labeler.email] = order
                    body = {"ranking": [[cid] for cid in order]}
                waiting[labeler.email] = labeler.submit(project_id, task, body)
        return record

    def _perceive(
        self, labeler: Labeler, task: dict, record: RoundRecord | None
    ) -> tuple[list[int | str], list[float]]:
        prompt = parse(task["prompt"]["text"] or "")
        completions = task["completions"]
        values = [parts(prompt, c["text"]) for c in completions]
        new = record is not None and completions[0]["id"] not in record.gold
        if record is not None:
            for c, v in zip(completions, values, strict=True):
                record.gold[c["id"]] = gold_reward(prompt, c["text"])
                record.lc_gold[c["id"]] = length_controlled(v)
                record.words[c["id"]] = len(words(c["text"]))
        if new:
            utilities = [[p.utility(v) for p in self.profiles] for v in values]
            for i in range(len(values)):
                for j in range(i + 1, len(values)):
                    self.gaps.append([a - b for a, b in zip(utilities[i], utilities[j], strict=True)])
            # Re-solving costs ~0.3 s on 1200 pairs, so only when the pairs grew by a tenth.
            if len(self.gaps) < 200 or len(self.gaps) >= 1.1 * self._solved_at:
                self.sigma = solve_sigma(self.gaps, self.profiles, self.target)
                self._solved_at = len(self.gaps)
        perceived = labeler.profile.perceive([labeler.profile.utility(v) for v in values], self.sigma, labeler.rng)
        return [_key(c) for c in completions], perceived

    def _rank(self, labeler: Labeler, task: dict, record: RoundRecord) -> list[int]:
        _keys, perceived = self._perceive(labeler, task, record)
        ids: list[int] = [c["id"] for c in task["completions"]]  # a ranking task names its completions
        if self.shuffled:
            labeler.rng.shuffle(ids)
            return ids
        return [cid for _, cid in sorted(zip(perceived, ids, strict=True), reverse=True)]

    def _judge(self, labeler: Labeler, task: dict, record: RoundRecord) -> dict:
        (a, b), (pa, pb) = self._perceive(labeler, task, None)
        prompt = parse(task["prompt"]["text"] or "")
        texts = {_key(c): c["text"] for c in task["completions"]}
        if texts[a].strip() == texts[b].strip():
            verdict = "tie"  # two identical answers: anyone sees it is a tie, whatever their noise
        elif max(pa, pb) < BAD_BELOW:
            verdict = "both_bad"
        elif abs(pa - pb) < TIE_MARGIN:
            verdict = "tie"
        else:
            verdict = "A" if pa > pb else "B"
        record.verdicts.append(
            {
                "task_id": task["task_id"],
                "labeler": labeler.email,
                "shown": [a, b],
                "verdict": verdict,
                "gold": [gold_reward(prompt, texts[a]), gold_reward(prompt, texts[b])],
            }
        )
        return {"verdict": verdict, "comment": "", "time_spent_ms": 1000}

    def close(self) -> None:
        for labeler in self.labelers:
            labeler.close()
