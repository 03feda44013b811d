"""The summary tables of bench/rm_vs_trl.py: mean ± sd per trainer and learning rate, and the
speed ratio split into input format × cost per sequence (tokens per sequence × cost per token).
Plain Python, so the tables can be re-printed from a saved --json without torch."""

from __future__ import annotations

import math
import statistics
from typing import Any


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single run)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], digits: int) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def per_sequence(run: dict) -> float:
    """Training CPU milliseconds per sequence scored (a completion, or one side of a pair)."""
    return 1000 * run["cpu_s"] / run["sequences"]


def per_token(run: dict) -> float:
    """Training CPU milliseconds per real token forwarded (padding is part of the cost)."""
    return 1000 * run["cpu_s"] / run["tokens"]


def summarise(args, runs: list[dict]) -> dict:
    """Mean ± sd per (trainer, lr); per ranklab variant the speed ratio to TRL at each lr and at
    each trainer's best lr, split into the input format (sequences per ranking) and the
    per-sequence cost, itself split into tokens per sequence (prompt sharing) and cost per token.
    Prints as it goes; returns the numbers."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["trainer"], r["lr"]), []).append(r)
    columns = {
        "rankings_per_s": lambda r: r["rankings_per_s"],
        "cpu_s": lambda r: r["cpu_s"],
        "cpu_ms_per_sequence": per_sequence,
        "cpu_ms_per_token": per_token,
        "val_accuracy": lambda r: r["val_accuracy"],
    }
    stats: dict[tuple[str, float], dict[str, Any]] = {
        key: {"n": len(rs), **{c: mean_sd([f(r) for r in rs]) for c, f in columns.items()}}
        for key, rs in groups.items()
    }
    print(
        f"\n{'trainer':12} {'lr':>7} {'seeds':>5} {'rankings/s':>15} {'train CPU s':>13} "
        f"{'CPU ms/seq':>13} {'CPU ms/token':>13} {'val pairwise acc':>17}"
    )
    for (name, lr), rs in sorted(groups.items()):
        print(
            f"{name:12} {lr:7.0e} {len(rs):5d} {fmt([r['rankings_per_s'] for r in rs], 3):>15} "
            f"{fmt([r['cpu_s'] for r in rs], 1):>13} {fmt([per_sequence(r) for r in rs], 1):>13} "
            f"{fmt([per_token(r) for r in rs], 2):>13} {fmt([r['val_accuracy'] for r in rs], 3):>17}"
        )
    summary: dict = {"stats": {f"{n}@{lr:g}": st for (n, lr), st in stats.items()}}
    trainers = sorted({n for n, _ in stats})
    if "trl" not in trainers:
        return summary
    k = args.k
    print(
        f"\nsequences per ranking: ranklab K = {k} (its prompt forwarded once, shared), TRL 2·C(K,2) = "
        f"{2 * math.comb(k, 2)}: the format alone is {2 * math.comb(k, 2) / k:.2f}x. The rest is the "
        "per-sequence cost (TRL's CPU ms per sequence / ranklab's), itself tokens per sequence x cost per token."
    )

    def compare(ours: str, lr_ours: float, lr_theirs: float) -> dict:
        o, t = groups[(ours, lr_ours)], groups[("trl", lr_theirs)]
        so, st = stats[(ours, lr_ours)], stats[("trl", lr_theirs)]
        seqs = t[0]["sequences"] / o[0]["sequences"]
        tokens_per_seq = (t[0]["tokens"] / t[0]["sequences"]) / (o[0]["tokens"] / o[0]["sequences"])
        per_seq = st["cpu_ms_per_sequence"][0] / so["cpu_ms_per_sequence"][0]
        return {
            "wall": so["rankings_per_s"][0] / st["rankings_per_s"][0],
            "cpu": st["cpu_s"][0] / so["cpu_s"][0],
            "format": seqs,
            "per_sequence": per_seq,
            "tokens_per_sequence": tokens_per_seq,
            "per_token": per_seq / tokens_per_seq,
        }

    def line(c: dict) -> str:
        return (
            f"{c['wall']:.2f}x wall, {c['cpu']:.2f}x CPU = format {c['format']:.2f}x x per-sequence "
            f"{c['per_sequence']:.2f}x (tokens/sequence {c['tokens_per_sequence']:.2f}x x per token "
            f"{c['per_token']:.2f}x)"
        )

    ours_names = [n for n in trainers if n != "trl"]
    trl_lrs = {lr for n, lr in stats if n == "trl"}
    summary["per_lr"] = {}
    for name in ours_names:
        for lr in sorted({lr for n, lr in stats if n == name} & trl_lrs):
            c = compare(name, lr, lr)
            summary["per_lr"][f"{name}@{lr:g}"] = c
            print(f"{name} / TRL at lr {lr:.0e}: {line(c)}")

    def best_lr(name: str) -> float:
        return max((lr for n, lr in stats if n == name), key=lambda lr: stats[(name, lr)]["val_accuracy"][0])

    summary["best"] = {}
    for name in ours_names:
        lo, tr = best_lr(name), best_lr("trl")
        c = compare(name, lo, tr)
        acc_o, acc_t = stats[(name, lo)]["val_accuracy"], stats[("trl", tr)]["val_accuracy"]
        # One run per side has no spread: never evidence of a difference.
        seeded = stats[(name, lo)]["n"] > 1 and stats[("trl", tr)]["n"] > 1
        if not seeded:
            verdict = "one seed: no accuracy claim"
        elif acc_o[0] - acc_o[1] > acc_t[0] + acc_t[1]:
            verdict = f"{name} higher (mean ± sd intervals separate)"
        elif acc_t[0] - acc_t[1] > acc_o[0] + acc_o[1]:
            verdict = "TRL higher (mean ± sd intervals separate)"
        else:
            verdict = "intervals overlap: no accuracy difference shown"
        summary["best"][name] = {"lr": lo, "trl_lr": tr, **c, "accuracy": acc_o, "trl_accuracy": acc_t}
        summary["best"][name]["verdict"] = verdict
        print(
            f"best lr by mean val accuracy: {name} {lo:.0e} ({acc_o[0]:.3f} ± {acc_o[1]:.3f}), TRL {tr:.0e} "
            f"({acc_t[0]:.3f} ± {acc_t[1]:.3f}): {line(c)}; {verdict}"
        )
    return summary
