"""The summary tables of bench/dpo_vs_trl.py: rm_summary.py's mean ± sd table and speed-ratio
split (input format x cost per sequence), plus rankings per CPU second, the reference pass and
the training loop apart, and peak memory per (trainer, lr). Plain Python, so the tables can be
re-printed from saved --json files without torch (several files of one K are merged, e.g. one
process per learning rate):

  .venv/bin/python bench/dpo_summary.py /tmp/dpo_k4_lr2e-3.json /tmp/dpo_k4_lr4e-3.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rm_summary import fmt, mean_sd, summarise  # noqa: E402  (bench/ is the script's own folder)


def print_tables(args, runs: list[dict]) -> dict:
    """Prints rm_summary's tables, then the DPO columns; returns rm_summary's numbers plus the
    per-(trainer, lr) rankings/CPU-s and peak memory."""
    summary = summarise(args, runs)
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["trainer"], r["lr"]), []).append(r)
    print(
        f"\n{'trainer':8} {'lr':>7} {'seeds':>5} {'rankings/CPU-s':>15} {'reference CPU s':>15} "
        f"{'loop CPU s':>12} {'peak RSS MiB':>13} {'val acc':>15}  per seed"
    )
    summary["dpo"] = {}
    for (name, lr), rs in sorted(groups.items()):
        print(
            f"{name:8} {lr:7.0e} {len(rs):5d} {fmt([r['rankings_per_cpu_s'] for r in rs], 3):>15} "
            f"{fmt([r['ref_cpu_s'] for r in rs], 1):>15} {fmt([r['loop_cpu_s'] for r in rs], 1):>12} "
            f"{fmt([r['peak_rss_mib'] for r in rs], 0):>13} {fmt([r['val_accuracy'] for r in rs], 3):>15}  "
            + " / ".join(f"{r['val_accuracy']:.3f}" for r in sorted(rs, key=lambda r: r["seed"]))
        )
        summary["dpo"][f"{name}@{lr:g}"] = {
            column: mean_sd([r[column] for r in rs])
            for column in ("rankings_per_cpu_s", "ref_cpu_s", "loop_cpu_s", "peak_rss_mib", "val_accuracy")
        }
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description="Re-print bench/dpo_vs_trl.py's tables from its --json files")
    p.add_argument("json", type=Path, nargs="+", help="one or more --json files of the same K (runs are merged)")
    saved = [json.loads(path.read_text()) for path in p.parse_args().json]
    ks = {int(s["args"]["k"]) for s in saved}
    if len(ks) != 1:
        p.error(f"the files mix K = {sorted(ks)}; give one K at a time")
    print_tables(argparse.Namespace(k=ks.pop()), [r for s in saved for r in s["runs"]])


if __name__ == "__main__":
    sys.exit(main())
