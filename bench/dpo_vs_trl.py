"""DPO training cost: ranklab's K-wise DPO vs TRL's DPOTrainer on the pairwise expansion.

Both train the same LoRA adapter (r=16, alpha=32, dropout 0, on the exact module list ranklab
resolves: attention and MLP projections) on the same backbone in fp32 with bf16 autocast (off
for both with --no-autocast), with the same sigmoid loss and beta, epochs, AdamW, gradient
clipping at 1.0, warmup fraction (rounded up, as transformers does) then linear decay, one
thread, the same training rankings and the same held-out rankings:

  ranklab  worker.ml.dpo.train_dpo: each ranking's prompt and K completions are packed into one
           row (prompt once, each completion once); loss = mean over its C(K,2) ordered pairs.
           The reference (adapter disabled) is forwarded once over the training completions,
           before the loop, and cached.
  TRL      DPOTrainer gets every (better, worse) pair of the same rankings as chosen/rejected,
           the only input it takes: 2·C(K,2) sequences per ranking, right-padded per batch. The
           model is passed as a path with a peft_config and ref_model=None, so its reference is
           the same model with the adapter disabled (no second copy); --trl-ref picks whether
           its reference log-probs are precomputed once (precompute_ref_log_probs=True) or
           forwarded inside every step (live). Gradient checkpointing (TRL's default) is off.

Data (worker/ml/synthetic.py quality_rankings): completions are filler words plus "good" or
"bad" words; quality = #good - #bad, drawn without replacement from -4..4, so every ranking is
a total order and no pair is a tie. Held-out accuracy on unseen prompts measures learning.

Every training runs in its own child process (this script with --job), so peak memory is that
process's own peak RSS (getrusage ru_maxrss, read before evaluation) for both trainers alike.
Timed, for both (CPU seconds by time.process_time, and wall seconds):
  - the reference pass: ranklab's cached reference_logps over the training rankings; TRL's
    precompute (which runs inside DPOTrainer.__init__), or nothing with --trl-ref live (then
    its reference forwards are inside the training loop);
  - the training loop: ranklab between its pre- and post-training evaluate() calls (both empty:
    no held-out rankings are given to it); TRL's trainer.train().
Model loading, tokenisation and evaluation are outside the timing. rankings/CPU-s = training
rankings x epochs / (reference + loop CPU seconds).

Held-out implicit-reward pair accuracy comes from ONE function for both (held_out_accuracy):
it loads the saved adapter on the backbone, sums each held-out completion's response log-probs
with the adapter on and off (ranklab's response_logps, ranklab's text format: TRL trained on the
same chat-template text plus the template's trailing newline token), and counts the pairs whose
beta * (log pi - log ref) orders them right.

The fair comparison (docs/benchmarks.md):
- same data: rankings and split from --data-seed for every run;
- same effective batch: a ranklab step trains on --batch-rankings rankings = batch x C(K,2)
  pairs, and TRL gets that many pairs per step, so both take the same steps over the same pairs;
- --lrs is one learning-rate grid for both, --seeds repeats every (trainer, lr); the trainers
  alternate inside each (seed, lr) so machine load falls on both alike;
- the summary splits the CPU ratio into the input format (sequences forwarded: TRL 2·C(K,2) per
  ranking, ranklab K, each through the policy per epoch and the reference once) and the cost per
  sequence (tokens per sequence x cost per token), as bench/rm_vs_trl.py does.

  .venv/bin/python bench/dpo_vs_trl.py --tiny                    # tiny random Llama, seconds
  nice -n 5 .venv/bin/python bench/dpo_vs_trl.py --k 4 --train-tasks 6 --val-tasks 12 \\
      --batch-rankings 1 --lrs 2e-3,4e-3 --seeds 0,1,2 --json /tmp/dpo_k4.json   # docs/benchmarks.md
  nice -n 5 .venv/bin/python bench/dpo_vs_trl.py --k 9 --train-tasks 3 --val-tasks 8 \\
      --batch-rankings 1 --lrs 4e-3 --seeds 0,1,2 --json /tmp/dpo_k9.json
  .venv/bin/python bench/dpo_summary.py /tmp/dpo_k4.json         # re-print (and merge) the tables

At K=9 TRL's process peaks near 10 GB: do not run two K=9 TRL trainings side by side on a small
machine (one was killed by the kernel's out-of-memory killer here).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from dpo_summary import print_tables  # noqa: E402  (bench/ is the script's own folder)
from rm_vs_trl import floats, ints, pairwise_dataset  # noqa: E402

import worker.ml.dpo as dpo_module
from worker.ml.data import group_rankings, split_by_prompt
from worker.ml.dpo import DPOConfig, assemble, encode_rankings, response_logps, train_dpo
from worker.ml.dpo_losses import implicit_rewards, reward_margin_counts
from worker.ml.lora import resolve_lora_targets
from worker.ml.losses import pair_accuracy_counts
from worker.ml.models import (
    autocast,
    autocast_available,
    convert_default_model,
    load_causal_lm,
    load_tokenizer,
    match_embeddings,
    pick_device,
)
from worker.ml.synthetic import quality_rankings
from worker.ml.tiny import save_tiny_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny random-weight Llama instead of SmolLM2")
    p.add_argument("--model", default=None, help="backbone folder (default: converted SmolLM2)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where SmolLM2 is converted")
    p.add_argument("--train-tasks", type=int, default=12, help="training rankings (prompts)")
    p.add_argument("--val-tasks", type=int, default=12, help="held-out rankings (prompts)")
    p.add_argument("-k", "--k", dest="k", type=int, default=4, help="completions per ranking")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lrs", type=floats, default=[1e-3], help="one learning-rate grid for both, e.g. 1e-3,2e-3")
    p.add_argument("--seeds", type=ints, default=[0], help="training seeds, e.g. 0,1,2")
    p.add_argument("--data-seed", type=int, default=0, help="rankings and train/held-out split")
    p.add_argument("--batch-rankings", type=int, default=2, help="ranklab: rankings per optimizer step")
    p.add_argument("--warmup-fraction", type=float, default=0.1)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-autocast", action="store_true", help="fp32 for both (default: bf16 autocast)")
    p.add_argument(
        "--trl-ref",
        choices=["precompute", "live"],
        default="precompute",
        help="TRL's reference: precompute_ref_log_probs=True (once, before training) or live (every step)",
    )
    p.add_argument("--trainers", default="ranklab,trl", help="comma-separated: ranklab, trl")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--job", type=Path, default=None, help=argparse.SUPPRESS)  # internal: one child run
    args = p.parse_args(argv)
    args.trainers = [t.strip() for t in args.trainers.split(",") if t.strip()]
    args.trl_batch_pairs = args.batch_rankings * math.comb(args.k, 2)
    return args


def data_split(args) -> tuple[list, list, list]:
    """(training Rankings, training RankedSets, held-out RankedSets): the same for every run,
    from --data-seed only."""
    n_tasks = args.train_tasks + args.val_tasks
    rankings = quality_rankings(n_tasks, args.k, seed=args.data_seed)
    train_sets, val_sets = split_by_prompt(group_rankings(rankings), args.val_tasks / n_tasks, args.data_seed)
    train_ids = {s.prompt_id for s in train_sets}
    return [r for r in rankings if r.prompt_id in train_ids], train_sets, val_sets


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_ranklab(args, job: dict, train_sets) -> dict:
    """train_dpo as shipped; the two mocks only read clocks around its reference pass and its
    (empty) pre/post evaluate() calls, which bracket the training loop."""
    cfg = DPOConfig(
        model=job["model"],
        beta=args.beta,
        loss="sigmoid",
        learning_rate=job["lr"],
        epochs=args.epochs,
        batch_rankings=args.batch_rankings,
        max_length=args.max_length,
        lora_targets=tuple(job["lora_targets"]),
        warmup_fraction=args.warmup_fraction,
        val_fraction=0.0,  # held-out rankings are scored by held_out_accuracy, outside the timing
        seed=job["seed"],
        autocast=not args.no_autocast,
    )
    ref_clock, eval_marks = [0.0, 0.0], []
    real_reference, real_evaluate = dpo_module.reference_logps, dpo_module.evaluate

    def timed_reference(*a, **kw):
        cpu, wall = time.process_time(), time.perf_counter()
        out = real_reference(*a, **kw)
        ref_clock[0] += time.process_time() - cpu
        ref_clock[1] += time.perf_counter() - wall
        return out

    def marked_evaluate(*a, **kw):
        eval_marks.append((time.process_time(), time.perf_counter()))
        out = real_evaluate(*a, **kw)
        eval_marks.append((time.process_time(), time.perf_counter()))
        return out

    with (
        mock.patch.object(dpo_module, "reference_logps", timed_reference),
        mock.patch.object(dpo_module, "evaluate", marked_evaluate),
    ):
        metrics = train_dpo(cfg, job["train_rankings"], job["out"])
    # marks: [before-eval in, before-eval out, after-eval in, after-eval out]; the loop is between
    loop_cpu, loop_wall = eval_marks[2][0] - eval_marks[1][0], eval_marks[2][1] - eval_marks[1][1]
    tokenizer = load_tokenizer(job["model"], padding_side="right")
    encoded = encode_rankings(tokenizer, train_sets, args.max_length)
    per_epoch_seqs = sum(len(e.responses) for e in encoded)
    per_epoch_tokens = sum(len(e.prompt) + sum(len(r) for r in e.responses) for e in encoded)
    passes = args.epochs + 1  # the policy every epoch, the reference once
    return {
        "ref_cpu_s": ref_clock[0],
        "ref_s": ref_clock[1],
        "loop_cpu_s": loop_cpu,
        "loop_s": loop_wall,
        "steps": metrics["steps"],
        "sequences": per_epoch_seqs * passes,
        "tokens": per_epoch_tokens * passes,
        "peak_rss_mib": peak_rss_mib(),
        "adapter": job["out"],
    }


def run_trl(args, job: dict, train_sets) -> dict:
    from peft import LoraConfig
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    device = pick_device()
    tokenizer = load_tokenizer(job["model"], padding_side="right")  # the same distinct pad token
    dataset = pairwise_dataset(train_sets)
    precompute = args.trl_ref == "precompute"
    trl_args = TRLDPOConfig(
        output_dir=job["out"],
        per_device_train_batch_size=args.trl_batch_pairs,
        num_train_epochs=args.epochs,
        learning_rate=job["lr"],
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_fraction,  # a float below 1 is a fraction, rounded up
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=args.beta,
        loss_type=["sigmoid"],
        max_length=args.max_length,
        precompute_ref_log_probs=precompute,
        bf16=not args.no_autocast and autocast_available(device),
        use_cpu=device.type == "cpu",
        gradient_checkpointing=False,
        save_strategy="no",
        report_to="none",
        logging_steps=10_000,
        seed=job["seed"],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=job["lora_targets"], task_type="CAUSAL_LM")
    ref_clock = [0.0, 0.0]
    real_precompute = DPOTrainer._precompute_ref_logps

    def timed_precompute(self, *a, **kw):  # runs inside DPOTrainer.__init__, after tokenisation
        cpu, wall = time.process_time(), time.perf_counter()
        out = real_precompute(self, *a, **kw)
        ref_clock[0] += time.process_time() - cpu
        ref_clock[1] += time.perf_counter() - wall
        return out

    with mock.patch.object(DPOTrainer, "_precompute_ref_logps", timed_precompute):
        trainer = DPOTrainer(
            model=job["model"], args=trl_args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora
        )
    cpu, wall = time.process_time(), time.perf_counter()
    trainer.train()
    loop_cpu, loop_wall = time.process_time() - cpu, time.perf_counter() - wall
    peak = peak_rss_mib()
    trainer.save_model(job["out"])
    prepared: Any = trainer.train_dataset
    prompts = sum(len(p) for p in prepared["prompt_ids"])
    per_epoch_tokens = 2 * prompts + sum(len(c) for c in prepared["chosen_ids"])
    per_epoch_tokens += sum(len(r) for r in prepared["rejected_ids"])
    passes = args.epochs + 1 if precompute else 2 * args.epochs  # live: policy and reference every step
    return {
        "ref_cpu_s": ref_clock[0],
        "ref_s": ref_clock[1],
        "loop_cpu_s": loop_cpu,
        "loop_s": loop_wall,
        "steps": trainer.state.global_step,
        "sequences": 2 * len(prepared) * passes,
        "tokens": per_epoch_tokens * passes,
        "peak_rss_mib": peak,
        "adapter": job["out"],
    }


@torch.no_grad()
def held_out_accuracy(args, model_path: str, adapter: str, val_sets) -> tuple[float, float]:
    """(pair accuracy, mean margin) of the implicit reward beta * (log pi - log ref) on the
    held-out rankings; the same code scores both trainers' adapters."""
    from peft import PeftModel

    device = pick_device()
    tokenizer = load_tokenizer(model_path, padding_side="right")
    base = load_causal_lm(model_path, device="cpu", dtype=torch.float32)
    match_embeddings(base, tokenizer)
    model = PeftModel.from_pretrained(base, adapter).to(device).eval()
    encoded = encode_rankings(tokenizer, val_sets, args.max_length)
    policy, reference = [], []
    for start in range(0, len(encoded), 4):
        chunk = encoded[start : start + 4]
        with autocast(device, not args.no_autocast):
            policy.append(response_logps(model, chunk, tokenizer.pad_token_id, device).float().cpu())
            with model.disable_adapter():
                reference.append(response_logps(model, chunk, tokenizer.pad_token_id, device).float().cpu())
    pi, levels = assemble(torch.cat(policy), encoded)
    ref, _ = assemble(torch.cat(reference), encoded)
    rewards = implicit_rewards(pi, ref, args.beta)
    right, pairs = pair_accuracy_counts(rewards, levels)
    margin, _ = reward_margin_counts(rewards, levels)
    return round(float(right.sum() / pairs.sum()), 4), round(float(margin.sum() / pairs.sum()), 4)


