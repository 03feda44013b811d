"""Reward-model training throughput: ranklab's K-wise trainer vs TRL's RewardTrainer.

Both train the same backbone, with the same LoRA (or full) setup, LR schedule (5% warmup,
linear decay), epochs, precision and machine, in this one process, on the same training
rankings, and are scored on the same held-out prompts. Learning rates default to each
trainer's best of {4e-3, 8e-3} on this data (--lr / --trl-lr to change):

  ranklab  forwards each ranking's K completions once; loss = mean over its C(K,2) pairs.
  TRL      gets the pairwise expansion of the same rankings (C(9,2) = 36 chosen/rejected pairs
           per ranking), the only input RewardTrainer accepts, so it forwards 72 sequences per
           ranking. Its gradient checkpointing (on by default) is turned off: it would only make
           TRL slower here.

Data (worker/ml/synthetic.py): each prompt gets K completions made of filler words plus some
"good" (great, good, yes, thanks) or "bad" (bad, poor, no, not) words; quality = #good - #bad,
drawn without replacement from -4..4, so a K=9 ranking is a total order. A model that counts
those words ranks perfectly; validation pairwise accuracy on unseen prompts measures learning.

rankings/s = training rankings x epochs / seconds inside the training loop (model loading,
tokenisation and evaluation excluded for both).

The fair comparison (docs/benchmarks.md): --lrs gives both trainers the same learning-rate grid,
--seeds repeats every (trainer, lr) with several training seeds on the same data (the rankings
and the train/validation split come from --data-seed), and the summary prints mean ± sd per
(trainer, lr), the speed ratio at each lr and at each trainer's best lr, and how much of that
ratio the input format explains: TRL forwards 2·C(K,2) sequences per ranking, ranklab K, so a
ratio of 2·C(K,2)/K = K-1 is the format alone; ratio / (K-1) is the rest (per-sequence cost).

  .venv/bin/python bench/rm_vs_trl.py              # SmolLM2-135M, minutes (docs/benchmarks.md)
  .venv/bin/python bench/rm_vs_trl.py --tiny       # tiny random Llama, seconds
  .venv/bin/python bench/rm_vs_trl.py --threads 1 --k 4 --lrs 4e-3,8e-3 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

import worker.ml.reward as reward_module
from worker.ml.config import RewardConfig
from worker.ml.data import as_messages, group_rankings, split_by_prompt
from worker.ml.losses import pair_accuracy_counts
from worker.ml.models import autocast_available, convert_default_model, load_tokenizer, pick_device
from worker.ml.reward import EncodedSet, assemble, train_reward
from worker.ml.scorer import score_sequences
from worker.ml.synthetic import quality_rankings
from worker.ml.tiny import save_tiny_model


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny random-weight Llama instead of SmolLM2")
    p.add_argument("--model", default=None, help="backbone folder (default: converted SmolLM2)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where SmolLM2 is converted")
    p.add_argument("--train-tasks", type=int, default=12, help="training rankings (prompts)")
    p.add_argument("--val-tasks", type=int, default=12, help="held-out rankings (prompts)")
    p.add_argument("-k", "--k", dest="k", type=int, default=9, help="completions per ranking")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--mode", choices=["lora", "full"], default="lora")
    # Defaults: each trainer's best of {4e-3, 8e-3} on this data (docs/benchmarks.md).
    p.add_argument("--lr", type=float, default=8e-3, help="ranklab: peak learning rate")
    p.add_argument("--trl-lr", type=float, default=4e-3, help="TRL: peak learning rate")
    p.add_argument(
        "--lrs",
        type=floats,
        default=None,
        help="one learning-rate grid for BOTH trainers, e.g. 4e-3,8e-3 (replaces --lr / --trl-lr)",
    )
    p.add_argument("--batch-rankings", type=int, default=1, help="ranklab: rankings per step")
    p.add_argument(
        "--trl-batch-pairs",
        type=int,
        default=9,
        help="TRL: pairs per step (9 pairs = 18 sequences, as many as one K=9 ranking)",
    )
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="data and training seed unless the two below are given")
    p.add_argument("--seeds", type=ints, default=None, help="training seeds, e.g. 0,1,2 (default: --seed)")
    p.add_argument("--data-seed", type=int, default=None, help="rankings and split (default: --seed)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--no-autocast", action="store_true", help="fp32 for both (default: bf16 autocast)")
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    args.seeds = args.seeds or [args.seed]
    args.data_seed = args.seed if args.data_seed is None else args.data_seed
    return args


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run_ranklab(args, lr: float, seed: int, model_path: str, rankings, val_fraction: float, out: Path) -> dict:
    cfg = RewardConfig(
        model=model_path,
        mode=args.mode,
        learning_rate=lr,
        epochs=args.epochs,
        batch_rankings=args.batch_rankings,
        max_length=args.max_length,
        val_fraction=val_fraction,
        seed=seed,
        autocast=not args.no_autocast,
        lr_schedule="linear",
        warmup_fraction=0.05,
    )
    # train_reward splits by its own seed; pin the split to --data-seed so every training seed and
    # both trainers see the same training and validation prompts.
    pinned = reward_module.split_by_prompt

    def split(sets, fraction, _seed):
        return pinned(sets, fraction, args.data_seed)

    with mock.patch.object(reward_module, "split_by_prompt", split):
        metrics = train_reward(cfg, rankings, out)
    return {
        "rankings_per_s": metrics["train_rankings_per_second"],
        "train_s": metrics["train_seconds"],
        "cpu_s": metrics["train_cpu_seconds"],
        "steps": metrics["steps"],
        "sequences_forwarded": metrics["train_rankings"] * args.k * args.epochs,
        "val_accuracy": metrics["val_accuracy"],
    }


def pairwise_dataset(train_sets):
    """TRL's input: every ordered (better, worse) pair of every training ranking."""
    from datasets import Dataset

    rows = []
    for s in train_sets:
        for levels in s.levels:
            for i, li in enumerate(levels):
                for j, lj in enumerate(levels):
                    if li >= 0 and lj >= 0 and li < lj:
                        rows.append(
                            {
                                "prompt": as_messages(s.prompt),
                                "chosen": [{"role": "assistant", "content": s.completions[i]}],
                                "rejected": [{"role": "assistant", "content": s.completions[j]}],
                            }
                        )
    return Dataset.from_list(rows)


