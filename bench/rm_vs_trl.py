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

The fair comparison (docs/benchmarks.md):
- same data: the rankings and the train/validation split come from --data-seed for every run;
- same effective batch: one ranklab step trains on --batch-rankings rankings, i.e.
  batch-rankings x C(K,2) pairs; TRL gets that many pairs per step (--trl-batch-pairs), so both
  take the same number of optimizer steps over the same pairs with the same schedule;
- --lrs gives both trainers the same learning-rate grid, --seeds repeats every (trainer, lr);
  runs alternate between trainers inside each (seed, lr) so machine load falls on both alike;
- the summary prints mean ± sd per (trainer, lr) and splits the speed ratio into the input
  format (TRL forwards 2·C(K,2) sequences per ranking, ranklab K: K-1 times fewer) and the
  per-sequence cost (training CPU ms per sequence, TRL's / ranklab's), itself tokens per sequence
  (ranklab forwards the prompt once per ranking) x cost per token (padding, implementation);
- --variants runs ranklab's other forward paths too (kv: the prompt through a key/value cache,
  completions padded; full: K padded sequences) to measure what the packing itself gives.

  .venv/bin/python bench/rm_vs_trl.py              # SmolLM2-135M, minutes (docs/benchmarks.md)
  .venv/bin/python bench/rm_vs_trl.py --tiny       # tiny random Llama, seconds
  .venv/bin/python bench/rm_vs_trl.py --threads 1 --k 4 --train-tasks 32 --val-tasks 24 \\
      --lrs 4e-3,8e-3 --seeds 0,1,2                # the K=4 table in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from rm_summary import per_sequence, per_token, summarise  # noqa: E402  (bench/ is the script's own folder)

