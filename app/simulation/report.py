"""The figures `ranklab simulate` prints: per run (one seed × one variant) and over seeds.

Row r describes the policy that wrote round r's completions (the base for r = 0, else the policy
round r−1 trained) and the reward model round r trained on the rankings of rounds 0..r.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.simulation.gold import combine, length_controlled, parts
from app.simulation.tasks import words
from app.simulation.team import RoundRecord

VARIANTS = ("none", "shuffled", "zero_reward", "ai_labels")
VARIANT_NAMES = {
    "none": "real",
    "shuffled": "control: shuffled-label RM",
    "zero_reward": "control: PPO, zero reward",
    "ai_labels": "RLAIF: the AI judge labels",
}
CONTROLS = ("none", "shuffled", "zero_reward")
"""The variants `--controls` runs; "ai_labels" (an AI-labelled run, issue 16) is asked for by name."""
OPTIMIZERS = ("ppo", "dpo", "rloo", "grpo")
"""The round's policy step (app/rounds/schemas.Optimizer); DPO has no zero-reward control."""
OPTIMIZER_LABELS = {"ppo": "PPO", "dpo": "DPO", "rloo": "RLOO", "grpo": "GRPO"}
SAMPLING = ("ppo", "rloo", "grpo")
"""The optimizers that sample answers and score them with the reward model."""


def run_name(variant: str, optimizer: str, prefixed: bool) -> str:
    """ "real", "control: shuffled-label RM", ...; with `prefixed` (a comparison of optimizers)
    "PPO, real", "DPO, control: shuffled-label RM", "RLOO, control: zero reward"."""
    if not prefixed:
        return VARIANT_NAMES[variant]
    return f"{OPTIMIZER_LABELS[optimizer]}, {VARIANT_NAMES[variant].replace('PPO, ', '')}"


@dataclass
class Row:
    number: int
    gold: float
    lc_gold: float
    win_vs_base: float
    """P(gold of a round-r completion > gold of a round-0 completion), ties half: unpaired, over
    all pairs of the two rounds' completions (their prompts come from the same templates)."""
    words: float
    tokens: float | None
    agreement: float
    agreement_pairs: int
    ceiling: float
    kl: float | None
    """KL(policy ‖ base) of the policy that wrote this round's completions (None for the base)."""
    rm_accuracy: float | None = None
    rm_pairs: int | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    """The round's metrics["policy"]: its optimizer's summary (PPO/RLOO/GRPO: score_first, score,
    kl, steps, seconds; DPO: val_accuracy_before, val_accuracy, val_kl_per_token, steps, seconds)."""


@dataclass
class Human:
    """The product's blind evaluation of the last policy against the base, judged by the team."""

    evaluation_id: int
    win_rate: float | None
    low: float | None
    high: float | None
    judgments: int
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSet:
    """The last policy and the base on the eval split, by gold, paired by prompt."""

    prompts: int
    gold: tuple[float, float]
    """(policy, base) mean gold."""
    lc_gold: tuple[float, float]
    words: tuple[float, float]
    win: float
    """P(gold of the policy's answer > the base's, same prompt), ties half."""
    lc_win: float

    @classmethod
    def of(cls, policy: dict[str, str], base: dict[str, str]) -> EvalSet | None:
        shared = sorted(set(policy) & set(base))
        if not shared:
            return None
        values = {side: [parts(p, answers[p]) for p in shared] for side, answers in (("p", policy), ("b", base))}
        g = {side: [combine(v) for v in vs] for side, vs in values.items()}
        lc = {side: [length_controlled(v) for v in vs] for side, vs in values.items()}
        w = {side: [float(len(words(answers[p]))) for p in shared] for side, answers in (("p", policy), ("b", base))}

        def paired(xs: list[float], ys: list[float]) -> float:
            return sum((x > y) + 0.5 * (x == y) for x, y in zip(xs, ys, strict=True)) / len(xs)

        return cls(
            len(shared),
            (_avg(g["p"]), _avg(g["b"])),
            (_avg(lc["p"]), _avg(lc["b"])),
            (_avg(w["p"]), _avg(w["b"])),
            paired(g["p"], g["b"]),
            paired(lc["p"], lc["b"]),
        )

    def text(self) -> str:
        return (
            f"eval split ({self.prompts} prompts), last policy vs base: gold {self.gold[0]:+.3f} vs "
            f"{self.gold[1]:+.3f}, LC gold {self.lc_gold[0]:+.3f} vs {self.lc_gold[1]:+.3f}, words "
            f"{self.words[0]:.1f} vs {self.words[1]:.1f}; paired gold win rate {self.win:.1%} (LC {self.lc_win:.1%})"
        )


