"""The per-round figures `ranklab simulate` prints (and docs/loop.md records).

Row r describes the policy that wrote round r's completions (the base for r = 0, else the policy
round r−1 trained) and the reward model round r trained on the rankings of rounds 0..r.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.simulation.team import RoundRecord


@dataclass
class Row:
    number: int
    gold: float
    words: float
    tokens: float | None
    agreement: float
    agreement_pairs: int
    ceiling: float
    kl: float | None
    """KL(policy ‖ base) of the policy that wrote this round's completions (None for the base)."""
    rm_accuracy: float | None = None
    rm_pairs: int | None = None
    ood_accuracy: float | None = None
    ppo: dict[str, Any] = field(default_factory=dict)


class Report:
    def __init__(self, target_agreement: float):
        self.target = target_agreement
        self.rows: list[Row] = []
        self.records: list[RoundRecord] = []
        self.minutes = 0.0
        self._round_ids: list[int] = []

    def add(self, number: int, round_data: dict, record: RoundRecord) -> None:
        metrics = round_data.get("metrics") or {}
        reward, previous = metrics.get("reward") or {}, (self.rows[-1].ppo if self.rows else {})
        self.records.append(record)
        seen = RoundRecord()
        for rec in self.records:  # the reward model's validation rankings come from every round so far
            seen.gold.update(rec.gold)
            seen.orders.update(rec.orders)
        agreement, pairs = record.agreement()
        ceiling, _ceiling_pairs = seen.gold_agreement()
        self.rows.append(
            Row(
                number=number,
                gold=record.gold_mean(),
                words=record.words_mean(),
                tokens=(metrics.get("generation") or {}).get("mean_tokens"),
                agreement=agreement,
                agreement_pairs=pairs,
                ceiling=ceiling,
                kl=previous.get("kl"),
                rm_accuracy=reward.get("val_accuracy"),
                rm_pairs=reward.get("val_pairs"),
                ppo=metrics.get("policy") or {},
            )
        )
        self._round_ids.append(round_data["id"])

    def refresh_ood(self, admin, project_id: int) -> None:
        """Each round's reward model on the next round's fresh rankings (measured by the worker)."""
        by_id = {r["id"]: r for r in admin.call("GET", f"/api/v1/projects/{project_id}/rounds")}
        for row, round_id in zip(self.rows, self._round_ids, strict=True):
            figure = (by_id.get(round_id, {}).get("metrics") or {}).get("reward_next_round")
            if figure:
                row.ood_accuracy = figure.get("accuracy")

    def line(self, number: int) -> str:
        row = self.rows[number]
        return (
            f"round {number}: gold {row.gold:+.3f}, {row.words:.1f} words, agreement {row.agreement:.1%}, "
            f"RM val acc {_pct(row.rm_accuracy)} (ceiling {row.ceiling:.1%}), "
            f"PPO score {row.ppo.get('score_first', float('nan')):+.3f} → {row.ppo.get('score', float('nan')):+.3f}, "
            f"KL {row.ppo.get('kl', float('nan')):.3f}"
        )

    def table(self) -> str:
        header = (
            f"{'round':>5} {'policy':>12} {'gold':>7} {'words':>6} {'tokens':>6} {'KL':>6} "
            f"{'agree':>6} {'RM acc':>7} {'ceiling':>7} {'RM OOD':>7}"
        )
        lines = [header, "-" * len(header)]
        for row in self.rows:
            policy = "base" if row.number == 0 else f"PPO r{row.number - 1}"
            lines.append(
                f"{row.number:>5} {policy:>12} {row.gold:>+7.3f} {row.words:>6.1f} "
                f"{_num(row.tokens, '6.1f')} {_num(row.kl, '6.3f')} {row.agreement:>6.1%} "
                f"{_pct(row.rm_accuracy):>7} {row.ceiling:>7.1%} {_pct(row.ood_accuracy):>7}"
            )
        total_agree = [r for r in self.rows if r.agreement_pairs]
        pairs = sum(r.agreement_pairs for r in total_agree)
        overall = sum(r.agreement * r.agreement_pairs for r in total_agree) / pairs if pairs else float("nan")
        lines += [
            "",
            f"labeler agreement overall {overall:.1%} on {pairs} pairs (target {self.target:.1%}); "
            f"gold reward round 0 → {self.rows[-1].number}: {self.rows[0].gold:+.3f} → "
            f"{self.rows[-1].gold:+.3f}; {self.minutes:.1f} minutes",
            "gold, words, tokens: means over the round's completions; KL: that policy vs the base "
            "(last PPO batch); RM acc: the reward model trained in that round, on held-out validation "
            "prompts; ceiling: how often the labels agree with gold (a perfect model's accuracy); "
            "RM OOD: that reward model on the next round's fresh rankings.",
        ]
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _num(value: float | None, spec: str) -> str:
    width = spec.split(".")[0]
    return f"{'—':>{width}}" if value is None else f"{value:{spec}}"