import worker.ml.reward as reward_module
from worker.ml.config import RewardConfig
from worker.ml.data import as_messages, group_rankings, split_by_prompt
from worker.ml.losses import pair_accuracy_counts
from worker.ml.models import autocast_available, convert_default_model, load_tokenizer, pick_device
from worker.ml.reward import train_reward
from worker.ml.reward_sets import EncodedSet, assemble, encode_sets
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
    p.add_argument("--batch-rankings", type=int, default=2, help="ranklab: rankings per step")
    p.add_argument(
        "--trl-batch-pairs",
        type=int,
        default=None,
        help="TRL: pairs per step (default: batch-rankings x C(K,2), the pairs one ranklab step "
        "trains on, so both take the same number of optimizer steps over the same pairs)",
    )
    p.add_argument(
        "--variants",
        default="packed",
        help="ranklab forward paths to run, comma-separated: packed (default: prompt and completions "
        "in rows without padding), kv (prompt key/value cache, completions padded), full (K padded "
        "sequences, no prompt sharing)",
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
    args.trl_batch_pairs = args.trl_batch_pairs or args.batch_rankings * math.comb(args.k, 2)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        p.error(f"--variants: unknown {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    args.data_seed = args.seed if args.data_seed is None else args.data_seed
    return args


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


VARIANTS = {
    "packed": "ranklab",  # the default path: worker/ml/reward.py as shipped
    "kv": "ranklab-kv",  # prompt once through a key/value cache, completions padded
    "full": "ranklab-full",  # K full sequences padded alike, no prompt sharing
}


def run_ranklab(
    args, variant: str, lr: float, seed: int, model_path: str, rankings, val_fraction: float, out: Path
) -> dict:
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
        share_prompt_prefix=variant != "full",
        norm_samples=0,  # the reward normalisation pass is outside the timing; skip it to save time
    )
    # train_reward splits by its own seed; pin the split to --data-seed so every training seed and
    # both trainers see the same training and validation prompts.
    pinned = reward_module.split_by_prompt

    def split(sets, fraction, _seed):
        return pinned(sets, fraction, args.data_seed)

    forward = functools.partial(reward_module.forward_sets, packed=variant == "packed")
    with (
        mock.patch.object(reward_module, "split_by_prompt", split),
        mock.patch.object(reward_module, "forward_sets", forward),
    ):
        metrics = train_reward(cfg, rankings, out)
    return {
        "rankings_per_s": metrics["train_rankings_per_second"],
        "train_s": metrics["train_seconds"],
        "cpu_s": metrics["train_cpu_seconds"],
        "steps": metrics["steps"],
        "val_accuracy": metrics["val_accuracy"],
    }


def ranklab_work(args, model_path: str, train_sets) -> dict[str, tuple[int, int]]:
    """Per variant: (sequences, real tokens) one epoch forwards. The prompt counts once per
    ranking where it is shared; padding is not counted (it is part of the cost measured)."""
    tokenizer = load_tokenizer(model_path, padding_side="right")
    encoded = encode_sets(tokenizer, train_sets, args.max_length)
    sequences = sum(len(e.sequences) for e in encoded)
    shared = sum(e.cost(True) for e in encoded)
    full = sum(len(q) for e in encoded for q in e.sequences)
    return {"packed": (sequences, shared), "kv": (sequences, shared), "full": (sequences, full)}


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
    prepared: Any = trainer.train_dataset
    tokens = sum(len(ids) for ids in prepared["chosen_ids"]) + sum(len(ids) for ids in prepared["rejected_ids"])
    return {
        "rankings_per_s": round(n_rankings * args.epochs / seconds, 3),
        "train_s": round(seconds, 3),
        "cpu_s": round(cpu_seconds, 3),
        "steps": trainer.state.global_step,
        "sequences": 2 * len(dataset) * args.epochs,
        "tokens": tokens * args.epochs,
        "val_accuracy": trl_val_accuracy(trainer.model, tokenizer, val_sets, args, device),
    }


@torch.no_grad()
def trl_val_accuracy(model, tokenizer, val_sets, args, device) -> float:
    """Same pairwise accuracy as ranklab's, with texts formatted the way TRL trained on them
    (the full chat template, trailing newline included)."""
    model.eval()
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
    work_per_variant = ranklab_work(args, model_path, train_sets)
    grid = {VARIANTS[v]: args.lrs or [args.lr] for v in args.variants}
    if not args.skip_trl:
        grid["trl"] = args.lrs or [args.trl_lr]

    print(
        f"model={'tiny' if args.tiny else model_path} mode={args.mode} K={args.k} "
        f"train={len(train_sets)} val={len(val_sets)} rankings epochs={args.epochs} "
        f"lrs={ {n: lrs for n, lrs in grid.items()} } seeds={args.seeds} data_seed={args.data_seed} "
        f"per step: ranklab {args.batch_rankings} rankings ({args.batch_rankings * math.comb(args.k, 2)} pairs), "
        f"TRL {args.trl_batch_pairs} pairs; threads={args.threads} "
        f"bf16={'off' if args.no_autocast else 'autocast'}"
    )
    print(
        f"{'trainer':12} {'lr':>7} {'seed':>4} {'rankings/s':>11} {'train s':>8} {'cpu s':>7} {'steps':>5} "
        f"{'seqs':>5} {'tokens':>7} {'ms/seq':>7} {'ms/tok':>7} {'val acc':>7}"
    )
    # Trainers alternate within each (seed, lr), first one way then the other, so a change in
    # machine load during the run falls on all of them alike.
    jobs = []
    for i, seed in enumerate(args.seeds):
        for j, lr in enumerate(sorted({lr for lrs in grid.values() for lr in lrs})):
            names = [n for n, lrs in grid.items() if lr in lrs]
            jobs += [(n, lr, seed) for n in (names if (i + j) % 2 == 0 else names[::-1])]
    runs = []
    by_name = {name: variant for variant, name in VARIANTS.items()}
    for name, lr, seed in jobs:
        out = work / f"{name}-{lr:g}-{seed}"
        if name == "trl":
            r = run_trl(args, lr, seed, model_path, train_sets, val_sets, out)
        else:
            variant = by_name[name]
            r = run_ranklab(args, variant, lr, seed, model_path, rankings, val_fraction, out)
            sequences, tokens = work_per_variant[variant]
            r.update(sequences=sequences * args.epochs, tokens=tokens * args.epochs)
        runs.append({"trainer": name, "lr": lr, "seed": seed, **r})
        print(
            f"{name:12} {lr:7.0e} {seed:4d} {r['rankings_per_s']:11.3f} {r['train_s']:8.1f} {r['cpu_s']:7.1f} "
            f"{r['steps']:5d} {r['sequences']:5d} {r['tokens']:7d} {per_sequence(r):7.1f} {per_token(r):7.2f} "
            f"{r['val_accuracy']:7.4f}"
        )
    summary = summarise(args, runs)
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, **summary}, indent=2)
        )


if __name__ == "__main__":
    main()
