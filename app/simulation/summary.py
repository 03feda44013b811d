"""The figures `ranklab simulate` prints over seeds: per (optimizer, variant), mean ± sd of each
round's row, the last policy against the base, and each policy step in its own terms
(report.py holds one run's rows)."""

from __future__ import annotations

import math

from app.simulation.report import OPTIMIZERS, VARIANTS, Human, Report, human_text, run_name


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
