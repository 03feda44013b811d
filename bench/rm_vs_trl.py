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

  .venv/bin/python bench/rm_vs_trl.py              # SmolLM2-135M, minutes (docs/benchmarks.md)
  .venv/bin/python bench/rm_vs_trl.py --tiny       # tiny random Llama, seconds
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

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
    p.add_argument("-k", type=int, default=9, help="completions per ranking")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--mode", choices=["lora", "full"], default="lora")
    # Defaults: each trainer's best of {4e-3, 8e-3} on this data (docs/benchmarks.md).
    p.add_argument("--lr", type=float, default=8e-3, help="ranklab: peak learning rate")
    p.add_argument("--trl-lr", type=float, default=4e-3, help="TRL: peak learning rate")
    p.add_argument("--batch-rankings", type=int, default=1, help="ranklab: rankings per step")
    p.add_argument(
        "--trl-batch-pairs",
        type=int,
        default=9,
        help="TRL: pairs per step (9 pairs = 18 sequences, as many as one K=9 ranking)",
    )
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--no-autocast", action="store_true", help="fp32 for both (default: bf16 autocast)")
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args()


def run_ranklab(args, model_path: str, rankings, val_fraction: float, out: Path) -> dict:
    cfg = RewardConfig(
        model=model_path,
        mode=args.mode,
        learning_rate=args.lr,
        epochs=args.epochs,
        batch_rankings=args.batch_rankings,
        max_length=args.max_length,
        val_fraction=val_fraction,
        seed=args.seed,
        autocast=not args.no_autocast,
        lr_schedule="linear",
        warmup_fraction=0.05,
    )
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


def run_trl(args, model_path: str, train_sets, val_sets, out: Path) -> dict:
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
        learning_rate=args.trl_lr,
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
        seed=args.seed,
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
    rankings = quality_rankings(n_tasks, args.k, seed=args.seed)
    val_fraction = args.val_tasks / n_tasks
    train_sets, val_sets = split_by_prompt(group_rankings(rankings), val_fraction, args.seed)

    results = {"ranklab": run_ranklab(args, model_path, rankings, val_fraction, work / "ranklab")}
    if not args.skip_trl:
        results["trl"] = run_trl(args, model_path, train_sets, val_sets, work / "trl")

    print(
        f"\nmodel={'tiny' if args.tiny else model_path} mode={args.mode} K={args.k} "
        f"train={len(train_sets)} val={len(val_sets)} rankings epochs={args.epochs} "
        f"lr={args.lr}/{args.trl_lr} threads={args.threads} "
        f"bf16={'off' if args.no_autocast else 'autocast'}"
    )
    print(f"{'':10} {'rankings/s':>11} {'train s':>9} {'cpu s':>9} {'steps':>6} {'seqs fwd':>9} {'val acc':>8}")
    for name, r in results.items():
        print(
            f"{name:10} {r['rankings_per_s']:11.3f} {r['train_s']:9.1f} {r['cpu_s']:9.1f} "
            f"{r['steps']:6d} {r['sequences_forwarded']:9d} {r['val_accuracy']:8.4f}"
        )
    if "trl" in results:
        ours, theirs = results["ranklab"], results["trl"]
        results["speedup"] = round(ours["rankings_per_s"] / theirs["rankings_per_s"], 2)
        # CPU seconds are robust to other processes sharing the cores (use with --threads 1).
        results["speedup_cpu"] = round(theirs["cpu_s"] / ours["cpu_s"], 2)
        print(f"ranklab / TRL rankings/s: {results['speedup']:.2f}x wall, {results['speedup_cpu']:.2f}x by CPU time")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **results}, indent=2))


if __name__ == "__main__":
    main()