def run_trl(args, lr: float, seed: int, model_path: str, train_sets, val_sets, out: Path) -> dict:
    from peft import LoraConfig
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    device = pick_device()
    tokenizer = load_tokenizer(model_path, padding_side="right")  # same distinct pad token
    dataset = pairwise_dataset(train_sets)
    use_bf16 = not args.no_autocast and autocast_available(device)
    trl_args = TRLRewardConfig(
        output_dir=str(out),
        per_device_train_batch_size=args.trl_batch_pairs,
        num_train_epochs=args.epochs,
        learning_rate=lr,
        lr_scheduler_type="linear",
        warmup_steps=0.05,
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=use_bf16,
        use_cpu=device.type == "cpu",
        gradient_checkpointing=False,
        max_length=args.max_length,
        save_strategy="no",
        report_to="none",
        logging_steps=10_000,
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_config = None
    if args.mode == "lora":
        defaults = RewardConfig()
        peft_config = LoraConfig(
            task_type="SEQ_CLS",
            r=defaults.lora_r,
            lora_alpha=defaults.lora_alpha,
            # what RewardConfig's default (empty) lora_targets adapts on a Llama-style model
            target_modules=list(defaults.lora_targets) or ["q_proj", "k_proj", "v_proj", "o_proj"],
            modules_to_save=["score"],
        )
    trainer = RewardTrainer(
        model=model_path, args=trl_args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )
    started, started_cpu = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    n_rankings = sum(len(s.levels) for s in train_sets)
    return {
        "rankings_per_s": round(n_rankings * args.epochs / seconds, 3),
        "train_s": round(seconds, 3),
        "cpu_s": round(cpu_seconds, 3),
        "steps": trainer.state.global_step,
        "sequences_forwarded": 2 * len(dataset) * args.epochs,
        "val_accuracy": trl_val_accuracy(trainer.model.eval(), tokenizer, val_sets, args, device),
    }


@torch.no_grad()
def trl_val_accuracy(model, tokenizer, val_sets, args, device) -> float:
    """Same pairwise accuracy as ranklab's, with texts formatted the way TRL trained on them
    (the full chat template, trailing newline included)."""
    encoded = []
    for s in val_sets:
        texts = [
            tokenizer.apply_chat_template([*as_messages(s.prompt), {"role": "assistant", "content": c}], tokenize=False)
            for c in s.completions
        ]
        ids = [seq[-args.max_length :] for seq in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        encoded.append(EncodedSet(ids, torch.tensor(s.levels), len(s.levels)))
    flat = score_sequences(
        model,
        [q for e in encoded for q in e.sequences],
        tokenizer.pad_token_id,
        device,
        use_autocast=not args.no_autocast,
    )
    scores, levels = assemble(flat, encoded)
    correct, total = pair_accuracy_counts(scores, levels)
    return round(float(correct.sum() / total.sum()), 4)


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single run)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], digits: int) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def summarise(args, runs: list[dict]) -> dict:
    """Mean ± sd per (trainer, lr); speed ratios per lr and at each trainer's best lr; the share
    of the ratio that the input format explains. Prints as it goes; returns the numbers."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["trainer"], r["lr"]), []).append(r)
    stats = {
        key: {
            "n": len(rs),
            "rankings_per_s": mean_sd([r["rankings_per_s"] for r in rs]),
            "cpu_s": mean_sd([r["cpu_s"] for r in rs]),
            "val_accuracy": mean_sd([r["val_accuracy"] for r in rs]),
        }
        for key, rs in groups.items()
    }
    print(f"\n{'trainer':8} {'lr':>7} {'seeds':>5} {'rankings/s':>17} {'train CPU s':>15} {'val pairwise acc':>17}")
    for (name, lr), rs in groups.items():
        print(
            f"{name:8} {lr:7.0e} {len(rs):5d} {fmt([r['rankings_per_s'] for r in rs], 3):>17} "
            f"{fmt([r['cpu_s'] for r in rs], 1):>15} {fmt([r['val_accuracy'] for r in rs], 4):>17}"
        )
    summary: dict = {"stats": {f"{n}@{lr:g}": s for (n, lr), s in stats.items()}}
    if not any(n == "trl" for n, _ in stats):
        return summary

    def ratios(lr_ours: float, lr_theirs: float) -> tuple[float, float]:
        ours, theirs = stats[("ranklab", lr_ours)], stats[("trl", lr_theirs)]
        return (
            ours["rankings_per_s"][0] / theirs["rankings_per_s"][0],
            theirs["cpu_s"][0] / ours["cpu_s"][0],
        )

    k = args.k
    per_ranking_trl = 2 * math.comb(k, 2)
    fmt_share = per_ranking_trl / k
    print(
        f"\nsequences forwarded per ranking: ranklab K = {k} (its prompt once more, shared), "
        f"TRL 2·C(K,2) = {per_ranking_trl}; the input format alone explains {fmt_share:.2f}x; "
        "ratio / that = the rest (>1: cheaper per sequence than TRL, <1: dearer)"
    )
    summary["format_share"] = fmt_share
    summary["per_lr"] = {}
    for lr in sorted({lr for n, lr in stats if n == "ranklab"} & {lr for n, lr in stats if n == "trl"}):
        wall, cpu = ratios(lr, lr)
        summary["per_lr"][f"{lr:g}"] = {"wall": wall, "cpu": cpu}
        print(
            f"lr {lr:.0e}: ranklab / TRL rankings/s {wall:.2f}x wall, {cpu:.2f}x by CPU time; "
            f"rest {wall / fmt_share:.2f}x wall, {cpu / fmt_share:.2f}x CPU"
        )
    best = {
        name: max((lr for n, lr in stats if n == name), key=lambda lr, n=name: stats[(n, lr)]["val_accuracy"][0])
        for name in ("ranklab", "trl")
    }
    wall, cpu = ratios(best["ranklab"], best["trl"])
    acc = {name: stats[(name, best[name])]["val_accuracy"] for name in best}
    lo, hi = sorted(acc.values())
    # One run per side has no spread: that is never evidence of a difference.
    seeded = all(stats[(name, best[name])]["n"] > 1 for name in best)
    separate = seeded and lo[0] + lo[1] < hi[0] - hi[1]
    print(
        f"best lr by mean val accuracy: ranklab {best['ranklab']:.0e} ({acc['ranklab'][0]:.4f} ± "
        f"{acc['ranklab'][1]:.4f}), TRL {best['trl']:.0e} ({acc['trl'][0]:.4f} ± {acc['trl'][1]:.4f}): "
        f"{wall:.2f}x wall, {cpu:.2f}x by CPU time; rest {wall / fmt_share:.2f}x wall, "
        f"{cpu / fmt_share:.2f}x CPU; accuracy intervals (mean ± sd) "
        + ("separate" if separate else "overlap or one seed: no accuracy difference shown")
    )
    summary.update(
        best_lr=best,
        speedup=round(wall, 2),
        speedup_cpu=round(cpu, 2),
        rest_wall=round(wall / fmt_share, 2),
        rest_cpu=round(cpu / fmt_share, 2),
        accuracy_separates=separate,
    )
    return summary


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="rm-bench-"))
    if args.tiny:
        model_path = str(work / "tiny")
        save_tiny_model(model_path)
    else:
        model_path = args.model or str(convert_default_model(args.data_dir))
    n_tasks = args.train_tasks + args.val_tasks
    rankings = quality_rankings(n_tasks, args.k, seed=args.data_seed)
    val_fraction = args.val_tasks / n_tasks
    train_sets, val_sets = split_by_prompt(group_rankings(rankings), val_fraction, args.data_seed)
    grid = {"ranklab": args.lrs or [args.lr], "trl": args.lrs or [args.trl_lr]}
    if args.skip_trl:
        del grid["trl"]

    print(
        f"model={'tiny' if args.tiny else model_path} mode={args.mode} K={args.k} "
        f"train={len(train_sets)} val={len(val_sets)} rankings epochs={args.epochs} "
        f"lrs ranklab={grid['ranklab']} trl={grid.get('trl')} seeds={args.seeds} data_seed={args.data_seed} "
        f"threads={args.threads} bf16={'off' if args.no_autocast else 'autocast'}"
    )
    print(
        f"{'trainer':8} {'lr':>7} {'seed':>4} {'rankings/s':>11} {'train s':>9} {'cpu s':>9} "
        f"{'steps':>6} {'seqs fwd':>9} {'val acc':>8}"
    )
    runs = []
    for name, lrs in grid.items():
        for lr in lrs:
            for seed in args.seeds:
                out = work / f"{name}-{lr:g}-{seed}"
                if name == "ranklab":
                    r = run_ranklab(args, lr, seed, model_path, rankings, val_fraction, out)
                else:
                    r = run_trl(args, lr, seed, model_path, train_sets, val_sets, out)
                runs.append({"trainer": name, "lr": lr, "seed": seed, **r})
                print(
                    f"{name:8} {lr:7.0e} {seed:4d} {r['rankings_per_s']:11.3f} {r['train_s']:9.1f} "
                    f"{r['cpu_s']:9.1f} {r['steps']:6d} {r['sequences_forwarded']:9d} {r['val_accuracy']:8.4f}"
                )
    summary = summarise(args, runs)
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, **summary}, indent=2)
        )


if __name__ == "__main__":
    main()