def _avg(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def probability_of_superiority(xs: list[float], ys: list[float]) -> float:
    if not xs or not ys:
        return float("nan")
    wins = sum((x > y) + 0.5 * (x == y) for x in xs for y in ys)
    return wins / (len(xs) * len(ys))


class Report:
    def __init__(self, target_agreement: float, *, seed: int = 0, variant: str = "none", optimizer: str = "ppo"):
        self.target, self.seed, self.variant, self.optimizer = target_agreement, seed, variant, optimizer
        self.rows: list[Row] = []
        self.records: list[RoundRecord] = []
        self.minutes = 0.0
        self.base_id: int | None = None
        self.last_policy_id: int | None = None
        self.human: Human | None = None
        self.eval: EvalSet | None = None
        self.verdicts: list[dict] = []
        """The team's judgments in the final evaluation (team.RoundRecord.verdicts)."""
        self.error: str | None = None
        """Why the run stopped early (its rows so far are kept)."""

    def add(self, number: int, round_data: dict, record: RoundRecord) -> None:
        metrics = round_data.get("metrics") or {}
        reward, previous = metrics.get("reward") or {}, (self.rows[-1].policy if self.rows else {})
        self.records.append(record)
        seen = RoundRecord()
        for rec in self.records:  # the reward model's validation rankings come from every round so far
            seen.gold.update(rec.gold)
            seen.orders.update(rec.orders)
        agreement, pairs = record.agreement()
        ceiling, _ceiling_pairs = seen.gold_agreement()
        if number == 0:
            self.base_id = round_data.get("policy_in_id")
        if round_data.get("policy_out_id"):
            self.last_policy_id = round_data["policy_out_id"]
        self.rows.append(
            Row(
                number=number,
                gold=record.gold_mean(),
                lc_gold=record.lc_gold_mean(),
                win_vs_base=probability_of_superiority(list(record.gold.values()), list(self.records[0].gold.values())),
                words=record.words_mean(),
                tokens=(metrics.get("generation") or {}).get("mean_tokens"),
                agreement=agreement,
                agreement_pairs=pairs,
                ceiling=ceiling,
                kl=previous.get("kl"),
                rm_accuracy=reward.get("val_accuracy"),
                rm_pairs=reward.get("val_pairs"),
                policy=metrics.get("policy") or {},
            )
        )

    @property
    def trained(self) -> Row | None:
        """The row of the last round that trained (its reward model and policy step)."""
        return next((row for row in reversed(self.rows) if row.policy), None)

    @property
    def label(self) -> str:
        return OPTIMIZER_LABELS[self.optimizer]

    def line(self, number: int) -> str:
        row = self.rows[number]
        return (
            f"round {number}: gold {row.gold:+.3f} (length-controlled {row.lc_gold:+.3f}), win vs base "
            f"{row.win_vs_base:.1%}, {row.words:.1f} words, agreement {_pct(row.agreement)}, "
            f"RM val acc {_pct(row.rm_accuracy)} (ceiling {row.ceiling:.1%}), {policy_text(self.optimizer, row.policy)}"
        )

    def table(self) -> str:
        header = (
            f"{'round':>5} {'policy':>8} {'gold':>7} {'LC gold':>7} {'win/base':>8} {'words':>6} {'KL':>6} "
            f"{'agree':>6} {'RM acc':>7} {'ceiling':>7}"
        )
        name = run_name(self.variant, self.optimizer, self.optimizer != "ppo")
        lines = [f"seed {self.seed}, {name}", header, "-" * len(header)]
        for row in self.rows:
            policy = "base" if row.number == 0 else f"{self.label} r{row.number - 1}"
            lines.append(
                f"{row.number:>5} {policy:>8} {row.gold:>+7.3f} {row.lc_gold:>+7.3f} {row.win_vs_base:>8.1%} "
                f"{row.words:>6.1f} {_num(row.kl, '6.3f')} {_pct(row.agreement):>6} "
                f"{_pct(row.rm_accuracy):>7} {row.ceiling:>7.1%}"
            )
        total_agree = [r for r in self.rows if r.agreement_pairs]
        pairs = sum(r.agreement_pairs for r in total_agree)
        overall = sum(r.agreement * r.agreement_pairs for r in total_agree) / pairs if pairs else float("nan")
        lines += [
            f"labeler agreement overall {overall:.1%} on {pairs} pairs (target {self.target:.1%}); "
            f"gold reward round 0 → {self.rows[-1].number}: {self.rows[0].gold:+.3f} → "
            f"{self.rows[-1].gold:+.3f}; {self.minutes:.1f} minutes",
        ]
        if self.error:
            lines.append(f"stopped early: {self.error}")
        if self.eval is not None:
            lines.append(self.eval.text())
        if self.human is not None:
            lines.append(f"simulated-human win rate, last policy vs base: {human_text(self.human)}")
        return "\n".join(lines)


def policy_text(optimizer: str, policy: dict[str, Any]) -> str:
    """The policy step's own figures: what it optimised and how long it took."""
    nan = float("nan")
    took = f"{policy.get('steps', '?')} steps in {policy.get('seconds', nan):.0f} s"
    if optimizer == "dpo":
        return (
            f"DPO held-out implicit-reward acc {_pct(policy.get('val_accuracy_before'))} → "
            f"{_pct(policy.get('val_accuracy'))}, KL/token {policy.get('val_kl_per_token', nan):.4f}, "
            f"{policy.get('train_rankings', '?')} rankings, {took}"
        )
    return (
        f"{OPTIMIZER_LABELS[optimizer]} score {policy.get('score_first', nan):+.3f} → {policy.get('score', nan):+.3f}, "
        f"KL {policy.get('kl', nan):.3f}, {took}"
    )


def human_text(human: Human) -> str:
    if human.win_rate is None:
        return f"evaluation {human.evaluation_id}: no result ({human.judgments} judgments)"
    interval = "" if human.low is None else f" [{human.low:.1%}, {human.high:.1%}]"
    return f"{human.win_rate:.1%}{interval} over {human.judgments} judgments (evaluation {human.evaluation_id})"


def _pct(value: float | None) -> str:
    """A share as a percentage; "—" when there is none (None, or NaN: no pairs to compare)."""
    return "—" if value is None or value != value else f"{value:.1%}"


def _num(value: float | None, spec: str) -> str:
    width = spec.split(".")[0]
    return f"{'—':>{width}}" if value is None else f"{value:{spec}}"
