"""The figures `ranklab simulate` prints: per run (one seed × one variant) and over seeds.

Row r describes the policy that wrote round r's completions (the base for r = 0, else the policy
round r−1 trained) and the reward model round r trained on the rankings of rounds 0..r.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from app.simulation.gold import combine, length_controlled, parts
from app.simulation.tasks import words
from app.simulation.team import RoundRecord

VARIANTS = ("none", "shuffled", "zero_reward")
VARIANT_NAMES = {"none": "real", "shuffled": "control: shuffled-label RM", "zero_reward": "control: PPO, zero reward"}
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
            f"{row.win_vs_base:.1%}, {row.words:.1f} words, agreement {row.agreement:.1%}, "
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
                f"{row.words:>6.1f} {_num(row.kl, '6.3f')} {row.agreement:>6.1%} "
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
    return "—" if value is None else f"{value:.1%}"


def _num(value: float | None, spec: str) -> str:
    width = spec.split(".")[0]
    return f"{'—':>{width}}" if value is None else f"{value:{spec}}"


def mean_sd(values: list[float | None]) -> tuple[float, float, int]:
    got = [v for v in values if v is not None and not math.isnan(v)]
    if not got:
        return float("nan"), float("nan"), 0
    m = sum(got) / len(got)
    sd = math.sqrt(sum((v - m) ** 2 for v in got) / (len(got) - 1)) if len(got) > 1 else 0.0
    return m, sd, len(got)


def _ms(values: list[float | None], spec: str, percent: bool = False) -> str:
    m, sd, n = mean_sd(values)
    if n == 0:
        return "—"
    scale = 100.0 if percent else 1.0
    return f"{m * scale:{spec}} ± {sd * scale:.{spec.split('.')[-1]}}" + ("%" if percent else "")


SUMMARY_COLUMNS = (
    ("gold", "gold", "+.2f", False),
    ("LC gold", "lc_gold", "+.2f", False),
    ("win vs base", "win_vs_base", ".1f", True),
    ("RM acc", "rm_accuracy", ".1f", True),
    ("ceiling", "ceiling", ".1f", True),
    ("KL", "kl", ".2f", False),
    ("words", "words", ".1f", False),
)


def groups(reports: list[Report]) -> list[tuple[str, list[Report]]]:
    """The runs of each (optimizer, variant), named, in a fixed order; optimizer names are
    prefixed only when an optimizer other than PPO ran (else the names read as before)."""
    prefixed = any(r.optimizer != "ppo" for r in reports)
    found = []
    for optimizer in OPTIMIZERS:
        for variant in VARIANTS:
            runs = [r for r in reports if r.optimizer == optimizer and r.variant == variant]
            if runs:
                found.append((run_name(variant, optimizer, prefixed), runs))
    return found


def summary(reports: list[Report]) -> str:
    """Mean ± sd over seeds per round, per (optimizer, variant), and the headline of each."""
    lines = []
    seeds = sorted({r.seed for r in reports})
    for name, runs in groups(reports):
        lines += ["", f"{name}: mean ± sd over seeds {', '.join(str(r.seed) for r in runs)}"]
        header = f"{'round':>5} " + " ".join(f"{title:>15}" for title, *_ in SUMMARY_COLUMNS)
        lines += [header, "-" * len(header)]
        for number in range(max(len(r.rows) for r in runs)):
            rows = [r.rows[number] for r in runs if len(r.rows) > number]
            cells = [_ms([getattr(row, attr) for row in rows], spec, pct) for _t, attr, spec, pct in SUMMARY_COLUMNS]
            lines.append(f"{number:>5} " + " ".join(f"{cell:>15}" for cell in cells))
        humans = [r.human for r in runs if r.human is not None]
        for run in runs:
            if run.human is not None:
                lines.append(f"  seed {run.seed}: simulated-human win rate last policy vs base {human_text(run.human)}")
        if humans:
            rate = _ms([h.win_rate for h in humans], ".1f", percent=True)
            pooled = _pooled(humans)
            lines.append(f"  simulated-human win rate over seeds: {rate}; pooled {pooled}")
    lines += headline(reports)
    lines += policy_steps(reports)
    lines += [
        "",
        f"seeds {seeds}. gold/LC gold/words: means over the round's labeled completions; win vs base: "
        "P(gold of a round-r completion > a round-0 completion); RM acc: that round's reward model on held-out "
        "validation rankings; ceiling: how often those labels agree with gold (a perfect model's accuracy); "
        "KL: the policy that wrote the round vs the base (last PPO/RLOO/GRPO batch; DPO reports none).",
    ]
    return "\n".join(lines)


HEADLINE_COLUMNS = (
    "gold policy",
    "gold base",
    "gold gain",
    "LC gold",
    "gold win",
    "LC win",
    "human win",
    "RM acc",
    "ceiling",
    "KL",
)


def headline(reports: list[Report]) -> list[str]:
    """Per (optimizer, variant), mean ± sd over seeds: the last policy against the base on the
    eval split (gold, paired gold win rate, the simulated humans' win rate), the last reward model
    and KL."""
    lines = ["", "last policy vs base on the eval split, mean ± sd over seeds"]
    header = f"{'variant':<34}" + " ".join(f"{title:>14}" for title in HEADLINE_COLUMNS)
    lines += [header, "-" * len(header)]
    for name, runs in groups(reports):
        evals = [r.eval for r in runs if r.eval is not None]
        trained = [r.trained for r in runs if r.trained is not None]
        cells = [
            _ms([e.gold[0] for e in evals], "+.2f"),
            _ms([e.gold[1] for e in evals], "+.2f"),
            _ms([e.gold[0] - e.gold[1] for e in evals], "+.2f"),
            _ms([e.lc_gold[0] for e in evals], "+.2f"),
            _ms([e.win for e in evals], ".1f", percent=True),
            _ms([e.lc_win for e in evals], ".1f", percent=True),
            _ms([r.human.win_rate for r in runs if r.human is not None], ".1f", percent=True),
            _ms([t.rm_accuracy for t in trained], ".1f", percent=True),
            _ms([t.ceiling for t in trained], ".1f", percent=True),
            _ms([t.policy.get("kl") for t in trained], ".2f"),
        ]
        lines.append(f"{name:<34}" + " ".join(f"{cell:>14}" for cell in cells))
    lines.append(
        "gold win: P(policy's answer beats the base's by gold, same eval prompt), ties half; LC: without the "
        "length term; human win: the product's blind evaluation as the simulated team judged it (ties half)."
    )
    return lines


def policy_steps(reports: list[Report]) -> list[str]:
    """Per (optimizer, variant), mean ± sd over seeds, the last training round's policy step in
    its own terms: steps and seconds, and what it optimised (the reward model's score for the
    sampling optimizers, which they can game; DPO's held-out implicit-reward accuracy)."""
    lines = ["", "policy step of the last training round, mean ± sd over seeds"]
    header = f"{'variant':<34}{'steps':>8} {'seconds':>14} {'s/step':>12}  own figures"
    lines += [header, "-" * len(header)]
    for name, runs in groups(reports):
        steps = [r.trained.policy for r in runs if r.trained is not None]
        per_step = [p["seconds"] / p["steps"] for p in steps if p.get("seconds") and p.get("steps")]
        if runs[0].optimizer == "dpo":
            own = (
                f"held-out implicit-reward acc {_ms([p.get('val_accuracy_before') for p in steps], '.1f', True)} → "
                f"{_ms([p.get('val_accuracy') for p in steps], '.1f', True)}; KL/token "
                f"{_ms([p.get('val_kl_per_token') for p in steps], '.4f')}"
            )
        else:
            own = (
                f"RM score {_ms([p.get('score_first') for p in steps], '+.2f')} → "
                f"{_ms([p.get('score') for p in steps], '+.2f')}; KL {_ms([p.get('kl') for p in steps], '.2f')}"
            )
        lines.append(
            f"{name:<34}{_ms([p.get('steps') for p in steps], '.0f'):>8} "
            f"{_ms([p.get('seconds') for p in steps], '.0f'):>14} {_ms(per_step, '.1f'):>12}  {own}"
        )
    return lines


def _pooled(humans: list[Human]) -> str:
    """All seeds' judgments as one sample (Wilson 95% interval on the pooled win share)."""
    n = sum(h.judgments for h in humans if h.win_rate is not None)
    if n == 0:
        return "—"
    p = sum(h.win_rate * h.judgments for h in humans if h.win_rate is not None) / n
    z = 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{p:.1%} [{centre - half:.1%}, {centre + half:.1%}] over {n} judgments"