def child(job_path: Path) -> None:
    """One training in this process: train, read the peak RSS, then score the adapter."""
    job = json.loads(job_path.read_text())
    args = parse_args(job["argv"])
    torch.set_num_threads(args.threads)
    job["train_rankings"], train_sets, val_sets = data_split(args)
    base_rss = rss_mib()
    r = (run_trl if job["trainer"] == "trl" else run_ranklab)(args, job, train_sets)
    r["base_rss_mib"] = base_rss
    r["val_accuracy"], r["val_margin"] = held_out_accuracy(args, job["model"], r.pop("adapter"), val_sets)
    n_rankings = len(train_sets) * args.epochs
    r["cpu_s"], r["train_s"] = r["ref_cpu_s"] + r["loop_cpu_s"], r["ref_s"] + r["loop_s"]
    r["rankings_per_cpu_s"] = n_rankings / r["cpu_s"]
    r["rankings_per_s"] = n_rankings / r["train_s"]  # wall clock
    Path(job["result"]).write_text(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}))


def main() -> None:
    args = parse_args()
    if args.job is not None:
        return child(args.job)
    work = Path(tempfile.mkdtemp(prefix="dpo-bench-"))
    if args.tiny:
        model_path = str(work / "tiny")
        save_tiny_model(model_path)
    else:
        model_path = args.model or str(convert_default_model(args.data_dir))
    targets = list(resolve_lora_targets(load_causal_lm(model_path, device="cpu"), (), mlp=True))
    _, train_sets, val_sets = data_split(args)
    print(
        f"model={'tiny' if args.tiny else model_path} K={args.k} train={len(train_sets)} val={len(val_sets)} "
        f"rankings epochs={args.epochs} beta={args.beta} lrs={args.lrs} seeds={args.seeds} data_seed="
        f"{args.data_seed} per step: ranklab {args.batch_rankings} rankings, TRL {args.trl_batch_pairs} pairs; "
        f"lora targets={targets} threads={args.threads} bf16={'off' if args.no_autocast else 'autocast'} "
        f"trl_ref={args.trl_ref}",
        flush=True,
    )
    print(
        f"{'trainer':8} {'lr':>7} {'seed':>4} {'rank/CPU-s':>10} {'ref CPU':>7} {'loop CPU':>8} {'wall s':>7} "
        f"{'steps':>5} {'seqs':>6} {'tokens':>7} {'peak MiB':>8} {'val acc':>7} {'margin':>7}",
        flush=True,
    )
    jobs = []  # trainers alternate inside each (seed, lr), one way then the other
    for i, seed in enumerate(args.seeds):
        for j, lr in enumerate(args.lrs):
            names = args.trainers if (i + j) % 2 == 0 else args.trainers[::-1]
            jobs += [(name, lr, seed) for name in names]
    argv = sys.argv[1:]  # the child re-reads the same options (it writes no --json)
    runs = []
    for name, lr, seed in jobs:
        out = work / f"{name}-{lr:g}-{seed}"
        job = {"trainer": name, "lr": lr, "seed": seed, "model": model_path, "lora_targets": targets,
               "out": str(out), "result": str(out) + ".json", "argv": argv}  # fmt: skip
        job_path = work / f"{out.name}.job.json"
        job_path.write_text(json.dumps(job))
        subprocess.run([sys.executable, __file__, "--job", str(job_path)], check=True)
        r = {"trainer": name, "lr": lr, "seed": seed, **json.loads(Path(job["result"]).read_text())}
        runs.append(r)
        if args.json:  # after every run, so a stopped grid keeps what it measured
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}))
        print(
            f"{name:8} {lr:7.0e} {seed:4d} {r['rankings_per_cpu_s']:10.3f} {r['ref_cpu_s']:7.1f} "
            f"{r['loop_cpu_s']:8.1f} {r['train_s']:7.1f} {r['steps']:5d} {r['sequences']:6d} {r['tokens']:7d} "
            f"{r['peak_rss_mib']:8.0f} {r['val_accuracy']:7.4f} {r['val_margin']:7.3f}",
            flush=True,
        )
    summary = print_tables(args, runs)
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, **summary}, indent=2)
        )


if __name__ == "__main__":
    main()
